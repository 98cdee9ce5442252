"""The warm cluster: a LocalCluster that outlives its jobs, so that they skip the cluster's
start-up and, for the same deployment, the script's ``init()``.

``daskscore cluster start`` runs :func:`daskscore.cluster.warmserver.serve` in a detached
process (its own session, its output in a log file beside the state file): a scheduler and
single-threaded worker processes on 127.0.0.1, forked from a fork server that imported the
usual scoring libraries (those of :data:`daskscore.worker.script.PRELOADABLE` that are
installed), with the same thread caps as the embedded cluster.  Its address and processes are
written to a state file (:func:`state_path`); ``daskscore run`` (and ``daskscore.run``) find
it there (:func:`find_running`) and connect to it instead of starting an embedded cluster.
``daskscore cluster stop`` sends the server SIGTERM: it closes the cluster (each worker
uninstalls the scripts it kept initialised: their ``shutdown()`` runs, given
``warmserver.SHUTDOWN_S``) and removes the state file; a process still there after
:data:`STOP_WAIT_S` is killed with its process group.  ``cluster start`` and ``cluster stop``
hold a lock file beside the state file (``cluster.json.lock``): two at once start one cluster,
and a stop waits for a start under way.

Every question to the scheduler is bounded (:mod:`daskscore.cluster.warmask`): one that does
not answer is said, and ``cluster stop`` still ends the recorded processes.  A state file whose
server is gone (killed, a reboot) is *stale*: every command says so and removes it.  One that
is not a state file (truncated, edited) is *corrupt*: every command says so, naming it, and
``cluster stop`` ends the server whose command line names that file, and removes it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from daskscore.cluster import warmask
from daskscore.cluster.local import ClusterHandle, parse_resources
from daskscore.cluster.warmask import NoAnswer
from daskscore.cluster.warmstate import (
    CorruptState,
    WarmState,
    kill_group,
    locked,
    remove_state,
    running,
    state_path,
    wait_gone,
)
from daskscore.errors import UsageError
from daskscore.worker.localize import offers
from daskscore.worker.threads import cpu_count

#: Seconds ``cluster start`` waits for the cluster to be up.
START_TIMEOUT_S = 120.0
#: A job's worker plugin (``ScoringPlugin``: ``daskscore-<job id>``), installed while it runs
JOB_PLUGIN = re.compile(r"daskscore-[0-9a-f]{12}")
#: Seconds ``cluster stop`` gives the server to close after SIGTERM (each worker has 30 s for
#: its scripts' shutdown(), ``warmserver.SHUTDOWN_S``) before it kills what is left.
STOP_WAIT_S = 45.0
#: Seconds ``cluster start`` and ``cluster stop`` wait for another one's lock.
LOCK_WAIT_S = START_TIMEOUT_S + STOP_WAIT_S + 15.0
#: The server process's program (``-c``: no main module for the workers to import again).
SERVER_MAIN = "import sys; from daskscore.cluster.warmserver import main; sys.exit(main())"


# ---------------------------------------------------------------- used by jobs


def find_running(
    resources: dict[str, float] | None = None,
    workers: int | None = None,
    notify: Callable[[str], None] | None = None,
    dashboard: bool = False,
    worker_memory: str | int | None = None,
) -> WarmState | None:
    """The warm cluster a job should use, or None (none runs, it is stale — the file is removed
    — or corrupt, its workers lack the job's ``resources``, or the job sizes its workers'
    memory).  What is decided is said to ``notify``."""
    say = notify or (lambda message: None)
    path = state_path()
    try:
        state = WarmState.read(path)
    except CorruptState as exc:
        say(f"daskscore: {exc} Starting an embedded cluster.")
        return None
    if state is None:
        return None
    if not state.alive:
        remove_state(path, state.pid)
        say(f"daskscore: {state.stale_message()}; starting an embedded cluster.")
        return None
    if resources and not offers(state.resources, resources):
        wanted = ",".join(f"{k}={v:g}" for k, v in resources.items())
        say(f"Not using the warm cluster at {state.address}: its workers do not offer {wanted}.")
        return None
    if worker_memory is not None:
        say(
            f"Not using the warm cluster at {state.address}: --worker-memory sets the memory of "
            "a fresh embedded cluster's workers (the warm cluster's have their own limit)."
        )
        return None
    size = f"{state.workers} worker{'s' if state.workers != 1 else ''}"
    say(
        f"Using the warm cluster at {state.address} ({size}; `daskscore cluster stop` stops "
        "it, --no-warm runs on a fresh embedded cluster)."
    )
    if workers and workers != state.workers:
        say(f"--workers {workers} does not apply: the warm cluster has {size}.")
    if dashboard and not state.dashboard_link:
        say(
            "The warm cluster has no Dask dashboard (`daskscore cluster start --dashboard` "
            "starts it with one)."
        )
    return state


@contextlib.contextmanager
def warm_cluster(state: WarmState) -> Iterator[ClusterHandle]:
    """A client of the warm cluster (jobs keep their script initialised on its workers); a
    scheduler that does not answer in ``warmask.ANSWER_S`` is a :class:`UsageError`."""
    from distributed import Client

    try:
        warmask.answers(state.address)
        client = Client(state.address, set_as_default=False, timeout=warmask.answer_s())
    except (NoAnswer, OSError, TypeError, ValueError) as exc:
        why = str(exc) if isinstance(exc, NoAnswer) else f"{type(exc).__name__}: {exc}"
        raise UsageError(
            f"the warm cluster recorded in {state.path} (process {state.pid}) does not answer "
            f"at {state.address} ({why}); nothing was run or written. `daskscore cluster "
            "stop` stops it (its processes are killed if they do not close) and `daskscore "
            "cluster start` starts a new one; or pass --no-warm to run on an embedded cluster."
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
    and True (or the state of the one already running — or started meanwhile by another
    ``cluster start`` — and False)."""
    path = state_path()
    wanted = parse_resources(resources)
    with locked(path, LOCK_WAIT_S):
        state = WarmState.read(path)
        if state is not None and state.alive:
            if workers and workers != state.workers:
                raise UsageError(
                    f"a warm cluster of {state.workers} workers is running at {state.address}; "
                    "`daskscore cluster stop` it first to start one of another size."
                )
            return state, False
        if state is not None:
            remove_state(path, state.pid)
        return _launch(path, workers, dashboard, wanted), True


