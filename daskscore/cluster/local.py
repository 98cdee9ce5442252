"""The embedded cluster: a LocalCluster sized for scoring, and connecting to an existing one.

Like ``LocalCluster.__init__`` itself, this only turns friendly arguments (a number of worker
processes, ``--worker-memory``) into LocalCluster's, then delegates.

While an embedded cluster is open, the exit statuses of its worker processes (which its nannies,
in this process, log as "Worker process N was killed by signal S") are kept by pid
(:mod:`daskscore.worker.deaths`; :func:`exit_signal`): a process the kernel's out-of-memory
killer ended is told by its SIGKILL (see :mod:`daskscore.engine.memory`), and a process that
died in ``init()`` by how it ended.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import dask
from distributed import Client, LocalCluster

from daskscore import _compat
from daskscore.cluster.mainmodule import workers_skip_main
from daskscore.cluster.nannies import environment_kept
from daskscore.errors import UsageError
from daskscore.worker.deadline import watch_deadlines
from daskscore.worker.deaths import exit_status, unwatch_exits, watch_exits
from daskscore.worker.threads import THREAD_ENV_VARS, intra_op_threads

logger = logging.getLogger("daskscore")

DASHBOARD_PORT = 8787
#: Dask's nannies set MALLOC_TRIM_THRESHOLD_=65536 in workers to fight fragmentation in
#: long-lived ETL workers.  Setting any glibc malloc variable also switches off glibc's
#: dynamic mmap threshold, so every buffer of 128 KiB or more (numpy arrays, torch
#: activations) is mmap'ed and unmapped again: measured 1.3x slower numpy/torch scoring.
#: Scoring workers live for one job; glibc's defaults serve them better.
NANNY_ENV_UNSET = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}


#: While the embedded cluster is open: a LocalCluster closes the nanny of a worker that is
#: missing from the scheduler 15 s after an earlier loss (``distributed.deploy.
#: lost-worker-timeout``) — in a job whose run() kills its process again and again, a worker
#: caught restarting at that instant; the cluster then lost it for good, and the job waited on
#: a cluster without workers.  Its nannies restart their workers themselves: never give up on
#: them.
KEEP_NANNIES = {"distributed.deploy.lost-worker-timeout": "3650d"}

#: While the embedded cluster is open (its nannies read it each time they start a worker, a
#: restart too): its worker processes are not daemonic.  Python forbids a daemonic process
#: children, so ``multiprocessing.Pool``, ``ProcessPoolExecutor`` or a torch ``DataLoader`` with
#: ``num_workers`` in ``init()`` or ``run()`` failed ("daemonic processes are not allowed to
#: have children"); on Azure the script's process is an ordinary one.  What the daemonic flag
#: did (children ended with their parent) is done for every worker anyway: each leads a process
#: group of its own, ended when the worker ends, however it ends (see
#: :mod:`daskscore.worker.deaths`).
NOT_DAEMONIC = {"distributed.worker.daemon": False}
#: How a nanny starts its worker process (read by Dask at each start and restart).
METHOD_KEY = "distributed.worker.multiprocessing-method"

#: How often the embedded cluster's servers check their event loop (Dask's default: 20ms).
TICK_INTERVAL = "500ms"

#: How often a nanny looks for its new worker's "started" message (Dask's default: 50 ms),
#: while :func:`local_cluster` is open (:func:`daskscore._compat.nanny_handshake_interval`).
#: A worker forked from the fork server is up in ~60 ms, and a nanny that just missed the
#: message slept another 50 ms: the cluster was ready when the slower of two nannies woke.
HANDSHAKE_POLL_S = 0.005


def exit_signal(pid: int | None) -> int | None:
    """The signal that ended worker process ``pid`` of an embedded cluster, if one did."""
    status = exit_status(pid)
    return -status if status is not None and status < 0 else None


@contextlib.contextmanager
def _watch_exits() -> Iterator[None]:
    watch_exits()
    try:
        yield
    finally:
        unwatch_exits()


def start_method() -> str:
    """How the embedded cluster starts its worker processes.

    ``forkserver`` where the platform has it: one clean, single-threaded process imports Dask
    once (started early by :func:`daskscore.cluster.forkserver.prestart_workers`, while the driver
    lists the inputs), and forks each worker from there in milliseconds; spawning makes every
    worker import Dask itself, and forking the driver directly copies the locks its other
    threads hold.  Dask's own setting elsewhere.  ``DASKSCORE_START_METHOD`` (spawn,
    forkserver, fork) decides when set.
    """
    import multiprocessing

    chosen = os.environ.get("DASKSCORE_START_METHOD", "").strip().lower()
    if chosen:
        return chosen
    configured = str(dask.config.get("distributed.worker.multiprocessing-method"))
    if configured == "spawn" and "forkserver" in multiprocessing.get_all_start_methods():
        return "forkserver"
    return configured


def warm_versions() -> None:
    """Make Dask's version report once in this process, for every process forked from it.

    Each worker sends one when it registers, and the scheduler makes one for the first
    worker: ~20 ms the first time in a process (``importlib.metadata`` scans, and a fork and
    exec of ``uname -p`` for ``platform.uname().processor``), all on the path to a ready
    cluster.  Cached by Dask (and ``platform``) after the first call."""
    try:
        from distributed.versions import get_versions

        get_versions()
    except Exception:  # noqa: BLE001 - Dask makes it again when it needs it
        logger.debug("could not make Dask's version report in advance", exc_info=True)


def gpu_ids() -> tuple[str, ...]:
    """The GPUs this process may use: ``CUDA_VISIBLE_DEVICES`` if set, else those that
    ``nvidia-smi -L`` lists; none on a machine without NVIDIA's driver."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return tuple(d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1")
    import shutil
    import subprocess

    smi = shutil.which("nvidia-smi")
    if smi is None:
        return ()
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU "))


