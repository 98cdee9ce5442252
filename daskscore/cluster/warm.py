"""The warm cluster: a LocalCluster that outlives its jobs, so that they skip the cluster's
start-up and, for the same deployment, the script's ``init()``.

``daskscore cluster start`` runs :func:`serve` in a detached process (its own session, its
output in a log file beside the state file): a scheduler and single-threaded worker processes on
127.0.0.1, forked from a fork server that imported the usual scoring libraries (those of
:data:`daskscore.worker.script.PRELOADABLE` that are installed), with the same thread caps as
the embedded cluster.  Its
address and processes are written to a state file (:func:`state_path`); ``daskscore run`` (and
``daskscore.run``) find it there (:func:`find_running`) and connect to it instead of starting an
embedded cluster.  ``daskscore cluster stop`` sends the server SIGTERM: it closes the cluster
(each worker uninstalls the scripts it kept initialised: their ``shutdown()`` runs) and removes
the state file; a process still there after the grace period is killed with its process group.

A state file whose server is gone (killed, a reboot) is *stale*: every command says so and
removes it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from daskscore.cluster.local import ClusterHandle, local_cluster, parse_resources
from daskscore.errors import UsageError
from daskscore.worker.localize import offers
from daskscore.worker.threads import cpu_count, intra_op_threads

#: The state file's path, when set (tests, several clusters side by side).
STATE_ENV = "DASKSCORE_CLUSTER_STATE"
#: Seconds ``cluster start`` waits for the cluster to be up.
START_TIMEOUT_S = 120.0
#: A job's worker plugin (``ScoringPlugin``: ``daskscore-<job id>``), installed while it runs
JOB_PLUGIN = re.compile(r"daskscore-[0-9a-f]{12}")
#: Seconds ``cluster stop`` gives the cluster to close (shutdown() of the scripts included)
#: before it kills what is left.
STOP_GRACE_S = 30.0
#: Seconds a job waits to connect to the warm cluster before it gives up on it.
CONNECT_TIMEOUT_S = 10.0
#: The server process's program (``-c``: no main module for the workers to import again).
SERVER_MAIN = "import sys; from daskscore.cluster.warm import main; sys.exit(main())"


def state_path() -> Path:
    """``$DASKSCORE_CLUSTER_STATE``, else ``${XDG_CACHE_HOME:-~/.cache}/daskscore/cluster.json``."""
    chosen = os.environ.get(STATE_ENV)
    if chosen:
        return Path(chosen).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "daskscore" / "cluster.json"


@dataclass
class WarmState:
    """What the state file says of a running warm cluster."""

    address: str
    pid: int
    #: the server process's start time (``psutil``), so that a reused pid is not taken for it
    created: float
    workers: int
    threads: int
    dashboard_link: str | None = None
    resources: dict[str, float] = field(default_factory=dict)
    #: every process of the cluster when it started: server, fork server, workers, ...
    pids: list[int] = field(default_factory=list)
    log: str = ""
    started: float = 0.0
    path: str = ""

    @classmethod
    def read(cls, path: Path) -> WarmState | None:
        """The state in ``path``; None when there is none (or it is not a state file)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
            return cls(**{**known, "path": str(path)})
        except (OSError, ValueError, TypeError):
            return None

    def write(self, path: Path) -> None:
        """Write atomically: a reader sees the whole state or none."""
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = path.with_name(f".{path.name}.{os.getpid()}")
        data = {k: v for k, v in asdict(self).items() if k != "path"}
        scratch.write_text(json.dumps(data, indent=2), encoding="utf-8")
        os.replace(scratch, path)

    @property
    def alive(self) -> bool:
        """Whether the server process still runs (the same process, not a reused pid)."""
        return _running(self.pid, self.created)

    def stale_message(self) -> str:
        return (
            f"the warm cluster recorded in {self.path} is gone (its process {self.pid} is not "
            "running); removed the stale state file"
        )


def _running(pid: int, created: float | None = None) -> bool:
    import psutil

    try:
        proc = psutil.Process(pid)
        if created is not None and abs(proc.create_time() - created) > 1.0:
            return False
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _remove(path: Path, pid: int | None = None) -> None:
    """Remove the state file (only if it still names ``pid``, when given)."""
    if pid is not None:
        current = WarmState.read(path)
        if current is None or current.pid != pid:
            return
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


# ---------------------------------------------------------------- used by jobs