def _launch(
    path: Path, workers: int | None, dashboard: bool, wanted: dict[str, float]
) -> WarmState:
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
            close_fds=True,  # (the lock stays this process's)
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        with contextlib.suppress(CorruptState):  # (written atomically: not ours then)
            state = WarmState.read(path)
            if state is not None and state.pid == proc.pid:
                return state
        if proc.poll() is not None:
            raise UsageError(
                f"the warm cluster did not start (exit {proc.returncode}); its log, {log}:\n"
                + _tail(log)
            )
        time.sleep(0.05)
    kill_group(proc.pid)
    raise UsageError(f"the warm cluster did not start in {START_TIMEOUT_S:g} s; see {log}")


def stop() -> str:
    """Stop the warm cluster; return what was done, as a sentence."""
    path = state_path()
    with locked(path, LOCK_WAIT_S):
        try:
            state = WarmState.read(path)
        except CorruptState as exc:
            return _stop_corrupt(path, exc.why)
        if state is None:
            return "No warm cluster is running."
        if not state.alive:
            remove_state(path, state.pid)
            return f"No warm cluster is running: {state.stale_message()}."
        try:
            jobs, silent = warmask.ask(state.address, _count_jobs), ""
        except NoAnswer as exc:
            jobs = 0
            silent = (
                f" Its scheduler did not answer ({exc}): the jobs running on it, if any, were "
                "not counted."
            )
        log_from = _size(state.log)
        forced = _end(state.pid, state.created)
        wait_gone(state.pids, 5.0)
        remove_state(path, state.pid)
    how = f" (killed: it had not closed {STOP_WAIT_S:g} s after SIGTERM)" if forced else ""
    text = f"Stopped the warm cluster at {state.address}{how}." + silent
    cut = _cut_note(state.log, log_from)
    if cut:
        text += f" Not cleanly: {cut}."
    if jobs:
        text += (
            f" It had {jobs} daskscore job{'s' if jobs > 1 else ''} installed: one still "
            "running ends within 20 s (ClusterLost, exit code 1), keeping what it did; the same "
            "command with --resume finishes it."
        )
    return text