def _free_port(port: int) -> int:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return 0
    return port


def dashboard_available() -> bool:
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return False
    return True


#: Seconds the dashboard's first page may take to answer: rendered by bokeh, on a busy
#: scheduler it took over 2 s (a link dropped under load); one slower still is taken as served.
DASHBOARD_ANSWER_S = 10.0


def dashboard_link(client: Client) -> str | None:
    """The dashboard link of a running scheduler, or None when it serves no dashboard (no
    bokeh there: the page is not found, or the connection is refused)."""
    import urllib.request

    try:
        link = client.dashboard_link
    except Exception:  # noqa: BLE001 - no dashboard service at all
        return None
    try:
        with urllib.request.urlopen(link, timeout=DASHBOARD_ANSWER_S) as response:  # noqa: S310
            return link if response.status == 200 else None
    except TimeoutError:  # (slow to render the page, but there)
        return link
    except Exception as exc:  # noqa: BLE001 - no dashboard there (or no bokeh): no link
        if isinstance(getattr(exc, "reason", None), TimeoutError):
            return link
        return None


@dataclass
class ClusterHandle:
    """A client, and the cluster daskscore started for it (``None`` for an existing one)."""

    client: Client
    cluster: LocalCluster | None
    dashboard_link: str | None
    #: jobs leave their script initialised on these workers for the next job with the same
    #: code, model and settings (a cluster that outlives the job: the warm one, a caller's)
    keep_warm: bool = False
    #: the warm cluster of ``daskscore cluster start`` (daskscore started it, on this machine)
    warm: bool = False

    @property
    def embedded(self) -> bool:
        """Whether daskscore started this cluster (its workers share this machine's disk, and
        their number and threads are daskscore's to choose): the embedded one, or the warm
        one."""
        return self.cluster is not None or self.warm


