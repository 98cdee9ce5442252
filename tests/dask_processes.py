"""A real multi-process Dask cluster on loopback, standing in for a multi-host cluster.

:class:`ProcessCluster` starts ``dask scheduler`` and one ``dask worker`` (with its nanny) per
worker as separate processes on 127.0.0.1, the way an operator would start them on separate
hosts, for integration tests of ``--scheduler`` mode::

    with ProcessCluster(tmp_path / "cluster", workers=2) as cluster:
        run_cli("run", ..., "--scheduler", cluster.address)

What makes the workers look like other hosts:

* each worker runs in its own working directory ``<root>/<name>`` (``w0``, ``w1``, ...), with
  ``PYTHONPATH`` removed from its environment (``env`` extras are merged in after that);
* ``hide``: directories the workers must not see (the driver's own disk).  Each worker then
  starts in a private mount namespace with an empty tmpfs mounted over each of them
  (``unshare -m``; needs root or user namespaces).  Check :func:`isolation_available` first.
* ``tls=True``: the scheduler and workers speak TLS only, with certificates made here (a CA
  and one certificate for 127.0.0.1/localhost); a client needs :meth:`ProcessCluster.security`.

Every process is started in its own process group, so a worker is killed together with its
nanny, and :meth:`ProcessCluster.close` leaves nothing behind.  Logs are kept under ``root``
(``scheduler.log``, ``<name>/worker.log``); :meth:`ProcessCluster.logs` returns their tails for
assertion messages.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import functools
import ipaddress
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from helpers import tail

HOST = "127.0.0.1"
#: Seconds for the scheduler and the first workers to come up.
START_TIMEOUT = 60.0
#: Seconds a process gets after SIGTERM before it is sent SIGKILL.
TERM_GRACE = 5.0


class ClusterStartError(RuntimeError):
    """The scheduler or a worker did not come up; the message ends with the logs."""


# ------------------------------------------------------------------ helpers


def dask_command(sub: str) -> list[str]:
    """The command line that runs ``dask <sub>`` with this interpreter's distributed."""
    script = Path(sys.executable).with_name("dask")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script), sub]
    return [sys.executable, "-m", f"distributed.cli.dask_{sub}"]


@functools.cache
def isolation_available() -> bool:
    """Whether a process can get a private mount namespace with a tmpfs over a directory.

    Checked once: a marker file under a fresh directory must vanish inside
    ``unshare -m --propagation private`` once a tmpfs is mounted there.
    """
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return False
    with tempfile.TemporaryDirectory(prefix="daskscore-unshare-") as folder:
        (Path(folder) / "marker").write_text("visible")
        script = f"mount -t tmpfs tmpfs {shlex.quote(folder)} && test ! -e {folder}/marker"
        try:
            done = subprocess.run(
                ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                capture_output=True,
                timeout=15,
            )
        except (OSError, subprocess.SubprocessError):
            return False
        # the tmpfs lived in the namespace only: the marker must still be here
        return done.returncode == 0 and (Path(folder) / "marker").exists()


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """Write ``ca.pem``, ``cert.pem`` and ``key.pem`` under ``folder``; return their paths.

    The certificate is for 127.0.0.1 and localhost, signed by the CA, for server and client
    authentication (the scheduler, workers and clients all use it).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=7)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("daskscore test CA"))
        .issuer_name(name("daskscore test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    san = [x509.IPAddress(ipaddress.ip_address(HOST)), x509.DNSName("localhost")]
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    paths = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    paths[0].write_bytes(ca.public_bytes(pem))
    paths[1].write_bytes(cert.public_bytes(pem))
    paths[2].write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    paths[2].chmod(0o600)
    return paths


def _key_usage(*, ca: bool) -> Any:
    """KeyUsage for the CA (signs certificates) or for the leaf (TLS with EC keys)."""
    from cryptography import x509

    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not ca,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _group_members(pgid: int) -> list[int]:
    """Pids of the live (non-zombie) processes in process group ``pgid``."""
    members = []
    for proc in psutil.process_iter(["status"]):
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(proc.pid)
    return members


def _signal_group(pgid: int, sig: int) -> None:
    """Send ``sig`` to a process group; a group that is gone already is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


