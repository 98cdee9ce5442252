"""The current directory of the scoring scripts installed in one process:
:class:`WorkingDirectory` (one per installed job, made by
:func:`~daskscore.worker.environment.set_environment`)."""

from __future__ import annotations

import os
import threading
from typing import Any


class WorkingDirectory:
    """The current directory of a job's script: one for the whole process, changed by a script
    that calls ``os.chdir`` (so that its relative paths find its files).

    In a worker process of its own, where the script's import and ``init()`` (or a ``run()``
    call) leave it holds while the script is installed, and the process's own is set again when
    the last script is uninstalled (the next job starts where a fresh process would).  Another
    script installed in the process since moves it too: before each of this script's
    mini-batches, and as each of its calls starts, its own is set again (:meth:`reassert`, as the
    job's variables are), the worker's own if it never moved; and a script's import and
    ``init()`` start in the worker's own, as in a fresh process (where another script went is
    not its own, even a script of the same folder that went there first).  A worker in its
    caller's process (an in-process cluster: a notebook, a driver script; :attr:`per_call`)
    shares it with the caller, whose own relative paths (the next job's deployment file) must
    keep their meaning: there the script's directory holds while one of its calls runs (import
    and ``init()``, ``run()``, ``shutdown()``), the caller's is set again as soon as none runs,
    and the script's again before its next call. Jobs of one process whose calls run at once (a
    call past its timeout left to finish: the calls of a process take turns,
    :mod:`daskscore.worker.turn`) share it: the newest call's holds.
    """

    def __init__(self) -> None:
        #: the caller's directory comes back between the script's calls (an in-process worker)
        self.per_call = False
        self._own: str | None = None  # (where the script went; None: it stayed)
        self._calls = 0

    def enter(self) -> None:
        """A call of the script starts: its directory (where it went before; else the
        process's own, where its install started) is set."""
        with _LOCK:
            if not self._calls or self.per_call:
                if not _CWD["calls"]:
                    _CWD["caller"] = _getcwd()
                _CWD["calls"] += 1
                self._calls += 1
            self._settle()  # (a process of its own: the script's, unless another moved it)

    def leave(self, final: bool = False) -> None:
        """A call of the script ended: where it went is noted, and, on an in-process worker
        (or ``final``), the caller's directory is set again once no call runs."""
        with _LOCK:
            if not self._calls:
                return
            now = _getcwd()
            if now != _CWD["set"]:
                self._own = now  # (the script moved: another call's chdir is not its own)
            if not (self.per_call or final):
                _CWD["set"] = now
                return
            self._calls -= 1
            _CWD["calls"] -= 1
            if not _CWD["calls"]:
                _chdir(_CWD["caller"])
            _CWD["set"] = _getcwd()

    def reassert(self) -> None:
        """On a worker process of its own, the script's directory set again (another script
        installed since may have moved it): where it went, else the worker's own."""
        with _LOCK:
            if self.per_call or not self._calls:
                return  # (an in-process worker's calls each set it: enter())
            self._settle()

    def _settle(self) -> None:
        target = self._own if self._own is not None else _CWD["caller"]
        now = _getcwd()
        if target is not None and target != now:
            _chdir(target)
            now = _getcwd()
        _CWD["set"] = now

    def close(self) -> None:
        """The script is uninstalled: the process's directory is set again (unless a call of
        another job still runs)."""
        while self._calls:
            self.leave(final=True)


_LOCK = threading.RLock()
#: The process's current directory as the scripts' calls share it: how many are in flight,
#: the caller's directory before the first, and the one set last (a script's own move differs)
_CWD: dict[str, Any] = {"calls": 0, "caller": None, "set": None}


def _getcwd() -> str | None:
    try:
        return os.getcwd()
    except OSError:  # (removed while current: no directory to go back to)
        return None


def _chdir(path: str | None) -> None:
    if path is not None:
        try:
            os.chdir(path)
        except OSError:  # (removed since: the directory stays as it is)
            pass