class EarlyCluster:
    """A cluster context entered on a thread of its own, so that the cluster starts while the
    calling thread goes on (listing the inputs: its workers boot in their own processes);
    entering this object waits for it, leaving it closes the cluster."""

    def __init__(self, context: Any, connects: bool = False) -> None:
        self._context = context
        #: it only connects to a cluster (no process of its own to end): a Ctrl-C need not
        #: wait out its connect timeout, the start's thread closes it once it has started
        self._connects = connects
        self._abandoned = False
        self._lock = threading.Lock()
        self._handle: ClusterHandle | None = None
        self._error: BaseException | None = None
        #: set when the start has ended, either way.  (Not ``Thread.join``: a join that Ctrl-C
        #: interrupts can return early the next time, with the start still running, and the
        #: cluster was then closed while it started: "generator already executing".)
        self._started = threading.Event()
        self._thread = threading.Thread(
            target=self._start, name="daskscore-cluster-start", daemon=True
        )
        self._thread.start()

    def _start(self) -> None:
        try:
            self._handle = self._context.__enter__()
        except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
            self._error = exc
        finally:
            with self._lock:
                self._started.set()
                abandoned = self._abandoned
            if abandoned and self._error is None:
                self._context.__exit__(None, None, None)

    def _wait(self) -> None:
        while not self._started.wait(0.25):  # (short waits: Ctrl-C is seen at once)
            pass

    def check(self) -> ClusterHandle:
        """Wait for the start, and raise what it raised (then :meth:`discard`): a job checks
        its cluster before it claims the output folder, whose earlier results an overwrite
        removes.  Returns the started cluster's handle."""
        self._wait()
        if self._error is not None:
            raise self._error
        assert self._handle is not None
        return self._handle

    def __enter__(self) -> ClusterHandle:
        try:
            self._wait()
        except BaseException:  # (Ctrl-C while it starts: closed once it has started)
            self.discard()
            raise
        if self._error is not None:
            raise self._error
        assert self._handle is not None
        return self._handle

    def __exit__(self, *exc_info: Any) -> bool | None:
        return self._context.__exit__(*exc_info)

    def discard(self) -> None:
        """Close the cluster unused: the job was refused before it ran (or Ctrl-C came while
        it started: it is closed once it has started; a connection still being made is left to
        its thread, which closes it)."""
        if self._connects:
            with self._lock:
                if not self._started.is_set():
                    self._abandoned = True
                    return
        self._wait()
        if self._error is None:
            self._context.__exit__(None, None, None)


@contextlib.contextmanager
def local_cluster(
    workers: int,
    *,
    dashboard: bool = True,
    resources: dict[str, float] | None = None,
    memory_limit: str | int | None = None,
    **kwargs: Any,
) -> Iterator[ClusterHandle]:
    """Start a LocalCluster of ``workers`` single-threaded processes on loopback.

    ``memory_limit``: each worker's (``--worker-memory``, e.g. ``"4GB"``); its nanny restarts
    it above ``distributed.worker.memory.terminate`` of it.  None: Dask's own (the machine's
    memory shared out).

    Intra-op threads are capped per worker; the dashboard (if bokeh is installed) listens on
    127.0.0.1 only.  Worker and scheduler logs go to the ``distributed`` logger, not to stderr.
    ``resources`` are offered by every worker (``{"GPU": 1}`` for one GPU per worker).
    While the context is open, this process's nannies look for their worker's start-up message
    every :data:`HANDSHAKE_POLL_S` (for restarts during the job, too); Dask's own interval is
    back after.  Its nannies kill a worker whose ``run()`` overran its deadline without letting
    the worker's own watchdog act (:mod:`daskscore.worker.deadline`), and start worker processes
    that are not daemonic (:data:`NOT_DAEMONIC`: the script may start its own).
    """
    if resources:
        kwargs["resources"] = dict(resources)
    if memory_limit is not None:
        kwargs["memory_limit"] = memory_limit
    threads = intra_op_threads(workers)
    # this process's environment as it is now: a worker forked from a fork server started by
    # an earlier job would otherwise see the environment of that time (credentials set since...)
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_TRIM_THRESHOLD_"}
    env.update({name: str(threads) for name in THREAD_ENV_VARS})
    with_dashboard = dashboard and dashboard_available()
    # The scheduler always serves HTTP (health, metrics); bind it to loopback, on 8787 when
    # that is free and the dashboard is wanted, else on any free port, without a warning.
    port = _free_port(DASHBOARD_PORT) if with_dashboard else 0
    method = start_method()
    workers_skip_main()
    with _compat.nanny_handshake_interval(HANDSHAKE_POLL_S), _watch_exits(), environment_kept():
        warm_versions()  # (before the scheduler makes it while the first worker registers)
        with warnings.catch_warnings(), dask.config.set(_cluster_config(with_dashboard)):
            # another job may take 8787 between our check and the bind; Dask then picks a free
            # port itself, and the link below is the real one
            warnings.filterwarnings("ignore", message=r"Port \d+ is already in use")
            cluster = LocalCluster(
                **_cluster_kwargs(workers, port, with_dashboard), env=env, **kwargs
            )
        client = Client(cluster, set_as_default=False)
        try:
            watch_deadlines(client)
            # (also how a nanny restarts its worker during the job: Dask's spawn re-imports
            # the caller's __main__, which reran an unguarded script's job in every restart)
            during = {**KEEP_NANNIES, **NOT_DAEMONIC, METHOD_KEY: method}
            with dask.config.set(during):
                link = cluster.dashboard_link if with_dashboard else None
                yield ClusterHandle(client, cluster, link)
        finally:
            client.close()
            cluster.close()


