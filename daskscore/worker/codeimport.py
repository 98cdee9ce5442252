"""A code folder's modules in one process: :func:`open_code`, :meth:`CodeImport.load`,
:meth:`CodeImport.reassert` and :meth:`CodeImport.forget`.

Several installs can be open at once in one worker process — two sessions on one client, a
session beside a job, a session left open while a job of the same code folder, edited since,
runs; a killed job's install until it is removed — and each must run its own code, as if it
were alone.  The open imports are layered, like the environment of the jobs (see
:mod:`daskscore.worker.environment`): one of them is *current*, the one whose modules
``sys.modules`` has under its folder's names and whose folder is first on ``sys.path``:

* :func:`open_code` makes a new import current.  What ``sys.modules`` has under a name one of
  the folder's files or folders has (``helper`` for ``helper.py``) and that was not imported from
  the environment (the standard library, site-packages) is taken out: the modules of the import
  current until then are kept with it, and the process's own (a driver's ``utils.py``, inherited
  by a worker forked from it) are kept aside.  The script, and what it imports from its folder,
  are then imported afresh from the files as they are now, its folder first on ``sys.path``
  (ahead of another open import's folder with a ``helper.py`` of its own);
* :meth:`CodeImport.reassert` makes an older open import current again (each mini-batch of a
  job that another install followed: :meth:`~daskscore.worker.runtime.JobRuntime.reassert`),
  so that an ``import helper`` inside its ``run()`` finds its own ``helper``;
* :meth:`CodeImport.forget` drops this import's modules; each name they had goes back to the
  newest open import that has a module under it (unless a newer one's folder has that name:
  it imports its own), else to the process's own.  The folder leaves ``sys.path`` when no open
  import has it; the newest open import's folder is first again.

A module an install imported keeps its own references (``import helper`` at the script's top
binds the module it imported, for as long as the install lives).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
import threading
import types
from pathlib import Path


class CodeImport:
    """One import of a code folder in this process, open until :meth:`forget`."""

    def __init__(self, code: str, names: set[str]) -> None:
        #: the code folder, as put on ``sys.path``
        self.code = code
        #: the names of its files and folders when it was opened (and its scripts' names)
        self.names = names
        #: its modules, by name, kept while another import is current
        self.held: dict[str, types.ModuleType] = {}
        #: the scripts :meth:`load` imported (dropped by :meth:`forget` wherever they are)
        self.scripts: list[types.ModuleType] = []

    def load(self, script: Path) -> types.ModuleType:
        """Import the scoring script as a module named after its file."""
        name = script.stem
        spec = importlib.util.spec_from_file_location(name, script)
        if spec is None or spec.loader is None:  # pragma: no cover - a .py file always has one
            raise ImportError(f"cannot import {script}")
        module = importlib.util.module_from_spec(spec)
        with _LOCK:
            if name not in self.names:  # (a script in a subfolder: its name is taken too)
                self.names.add(name)
                _take_out({name})
            sys.modules[name] = module
        self.scripts.append(module)
        try:
            spec.loader.exec_module(module)
        except BaseException:
            if sys.modules.get(name) is module:
                del sys.modules[name]
            raise
        return module

    def reassert(self) -> None:
        """Make this import the current one again (if still open): its folder first on
        ``sys.path``, its modules those ``sys.modules`` has under its folder's names."""
        with _LOCK:
            if self in _OPEN and _OPEN[-1] is not self:
                _make_current(self)
            elif self in _OPEN and sys.path[:1] != [self.code]:
                _first_on_path(self.code)

    def forget(self) -> None:
        """Drop this import's modules and give their names back (again: nothing)."""
        with _LOCK:
            if self not in _OPEN:
                return
            if _OPEN[-1] is self:
                _keep(self)
            _OPEN.remove(self)
            mine = {id(m) for m in [*self.held.values(), *self.scripts]}
            gone = [name for name, m in list(sys.modules.items()) if id(m) in mine]
            for name in gone:
                del sys.modules[name]
            claimed = self.names | {_top(name) for name in self.held}
            taken = [n for o in _OPEN for n in o.held if _top(n) in claimed]
            for name in {*gone, *self.held, *taken, *(n for n in _BASE if _top(n) in claimed)}:
                _give_back(name)
            self.held, self.scripts = {}, []
            if not any(o.code == self.code for o in _OPEN):
                while self.code in sys.path:
                    sys.path.remove(self.code)
            if _OPEN and sys.path[:1] != [_OPEN[-1].code]:
                _first_on_path(_OPEN[-1].code)


#: The imports open in this process, the current one last.
_OPEN: list[CodeImport] = []
#: The process's own modules taken out while an open import has their names, by name.
_BASE: dict[str, types.ModuleType] = {}
_LOCK = threading.RLock()


