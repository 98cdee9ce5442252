"""The warm cluster's state file (:func:`state_path`), what it says (:class:`WarmState`), the
lock that ``cluster start`` and ``cluster stop`` hold beside it, and the processes it names.

A state file that is not one (truncated, edited) is :class:`CorruptState`: it cannot say which
cluster runs, and the commands say so, naming it, rather than take it for no cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from daskscore.errors import UsageError

#: The state file's path, when set (tests, several clusters side by side).
STATE_ENV = "DASKSCORE_CLUSTER_STATE"


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
        """The state in ``path``; None when there is none; :class:`CorruptState` when what is
        there is not a state file."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise CorruptState(path, f"{type(exc).__name__}: {exc}") from None
        try:
            data = json.loads(text)
            known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
            state = cls(**{**known, "path": str(path)})
            state.pid, state.created = int(state.pid), float(state.created)
            return state
        except (ValueError, TypeError, AttributeError) as exc:
            raise CorruptState(path, f"{type(exc).__name__}: {str(exc)[:200]}") from None

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
        return running(self.pid, self.created)

    def stale_message(self) -> str:
        return (
            f"the warm cluster recorded in {self.path} is gone (its process {self.pid} is not "
            "running); removed the stale state file"
        )


class CorruptState(UsageError):
    """The state file holds something that is not a warm cluster's state."""

    def __init__(self, path: Path, why: str) -> None:
        self.path, self.why = path, why
        super().__init__(
            f"the warm cluster's state file {path} is corrupt ({why}), so it cannot say which "
            "cluster runs. `daskscore cluster stop` ends the warm cluster started for this "
            "file, if one still runs (found by its command line), and removes the file; then "
            "`daskscore cluster start` starts a new one."
        )


def running(pid: int, created: float | None = None) -> bool:
    import psutil

    try:
        proc = psutil.Process(pid)
        if created is not None and abs(proc.create_time() - created) > 1.0:
            return False
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def remove_state(path: Path, pid: int | None = None) -> None:
    """Remove the state file (only if it still names ``pid``, when given)."""
    if pid is not None:
        try:
            current = WarmState.read(path)
        except CorruptState:
            return
        if current is None or current.pid != pid:
            return
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


@contextlib.contextmanager
def locked(path: Path, wait: float) -> Iterator[None]:
    """Hold the lock file beside the state file (``cluster start`` and ``cluster stop``, one
    at a time), waiting up to :data:`wait` for another command's."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(path.name + ".lock")
    with open(lock, "a", encoding="utf-8") as fh:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise UsageError(
                        f"another `daskscore cluster start` or `stop` has held {lock} for "
                        f"{wait:g} s; try again once it has ended."
                    ) from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def kill_group(pgid: int) -> None:
    """SIGKILL what is left of the process group ``pgid`` (the server started its own)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def wait_gone(pids: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