def _cluster_kwargs(workers: int, port: int, with_dashboard: bool) -> dict[str, Any]:
    """LocalCluster's arguments: ``workers`` single-threaded processes, all on loopback."""
    return {
        "n_workers": workers,
        "threads_per_worker": 1,
        "processes": True,
        "host": "127.0.0.1",
        "dashboard_address": f"127.0.0.1:{port}",
        "scheduler_kwargs": {"dashboard": with_dashboard},
        "silence_logs": logging.CRITICAL,
    }


def _cluster_config(with_dashboard: bool) -> dict[str, Any]:
    """The Dask configuration the embedded cluster is started with."""
    config: dict[str, Any] = {
        **NANNY_ENV_UNSET,
        **NOT_DAEMONIC,
        METHOD_KEY: start_method(),
        # Every Dask server (the scheduler, each nanny, each worker) wakes its event loop every
        # 20 ms by default only to measure how late it wakes: in a worker that wake takes the
        # GIL from the thread running run(), and on two cores the driver's three servers
        # preempt the workers 150 times a second.  A blocked loop is still reported (after
        # distributed.admin.tick.limit, 3 s).
        "distributed.admin.tick.interval": TICK_INTERVAL,
    }
    if not with_dashboard:
        # the statistical profiler samples every thread each 10 ms for the dashboard's profile
        # page: without a dashboard nobody can look at it
        config["distributed.worker.profile.enabled"] = False
    return config


@contextlib.contextmanager
def existing_cluster(address: str, security: Any = None) -> Iterator[ClusterHandle]:
    """Connect to a running scheduler at ``address`` (``tls://`` ones with ``security``)."""
    if address.startswith("tls://") and security is None and not _tls_configured():
        # refused here: a Client without TLS settings hangs on a tls:// address
        raise UsageError(
            f"cannot connect to the Dask scheduler at {address}: a tls:// scheduler needs "
            "--tls-ca-file, --tls-cert and --tls-key (or Dask's distributed.comm.tls "
            "configuration)."
        )
    try:
        client = Client(address, set_as_default=False, security=security)
    except (OSError, TypeError, ValueError) as exc:
        raise UsageError(
            f"cannot connect to the Dask scheduler at {address}: {type(exc).__name__}: {exc}."
        ) from None
    try:
        yield ClusterHandle(client, None, dashboard_link(client))
    finally:
        client.close()


def _tls_configured() -> bool:
    """Whether Dask's own configuration gives a client TLS files."""
    return any(
        dask.config.get(f"distributed.comm.tls.{key}", None)
        for key in ("ca-file", "client.cert", "client.key")
    )


def tls_security(ca_file: str | None, cert: str | None, key: str | None) -> Any:
    """A ``Security`` for a TLS-secured scheduler from the three PEM files (None when no file
    is given: Dask's config, ``distributed.comm.tls.*``, applies then)."""
    if not (ca_file or cert or key):
        return None
    from distributed.security import Security

    return Security(
        tls_ca_file=ca_file, tls_client_cert=cert, tls_client_key=key, require_encryption=True
    )


def parse_resources(text: str | dict[str, float] | None) -> dict[str, float]:
    """``"GPU=1,MEM=2e9"`` as ``{"GPU": 1.0, "MEM": 2e9}`` (a dict passes through).

    Examples
    --------
    >>> parse_resources("GPU=1, MEM=2e9")
    {'GPU': 1.0, 'MEM': 2000000000.0}
    """
    if not text:
        return {}
    if isinstance(text, dict):
        return {str(k): float(v) for k, v in text.items()}
    found: dict[str, float] = {}
    for part in text.split(","):
        name, sep, amount = part.strip().partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            found[name.strip()] = float(amount)
        except ValueError:
            raise UsageError(
                f"--resources: '{part.strip()}' is not NAME=AMOUNT (e.g. GPU=1 or GPU=1,MEM=2e9)."
            ) from None
    return found