def open_code(code: Path) -> CodeImport:
    """Open an import of ``code`` and make it current (see the module's docstring)."""
    try:
        names = {e.name[:-3] if e.name.endswith(".py") else e.name for e in os.scandir(code)}
    except OSError:
        names = set()
    opened = CodeImport(str(code), names)
    with _LOCK:
        _make_current(opened)
    importlib.invalidate_caches()  # (a file added to the folder since the last import is seen)
    return opened


def import_script(code: Path, script: Path) -> types.ModuleType:
    """Import the scoring script as a module named after its file, with ``code`` on sys.path,
    its modules fresh (see the module's docstring); :func:`forget_code` undoes it."""
    return open_code(code).load(script)


def forget_code(code: Path) -> None:
    """Forget every open import of ``code``, the newest first (see :meth:`CodeImport.forget`)."""
    with _LOCK:
        for opened in reversed([o for o in _OPEN if o.code == str(code)]):
            opened.forget()


def open_folders() -> set[str]:
    """The code folders of the imports open in this process (on ``sys.path`` for them)."""
    with _LOCK:
        return {o.code for o in _OPEN}


def _make_current(opened: CodeImport) -> None:
    """The current import's modules kept with it; ``opened``'s names taken out of
    ``sys.modules`` and its own modules put there; its folder first on ``sys.path``."""
    if _OPEN:
        _keep(_OPEN[-1])
    if opened in _OPEN:
        _OPEN.remove(opened)
    _OPEN.append(opened)
    _take_out(opened.names | {_top(name) for name in opened.held})
    sys.modules.update(opened.held)
    _first_on_path(opened.code)


def _keep(current: CodeImport) -> None:
    """Note, with ``current``, the modules of its folder (and its scripts) ``sys.modules`` has
    now under its folder's names: those it imported since it became current too (an ``import``
    inside ``run()``)."""
    prefix = os.path.join(os.path.abspath(current.code), "")
    others = _held(but=current)
    claimed = current.names | {_top(name) for name in current.held}
    for name, module in list(sys.modules.items()):
        if _top(name) not in claimed:
            continue  # (not a name of its folder's files)
        file = getattr(module, "__file__", None) or ""
        if file.startswith(prefix) and id(module) not in others:
            current.held[name] = module
    for module in current.scripts:
        if sys.modules.get(module.__name__) is module:
            current.held[module.__name__] = module


def _take_out(names: set[str]) -> None:
    """Take out of ``sys.modules`` the modules under ``names`` (with their submodules): an open
    import's stay with it, the process's own go aside; the environment's stay where they are."""
    held = _held()
    installed: tuple[str, ...] | None = None
    groups: dict[str, list[str]] = {}
    for key in list(sys.modules):
        if _top(key) in names:
            groups.setdefault(_top(key), []).append(key)
    for top, keys in groups.items():
        first = sys.modules.get(top)
        if first is not None and id(first) not in held:
            file = getattr(first, "__file__", None)
            if not file:
                continue  # a built-in module, or a namespace package
            installed = installed or installed_folders()
            if os.path.abspath(file).startswith(installed):
                continue  # the environment's
        for key in keys:
            module = sys.modules.pop(key)
            if id(module) not in held:
                _BASE.setdefault(key, module)


def _give_back(name: str) -> None:
    """Put under ``name`` the module of the newest open import that has one, unless a newer
    one's folder has that name (it imports its own); else the process's own, if any."""
    if name in sys.modules:
        return
    for opened in reversed(_OPEN):
        if name in opened.held:
            sys.modules[name] = opened.held[name]
            return
        if _top(name) in opened.names:
            return
    if name in _BASE:
        sys.modules[name] = _BASE.pop(name)


def _held(but: CodeImport | None = None) -> set[int]:
    """The ids of the modules the open imports (but ``but``) hold."""
    return {id(m) for o in _OPEN if o is not but for m in [*o.held.values(), *o.scripts]}


def _top(name: str) -> str:
    return name.partition(".")[0]


def _first_on_path(code: str) -> None:
    while code in sys.path:
        sys.path.remove(code)
    sys.path.insert(0, code)


@functools.cache
def installed_folders() -> tuple[str, ...]:
    """Where the environment's own modules live: the standard library and site-packages."""
    import site
    import sysconfig

    keys = ("stdlib", "platstdlib", "purelib", "platlib")
    folders = {sysconfig.get_paths()[k] for k in keys} | set(site.getsitepackages())
    folders.add(site.getusersitepackages())
    return tuple(os.path.join(os.path.abspath(f), "") for f in folders if f)
