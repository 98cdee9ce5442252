"""The scoring script: importing it (its code folder's modules fresh for each install, see
:mod:`daskscore.worker.codeimport`), checking it, and making sense of what ``run()`` returns.

Everything here runs inside one process (a worker, or the driver for checks) and knows nothing
of Dask.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import os
import sys
import traceback
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

from daskscore import _compat
from daskscore.config.csvsettings import APPEND_ROW_CSV_DEFAULTS as APPEND_ROW_CSV_DEFAULTS
from daskscore.config.csvsettings import SETTINGS_JSON as SETTINGS_JSON
from daskscore.config.csvsettings import read_csv_settings as read_csv_settings
from daskscore.errors import ConfigError
from daskscore.io.datasets import PartitionValueError
from daskscore.io.nested import ColumnError
from daskscore.io.writers import FormatError
from daskscore.protocol import IMPORT_FAILED, exception_text
from daskscore.worker.codeimport import CodeImport as CodeImport
from daskscore.worker.codeimport import forget_code as forget_code
from daskscore.worker.codeimport import import_script as import_script
from daskscore.worker.codeimport import open_code as open_code


def check_script(script: Path) -> None:
    """Check, without running it, that ``script`` parses and defines ``run`` (and maybe ``init``).

    Raises
    ------
    ConfigError
        The script has a syntax error, or binds no top-level ``run``.
    """
    try:
        tree = _compat.parse_source(script.read_bytes(), str(script))
    except SyntaxError as exc:
        raise ConfigError(
            f"{script}: syntax error at line {exc.lineno}: {exc.msg}. {(exc.text or '').strip()}"
        ) from None
    names = _top_level_names(tree)
    if "run" not in names:
        raise ConfigError(
            f"{script}: the scoring script defines no run() function; a scoring script needs "
            "run(mini_batch) (and usually init()) at module level."
        )
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name in ENTRIES:
            problem = _arity_problem(node.name, _arity(node.args))
            if problem:
                raise ConfigError(f"{script}, line {node.lineno}: {problem}")


#: The script's entry points, and the positional arguments each is called with.
ENTRIES = {"init": 0, "run": 1}


def _arity(args: ast.arguments) -> tuple[int, int, bool, bool]:
    """(positional parameters, required ones, whether it takes *args, whether a keyword-only
    parameter is required) of a ``def``."""
    positional = len(args.posonlyargs) + len(args.args)
    required_kw = any(default is None for default in args.kw_defaults)
    return positional, positional - len(args.defaults), args.vararg is not None, required_kw


def _arity_problem(name: str, arity: tuple[int, int, bool, bool]) -> str | None:
    """Why ``name()`` (``init`` or ``run``) cannot be called as Azure calls it, or None."""
    positional, required, star, required_kw = arity
    given = ENTRIES[name]
    if required <= given and (positional >= given or star) and not required_kw:
        return None
    return CALLED_AS[name]


#: What each entry point must take, said when it does not.
CALLED_AS = {
    "init": "init() must take no arguments: Azure calls init() with none.",
    "run": "run(mini_batch) must take one argument, the mini-batch (a list of file paths, or a "
    "DataFrame in tabular mode): Azure calls run(mini_batch).",
}


_MISSING = object()


class ScriptShapeError(TypeError):
    """The imported script's ``init`` or ``run`` cannot be called as Azure calls them."""


def check_entries(module: Any, script: str) -> None:
    """Raise :class:`ScriptShapeError` when the imported ``module`` (the scoring script
    ``script``) has an ``init`` that is not a function taking no argument, or no ``run`` that
    takes the mini-batch — whatever made them (an assignment, a decorator)."""
    for name in ENTRIES:
        entry = getattr(module, name, _MISSING)
        if entry is _MISSING and name == "init":
            continue  # (init() is optional)
        if not callable(entry):
            what = (
                "defines no run(mini_batch)"
                if entry is _MISSING
                else f"binds {name} = {repr(entry)[:60]}, not a function"
            )
            raise ScriptShapeError(
                f"{IMPORT_FAILED} {script} failed: it {what} (a scoring script defines "
                "run(mini_batch) and, optionally, init())"
            )
        try:
            inspect.signature(entry).bind(*([None] * ENTRIES[name]))
        except TypeError:
            problem = CALLED_AS[name].rstrip(".")
            raise ScriptShapeError(f"{IMPORT_FAILED} {script} failed: {problem}") from None
        except ValueError:  # (no signature to read: a builtin; it is called as it is)
            continue


def _top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.If, ast.Try)):
            bodies = [node.body, node.orelse]
            if isinstance(node, ast.Try):
                bodies += [h.body for h in node.handlers] + [node.finalbody]
            for body in bodies:
                names |= _top_level_names(ast.Module(body=body, type_ignores=[]))
    return names


#: Libraries a fork server may import ahead of the workers it forks: importing them starts no
#: thread that ``fork()`` could break, and they cost a worker a second or so to import itself.
PRELOADABLE = ("torch", "PIL", "pandas", "pyarrow", "numpy")


def preloadable_imports(script: Path, code: Path) -> list[str]:
    """The modules of :data:`PRELOADABLE` the script imports at its top level (and that are
    installed, not files of the code folder), in the order it imports them."""
    try:
        tree = _compat.parse_source(script.read_bytes(), str(script))
    except (OSError, SyntaxError, ValueError):
        return []
    found: list[str] = []
    for node in ast.walk(ast.Module(body=_top_level_statements(tree.body), type_ignores=[])):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            top = name.split(".")[0]
            if top in PRELOADABLE and name not in found and _installed(name, code):
                found.append(name)
    return found


