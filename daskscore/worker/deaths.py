"""Worker processes that die while a job is installed: what the driver can learn of them.

``init()`` (or the script's import) may end its own process — ``os._exit``, a crash in native
code, the out-of-memory killer — where no exception can be caught and reported.  Two records
outlive such a process:

* **an install mark**, worker side (:class:`InstallMark`): while
  :meth:`~daskscore.worker.runtime.JobRuntime.install` runs, a small JSON file
  ``<staging>/installing/<pid>.json`` says which worker process it is, what it is doing
  (``preparing``, ``import``, ``init()``) and where its prints went; it is removed when the
  install returns, so a mark left by a process that is gone names the one that died.  It is
  written only where the driver made the folder (:func:`reset_marks`): a shipped job's
  workers do not see the driver's disk, and write none.
  The mark also says where its pid means that process (the host, the pid namespace:
  :func:`process_place`) and when the process started: where the driver's is the same, it
  sees at once that a mark's process is gone (:func:`mark_gone`), however it ended — an exit
  with status 0 too, which Dask's nanny does not log.
* **its exit status**, nanny side: a nanny logs "Worker process N exited with status S" (or
  "was killed by signal S") when its worker process ends; :class:`ExitLog` keeps those by pid
  in the nanny's process (the driver's, for the embedded cluster; the nannies' own elsewhere,
  installed by the nanny plugin :class:`~daskscore.worker.deadline.DeadlineWatch`), and
  :func:`nanny_exits` hands them to the driver (``Client.run(..., nanny=True)``).

Exit statuses follow :mod:`multiprocessing`: ``-N`` for a process killed by signal ``N``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: The folder, in the job's staging folder, of the install marks.
MARKS = "installing"
#: Exit statuses kept per process (the latest few thousand deaths).
KEPT = 4096

_DEATH = re.compile(r"Worker process (\d+) (?:was killed by signal (\d+)|exited with status (\d+))")
#: pid -> (exit status, time.monotonic() of the death), in this process (a nanny's)
_EXITS: OrderedDict[int, tuple[int, float]] = OrderedDict()
_LOCK = threading.Lock()
_users = 0
_handler: logging.Handler | None = None


# ------------------------------------------------------------------------------ nanny side


class ExitLog(logging.Handler):
    """Keeps the exit statuses that this process's nannies log for their worker processes."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            found = _DEATH.search(record.getMessage())
        except Exception:  # noqa: BLE001 - a log line never breaks a job
            return
        if found:
            code = -int(found[2]) if found[2] else int(found[3])
            _EXITS[int(found[1])] = (code, time.monotonic())
            while len(_EXITS) > KEPT:
                _EXITS.popitem(last=False)
            end_group(int(found[1]))


def watch_exits() -> None:
    """Keep the exit statuses this process's nannies log, until as many
    :func:`unwatch_exits` (one handler, however many callers)."""
    global _users, _handler
    with _LOCK:
        _users += 1
        if _handler is None:
            _handler = ExitLog(logging.INFO)
            logging.getLogger("distributed.nanny").addHandler(_handler)


def unwatch_exits() -> None:
    global _users, _handler
    with _LOCK:
        _users = max(0, _users - 1)
        if not _users and _handler is not None:
            logging.getLogger("distributed.nanny").removeHandler(_handler)
            _handler = None


def exit_status(pid: int | None) -> int | None:
    """How worker process ``pid`` of a nanny in this process ended, if one logged it."""
    found = _EXITS.get(pid) if pid else None
    return found[0] if found else None


def exit_time(pid: int | None) -> float | None:
    """When worker process ``pid`` of a nanny in this process died (``time.time()``, as its
    nanny logged the death), if one logged it."""
    found = _EXITS.get(pid) if pid else None
    return time.time() - (time.monotonic() - found[1]) if found else None


