"""``<output>/failed_items.csv``: one row per input item that failed, to act on.

Written whenever any item failed (and removed from an output folder when none did, so that a
file left by an earlier run never describes this one).  Columns::

    mini_batch,file,status,tries,error

``file`` is the input path or URL as listed (a tabular mini-batch is one row naming its file
and its rows), ``status`` the final try's status as in ``processed_mini-batches.csv``
(``RUN_EXCEPTION``, ``RUN_TIMEOUT``, ``PROCESS_DIED``), or ``PARTIAL`` for the files of a
mini-batch whose ``run()`` returned fewer results than it was given (which of them it left out
cannot be told from a list of results), ``tries`` the tries it had (in every run of the job),
``error`` the exception's line (its name and message), secrets masked, cut to
:data:`ERROR_CELL` characters: a mini-batch's rows share its error, and a long one (pandas'
``KeyError`` listing every column) repeated on each of a large mini-batch's files made the file
grow as files times error length.  The mini-batch's whole error is in ``job_summary.json``
(``failures[]``, by ``mini_batch_id``), ``processed_mini-batches.csv`` and the worker's
``logs/user/error/`` file.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from daskscore.config.settings import redact
from daskscore.engine.outcomes import Outcomes
from daskscore.engine.work import describe_work, part_of
from daskscore.io.outputdir import FAILED_ITEMS_FILE
from daskscore.protocol import Status, error_line

FAILED_ITEMS = FAILED_ITEMS_FILE
COLUMNS = ("mini_batch", "file", "status", "tries", "error")
PARTIAL = "PARTIAL"
#: Characters of an error ``failed_items.csv`` keeps on each row, at most (cut with "…").
ERROR_CELL = 500


def error_cell(error: str | None, secrets: tuple[str, ...] = ()) -> str:
    """An error as a row of ``failed_items.csv`` gives it: its exception's line, secrets
    masked (before it is cut: a cut never leaves part of a secret), at most
    :data:`ERROR_CELL` characters."""
    line = redact(error_line(error or ""), secrets)
    if len(line) <= ERROR_CELL:
        return line
    return line[: ERROR_CELL - 1] + "…"


def failed_item_rows(
    outcomes: Outcomes, secrets: tuple[str, ...] = ()
) -> Iterator[tuple[Any, ...]]:
    """The rows of ``failed_items.csv``, in mini-batch order, then input order."""
    for mb in outcomes.failure_ids():
        leaves = list(outcomes.split.failed_leaves(mb))
        if leaves:  # split (--isolate-failures): only the items that failed on their own
            for lo, hi, part, tries in leaves:
                tries += outcomes.part_offset.get((mb, lo, hi), 0)  # (numbered over every run)
                status = PARTIAL if part.status == Status.RUN_DONE else str(part.status)
                error = error_cell(part.error, secrets)
                for name in item_names(part_of(outcomes.work[mb], lo, hi)):
                    yield mb, name, status, tries, error
            continue
        rec = outcomes.final[mb]
        status = PARTIAL if rec.status == Status.RUN_DONE else str(rec.status)
        tries = outcomes.all_tries(mb)  # (numbered over every run)
        named = named_failures(outcomes.work[mb], rec.error) if status == PARTIAL else []
        if named:  # run() said which of its files failed: those, each with its reason
            for name, reason in named:
                yield mb, name, status, tries, error_cell(reason, secrets)
            continue
        error = error_cell(rec.error, secrets)
        unread = mb in outcomes.rows_unknown
        for name in item_names(outcomes.work[mb], None if unread else rec.total):
            yield mb, name, status, tries, error


def named_failures(work: Any, error: str | None) -> list[tuple[str, str]]:
    """The files of a mini-batch that its run() named as failed, each with its reason: the
    lines of the try's error that begin ``<file>: `` with one of the mini-batch's files, as
    the reasons a DataFrame lists in ``attrs[FAILED_ITEMS_ATTR]`` do (the built-in MLflow
    scorer's).  Empty when no line does: every file of the mini-batch is listed then."""
    if not isinstance(work, list) or not error:
        return []
    names = item_names(work)
    known = set(names)
    found: dict[str, str] = {}
    for line in error.splitlines():
        at = line.find(": ")
        while at > 0:
            if line[:at] in known:
                found.setdefault(line[:at], line)
                break
            at = line.find(": ", at + 2)
    return [(name, found[name]) for name in names if name in found]


def failed_files(outcomes: Outcomes, mb: int) -> list[str]:
    """The files of mini-batch ``mb`` that failed, for reports: all of them, or those of a
    split mini-batch that failed on their own (``--isolate-failures``)."""
    work = outcomes.work[mb]
    leaves = list(outcomes.split.failed_leaves(mb))
    if not leaves:
        rec = outcomes.final.get(mb)
        named = named_failures(work, rec.error) if rec and rec.status == Status.RUN_DONE else []
        return [name for name, _ in named] or describe_work(work)
    return [name for lo, hi, _, _ in leaves for name in describe_work(part_of(work, lo, hi))]


def item_names(work: Any, read: int | None = None) -> list[str]:
    """A mini-batch's items as ``failed_items.csv`` names them; ``read``: the rows its final
    try read (None: none, a split whose rows are not counted then says so)."""
    if isinstance(work, list):
        return [os.fsdecode(f) if isinstance(f, bytes) else f for f in work]
    first, n = work.first_row, work.n_rows if work.n_rows is not None else read
    rows = f"rows {first}-{first + n - 1}" if n else f"rows from {first}"
    if work.n_rows is None and read is None:
        rows = f"rows unknown: {work.lines or 0} lines"
    return [f"{work.path} ({rows})"]


def write_failed_items(
    out_dir: Path, outcomes: Outcomes, secrets: tuple[str, ...] = ()
) -> Path | None:
    """Write ``<out_dir>/failed_items.csv`` when any item failed and return its path; else
    remove one left by an earlier run and return None."""
    path = Path(out_dir) / FAILED_ITEMS
    rows = failed_item_rows(outcomes, secrets)
    first = next(rows, None)
    if first is None:
        path.unlink(missing_ok=True)
        return None
    tmp = path.with_name(FAILED_ITEMS + ".partial")
    # a non-UTF-8 file name is written with backslash escapes (\xff), never a crash
    with open(tmp, "w", newline="", encoding="utf-8", errors="backslashreplace") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        writer.writerow(first)
        writer.writerows(rows)
    os.replace(tmp, path)
    return path


def read_failed_items(path: Path | None) -> Any:
    """``failed_items.csv`` at ``path`` as a pandas DataFrame (empty, with its columns, when
    there is none)."""
    import pandas as pd

    if path is None or not path.is_file():
        return pd.DataFrame({name: [] for name in COLUMNS})
    return pd.read_csv(path, keep_default_na=False)
