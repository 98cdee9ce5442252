"""The package's shape: the import contracts of pyproject.toml hold (``lint-imports``), the
folder listing shows the pipeline, and modules stay small.

The layers (see docs/architecture.md)::

    cli -> api -> devtools -> engine -> cluster | ui -> worker -> io -> protocol -> config
        -> errors | _compat
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import daskscore

PACKAGE = Path(daskscore.__file__).parent
ROOT = PACKAGE.parent
#: Subpackages a reader should see in the listing, one per stage of a job.
SUBPACKAGES = {"config", "engine", "worker", "io", "cluster", "ui", "devtools"}
#: The top level holds only the faces, the protocol and the bottom layer.
TOP_LEVEL = {"__init__", "__main__", "api", "cli", "errors", "protocol", "_compat"}
MAX_LINES = 450


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "builtin" not in p.parts)


def lint_imports(cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``lint-imports`` run in ``cwd`` (it reads the contracts of ``cwd/pyproject.toml``)."""
    return subprocess.run(
        [sys.executable, "-c", "from importlinter.cli import lint_imports_command as c; c()"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def test_import_contracts_hold() -> None:
    """``lint-imports`` (import-linter) checks the contracts in pyproject.toml."""
    proc = lint_imports(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout and "5 kept" in proc.stdout, proc.stdout


def test_a_broken_contract_is_caught(tmp_path: Path) -> None:
    """The contracts bite: a worker module that imports the engine fails ``lint-imports``."""
    import shutil

    copy = tmp_path / "src"
    shutil.copytree(PACKAGE, copy / "daskscore", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    bad = copy / "daskscore" / "worker" / "threads.py"
    bad.write_text(bad.read_text() + "\nfrom daskscore.engine import plan  # noqa\n")
    proc = lint_imports(copy, env={**os.environ, "PYTHONPATH": str(copy)})
    assert proc.returncode != 0
    assert "daskscore.worker.threads -> daskscore.engine.plan" in proc.stdout


def test_the_listing_shows_the_pipeline() -> None:
    subpackages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert SUBPACKAGES <= subpackages
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert top <= TOP_LEVEL, f"new top-level modules belong in a subpackage: {top - TOP_LEVEL}"


def test_modules_stay_small() -> None:
    too_long = {
        str(p.relative_to(PACKAGE)): n
        for p in _modules()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert too_long == {}


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_docstrings_state_the_rule_not_a_section(path: Path) -> None:
    """Module docstrings say the rule, not "§4 of the contract" (a document users lack)."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    assert "§" not in doc
