"""What the daskscore page of the Dask dashboard shows of a job beyond its counts: its name
(deployment, input, output), where its logs and report are, and its failures so far.

Built by the driver (it has the job's plan and outcomes) and handed to
:class:`daskscore.ui.dashboard.JobBoard`, which publishes it with the counts.  Events travel
as msgpack: numbers, strings and lists only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from daskscore.engine.outcomes import Outcomes
from daskscore.protocol import Part, error_line
from daskscore.ui.explain import failure_status
from daskscore.ui.termtext import shown as written_out

#: Failures shown on the page, at most (the newest are kept; failed_items.csv has them all).
MAX_FAILURES = 50
#: Characters of a traceback shown on the page, at most (its end: where it was raised).
MAX_TRACEBACK = 4000
#: The newest failures shown with their traceback (the others with their error line only):
#: each publication of the page's counts is an event the scheduler keeps (1000 of them).
MAX_TRACEBACKS = 5
#: Characters of a failure's error line shown on the page, at most.
MAX_ERROR_LINE = 300
#: Files named in a failure's row, at most.
MAX_FILES = 3


def deployment_name(source: Path | None) -> str | None:
    """The deployment's ``name`` (the YAML key), or its file's path when it has none."""
    if source is None:
        return None
    try:
        import yaml

        doc = yaml.safe_load(Path(source).read_text(encoding="utf-8"))
    except Exception:  # noqa: BLE001 - a name for a page: the path will do
        doc = None
    name = doc.get("name") if isinstance(doc, dict) else None
    return str(name) if name else str(source)


def about(
    source: Path | None, input_path: str, out_dir: Path, remote_out: str | None = None
) -> dict[str, Any]:
    """The job's name and paths, as the page shows them."""
    return {
        "name": deployment_name(source),
        "deployment_path": str(source) if source else None,
        "input": str(input_path),
        "output": remote_out or str(out_dir),
        "logs": str(out_dir / "logs"),
        "report": str(out_dir / "report.html"),
    }


def failures(outcomes: Outcomes, work: list[Any]) -> list[list[Any]]:
    """The settled mini-batches with failed items so far, the last :data:`MAX_FAILURES`:
    ``[mini_batch, files, status, tries, error (its line, cut to :data:`MAX_ERROR_LINE`),
    traceback (its end, for the newest :data:`MAX_TRACEBACKS`; else empty)]``."""
    rows = []
    final = outcomes.final
    shown = outcomes.failure_ids()[-MAX_FAILURES:]
    for i, mb in enumerate(shown):
        rec = final[mb]
        error = str(rec.error or "")
        status = str(getattr(rec.status, "value", rec.status))
        said = {"status": status, "error": error, "failed": rec.failed, "succeeded": rec.succeeded}
        rows.append(
            [
                mb,
                written_out(_files(work[mb])) if 0 <= mb < len(work) else "",
                failure_status(said),  # (a partial one says so, as the report does)
                outcomes.all_tries(mb),
                error_line(error, limit=MAX_ERROR_LINE),
                error[-MAX_TRACEBACK:] if len(shown) - i <= MAX_TRACEBACKS else "",
            ]
        )
    return rows


def _files(work: Any) -> str:
    if isinstance(work, Part):
        return f"items {work.lo}-{work.hi - 1} of " + _files(work.work)
    path = getattr(work, "path", None)
    if path is not None:  # a tabular split
        return f"rows from {getattr(work, 'first_row', 0)} of {path}"
    names = [str(p) for p in work]
    more = f" (+{len(names) - MAX_FILES} more)" if len(names) > MAX_FILES else ""
    return ", ".join(names[:MAX_FILES]) + more