def find_running(
    resources: dict[str, float] | None = None,
    workers: int | None = None,
    notify: Callable[[str], None] | None = None,
) -> WarmState | None:
    """The warm cluster a job should use, or None (none runs, it is stale — the file is removed
    — or its workers lack the job's ``resources``).  What is decided is said to ``notify``."""
    say = notify or (lambda message: None)
    path = state_path()
    state = WarmState.read(path)
    if state is None:
        return None
    if not state.alive:
        _remove(path, state.pid)
        say(f"daskscore: {state.stale_message()}; starting an embedded cluster.")
        return None
    if resources and not offers(state.resources, resources):
        wanted = ",".join(f"{k}={v:g}" for k, v in resources.items())
        say(f"Not using the warm cluster at {state.address}: its workers do not offer {wanted}.")
        return None
    size = f"{state.workers} worker{'s' if state.workers != 1 else ''}"
    say(
        f"Using the warm cluster at {state.address} ({size}; `daskscore cluster stop` stops "
        "it, --no-warm runs on a fresh embedded cluster)."
    )
    if workers and workers != state.workers:
        say(f"--workers {workers} does not apply: the warm cluster has {size}.")
    return state


@contextlib.contextmanager
def warm_cluster(state: WarmState) -> Iterator[ClusterHandle]:
    """A client of the warm cluster (jobs keep their script initialised on its workers)."""
    from distributed import Client

    try:
        client = Client(state.address, set_as_default=False, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TypeError, ValueError) as exc:
        raise UsageError(
            f"cannot connect to the warm cluster at {state.address} ({type(exc).__name__}: "
            f"{exc}). `daskscore cluster stop` and start it again, or pass --no-warm."
        ) from None
    try:
        yield ClusterHandle(client, None, state.dashboard_link, keep_warm=True, warm=True)
    finally:
        client.close()


# ---------------------------------------------------------------- the commands