def note_replaced(pids: list[int], dask_worker: Any = None) -> None:
    """Run on the nannies (``Client.run(..., nanny=True)``) before worker processes ``pids``
    are replaced by fresh ones: they end as processes that exited (status 0), which a clean
    exit does not log, so that an install of another job that was sent to one of them meanwhile
    takes its end for a death that is not its own (see ``ScriptInstall``)."""
    for pid in pids:
        _EXITS[int(pid)] = (0, time.monotonic())


def nanny_exits(dask_worker: Any = None) -> dict[str, Any]:
    """Run on a nanny (``Client.run(nanny_exits, nanny=True)``): the pid of its worker process
    now, and the exit statuses this process's nannies logged, with their age in seconds."""
    now = time.monotonic()
    pid = getattr(dask_worker, "pid", None)
    return {"pid": pid, "exits": {p: (code, now - at) for p, (code, at) in list(_EXITS.items())}}


def describe_exit(status: int | None, number: bool = True) -> str:
    """``exit code 3``, ``killed by signal SIGSEGV (11)`` (``number``: with the signal's
    number); ``""`` when not known."""
    if status is None:
        return ""
    if status >= 0:
        return f"exit code {status}"
    try:
        name = signal.Signals(-status).name
    except ValueError:
        return f"killed by signal {-status}"
    return f"killed by signal {name} ({-status})" if number else f"killed by signal {name}"


#: Signals of a crash in native code (the process's own fault, not sent from outside).
CRASHES = {signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT}


def exit_cause(status: int, call: str) -> str:
    """How a worker process ended (its exit ``status``, see the module's doc) while the
    script's ``call`` (``init()``, ``run()``) ran, in words, and what usually does that."""
    if status >= 0:
        return (
            f"it exited with code {status}, as os._exit({status}) or C's exit({status}) in "
            "the script or a library it calls ends a process"
        )
    what = describe_exit(status)
    if -status == signal.SIGKILL:
        return (
            f"it was {what}, which comes from outside the process: most often the kernel's "
            f"out-of-memory killer, when {call} takes more memory than the machine (or its "
            "container) has free"
        )
    if -status in CRASHES:
        return f"it was {what}, a crash in native code (a C extension, or a library {call} calls)"
    return f"it was {what}, sent from outside the process"


def end_group(pid: int) -> None:
    """End what is left of the process group that worker process ``pid`` led (see
    :func:`lead_group`): the processes its ``init()`` or ``run()`` started, which outlive a
    worker that crashed, was killed for memory or exited with ``os._exit`` (they also keep
    the driver's output pipes open, so a captured ``daskscore run`` would not return until
    they end).  Nothing happens where no such group is left (no process of it runs), or
    where the worker did not lead one."""
    if not pid or not hasattr(os, "killpg"):
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:  # (no such group: nothing left, or the worker led none)
        return
    logger.info("ended the processes that worker process %d had started and left running", pid)


def watching() -> bool:
    """Whether this process keeps its nannies' exit statuses (an embedded cluster's)."""
    return _users > 0


# ------------------------------------------------------------------------------ worker side


def lead_group() -> None:
    """Make this worker process the leader of a process group of its own (POSIX), before any
    script code runs in it: only for a worker that a nanny started, whose process is its own.
    The processes the script starts join that group, and stay in it when the worker dies and
    they are handed to another parent: its nanny then ends them (:func:`end_group`), and so
    does the group's guard (:func:`guard_group`) when the nanny is gone too (its driver was
    killed).  Its stdin is not the terminal's (multiprocessing gives it ``/dev/null``), so
    leaving the terminal's foreground group changes nothing else: the driver (or the nanny),
    not the terminal's Ctrl-C, stops it."""
    if not hasattr(os, "setpgid"):
        return
    try:
        if os.getpgid(0) != os.getpid():
            os.setpgid(0, 0)
    except OSError:  # (a session leader, say: the group cannot change)
        logger.debug("worker process %d stays in its process group", os.getpid(), exc_info=True)
        return
    guard_group()


def leads_group() -> bool:
    """Whether this process leads its process group (:func:`lead_group` made it)."""
    return hasattr(os, "getpgid") and os.getpgid(0) == os.getpid()


