"""A job's mini-batches as the books see them: how many items each holds before it runs, how
reports name them, and the error of a try that ended with its process."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any


def planned_items(work: Any) -> int:
    """Items of a mini-batch before it runs: its files, or the rows of a tabular split if known."""
    if isinstance(work, list):
        return len(work)
    return getattr(work, "n_rows", None) or 0


def planned_total(work: Sequence[Any]) -> int:
    """Items of all mini-batches before they run (a compact work list counts them itself)."""
    total = getattr(work, "planned_total", None)
    if total is not None:
        return int(total())
    return sum(planned_items(w) for w in work)


def describe_work(work: Any) -> list[str]:
    """The files of a mini-batch, for reports (a tabular split names its rows)."""
    if isinstance(work, list):
        return list(work)
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
