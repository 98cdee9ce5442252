"""A code folder's modules in one process: :func:`open_code`, :meth:`CodeImport.load` and
:meth:`CodeImport.forget`.

Several installs can be open at once in one worker process — two sessions on one client, a
session left open while a job of the same code folder, edited since, runs; a killed job's
install until it is removed — and each must run its own code.  So every import of a code folder
starts from fresh modules:

* :func:`open_code` puts the folder on ``sys.path`` and takes out of ``sys.modules`` whatever is
  there under a name one of its files or folders has (``helper`` for ``helper.py``) and was not
  imported from the environment (the standard library, site-packages): an older install's
  ``helper`` (of this folder, before an edit, or of another), or the process's own (a driver's
  ``utils.py``, inherited by a worker forked from it).  Such a module is *set aside*, with the
  open import it belongs to (None: the process's own);
* the script, and what it imports from its folder, are then imported afresh from the files as
  they are now;
* :meth:`CodeImport.forget` drops this import's modules (unless a newer import of the same folder
  holds that folder's names now) and puts back what it set aside, as long as what it belongs to
  is still open; what a newer import set aside of this one's is replaced, in that import's keep,
  by what this one had set aside.  The folder leaves ``sys.path`` when no open import has it.

A module an install imported keeps its own references (``import helper`` at the script's top
binds the module it imported, for as long as the install lives); a name looked up later in
``sys.modules`` (an ``import`` inside ``run()``) finds the newest open import's.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
import types
from pathlib import Path

#: A set-aside module: the open import it belongs to (None: the process's own), and the module.
Aside = tuple["CodeImport | None", types.ModuleType]


class CodeImport:
    """One import of a code folder in this process, open until :meth:`forget`."""

    def __init__(self, code: str) -> None:
        #: the code folder, as put on ``sys.path``
        self.code = code
        #: the modules set aside for this import, by name
        self.aside: dict[str, Aside] = {}
        #: the scripts :meth:`load` imported (dropped by :meth:`forget` wherever they are)
        self.scripts: list[types.ModuleType] = []

    def load(self, script: Path) -> types.ModuleType:
        """Import the scoring script as a module named after its file."""
        name = script.stem
        spec = importlib.util.spec_from_file_location(name, script)
        if spec is None or spec.loader is None:  # pragma: no cover - a .py file always has one
            raise ImportError(f"cannot import {script}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        self.scripts.append(module)
        try:
            spec.loader.exec_module(module)
        except BaseException:
            if sys.modules.get(name) is module:
                del sys.modules[name]
            raise
        return module

    def forget(self) -> None:
        """Drop this import's modules and put back what it set aside (again: nothing)."""
        with _LOCK:
            if self not in _OPEN:
                return
            newest = not any(o.code == self.code for o in _OPEN[_OPEN.index(self) + 1 :])
            _OPEN.remove(self)
            if newest:  # (else the folder's names in sys.modules are a newer import's)
                prefix = os.path.join(self.code, "")
                for name, module in list(sys.modules.items()):
                    if (getattr(module, "__file__", None) or "").startswith(prefix):
                        del sys.modules[name]
            for module in self.scripts:
                if sys.modules.get(module.__name__) is module:
                    del sys.modules[module.__name__]
            handed = set()
            for other in _OPEN:  # what a newer import set aside of this one's
                for name, (owner, _) in list(other.aside.items()):
                    if owner is self:
                        handed.add(name)
                        if name in self.aside:
                            other.aside[name] = self.aside[name]
                        else:
                            del other.aside[name]
            for name, (owner, module) in self.aside.items():
                if name not in handed and (owner is None or owner in _OPEN):
                    sys.modules.setdefault(name, module)
            self.aside = {}
            if not any(o.code == self.code for o in _OPEN):
                while self.code in sys.path:
                    sys.path.remove(self.code)


#: The imports open in this process, oldest first.
_OPEN: list[CodeImport] = []
_LOCK = threading.RLock()


def open_code(code: Path) -> CodeImport:
    """Open an import of ``code``: on ``sys.path``, with the modules of its names set aside."""
    opened = CodeImport(str(code))
    with _LOCK:
        if opened.code not in sys.path:
            sys.path.insert(0, opened.code)
        opened.aside = _set_aside(code)
        _OPEN.append(opened)
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


def _set_aside(code: Path) -> dict[str, Aside]:
    """Take out of ``sys.modules`` (with their submodules) the modules under a name a file or
    folder of ``code`` has, but those of the environment; each with the import it belongs to."""
    try:
        entries = list(os.scandir(code))
    except OSError:
        return {}
    names = {e.name[:-3] if e.name.endswith(".py") else e.name for e in entries}
    installed = _installed_folders()
    aside: dict[str, Aside] = {}
    for name in names & sys.modules.keys():
        file = getattr(sys.modules[name], "__file__", None)
        if not file:
            continue  # a built-in module, or a namespace package
        file = os.path.abspath(file)
        owner = _owner(file)
        if owner is None and file.startswith(installed):
            continue  # the environment's
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            aside[key] = (owner, sys.modules.pop(key))
    return aside


def _owner(file: str) -> CodeImport | None:
    """The newest open import whose code folder holds ``file`` (None: none)."""
    for opened in reversed(_OPEN):
        if file.startswith(os.path.join(opened.code, "")):
            return opened
    return None


def _installed_folders() -> tuple[str, ...]:
    """Where the environment's own modules live: the standard library and site-packages."""
    import site
    import sysconfig

    keys = ("stdlib", "platstdlib", "purelib", "platlib")
    folders = {sysconfig.get_paths()[k] for k in keys} | set(site.getsitepackages())
    folders.add(site.getusersitepackages())
    return tuple(os.path.join(os.path.abspath(f), "") for f in folders if f)