def _end(pid: int, created: float | None) -> bool:
    """SIGTERM the server (and SIGCONT, should it be stopped), wait :data:`STOP_WAIT_S` for
    it, then kill its process group; whether it had to be killed."""
    for sig in (signal.SIGTERM, signal.SIGCONT):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
    deadline = time.monotonic() + STOP_WAIT_S
    while running(pid, created) and time.monotonic() < deadline:
        time.sleep(0.05)
    forced = running(pid, created)
    kill_group(pid)  # whatever outlived the server: workers, the fork server
    return forced


def _stop_corrupt(path: Path, why: str) -> str:
    """``cluster stop`` with a corrupt state file: end the servers whose command line names
    it (their processes found without the file), and remove it."""
    ended = []
    for proc in warmask.servers_of(path, SERVER_MAIN):
        with contextlib.suppress(Exception):
            pids = [proc.pid, *(p.pid for p in proc.children(recursive=True))]
            _end(proc.pid, proc.create_time())
            wait_gone(pids, 5.0)
            ended.append(str(proc.pid))
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    what = (
        f"stopped the warm cluster started for it (process {', '.join(ended)})"
        if ended
        else "no warm cluster started for it was running"
    )
    return f"The state file {path} was corrupt ({why}): {what}; removed the file."


def _size(log: str) -> int:
    try:
        return os.path.getsize(log) if log else 0
    except OSError:
        return 0


def _cut_note(log: str, offset: int) -> str:
    """What the server logged of workers killed in their close since ``offset``."""
    from daskscore.cluster.warmserver import CUT

    try:
        with open(log, encoding="utf-8", errors="replace") as fh:
            fh.seek(offset)
            lines = fh.read().splitlines()
    except (OSError, ValueError):
        return ""
    return "; ".join(line[len(CUT) :].strip() for line in lines if line.startswith(CUT))


def _job_plugins(dask_scheduler: Any = None) -> int:
    """Run on the scheduler: the daskscore jobs installed now (their worker plugins)."""
    return sum(1 for name in dask_scheduler.worker_plugins if JOB_PLUGIN.fullmatch(str(name)))


def _count_jobs(client: Any) -> int:
    return int(client.run_on_scheduler(_job_plugins))


def status() -> tuple[WarmState | None, str]:
    """The warm cluster's state and a description of it (its workers, the scripts they keep
    initialised); ``(None, why)`` when none runs, or it does not answer."""
    path = state_path()
    state = WarmState.read(path)
    if state is None:
        return None, f"No warm cluster is running (no {path})."
    if not state.alive:
        remove_state(path, state.pid)
        return None, f"No warm cluster is running: {state.stale_message()}."
    lines = [
        f"Warm cluster at {state.address}: process {state.pid}, up "
        f"{_duration(time.time() - state.started)}, state in {state.path}, log in {state.log}"
    ]
    try:
        lines += warmask.ask(state.address, lambda client: _describe_workers(state, client))
    except NoAnswer as exc:
        lines.append(
            f"Its scheduler does not answer ({exc}): jobs cannot use it. `daskscore cluster "
            "stop` stops it (its processes are killed if they do not close)."
        )
        return None, "\n".join(lines)
    if state.dashboard_link:
        lines.append(f"Dask dashboard: {state.dashboard_link}")
    return state, "\n".join(lines)


def act(
    action: str, workers: int | None = None, dashboard: bool = False, resources: str | None = None
) -> tuple[bool, str]:
    """``daskscore cluster ACTION``: whether it went well (``status``: whether one runs and
    answers), and what to print."""
    if action == "status":
        state, text = status()
        return state is not None, text
    if action == "stop":
        return True, stop()
    state, started = start(workers, bool(dashboard), resources)
    verb = "Started" if started else "Already running:"
    text = f"{verb} the warm cluster at {state.address} ({state.workers} workers)."
    if dashboard and not started and not state.dashboard_link:
        text += " It has no dashboard: `daskscore cluster stop`, then start it with --dashboard."
    if state.dashboard_link:
        text += f"\nDask dashboard: {state.dashboard_link}"
    return True, text


def _describe_workers(state: WarmState, client: Any) -> list[str]:
    from daskscore.worker.plugin import warm_report

    n = len(client.scheduler_info(n_workers=-1)["workers"])
    reports = client.run(warm_report)
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
