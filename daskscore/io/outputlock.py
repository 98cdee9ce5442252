"""One job at a time in an output folder: the lock a job holds on its output for its whole life.

Two jobs writing into one folder would mix their rows, and a second job's ``--overwrite`` or
``--resume`` would delete or adopt the first one's staging folder while it runs.  So a job
takes its output folder before it looks at what is in it, and keeps it until it has finished:

* A local folder: ``<output>/.daskscore.lock``, locked with ``flock(LOCK_EX | LOCK_NB)``.  The
  kernel drops the lock when the process ends, however it ends: a job killed with ``SIGKILL``
  never leaves a stale lock (the file may stay behind, locked by no one; the next job takes
  it, and removes it as it ends, even one refused).  Once the job has checked the folder it
  writes who it is into the file (job id, pid, host, start time), and a second job that finds
  the lock taken names that job in its refusal.  The job removes the file when it ends.
  Worker processes forked from the driver close their copy of the descriptor, so the lock
  never outlives the driver.
* An output URL (fsspec): object stores have no such lock.  A marker object of the same name
  holds the same fields while the job runs and is removed when it ends; a job that finds one
  is refused, unless it names a process of this host that is no longer running.  The marker is
  advisory: two jobs started at the same instant can both miss each other's, and a marker left
  by a job killed on another host stays until it is deleted by hand.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from daskscore.errors import OutputError
from daskscore.io import storage, storeaccess

try:
    import fcntl
except ImportError:  # pragma: no cover - not a POSIX system: no lock, said in the log
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger("daskscore")

LOCK_FILE = ".daskscore.lock"
#: How long a refused job waits for the running job to write who it is (it does so as soon as
#: it has checked the folder, milliseconds after it took the lock; a resumed job after it has
#: read its ledgers).
HOLDER_WAIT_S = 5.0
#: Tries at taking the lock file: another job may remove it between our open() and flock().
_TRIES = 20

#: Descriptors of the locks this process holds: a process forked from it closes them.
_HELD: set[int] = set()


def _close_in_child() -> None:
    for fd in _HELD:
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_child)


@dataclass(frozen=True)
class Holder:
    """Who holds an output folder: what a refused job says of the running one."""

    job_id: str
    pid: int
    host: str
    started: str

    @classmethod
    def this_process(cls, job_id: str) -> Holder:
        started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        return cls(job_id, os.getpid(), socket.gethostname(), started)

    @classmethod
    def parse(cls, data: bytes | str) -> Holder | None:
        try:
            fields = json.loads(data)
            return cls(str(fields["job_id"]), int(fields["pid"]), str(fields["host"]),
                       str(fields["started"]))  # fmt: skip
        except (ValueError, KeyError, TypeError):
            return None

    def encode(self) -> bytes:
        return (json.dumps(asdict(self)) + "\n").encode()

    def describe(self) -> str:
        return f"job {self.job_id} (pid {self.pid} on host {self.host}, started {self.started})"

    def gone(self) -> bool:
        """Whether this holder is a process of this host that has ended."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # another user's live process
            return False
        return False


def _refusal(where: str, holder: Holder | None, extra: str = "") -> OutputError:
    who = holder.describe() if holder else "another daskscore job (it has not said which yet)"
    return OutputError(
        f"{where} is in use by {who}: two jobs in one output folder would mix their rows, so "
        "this job was not started (--overwrite and --resume are refused too while it runs). "
        f"Wait for that job to end, stop it, or choose another --output.{extra}"
    )