def end_children(pid: int | None = None) -> None:
    """End every process that process ``pid`` (None: this one) started and that still runs,
    and theirs: the script's own processes, once the script is uninstalled.  Python's
    ``multiprocessing`` resource tracker is left: it ends by itself when its process does,
    after it has removed the shared memory it tracks (killed, it would leave that behind);
    so is the group's guard, which outlives the process by design."""
    try:
        import psutil

        children = psutil.Process(pid).children(recursive=True)
    except Exception:  # noqa: BLE001 - gone already, or no psutil: nothing to end
        return
    for child in children:
        _end(child)


def end_leftovers() -> None:
    """End the script's processes that outlive it in this worker process: its children (and
    theirs), and the processes of the group this process leads that no longer are its
    children — a ``subprocess.run(["bash", "-c", "server &"])`` leaves its server to ``init``,
    still in the group, still holding the files (the driver's output pipe) it inherited.
    Called once no script is installed in the process.  Nothing of the group is touched where
    this process does not lead it (a worker without a nanny: its group is its caller's); the
    worker itself, the resource tracker and the guard are never ended."""
    end_children()
    if not leads_group():
        return
    try:
        import psutil

        me = os.getpid()
        for proc in psutil.process_iter():
            try:
                if proc.pid != me and os.getpgid(proc.pid) == me:
                    _end(proc)
            except (OSError, psutil.Error):  # (ended meanwhile)
                continue
    except Exception:  # noqa: BLE001 - no psutil: the children are ended all the same
        logger.debug("cannot list the processes of group %d", os.getpid(), exc_info=True)


def _end(proc: Any) -> None:
    """SIGKILL ``proc`` (a ``psutil.Process``), unless it is the resource tracker or a guard."""
    try:
        cmdline = " ".join(proc.cmdline())
        if TRACKER not in cmdline and GUARD not in cmdline:
            proc.kill()
    except Exception:  # noqa: BLE001 - ended meanwhile
        pass


#: The mark in the command line of a group's guard (see :func:`guard_group`).
GUARD = "daskscore-group-guard"

#: The guard's program: wait for the worker process (argv[2]) to end, then SIGKILL what is
#: left of the process group it led, the resource tracker spared (it ends by itself once its
#: process is gone, after it has removed the shared memory it tracks).  Standard library only,
#: run with ``-S``: it starts in milliseconds and holds a few MB.
_GUARD_CODE = """
import os, signal, sys, time
pid = int(sys.argv[2])
try:
    import select
    fd = os.pidfd_open(pid)
    select.select([fd], [], [])
except (AttributeError, OSError):
    def alive():
        try:
            os.kill(pid, 0)
            with open(f"/proc/{pid}/stat", "rb") as fh:
                return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
        except FileNotFoundError:
            return True
        except OSError:
            return False
    while alive():
        time.sleep(0.5)
members = []
try:
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.getpgid(int(name)) == pid:
                    with open(f"/proc/{name}/cmdline", "rb") as fh:
                        if b"multiprocessing.resource_tracker" not in fh.read():
                            members.append(int(name))
            except OSError:
                pass
except OSError:
    members = None
try:
    if members is None:
        os.killpg(pid, signal.SIGKILL)
    for member in members or ():
        os.kill(member, signal.SIGKILL)
except OSError:
    pass
"""

#: The guard of this process's group (its ``subprocess.Popen``), once started.
_guard: Any = None


def guard_group() -> None:
    """Start this worker process's guard, once: a small process outside its group that waits
    for the worker to end, however it ends, and then ends the rest of its group.  Its nanny
    does the same when it sees the worker die (:func:`end_group`), but a worker whose nanny
    is gone first — an embedded cluster's, whose driver was killed: Dask's worker then exits
    at once — leaves no one else to do it, and a script's ``multiprocessing.Pool`` (whose
    workers wait on their queues for ever) or server would be left running."""
    global _guard
    if _guard is not None or not hasattr(os, "killpg"):
        return
    import subprocess
    import sys

    try:
        _guard = subprocess.Popen(  # noqa: S603 - this interpreter, our own program
            [sys.executable, "-S", "-c", _GUARD_CODE, GUARD, str(os.getpid())],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # (not in the group it ends)
            close_fds=True,
        )
    except OSError:  # its nanny still ends the group, where it outlives the worker
        logger.debug("cannot start the guard of process group %d", os.getpid(), exc_info=True)


