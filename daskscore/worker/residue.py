"""What a script's import and ``init()`` set in their process beyond its environment, undone
when the script is uninstalled in a process that goes on: :class:`Residue`.

On the warm cluster a worker process that must install another script is replaced by a fresh
one (:mod:`daskscore.engine.fresh`); where it cannot be — another script is live in it, a
caller's workers (``client=``), a worker without a nanny — the old script is uninstalled in
place, and the next one would find what it set.  What can be put back cheaply and safely is:

* the ``sys.path`` entries its import and ``init()`` added (``sys.path.append("<code>/src")``),
  unless another live script's added them too, and the modules its import and ``init()``
  imported from them (its code folder itself: :mod:`daskscore.worker.codeimport`);
* ``warnings.filters`` (``warnings.simplefilter("error")``), whether the garbage collector is
  enabled, the recursion limit, the ``logging.disable`` level, and the level, ``propagate`` and
  ``disabled`` of the loggers that existed before (``logging.config.dictConfig`` disables them):
  each is set back to what it was before the import where it is still what ``init()`` left
  (a value changed since, by another script or a ``run()``, is left as it is);
* the handlers bound to the script's own log (``logging.basicConfig(force=True)`` in
  ``init()`` puts one on the root logger, writing to its ``sys.stderr``), which would write to
  a closed file once its job is over, are removed, and the root logger's handlers that the
  import and ``init()`` removed are put back.

What is not put back: the threads the script started keep running, the loggers it made keep
what it set, a closed ``sys.__stderr__`` stays closed (:mod:`daskscore.worker.fdroute` writes
around it), and whatever else it changed in a module's globals.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import warnings
from collections.abc import Iterable
from typing import Any

from daskscore.worker.codeimport import installed_folders, open_folders
from daskscore.worker.fdroute import all_loggers

#: The residues of the scripts installed in this process (their ``sys.path`` entries kept
#: while another still has them).
_LIVE: list[Residue] = []


class Residue:
    """What one script's import and ``init()`` changed: made before the import, :meth:`taken`
    after ``init()``, :meth:`undo` when the script is uninstalled.  ``streams``: the script's
    ``sys.stdout`` and what it writes through (its job's log)."""

    def __init__(self, streams: Iterable[Any] = ()) -> None:
        self.streams = [s for s in streams if s is not None]
        self.before = _settings()
        self.after: dict[str, Any] | None = None
        #: the ``sys.path`` entries the import and ``init()`` added, and the modules they
        #: imported (by name)
        self.path: list[str] = []
        self.modules: list[str] = []
        self._known = set(sys.modules)

    def taken(self) -> None:
        """The import and ``init()`` are done (or failed): what they changed is noted."""
        self.after = _settings()
        folders = open_folders()
        self.path = [
            p for p in self.after["path"] if p not in self.before["path"] and p not in folders
        ]
        self.modules = [name for name in sys.modules if name not in self._known]
        self._known = set()
        _LIVE.append(self)

    def undo(self) -> None:
        """Put back what can be (see the module's docstring); again: nothing."""
        if self.after is None or self not in _LIVE:
            return
        # (the scripts installed after this one took its values for what they found: theirs to
        # put back are what this one found)
        later = _LIVE[_LIVE.index(self) + 1 :]
        _LIVE.remove(self)
        kept = {p for other in _LIVE for p in other.path} | open_folders()
        gone = [entry for entry in self.path if entry not in kept]
        for entry in gone:
            while entry in sys.path:
                sys.path.remove(entry)
        _forget_modules(gone, self.modules)
        before, after, now = self.before, self.after, _settings()
        for name, put in _PUT.items():
            if now[name] == after[name] != before[name]:
                put(before[name])
            for other in later:
                if other.before[name] == after[name]:
                    other.before[name] = before[name]
        for key, was in before["loggers"].items():
            if now["loggers"].get(key) == after["loggers"].get(key) != was:
                logger = logging.getLogger(key or None)
                logger.setLevel(was[0])  # (and the loggers' cached answers are cleared)
                logger.propagate, logger.disabled = was[1], was[2]
            for other in later:
                if other.before["loggers"].get(key) == after["loggers"].get(key):
                    other.before["loggers"][key] = was
        self._handlers()

    def _handlers(self) -> None:
        """Remove the handlers that write to the script's own log; put back the root logger's
        that its import and ``init()`` removed."""
        root, mine = logging.getLogger(), self.streams
        for handler in self.before["handlers"]:
            gone = handler not in (self.after or {}).get("handlers", [])
            if gone and handler not in root.handlers and not _writes_to(handler, mine):
                root.addHandler(handler)
        for logger in all_loggers():
            for handler in list(logger.handlers):
                if _writes_to(handler, mine):
                    logger.removeHandler(handler)


def _forget_modules(entries: list[str], names: list[str]) -> None:
    """Take out of ``sys.modules`` the modules ``names`` (those the script's import and
    ``init()`` imported) found in the ``sys.path`` ``entries`` taken away, so that the next
    script's ``import helper`` finds its own, or none, as in a fresh process: not daskscore's
    own, nor the environment's (an entry such as ``/`` holds them too)."""
    prefixes = tuple(os.path.join(e, "") for e in entries if os.path.isabs(e))
    if not prefixes:
        return
    installed = installed_folders()
    for name in names:
        file = getattr(sys.modules.get(name), "__file__", None)
        if not file or name.partition(".")[0] == "daskscore":
            continue
        file = os.path.abspath(file)
        if file.startswith(prefixes) and not file.startswith(installed):
            del sys.modules[name]


def _writes_to(handler: logging.Handler, streams: list[Any]) -> bool:
    stream = getattr(handler, "stream", None)
    return stream is not None and any(stream is s for s in streams)


def _set_filters(filters: list[Any]) -> None:
    warnings.resetwarnings()  # (the filters' version moves on: the warnings already shown
    warnings.filters[:] = filters  # once are looked at again, as they were)


def _set_gc(enabled: bool) -> None:
    (gc.enable if enabled else gc.disable)()


#: How each setting compared as a whole is put back.
_PUT: dict[str, Any] = {
    "filters": _set_filters,
    "gc": _set_gc,
    "recursion": sys.setrecursionlimit,
    "disable": logging.disable,
}


def _settings() -> dict[str, Any]:
    """The process's settings a :class:`Residue` compares."""
    return {
        "path": list(sys.path),
        "filters": list(warnings.filters),
        "gc": gc.isenabled(),
        "recursion": sys.getrecursionlimit(),
        "disable": logging.root.manager.disable,
        "loggers": {
            ("" if lg is logging.getLogger() else lg.name): (lg.level, lg.propagate, lg.disabled)
            for lg in all_loggers()
        },
        "handlers": list(logging.getLogger().handlers),
    }