def start(
    workers: int | None = None, dashboard: bool = False, resources: str | None = None
) -> tuple[WarmState, bool]:
    """Start the warm cluster in a detached process and wait until it is up; return its state
    and True (or the state of the one already running, and False)."""
    path = state_path()
    wanted = parse_resources(resources)
    state = WarmState.read(path)
    if state is not None and state.alive:
        if workers and workers != state.workers:
            raise UsageError(
                f"a warm cluster of {state.workers} workers is running at {state.address}; "
                "`daskscore cluster stop` it first to start one of another size."
            )
        return state, False
    if state is not None:
        _remove(path, state.pid)
    path.parent.mkdir(parents=True, exist_ok=True)
    log = path.with_suffix(".log")
    command = [sys.executable, "-c", SERVER_MAIN, "--state", str(path)]
    command += ["--workers", str(workers or cpu_count())]
    if dashboard:
        command.append("--dashboard")
    if wanted:
        command += ["--resources", ",".join(f"{k}={v:g}" for k, v in wanted.items())]
    with open(log, "wb") as out:
        proc = subprocess.Popen(  # noqa: S603 - our own module, with this interpreter
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # not ended by the terminal's hang-up or Ctrl-C
            close_fds=True,
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        state = WarmState.read(path)
        if state is not None and state.pid == proc.pid:
            return state, True
        if proc.poll() is not None:
            raise UsageError(
                f"the warm cluster did not start (exit {proc.returncode}); its log, {log}:\n"
                + _tail(log)
            )
        time.sleep(0.05)
    _kill_group(proc.pid)
    raise UsageError(f"the warm cluster did not start in {START_TIMEOUT_S:g} s; see {log}")


def stop() -> str:
    """Stop the warm cluster; return what was done, as a sentence."""
    path = state_path()
    state = WarmState.read(path)
    if state is None:
        return "No warm cluster is running."
    if not state.alive:
        _remove(path, state.pid)
        return f"No warm cluster is running: {state.stale_message()}."
    running = _running_jobs(state)
    with contextlib.suppress(ProcessLookupError):
        os.kill(state.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while _running(state.pid, state.created) and time.monotonic() < deadline:
        time.sleep(0.05)
    forced = _running(state.pid, state.created)
    _kill_group(state.pid)  # whatever outlived the server: workers, the fork server
    _wait_gone(state.pids, 5.0)
    _remove(path, state.pid)
    how = " (killed: it did not close in time)" if forced else ""
    text = f"Stopped the warm cluster at {state.address}{how}."
    if running:
        text += (
            f" It had {running} daskscore job{'s' if running > 1 else ''} installed: one still "
            "running ends within 20 s (ClusterLost, exit code 1), keeping what it did; the same "
            "command with --resume finishes it."
        )
    return text


def _job_plugins(dask_scheduler: Any = None) -> int:
    """Run on the scheduler: the daskscore jobs installed now (their worker plugins)."""
    return sum(1 for name in dask_scheduler.worker_plugins if JOB_PLUGIN.fullmatch(str(name)))


def _running_jobs(state: WarmState) -> int:
    """How many daskscore jobs run on the warm cluster now (0 when it cannot tell)."""
    from distributed import Client

    try:
        with Client(state.address, set_as_default=False, timeout=CONNECT_TIMEOUT_S) as client:
            return int(client.run_on_scheduler(_job_plugins))
    except Exception:  # noqa: BLE001 - only a note depends on it
        return 0


def status() -> tuple[WarmState | None, str]:
    """The warm cluster's state and a description of it (its workers, the scripts they keep
    initialised); ``(None, why)`` when none runs."""
    path = state_path()
    state = WarmState.read(path)
    if state is None:
        return None, f"No warm cluster is running (no {path})."
    if not state.alive:
        _remove(path, state.pid)
        return None, f"No warm cluster is running: {state.stale_message()}."
    lines = [
        f"Warm cluster at {state.address}: process {state.pid}, up "
        f"{_duration(time.time() - state.started)}, state in {state.path}, log in {state.log}"
    ]
    lines += _describe_workers(state)
    if state.dashboard_link:
        lines.append(f"Dask dashboard: {state.dashboard_link}")
    return state, "\n".join(lines)


def act(
    action: str, workers: int | None = None, dashboard: bool = False, resources: str | None = None
) -> tuple[bool, str]:
    """``daskscore cluster ACTION``: whether it went well (``status``: whether one runs), and
    what to print."""
    if action == "status":
        state, text = status()
        return state is not None, text
    if action == "stop":
        return True, stop()
    state, started = start(workers, bool(dashboard), resources)
    verb = "Started" if started else "Already running:"
    text = f"{verb} the warm cluster at {state.address} ({state.workers} workers)."
    if state.dashboard_link:
        text += f"\nDask dashboard: {state.dashboard_link}"
    return True, text


def _describe_workers(state: WarmState) -> list[str]:
    from distributed import Client

    from daskscore.worker.plugin import warm_report

    try:
        with Client(state.address, set_as_default=False, timeout=CONNECT_TIMEOUT_S) as client:
            n = len(client.scheduler_info(n_workers=-1)["workers"])
            reports = client.run(warm_report)
    except Exception as exc:  # noqa: BLE001 - say it, do not fail the status
        return [f"(its scheduler did not answer: {type(exc).__name__}: {exc})"]
    lines = [f"{n} worker{'s' if n != 1 else ''} of {state.threads} intra-op thread(s) each"]
    scripts: dict[str, int] = {}
    for report in reports.values():  # (each worker once, however many copies it holds)
        for script in {entry["script"] for entry in report.values()}:
            scripts[script] = scripts.get(script, 0) + 1
    for script, count in sorted(scripts.items()):
        lines.append(f"initialised: {script} on {count} worker{'s' if count != 1 else ''}")
    if not scripts:
        lines.append("no scoring script initialised yet")
    return lines


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError as exc:
        return f"({exc})"


def _kill_group(pgid: int) -> None:
    """SIGKILL what is left of the process group ``pgid`` (the server started its own)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _wait_gone(pids: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(_running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


# ---------------------------------------------------------------- the server process


def serve(path: Path, workers: int, dashboard: bool, resources: dict[str, float]) -> int:
    """Run the warm cluster until SIGTERM (or SIGINT), or until the state file no longer
    names this process; then close it and remove the state file."""
    import importlib.util

    import psutil

    from daskscore.cluster.forkserver import prestart_workers
    from daskscore.worker.script import PRELOADABLE

    stop_event = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop_event.set())
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # forked from this process while it has a single thread; it imports the usual scoring
    # libraries once, for every worker (and every worker that restarts)
    prestart_workers(workers, [name for name in PRELOADABLE if importlib.util.find_spec(name)])
    me = psutil.Process()
    with local_cluster(workers, dashboard=dashboard, resources=resources or None) as handle:
        state = WarmState(
            address=handle.client.scheduler.address,
            pid=os.getpid(),
            created=me.create_time(),
            workers=workers,
            threads=intra_op_threads(workers),
            dashboard_link=handle.dashboard_link,
            resources=dict(resources),
            pids=[os.getpid(), *(p.pid for p in me.children(recursive=True))],
            log=str(path.with_suffix(".log")),
            started=time.time(),
        )
        state.write(path)
        print(f"warm cluster up at {state.address} (process {state.pid})", flush=True)
        try:
            while not stop_event.wait(1.0):
                current = WarmState.read(path)
                if current is None or current.pid != state.pid:
                    print("the state file no longer names this cluster: closing", flush=True)
                    break
        finally:
            _remove(path, state.pid)
    print("warm cluster closed", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """The server process (:data:`SERVER_MAIN`): ``--state PATH --workers N [--dashboard]
    [--resources ...]``."""
    parser = argparse.ArgumentParser(prog="daskscore-warm-cluster")
    parser.add_argument("--state", required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--dashboard", action="store_true")
    parser.add_argument("--resources", default=None)
    args = parser.parse_args(argv)
    return serve(Path(args.state), args.workers, args.dashboard, parse_resources(args.resources))