def _top_level_statements(body: list[ast.stmt]) -> list[ast.stmt]:
    """Statements that run on import: the module's own, and those inside its if/try blocks."""
    out: list[ast.stmt] = []
    for node in body:
        out.append(node)
        if isinstance(node, (ast.If, ast.Try)):
            inner = [*node.body, *node.orelse]
            if isinstance(node, ast.Try):
                inner += [*(s for h in node.handlers for s in h.body), *node.finalbody]
            out.extend(_top_level_statements(inner))
    return [n for n in out if isinstance(n, (ast.Import, ast.ImportFrom))]


def _installed(name: str, code: Path) -> bool:
    top = name.split(".")[0]
    if (code / f"{top}.py").exists() or (code / top).is_dir():
        return False  # the code folder's own module of that name wins in the worker
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return False
    origin = getattr(spec, "origin", None) or ""
    return spec is not None and not origin.startswith(str(code) + os.sep)


def import_failure(exc: BaseException, code: Path, script: Path) -> str:
    """The head of the error of a scoring script whose import raised: a line that begins with
    :data:`~daskscore.protocol.IMPORT_FAILED` and, for a module that cannot be imported, a
    second saying where to install it."""
    head = f"{IMPORT_FAILED} {script.name} failed: {exception_text(exc)}"
    if not isinstance(exc, ImportError):
        return head
    name = (exc.name or "").split(".")[0] if isinstance(exc, ModuleNotFoundError) else ""
    # ("attempted relative import with no known parent package")
    if "relative import" in exception_text(exc):
        return (
            f"{head}\n{script.name} is imported as a top-level module, as Azure ML imports a "
            "scoring script, so a relative import (`from .utils import x`) has no package to "
            f"start from: import the modules of the code folder {code} by their names "
            "(`from utils import x`)."
        )
    if name:
        return (
            f"{head}\n'{name}' is not installed in the Python environment the workers run in "
            f"({sys.executable}): install it in that environment (on a cluster: on every "
            f"worker), or add it to the code folder {code} if it is a module of your own."
        )
    return (
        f"{head}\nA module the script imports is missing or of another version in the Python "
        f"environment the workers run in ({sys.executable}): install the versions the script "
        "needs in that environment."
    )


def user_traceback(exc: BaseException, code: Path) -> str:
    """Format ``exc`` keeping the frames of the user's code (and the frame that raised).

    The frames of daskscore and Dask that lead to the user's code are dropped; the frame where
    the exception was raised is kept even when it is in a library, so ``pd.read_csv`` failing
    on a file still says so.
    """
    te = traceback.TracebackException.from_exception(exc)
    prefix = str(code) + os.sep
    link: traceback.TracebackException | None = te
    while link is not None:
        frames = list(link.stack)
        # (the raising frame, unless it is daskscore's own: a call of run() that Python refused,
        # run() taking no argument, says so in its exception line alone)
        keep = [
            f
            for i, f in enumerate(frames)
            if f.filename.startswith(prefix)
            or (i == len(frames) - 1 and not f.filename.startswith(_OWN))
        ]
        link.stack = traceback.StackSummary.from_list(keep)
        link = link.__cause__ or link.__context__
    return "".join(te.format()).rstrip("\n")


#: daskscore's own source folder.
_OWN = str(Path(__file__).resolve().parent.parent) + os.sep


def full_traceback(exc: BaseException) -> str:
    """The whole traceback, for the logs."""
    return "".join(traceback.format_exception(exc)).rstrip("\n")


def _pandas() -> Any:
    """pandas, if the scoring script imported it (a DataFrame can only come from there)."""
    return sys.modules.get("pandas")


class ResultError(TypeError):
    """``run()`` returned something that is not a list, an array, a Series or a DataFrame."""


#: What daskscore raises about what ``run()`` returned: the mini-batch fails with the message
#: alone (no traceback of daskscore's frames); a partition value too long for a folder name, a
#: DataFrame that no dataset can hold (a column name twice, a column of mixed types), or that
#: the job's to_csv options cannot write, are too.
RESULT_ERRORS = (ResultError, PartitionValueError, ColumnError, FormatError)


def _is_table(result: Any) -> bool:
    """Whether ``result`` is another library's table (rows of named columns, with pandas'
    form at hand): iterated, it would give its columns, not its rows."""
    module = type(result).__module__.split(".")[0]
    return module in ("pyarrow", "polars") and callable(getattr(result, "to_pandas", None))


def normalize_result(result: Any) -> pd.DataFrame | list[Any]:
    """What ``run()`` returned, as a DataFrame or a list of items.

    Lists, tuples, numpy arrays, Series and generators become lists (one output line each); a
    DataFrame stays a DataFrame (one line per row), and a pyarrow Table or RecordBatch (or a
    polars DataFrame) becomes one.
    """
    if isinstance(result, list):
        return result
    pd = _pandas()
    if pd is not None and isinstance(result, pd.DataFrame):
        return result
    if pd is not None and isinstance(result, pd.Series):
        return result.tolist()
    if pd is not None and _is_table(result):  # a pyarrow Table or RecordBatch, a polars frame
        return result.to_pandas()
    if result is None:
        raise ResultError(
            "run() returned None; it must return a list (one element per "
            "input file) or a pandas DataFrame"
        )
    if isinstance(result, (str, bytes, Mapping)):
        raise ResultError(
            f"run() returned a {type(result).__name__}; it must return a list "
            "(one element per input file) or a pandas DataFrame"
        )
    if hasattr(result, "__array__") and hasattr(result, "shape"):
        if len(result.shape) == 0:
            raise ResultError("run() returned a 0-d array; return a list or a DataFrame")
        return list(result)
    if isinstance(result, Iterable):
        return list(result)
    raise ResultError(
        f"run() returned a {type(result).__name__}; it must return a list "
        "(one element per input file) or a pandas DataFrame"
    )
