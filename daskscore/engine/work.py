"""A job's mini-batches as the books see them: how many items each holds before it runs, how
reports name them, and the error of a try that ended with its process."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from daskscore.protocol import MiniBatchRecord


def planned_items(work: Any) -> int:
    """Items of a mini-batch before it runs: its files, or the rows of a tabular split (the
    lines of one whose rows are not counted)."""
    if isinstance(work, list):
        return len(work)
    rows = getattr(work, "n_rows", None)
    return rows if rows is not None else getattr(work, "lines", None) or 0


def planned_total(work: Sequence[Any]) -> int:
    """Items of all mini-batches before they run (a compact work list counts them itself)."""
    total = getattr(work, "planned_total", None)
    if total is not None:
        return int(total())
    return sum(planned_items(w) for w in work)


def rows_uncounted(work: Any) -> bool:
    """Whether ``work`` is a tabular split whose rows are not counted (a CSV file that could
    not be cut): they are known once it is read."""
    return not isinstance(work, list) and getattr(work, "n_rows", 0) is None


def counted_itself(rec: MiniBatchRecord) -> bool:
    """Whether try ``rec`` counted its items itself (it returned, read some rows, or ran a
    part): :func:`charged` leaves it as it is, whatever its mini-batch."""
    return bool(rec.done or rec.total or rec.items is not None)


def charged(rec: MiniBatchRecord, work: Any) -> MiniBatchRecord:
    """``rec`` as the books count it: a failed try of a split whose rows are not counted and
    were never read (``total`` 0: reading the file failed, or its process died) counts the
    split's lines as failed items, at least 1; any other try as it is."""
    if counted_itself(rec) or not rows_uncounted(work):
        return rec
    n = max(work.lines or 0, 1)
    return replace(rec, total=n, failed=n)


def rows_note(work: Sequence[Any]) -> str:
    """A tabular job's rows, as the start line gives them: ``35 rows``, or with splits whose
    rows are not counted, ``10 rows + 1 file of 26 lines, rows unknown until read``."""
    of = getattr(work, "uncounted", None)
    if of is not None:
        n, lines = of()
    else:
        found = [w.lines or 0 for w in work if rows_uncounted(w)]
        n, lines = len(found), sum(found)
    known = planned_total(work) - lines
    if not n:
        return f"{known} rows"
    files = f"{n} file{'' if n == 1 else 's'} of {lines} lines, rows unknown until read"
    return f"{known} rows + {files}" if known else files


def describe_work(work: Any) -> list[str]:
    """The files of a mini-batch, for reports (a tabular split names its rows)."""
    if isinstance(work, list):
        return list(work)
    if rows_uncounted(work):
        return [f"{work.path} (all rows)"]
    return [f"{work.path} (rows from {work.first_row})"]


def part_of(work: Any, lo: int, hi: int) -> Any:
    """Items ``lo`` to ``hi`` (exclusive) of a mini-batch: its files, or a tabular split's
    rows as a split of their own (for reports)."""
    if isinstance(work, list):
        return work[lo:hi]
    return replace(work, first_row=work.first_row + lo, n_rows=hi - lo)


def crash_error(timed_out: bool, timeout: float) -> str:
    """The error of a try that ended with its process."""
    if timed_out:
        return (
            f"run() exceeded retry_settings.timeout ({timeout:g} s); the worker process "
            "was restarted"
        )
    return "the worker process died during run() (crash, os._exit, or killed, e.g. out of memory)"


def tries_text(n: Any) -> str:
    """``1 try``, ``3 tries``."""
    return "1 try" if n == 1 else f"{n} tries"