#: What the command line of ``multiprocessing``'s resource tracker holds.
TRACKER = "multiprocessing.resource_tracker"


class InstallMark:
    """This process's install mark (see the module's doc); does nothing when the driver made
    no folder for it."""

    def __init__(self, staging: str | Path, worker: str, log: Path) -> None:
        #: the thread installing, since when (``time.monotonic()``) and at what stage: what
        #: :func:`daskscore.worker.plugin.installing` tells the driver of an install that lasts
        self.thread = threading.get_ident()
        self.started = time.monotonic()
        self.stage_now = "preparing"
        folder = Path(staging) / MARKS
        self.path: Path | None = folder / f"{os.getpid()}.json" if folder.is_dir() else None
        self.fields: dict[str, Any] = {"pid": os.getpid(), "worker": worker, "log": str(log)}
        self.fields.update(place=process_place(), started=_start_time(os.getpid()))
        try:
            self.fields["log_offset"] = log.stat().st_size
        except OSError:
            self.fields["log_offset"] = 0

    def stage(self, stage: str) -> None:
        """The install is ``stage`` now: ``preparing``, ``import`` or ``init()``."""
        self.stage_now = stage
        if self.path is None:
            return
        self.fields["stage"] = stage
        part = self.path.with_suffix(".part")
        try:
            part.write_text(json.dumps(self.fields), encoding="utf-8")
            os.replace(part, self.path)
        except OSError:  # (only a death's explanation depends on it)
            self.path = None

    def close(self) -> None:
        """The install returned: this process did not die in it."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def process_place() -> str:
    """Where a pid names one process: this host's name and this process's pid namespace (a
    container has its own)."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return f"{socket.gethostname()}:{namespace}"


def _start_time(pid: int) -> float | None:
    """When process ``pid`` started (``psutil``'s ``create_time``), or None."""
    try:
        import psutil

        return float(psutil.Process(pid).create_time())
    except Exception:  # noqa: BLE001 - gone, or no psutil
        return None


def mark_gone(mark: dict[str, Any]) -> bool:
    """Whether the process that left install ``mark`` is gone (it died installing: the mark
    is removed when the install returns), however it ended; known only where its pid names
    the same process as here (:func:`process_place`), else False.  A process ended but not yet
    reaped by its parent (a zombie) is gone; so is one whose pid a new process has taken."""
    pid = mark.get("pid")
    if not isinstance(pid, int) or mark.get("place") != process_place():
        return False
    try:
        import psutil
    except ImportError:  # (cannot tell)
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return True
        started = mark.get("started")
        return started is not None and abs(process.create_time() - float(started)) > 0.5
    except psutil.NoSuchProcess:
        return True
    except Exception:  # noqa: BLE001 - cannot tell: not known to be gone
        return False


def reset_marks(staging: Path) -> Path:
    """Make the folder of the install marks, empty (marks of an earlier run go): driver side."""
    folder = staging / MARKS
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def read_marks(folder: Path) -> list[dict[str, Any]]:
    """The install marks in ``folder`` (each a dict with ``pid``, ``worker``, ``stage``,
    ``log``, ``log_offset``), oldest first."""
    dated = []
    try:
        listed = list(folder.glob("*.json"))
    except OSError:  # (the folder removed)
        return []
    for path in listed:
        try:  # a mark removed between the listing and here is one fewer, not all of them
            dated.append((path.stat().st_mtime, json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError):
            continue
    return [mark for _, mark in sorted(dated, key=lambda pair: pair[0])]