class OutputLock:
    """A job's lock on its local output folder, held until :meth:`release`.

    Take it with :func:`lock_output`; :meth:`announce` writes who holds it once the job has
    found the folder usable (a job refused for what the folder holds leaves it as it was).
    """

    def __init__(self, folder: Path, holder: Holder) -> None:
        self.folder = folder
        self.path = folder / LOCK_FILE
        self.holder = holder
        self.fd: int | None = None
        self.created = False
        self.announced = False
        #: folders made to hold the lock, deepest first (removed again if left empty)
        self.made: list[Path] = []

    def acquire(self) -> OutputLock:
        if self.folder.exists() and not self.folder.is_dir():
            raise OutputError(
                f"output '{self.folder}' is a file; give a folder (it is created if missing)."
            )
        try:
            self.made = [p for p in (self.folder, *self.folder.parents) if not p.exists()]
            self.folder.mkdir(parents=True, exist_ok=True)
            for _ in range(_TRIES):
                if self._take():
                    return self
        except OSError as exc:
            self._remove_made()
            raise OutputError(
                f"cannot write into output folder '{self.folder}': {exc.strerror or exc}."
            ) from exc
        raise OutputError(f"could not lock output folder '{self.folder}': its lock file changes")

    def _take(self) -> bool:
        """One try at the lock: True once held; False when the file was replaced meanwhile."""
        if fcntl is None:  # pragma: no cover
            logger.warning("no file locks on this system: %s is not locked", self.folder)
            return True
        fd, created = _open(self.path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            self._remove_made()
            raise _refusal(f"output folder '{self.folder}'", _read_holder(self.path)) from None
        except OSError as exc:  # a filesystem without locks: the job runs unlocked
            logger.warning("could not lock %s (%s): the folder is not locked", self.path, exc)
        except BaseException:
            os.close(fd)
            raise
        if not _same_file(fd, self.path):
            os.close(fd)  # removed by the job that held it, as it ended: take the new one
            return False
        self.fd, self.created = fd, created
        _HELD.add(fd)
        if created:  # nothing of an earlier job's to keep as it was
            self.announce()
        return True

    def announce(self) -> None:
        """Write who holds the folder (idempotent)."""
        if self.fd is None or self.announced:
            return
        data = self.holder.encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)
        self.announced = True

    def release(self) -> None:
        """Let the folder go: the lock file is removed (a killed job's, locked by no one, too,
        when this job was refused), then unlocked."""
        fd, self.fd = self.fd, None
        if fd is None:
            return
        _HELD.discard(fd)
        try:
            self.path.unlink(missing_ok=True)  # still locked: the next job makes a new one
        except OSError:
            logger.debug("could not remove %s", self.path, exc_info=True)
        finally:
            os.close(fd)
        self._remove_made()

    def _remove_made(self) -> None:
        """Remove the folders made for the lock if the job left them empty."""
        for folder in self.made:
            try:
                folder.rmdir()
            except OSError:
                break

    def __enter__(self) -> OutputLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _open(path: Path) -> tuple[int, bool]:
    """Open (or create) the lock file; whether this call created it."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), True
    except FileExistsError:
        pass
    try:
        return os.open(path, os.O_RDWR), False
    except FileNotFoundError:  # removed in between: make it
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644), True


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def _read_holder(path: Path, wait: float = HOLDER_WAIT_S) -> Holder | None:
    """Who holds the lock, as it wrote into the lock file: waits for a holder that has not
    written yet (the file is empty, or still names an ended job of this host)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            holder = Holder.parse(path.read_bytes())
        except OSError:
            holder = None
        if holder is not None and not holder.gone():
            return holder
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


class RemoteMarker:
    """The advisory marker of a job on an output URL (see the module's docstring)."""

    def __init__(self, url: str, holder: Holder) -> None:
        self.url = url
        self.holder = holder
        self.announced = False
        self.fs: Any = None
        self.path = ""

    def acquire(self) -> RemoteMarker:
        with self._as_output_error():
            return self._acquire()

    def _acquire(self) -> RemoteMarker:
        self.fs, root = storage.filesystem(self.url, verb="writing")
        self.path = f"{root.rstrip('/')}/{LOCK_FILE}"
        self.fs.invalidate_cache()
        if not self.fs.exists(self.path):
            return self
        try:
            holder = Holder.parse(self.fs.cat_file(self.path))
        except FileNotFoundError:  # (removed in between)
            return self
        if holder is not None and holder.gone():
            logger.info("ignoring the marker of %s: it has ended", holder.describe())
            return self
        raise _refusal(
            f"output '{self.url}'",
            holder,
            f" (The marker {self.where} says so; it is advisory: if that job is no longer running, "
            "delete it.)",
        )

    def announce(self) -> None:
        if self.announced or self.fs is None:
            return
        with self._as_output_error():
            self.fs.pipe_file(self.path, self.holder.encode())
        self.announced = True

    @contextlib.contextmanager
    def _as_output_error(self) -> Iterator[None]:
        """The storage's own failures as the :class:`OutputError` naming the output URL."""
        try:
            yield
        except Exception as exc:
            if not storeaccess.backend_error(exc):
                raise
            raise OutputError(
                storeaccess.access_problem(f"output '{self.url}'", "written", exc)
            ) from exc

    @property
    def where(self) -> str:
        """The marker's URL."""
        return self.url.rstrip("/") + "/" + LOCK_FILE

    def release(self, quiet: bool = False) -> bool:
        """Remove the marker (if this job wrote it); whether that went well.  A failure is
        a warning of one line (the traceback at debug level), none when ``quiet``: the
        caller says it."""
        if not self.announced:
            return True
        self.announced = False
        try:
            self.fs.invalidate_cache()
            if Holder.parse(self.fs.cat_file(self.path)) == self.holder:
                self.fs.rm(self.path)
        except Exception as exc:  # noqa: BLE001 - the job's outcome stands; it is advisory
            logger.debug("could not remove the marker %s", self.where, exc_info=True)
            if not quiet:
                text = f"{type(exc).__name__}: {exc}".split("\n", 1)[0][:300]
                logger.warning("could not remove the marker %s (%s)", self.where, text)
            return False
        return True

    def __enter__(self) -> RemoteMarker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_output(output: str | os.PathLike[str], job_id: str) -> OutputLock | RemoteMarker:
    """Take the output folder (or URL) for job ``job_id``, or refuse at once (an
    :class:`~daskscore.errors.OutputError`, exit code 2) when a job is running there.

    Release it with ``release()`` (or use it as a context manager); call ``announce()`` once
    the job has found the folder usable.
    """
    holder = Holder.this_process(job_id)
    text = os.fspath(output)
    if storage.is_remote(text):
        return RemoteMarker(text, holder).acquire()
    return OutputLock(Path(text).expanduser().resolve(), holder).acquire()
