"""The worker process's own output, file descriptors 1 and 2, sent to a job's log file.

``print`` and ``logging`` reach the job's ``logs/user/stdout/<worker>.txt`` through
``sys.stdout`` (see :mod:`daskscore.worker.environment`), but not what is written below
Python's streams: ``sys.__stdout__``, a ``subprocess`` that inherits the process's output (a
CLI tool, ``nvidia-smi``), a C library's ``printf``.  Those went to the worker process's
file descriptors 1 and 2 — an embedded cluster's are the driver's own — so that the output
was lost among the driver's lines, and a driver whose standard output is a closed pipe
(``daskscore run ... | head -1``) failed the script's ``run()`` with ``BrokenPipeError``.

While a job is installed in a worker process that is its own (a nanny started it),
:class:`FdRoute` points both descriptors at the job's log file (opened to append, as the
Python-level log is: lines of both land whole).  Log handlers that wrote to the process's
standard error (Dask's own, ``daskscore run --verbose``'s) keep writing where they did, through
a copy of the descriptor kept for them.  Jobs that overlap in one process layer as
:class:`~daskscore.worker.environment.Overlapped` settings do: the newest open job's log holds;
when the last is uninstalled (or parked), the process's own descriptors are back.  A handler
whose stream a script closed (``sys.__stderr__.close()`` in ``init()``) is moved without a flush
of the closed stream, and writes to a stream of descriptor 2 of its own once they are back: the
next job installs, and Dask's log lines still go out.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any

logger = logging.getLogger(__name__)

#: The descriptors routed: standard output and standard error.
ROUTED = (1, 2)


class FdRoute:
    """The process's descriptors 1 and 2, layered per open job (one instance per process:
    :data:`FDS`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._layers: list[list[str]] = []
        #: copies of the process's own descriptors, while a job is routed
        self._saved: dict[int, int] = {}
        #: handlers moved to the copy of standard error, and the streams they had
        self._moved: list[tuple[logging.StreamHandler[Any], Any]] = []
        self._stderr: Any = None
        self._own_stderr: Any = None

    def push(self, path: str) -> list[str] | None:
        """Send descriptors 1 and 2 to ``path`` (appending) for a job; return the token that
        undoes it, or None when they cannot be (left as they are)."""
        with self._lock:
            try:
                if not self._layers:
                    self._save()
                self._point(path)
            except OSError:
                logger.debug("output of descriptors 1 and 2 not routed to %s", path, exc_info=True)
                if not self._layers:
                    self._restore()
                return None
            token = [path]
            self._layers.append(token)
            return token

    def pop(self, token: list[str] | None) -> None:
        """Undo the job of ``token``: the newest job still routed holds, else the process's own
        descriptors are back (again, or None: nothing)."""
        with self._lock:
            if token is None or all(t is not token for t in self._layers):
                return
            self._layers = [t for t in self._layers if t is not token]
            try:
                if self._layers:
                    self._point(self._layers[-1][0])
                    return
            except OSError:
                logger.debug("descriptors 1 and 2 back to the process's own", exc_info=True)
            self._layers = []
            self._restore()

    def _point(self, path: str) -> None:
        _flush()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            for target in ROUTED:
                os.dup2(fd, target)
        finally:
            os.close(fd)

    def _save(self) -> None:
        _flush()
        for target in ROUTED:
            self._saved[target] = os.dup(target)
        # the handlers that write to the process's standard error keep writing there (those
        # whose stream is descriptor 2 itself: a job's own handler writes to a stream of its
        # log file, which sys.stderr may be by now, a warm job's taken over)
        handlers = [h for lg in all_loggers() for h in lg.handlers]
        moved = [h for h in handlers if isinstance(h, logging.StreamHandler) and _on_fd2(h)]
        if moved:
            self._stderr = open(  # noqa: SIM115 - closed in _restore
                self._saved[2], "w", buffering=1, closefd=False, errors="backslashreplace"
            )
            for handler in moved:
                self._moved.append((handler, _set_stream(handler, self._stderr)))

    def _restore(self) -> None:
        _flush()
        closed = []  # (a script closed their stream, sys.__stderr__: descriptor 2's, below)
        for handler, stream in self._moved:
            if handler.stream is self._stderr:
                _set_stream(handler, stream)
                if getattr(stream, "closed", False):
                    closed.append(handler)
        self._moved = []
        if self._stderr is not None:
            try:
                self._stderr.close()
            except OSError:
                pass
            self._stderr = None
        for target, copy in self._saved.items():
            try:
                os.dup2(copy, target)
            except OSError:
                logger.debug("descriptor %d not restored", target, exc_info=True)
            finally:
                os.close(copy)
        self._saved = {}
        for handler in closed:
            _set_stream(handler, self._fd2())

    def _fd2(self) -> Any:
        """A stream of this process's descriptor 2 (its own again), for the handlers whose
        stream a script closed: one for the process's life."""
        if self._own_stderr is None:
            self._own_stderr = open(  # noqa: SIM115 - the process's, never closed
                2, "w", buffering=1, closefd=False, errors="backslashreplace"
            )
        return self._own_stderr


def _on_fd2(handler: logging.StreamHandler[Any]) -> bool:
    """Whether ``handler`` writes straight to descriptor 2 (the process's standard error)."""
    stream = handler.stream
    if stream is sys.__stderr__:
        return True
    try:
        return type(stream).__module__ in ("io", "_io") and stream.fileno() == 2
    except (AttributeError, OSError, ValueError):
        return False


def _set_stream(handler: logging.StreamHandler[Any], stream: Any) -> Any:
    """``handler.setStream(stream)``, which flushes the handler's stream first, but for a
    stream that cannot be flushed — closed: a script's ``sys.__stderr__.close()`` — whose
    handler failed every later job's install here; return the stream it had."""
    handler.acquire()
    try:
        old = handler.stream
        try:
            if old is not None and not getattr(old, "closed", False):
                old.flush()
        except (OSError, ValueError):  # (a closed pipe: what was buffered for it is lost)
            pass
        handler.stream = stream
        return old
    finally:
        handler.release()


def _flush() -> None:
    """Flush what Python buffered for the descriptors before they change."""
    for stream in (sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None and not stream.closed:
                stream.flush()
        except (OSError, ValueError):  # (a closed pipe: what was buffered for it is lost)
            pass


def all_loggers() -> list[logging.Logger]:
    """The root logger and every logger made so far."""
    found = [logging.getLogger()]
    for item in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(item, logging.Logger):
            found.append(item)
    return found


#: This process's routing.
FDS = FdRoute()