@dataclass
class _Process:
    """One started process: its Popen (the group leader) and its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path


def _start(name: str, argv: list[str], *, cwd: Path, log: Path, env: dict[str, str]) -> _Process:
    """Start ``argv`` in a new session (its own process group), output to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        popen = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return _Process(name, popen, log)


def _stop(procs: Sequence[_Process], sig: int = signal.SIGTERM) -> None:
    """Signal the processes' groups, SIGKILL what is left after :data:`TERM_GRACE`, reap."""
    for proc in procs:
        _signal_group(proc.popen.pid, sig)
    deadline = time.monotonic() + (TERM_GRACE if sig != signal.SIGKILL else 0)
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
    for proc in procs:
        # the leader may be gone while a child (the nanny's worker) lingers: kill the group
        _signal_group(proc.popen.pid, signal.SIGKILL)
        proc.popen.wait()
    deadline = time.monotonic() + TERM_GRACE
    while any(_group_members(p.popen.pid) for p in procs) and time.monotonic() < deadline:
        time.sleep(0.05)


# ------------------------------------------------------------------ the cluster


class ProcessCluster:
    """A Dask scheduler and nanny-managed workers, each a subprocess on 127.0.0.1.

    Parameters
    ----------
    root : Path
        Folder for the scheduler file, logs, TLS files and the workers' folders.
    workers : int
        Workers started by :meth:`start` (named ``w0``, ``w1``, ...).
    tls : bool
        Speak TLS only (``tls://`` address); clients need :meth:`security`.
    hide : sequence of Path
        Existing directories the workers must not see: each worker gets a private mount
        namespace with an empty tmpfs over each.  ``root`` must not be under one of them.
    env : dict, optional
        Environment variables for the workers, set after ``PYTHONPATH`` is removed.
    worker_args : sequence of str
        Extra ``dask worker`` options (``--resources``, ``--memory-limit`` ...).
    timeout : float
        Seconds for the scheduler and the first workers to come up.
    """

    def __init__(
        self,
        root: Path,
        workers: int = 2,
        tls: bool = False,
        hide: Sequence[Path] = (),
        env: dict[str, str] | None = None,
        worker_args: Sequence[str] = (),
        *,
        timeout: float = START_TIMEOUT,
    ) -> None:
        self.root = Path(root).resolve()
        self.n_workers = workers
        self.tls = tls
        self.hide = [Path(p).resolve() for p in hide]
        self.env = dict(env or {})
        self.worker_args = list(worker_args)
        self.timeout = timeout
        self.address: str = ""
        self.ca_file: Path | None = None
        self.cert_file: Path | None = None
        self.key_file: Path | None = None
        self._scheduler: _Process | None = None
        self._workers: dict[str, _Process] = {}
        self._logs: dict[str, Path] = {}
        self._next = 0
        self._check_hide()

    # -------------------------------------------------------------- lifecycle

    def __enter__(self) -> ProcessCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> ProcessCluster:
        """Start the scheduler and the workers; wait until the scheduler sees them all.

        Raises :class:`ClusterStartError` (with the logs) when that takes over ``timeout``;
        whatever was started is stopped again first.
        """
        if self._scheduler is not None:
            raise RuntimeError("the cluster is started already")
        self.root.mkdir(parents=True, exist_ok=True)
        atexit.register(self.close)
        try:
            if self.tls:
                self.ca_file, self.cert_file, self.key_file = make_certificates(self.root / "tls")
            deadline = time.monotonic() + self.timeout
            self._start_scheduler(deadline)
            for _ in range(self.n_workers):
                self._spawn_worker(self._new_name())
            self._wait(self.n_workers, deadline, strict=True)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop the workers, then the scheduler (SIGTERM, then SIGKILL); keep the logs.

        Safe to call twice, and after a failed start.
        """
        atexit.unregister(self.close)
        workers, self._workers = list(self._workers.values()), {}
        _stop(workers)
        if self._scheduler is not None:
            _stop([self._scheduler])

    # -------------------------------------------------------------- workers

    def add_worker(self, name: str | None = None, args: Sequence[str] = ()) -> str:
        """Start one more worker (same rules as the first ones, plus ``args`` for
        ``dask worker``, e.g. ``["--resources", "GPU=1"]``); return its name.

        Does not wait for it: call :meth:`wait_for_workers` with the new count.
        """
        if self._scheduler is None:
            raise RuntimeError("start the cluster first")
        name = name or self._new_name()
        if name in self._workers:
            raise ValueError(f"worker {name!r} is running already")
        self._spawn_worker(name, args)
        return name

    def kill_worker(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the worker's process group (nanny and worker) and reap it.

        Whatever is still alive :data:`TERM_GRACE` seconds after a gentler signal is killed.
        """
        _stop([self._workers.pop(name)], sig)

    def kill_scheduler(self, sig: int = signal.SIGKILL) -> None:
        """End the scheduler (its workers stay, without it)."""
        if self._scheduler is not None:
            _stop([self._scheduler], sig)
            self._scheduler = None

    def worker_pids(self, name: str) -> list[int]:
        """Pids of a worker's live processes: the nanny first, then its children by pid.

        The children are the worker process and multiprocessing's resource tracker; the
        worker is the one a task's ``os.getpid()`` names.
        """
        leader = self._workers[name].popen.pid
        members = _group_members(leader)
        return sorted(members, key=lambda pid: (pid != leader, pid))

    @property
    def workers(self) -> list[str]:
        """Names of the worker processes this helper started and has not killed."""
        return list(self._workers)

    # -------------------------------------------------------------- clients

    def security(self) -> Any:
        """A ``distributed.security.Security`` for this cluster (None without TLS)."""
        if not self.tls:
            return None
        from distributed.security import Security

        return Security(
            tls_ca_file=str(self.ca_file),
            tls_client_cert=str(self.cert_file),
            tls_client_key=str(self.key_file),
            require_encryption=True,
        )

    def client(self, **kwargs: Any) -> Any:
        """A new ``distributed.Client`` of this cluster (close it: ``with cluster.client()``)."""
        from distributed import Client

        kwargs.setdefault("timeout", "10s")
        kwargs.setdefault("set_as_default", False)
        return Client(self.address, security=self.security(), **kwargs)

    def scheduler_workers(self) -> list[str]:
        """Names of the workers the scheduler has now (asks it with a short-lived client)."""
        with self.client() as client:
            return self._names(client)

    def wait_for_workers(self, n: int, timeout: float = 60) -> None:
        """Wait until the scheduler has exactly ``n`` workers (fewer after a kill, too)."""
        self._wait(n, time.monotonic() + timeout, strict=False)

    # -------------------------------------------------------------- logs

    def logs(self, lines: int = 40) -> str:
        """The last ``lines`` lines of every log (scheduler, then workers), for messages."""
        parts = [
            f"===== {name}: {path} =====\n{tail(path, lines=lines)}"
            for name, path in self._logs.items()
        ]
        return "\n".join(parts) or "(no logs yet)"

    # -------------------------------------------------------------- internals

    def _check_hide(self) -> None:
        """Hidden paths must be existing directories that do not hold ``root``."""
        for path in self.hide:
            if not path.is_dir():
                raise ValueError(f"hide: {path} is not an existing directory")
            if self.root == path or path in self.root.parents:
                raise ValueError(f"hide: {path} holds the cluster root {self.root}")

    def _new_name(self) -> str:
        """The next free worker name ``w<i>``."""
        while f"w{self._next}" in self._logs:
            self._next += 1
        return f"w{self._next}"

    def _tls_args(self) -> list[str]:
        if not self.tls:
            return []
        return [
            "--tls-ca-file", str(self.ca_file),
            "--tls-cert", str(self.cert_file),
            "--tls-key", str(self.key_file),
        ]  # fmt: skip

    def _base_env(self) -> dict[str, str]:
        """This process's environment without ``PYTHONPATH``."""
        return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def _start_scheduler(self, deadline: float) -> None:
        """Start ``dask scheduler`` and read its address from the scheduler file."""
        file = self.root / "scheduler.json"
        file.unlink(missing_ok=True)
        argv = [
            *dask_command("scheduler"),
            "--host", HOST,
            "--port", "0",
            "--no-dashboard",
            # the scheduler serves HTTP (health, metrics) even without a dashboard
            "--dashboard-address", f"{HOST}:0",
            "--scheduler-file", str(file),
        ]  # fmt: skip
        if self.tls:
            argv += ["--protocol", "tls", *self._tls_args()]
        log = self.root / "scheduler.log"
        self._logs["scheduler"] = log
        self._scheduler = _start("scheduler", argv, cwd=self.root, log=log, env=self._base_env())
        while True:
            self._check_running(self._scheduler)
            with contextlib.suppress(OSError, ValueError, KeyError):
                self.address = json.loads(file.read_text())["address"]
                return
            self._check_deadline(deadline, "the scheduler file")
            time.sleep(0.05)

    def _spawn_worker(self, name: str, args: Sequence[str] = ()) -> None:
        """Start ``dask worker`` (with its nanny) in ``<root>/<name>``."""
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        argv = [
            *dask_command("worker"),
            self.address,
            "--nanny",
            "--nworkers", "1",
            "--nthreads", "1",
            "--name", name,
            "--local-directory", str(folder / "local"),
            "--host", HOST,
            "--no-dashboard",
            "--dashboard-address", f"{HOST}:0",
            # a safety net: a worker whose scheduler is gone for good exits by itself
            "--death-timeout", "60",
            *self._tls_args(),
            *self.worker_args,
            *args,
        ]  # fmt: skip
        if self.hide:
            mounts = [f"mount -t tmpfs tmpfs {shlex.quote(str(p))}" for p in self.hide]
            script = " && ".join([*mounts, f"exec {shlex.join(argv)}"])
            argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", script]
        log = folder / "worker.log"
        self._logs[name] = log
        env = {**self._base_env(), **self.env}
        self._workers[name] = _start(name, argv, cwd=folder, log=log, env=env)

    def _wait(self, n: int, deadline: float, *, strict: bool) -> None:
        """Poll the scheduler until it has ``n`` workers.

        ``strict`` (startup): a worker process that exits is an error at once.
        """
        with self.client() as client:
            while True:
                assert self._scheduler is not None, "start the cluster first"
                self._check_running(self._scheduler)
                if strict:
                    for proc in self._workers.values():
                        self._check_running(proc)
                names = self._names(client)
                if len(names) == n:
                    return
                self._check_deadline(deadline, f"{n} workers (the scheduler has {names})")
                time.sleep(0.1)

    @staticmethod
    def _names(client: Any) -> list[str]:
        info = client.scheduler_info(n_workers=-1)
        return sorted(str(w.get("name")) for w in info["workers"].values())

    def _check_running(self, proc: _Process) -> None:
        code = proc.popen.poll()
        if code is not None:
            raise ClusterStartError(f"{proc.name} exited with code {code}\n{self.logs()}")

    def _check_deadline(self, deadline: float, what: str) -> None:
        if time.monotonic() > deadline:
            raise ClusterStartError(f"timed out waiting for {what}\n{self.logs()}")
