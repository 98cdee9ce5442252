"""The notebooks of ``notebooks/`` run top to bottom in a fresh Python kernel (nbclient), from
their own folder as Jupyter runs them, and are kept in the repository without outputs.

Without nbclient, nbformat or ipykernel the execution tests are skipped on a developer's
machine and fail in CI (``$CI`` set), where the test extra installs them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from storage_emulators import in_ci

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
NAMES = ["quickstart", "develop-a-scoring-script"]
CELL_TIMEOUT_S = 120
#: jupyter_core 5 warns so when JUPYTER_PLATFORM_DIRS is unset; not ours to fix
PLATFORM_DIRS = (
    "ignore:Jupyter is migrating its paths to use standard platformdirs:DeprecationWarning"
)


def _jupyter() -> tuple[Any, Any]:
    try:
        import ipykernel  # noqa: F401 - the kernel nbclient starts
        import nbformat
        from nbclient import NotebookClient
    except ImportError as exc:
        message = f"{exc.name} is not installed (pip install -e '.[test]')"
        if in_ci():
            pytest.fail(f"{message} (CI is set: the notebook tests are required)", pytrace=False)
        pytest.skip(message)
    return nbformat, NotebookClient


def _run(name: str) -> Any:
    nbformat, NotebookClient = _jupyter()
    book = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(book)
    client = NotebookClient(
        book,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},  # the kernel's cwd, as in Jupyter
    )
    client.execute()
    return book


def _text(cell: Any) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            parts.append(out["text"])
        elif out["output_type"] in ("execute_result", "display_data"):
            parts.append(out["data"].get("text/plain", ""))
        elif out["output_type"] == "error":
            parts.append(f"{out['ename']}: {out['evalue']}")
    return "".join(parts)


def _all_text(book: Any) -> str:
    return "\n".join(_text(c) for c in book.cells if c.cell_type == "code")


def _cell(book: Any, start: str) -> Any:
    """The code cell whose source starts with ``start``."""
    (cell,) = [c for c in book.cells if c.cell_type == "code" and c.source.startswith(start)]
    return cell


def _rich(cell: Any, mime: str) -> list[str]:
    """The ``mime`` outputs of a cell (as the last display update left them)."""
    return [
        out["data"][mime]
        for out in cell.get("outputs", [])
        if out["output_type"] in ("execute_result", "display_data") and mime in out["data"]
    ]


def _errors(book: Any) -> list[tuple[list[str], str]]:
    return [
        (c.metadata.get("tags", []), out["ename"])
        for c in book.cells
        if c.cell_type == "code"
        for out in c.get("outputs", [])
        if out["output_type"] == "error"
    ]


@pytest.mark.parametrize("name", NAMES)
def test_notebooks_are_kept_without_outputs(name: str) -> None:
    raw = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text(encoding="utf-8"))
    assert raw["nbformat"] == 4
    assert raw["metadata"]["kernelspec"]["name"] == "python3"
    code = [c for c in raw["cells"] if c["cell_type"] == "code"]
    assert code
    assert [c for c in code if c["outputs"] or c["execution_count"] is not None] == []


@pytest.mark.slow
@pytest.mark.filterwarnings(PLATFORM_DIRS)
def test_quickstart_notebook() -> None:
    book = _run("quickstart")
    text = _all_text(book)
    assert _errors(book) == []
    assert "Dask dashboard: http://127.0.0.1:" in text
    assert "120 predictions" in text
    assert "digit_0000_label2.png" in text
    assert "Completed - 120 items" in text
    assert "part.0.parquet" in text
    # score(...).compute() shows its progress live in the cell, ending at every mini-batch
    shown = _rich(_cell(book, "predictions = ddf.compute()"), "text/html")
    (progress,) = [html for html in shown if 'class="daskscore-progress"' in html]
    assert "data-field='state'>done<" in progress
    assert '<span data-field="items">120/120</span> items' in progress
    # the job's result: its card (verdict, report link), a one-line repr
    job = _cell(book, "result = daskscore.run(")
    (card,) = [html for html in _rich(job, "text/html") if 'class="daskscore-result"' in html]
    assert 'data-verdict="Completed"' in card and "120</b> of 120 items succeeded" in card
    assert re.search(r'<a data-field="report" href="[^"]+report\.html"', card)
    assert "JobResult(Completed: 120 of 120 items succeeded;" in _text(job)
    # per-try timings as a DataFrame and the timeline drawn from it, with no helper written
    timeline = _cell(book, "tries = result.mini_batches")
    assert "mini_batch_id" in _text(timeline) and "RUN_DONE" in _text(timeline)
    assert _rich(timeline, "image/png")


@pytest.mark.slow
@pytest.mark.filterwarnings(PLATFORM_DIRS)
def test_develop_a_scoring_script_notebook() -> None:
    book = _run("develop-a-scoring-script")
    assert _errors(book) == []  # the script's exception is shown by daskscore.validate
    assert not [c for c in book.cells if "importlib" in c.source]
    text = _all_text(book)
    assert "ValidationResult(OK: init() and run() work; mini-batch 0 of 5, 5 files;" in text
    failing = _cell(book, "check = daskscore.validate(deployment, inputs, mini_batch=1)")
    assert "ValidationResult(run() failed: ZeroDivisionError: division by zero;" in _text(failing)
    (shown,) = _rich(failing, "text/html")
    assert "score.py" in shown and "mean = sum(values) / len(values)" in shown  # its traceback
    assert re.search(r"sample_007\.csv\s+NaN\s+False", text)  # fixed in process, then on Dask
    assert "Completed - 24 of 24 items" in text
