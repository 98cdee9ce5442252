"""``logs/sys/job_report/processed_mini-batches.csv``: a row per try of each mini-batch,
written as :func:`csv.writer` writes them (CRLF line ends, fields quoted only when they must
be).  Rows come unformatted (:func:`write_attempt_rows`), or, for the clean first tries that
make most of a big job, formatted thousands at a time from the books' columns
(:func:`clean_lines`)."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

#: The columns: Azure's, then daskscore's own.
ATTEMPT_COLUMNS = [
    "mini_batch_id",
    "try",
    "worker",
    "start",
    "total",
    "succeeded",
    "failed",
    "elapsed_s",
    "run_s",
    "status",
    "error",
    # daskscore's own, after Azure's: a part's items (--isolate-failures; empty for the whole
    # mini-batch) and the peak RSS of the worker process during run() (see worker.memory)
    "items",
    "peak_rss_mb",
]


def write_attempts(path: Path, attempts: Iterable[dict[str, Any]]) -> None:
    """``processed_mini-batches.csv``: one row per try of a mini-batch (records' JSON form)."""
    write_attempt_rows(
        path,
        (
            (
                _field(rec["mini_batch"]),
                _field(rec["try"]),
                rec.get("worker", ""),
                rec.get("start"),
                _field(rec["total"]),
                _field(rec["succeeded"]),
                _field(rec["failed"]),
                rec.get("elapsed_s", 0.0),
                rec.get("run_s", 0.0),
                rec["status"],
                rec.get("error", ""),
                _items(rec.get("items")),
                rec.get("peak_rss_mb") or 0.0,
            )
            for rec in attempts
        ),
    )


class Lines(NamedTuple):
    """Rows of ``processed_mini-batches.csv`` already formatted (see :func:`clean_lines`)."""

    text: str
    count: int


def clean_lines(
    ids: list[int],
    workers: list[Any],
    starts: list[float],
    totals: list[int],
    elapsed: list[float],
    runs: list[float],
    peaks: list[float],
) -> Lines:
    """The rows of clean first tries (try 1, every item succeeded, no error), formatted as
    :func:`write_attempt_rows` formats them, in one go: columns as lists, ``starts`` NaN
    where there is none."""  # fmt: skip
    whos: dict[Any, str] = {}
    for worker in set(workers):
        whos[worker] = _field(worker)
    text = "".join(
        [
            f"{mb},1,{whos[w]},{_iso(st) if st == st else ''},{t},{t},0,{e:.4f},{r:.4f},"
            f"RUN_DONE,,,{f'{p:.1f}' if p else ''}\r\n"
            for mb, w, st, t, e, r, p in zip(
                ids, workers, starts, totals, elapsed, runs, peaks, strict=True
            )
        ]
    )
    return Lines(text, len(ids))


def write_attempt_rows(path: Path, rows: Iterable[tuple[Any, ...] | Lines]) -> int:
    """``processed_mini-batches.csv`` from rows in :data:`ATTEMPT_COLUMNS` order, not yet
    formatted (``start`` in epoch seconds, the whole ``error``, numbers as numbers; a row
    without the last two columns leaves them empty), or :class:`Lines` already formatted;
    return how many rows it wrote.

    Written as :func:`csv.writer` writes them (CRLF line ends, fields quoted only when they
    must be), thousands of lines at a time: a million tries take about a second.
    """
    count = 0
    names: dict[Any, str] = {}  # worker names and statuses, quoted: a job has few of them
    # a non-UTF-8 file name in an error is written as \udcff
    with open(path, "w", newline="", encoding="utf-8", errors="backslashreplace") as fh:
        fh.write(",".join(ATTEMPT_COLUMNS) + "\r\n")
        lines: list[str] = []
        for row in rows:
            if isinstance(row, Lines):
                count += len(lines) + row.count
                fh.write("".join(lines) + row.text)
                lines.clear()
                continue
            mb, tn, worker, start, total, ok, bad, elapsed, run, status, error, *more = row
            items, peak = (more[0], more[1]) if len(more) > 1 else ("", 0.0)
            who = names.get(worker)
            if who is None:
                who = names[worker] = _field(worker)
            how = names.get(status)
            if how is None:
                how = names[status] = _field(status)
            lines.append(
                f"{mb},{tn},{who},{_iso(start)},{total},{ok},{bad},"
                f"{elapsed:.4f},{run:.4f},{how},"
                f"{_field(_last_line(error)) if error else ''},"
                f"{_field(items) if items else ''},{f'{peak:.1f}' if peak else ''}\r\n"
            )
            if len(lines) >= 4096:
                count += len(lines)
                fh.write("".join(lines))
                lines.clear()
        count += len(lines)
        fh.write("".join(lines))
    return count


_SPECIAL = re.compile(r'[,"\r\n]')


def _items(items: Any) -> str:
    """A part's items (a record's JSON ``[lo, hi]``) as the ``items`` column shows them."""
    if not items:
        return ""
    lo, hi = int(items[0]), int(items[1])
    return str(lo) if hi - lo == 1 else f"{lo}-{hi - 1}"


def _field(value: Any) -> str:
    """One field as :func:`csv.writer` (``QUOTE_MINIMAL``) writes it."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    if _SPECIAL.search(text) is None:
        return text
    return '"' + text.replace('"', '""') + '"'


def _iso(ts: float | None) -> str:
    """``ts`` (epoch seconds) as ISO 8601 UTC to the millisecond, as ``datetime.isoformat``
    writes it; the last second's text is kept (a job's report writes thousands per second)."""
    global _LAST_SECOND
    if not ts:
        return ""
    sec = math.floor(ts)
    micro = round((ts - sec) * 1e6)  # datetime.fromtimestamp rounds to the microsecond
    if micro >= 1_000_000:
        sec, micro = sec + 1, micro - 1_000_000
    last, text = _LAST_SECOND
    if last != sec:
        text = _iso_second(sec)
        _LAST_SECOND = (sec, text)
    return text + _MILLIS[micro // 1000]


_MILLIS = tuple(f".{ms:03d}+00:00" for ms in range(1000))
_LAST_SECOND: tuple[int | None, str] = (None, "")


@functools.lru_cache(maxsize=256)
def _iso_second(sec: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(sec, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def _last_line(text: str) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""
