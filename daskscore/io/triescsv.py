"""``logs/sys/job_report/processed_mini-batches.csv``: a row per try of each mini-batch,
written as :func:`csv.writer` writes them (CRLF line ends, fields quoted only when they must
be).  Rows come unformatted (:func:`write_attempt_rows`), or, for the clean first tries that
make most of a big job, laid out by numpy thousands at a time from the books' columns
(:func:`clean_lines`)."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from daskscore.protocol import error_line

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
    ids: Any,
    workers: Any,
    names: Sequence[Any],
    starts: Any,
    totals: Any,
    elapsed: Any,
    runs: Any,
    peaks: Any,
) -> Lines:
    """The rows of clean first tries (try 1, every item succeeded, no error), formatted as
    :func:`write_attempt_rows` formats them, byte for byte, in one go: columns as numpy arrays
    (``workers``: indexes into ``names``; ``starts`` NaN where there is none).

    The rows are laid out by numpy as one byte matrix, a row per try and a few columns per
    field, NUL where a field is shorter than its columns; the NULs dropped, the rest are the
    rows back to back.  No Python object per row: about 1 µs a row, where formatting each
    row in Python takes 5.  A row numpy's arithmetic might write otherwise than Python's
    ``format`` (a number within a millionth of a rounding tie, negative, not finite or big; a
    start outside years 1-9999) is formatted by Python.
    """
    import numpy as np

    n = len(ids)
    if n == 0:
        return Lines("", 0)
    ids, totals = np.asarray(ids, np.int64), np.asarray(totals, np.int64)
    workers = np.asarray(workers, np.int64)
    # (as the file is written: a name that is not UTF-8 gets its escapes)
    quoted = [_field(name).encode("utf-8", "backslashreplace") for name in names]
    e_text, e_ok = _fixed_bytes(elapsed, 4)
    r_text, r_ok = _fixed_bytes(runs, 4)
    p_text, p_ok = _fixed_bytes(peaks, 1, blank_zero=True)
    t_text, t_ok = _iso_bytes(starts)
    ok = e_ok & r_ok & p_ok & t_ok & (ids >= 0) & (totals >= 0)
    ok &= np.array([b"\0" not in q for q in quoted], bool)[workers]
    total = _int_bytes(totals)
    mat = np.concatenate(
        [
            _int_bytes(ids), _const(n, b",1,"), _table(quoted)[workers], _const(n, b","),
            t_text, _const(n, b","), total, _const(n, b","), total, _const(n, b",0,"),
            e_text, _const(n, b","), r_text, _const(n, b",RUN_DONE,,,"), p_text,
            _const(n, b"\r\n"),
        ],
        axis=1,
    )  # fmt: skip
    kept = mat != 0
    data = mat[kept].tobytes()
    odd = np.flatnonzero(~ok)
    if odd.size == 0:
        return Lines(data.decode("utf-8"), n)
    # the rows left to Python take the place of numpy's, which are cut out by their lengths
    ends = np.cumsum(kept.sum(axis=1)).tolist()
    parts, at = [], 0
    for i in odd.tolist():
        parts.append(data[at : ends[i - 1] if i else 0].decode("utf-8"))
        start = float(starts[i])
        # fmt: off
        parts.append(_line(
            int(ids[i]), 1, _field(names[int(workers[i])]), None if start != start else start,
            int(totals[i]), int(totals[i]), 0, float(elapsed[i]), float(runs[i]), "RUN_DONE",
            "", "", float(peaks[i]),
        ))
        # fmt: on
        at = ends[i]
    parts.append(data[at:].decode("utf-8"))
    return Lines("".join(parts), n)


def _const(n: int, text: bytes) -> Any:
    """``text`` in each of ``n`` rows (a read-only view)."""
    import numpy as np

    return np.broadcast_to(np.frombuffer(text, np.uint8), (n, len(text)))


def _table(texts: Sequence[bytes]) -> Any:
    """``texts`` as the rows of a byte matrix, NUL after each."""
    import numpy as np

    width = max(1, *map(len, texts)) if texts else 1
    return np.frombuffer(b"".join(t.ljust(width, b"\0") for t in texts), np.uint8).reshape(
        len(texts), width
    )


def _int_bytes(values: Any, lead: bool = False) -> Any:
    """Non-negative integers in decimal, a row of bytes each: as ``str`` writes them (NUL for
    the leading zeros), or with ``lead``, as many digits for each as for the biggest."""
    import numpy as np

    v = np.maximum(np.asarray(values, np.int64), 0)
    width = len(str(int(v.max()))) if len(v) else 1
    digits = np.empty((len(v), width), np.uint8)
    for col in range(width - 1, -1, -1):  # the units first
        v, d = np.divmod(v, 10)
        digits[:, col] = d
        digits[:, col] += 48
    if not lead:
        # every digit left of the highest non-zero one is a leading zero
        zero = digits == 48
        zero[:, -1] = False
        digits[np.logical_and.accumulate(zero, axis=1)] = 0
    return digits


#: a scaled value at or above this is formatted by Python: a float's product with 10**digits
#: is then no longer sure to be within a millionth of the exact one
_FIXED_MAX = 1e9


def _fixed_bytes(values: Any, digits: int, blank_zero: bool = False) -> tuple[Any, Any]:
    """``f"{v:.{digits}f}"`` of each value as a row of bytes (nothing for a zero, where
    ``blank_zero``, as ``f"..." if v else ""`` writes it), and whether numpy wrote it as
    Python does: not where the value is negative, not finite, too big, or near a tie."""
    import numpy as np

    x = np.asarray(values, np.float64)
    scale = 10**digits
    with np.errstate(invalid="ignore", over="ignore"):
        scaled = x * scale
        ok = np.isfinite(scaled) & ~np.signbit(scaled) & (scaled < _FIXED_MAX)
        # a tie is rounded on the exact binary value by Python, on the product here
        ok &= np.abs(scaled - np.floor(scaled) - 0.5) > 1e-6
        whole = np.rint(np.where(ok, scaled, 0.0)).astype(np.int64)
    out = np.concatenate(
        [_int_bytes(whole // scale), _int_bytes(whole % scale + scale, True)], axis=1
    )
    out[:, -digits - 1] = ord(".")  # where the 1 of "+ scale" kept the fraction's zeros
    if blank_zero:
        out[x == 0] = 0
        ok |= x == 0
    return out, ok


def _iso_bytes(starts: Any) -> tuple[Any, Any]:
    """:func:`_iso` of each start as a row of bytes (nothing for NaN and zero), and whether
    numpy wrote it as Python does (years 1000 to 9999: numpy writes year 999 as 0999, C's
    strftime as 999)."""
    import numpy as np

    ts = np.asarray(starts, np.float64)
    n = len(ts)
    with np.errstate(invalid="ignore"):
        has = np.isfinite(ts) & (ts != 0)
        ok = ~has | ((ts >= -30610224000.0) & (ts < 253402300799.0))
        has &= ok
        t = np.where(has, ts, 0.0)
        sec = np.floor(t)
        micro = np.round((t - sec) * 1e6)  # as _iso: to the microsecond, then to the ms
        carry = micro >= 1_000_000
        sec[carry] += 1
        micro[carry] -= 1_000_000
    # each second's text made once (a job's starts fall in few seconds), by numpy
    seconds, which = np.unique(sec.astype(np.int64), return_inverse=True)
    days = np.datetime_as_string(seconds.astype("datetime64[s]"), unit="s").astype("S19")
    out = np.concatenate(
        [
            np.frombuffer(days.tobytes(), np.uint8).reshape(-1, 19)[which.reshape(-1)],
            _const(n, b"."),
            _int_bytes((micro // 1000).astype(np.int64) + 1000, True),
            _const(n, b"+00:00"),
        ],
        axis=1,
    )
    out[:, 20] = 0  # the 1 of "+ 1000", which kept the milliseconds' zeros
    out[~has] = 0
    return out, ok


#: Characters of formatted rows held before they are written, at most (about).
FLUSH_CHARS = 1 << 20


def write_attempt_rows(path: Path, rows: Iterable[tuple[Any, ...] | Lines]) -> int:
    """``processed_mini-batches.csv`` from rows in :data:`ATTEMPT_COLUMNS` order, not yet
    formatted (``start`` in epoch seconds, the whole ``error``, numbers as numbers; a row
    without the last two columns leaves them empty), or :class:`Lines` already formatted;
    return how many rows it wrote.

    Written as :func:`csv.writer` writes them (CRLF line ends, fields quoted only when they
    must be), thousands of lines at a time, or fewer when their errors are long (about
    :data:`FLUSH_CHARS` at most: 4096 tries' errors of 16,000 characters held 130 MB): a
    million clean tries' rows (:class:`Lines`) take about a second, other rows 10-15 µs each.
    """
    count = 0
    names: dict[Any, str] = {}  # worker names and statuses, quoted: a job has few of them
    # a non-UTF-8 file name in an error is written as \udcff
    with open(path, "w", newline="", encoding="utf-8", errors="backslashreplace") as fh:
        fh.write(",".join(ATTEMPT_COLUMNS) + "\r\n")
        lines: list[str] = []
        held = 0  # characters in lines
        for row in rows:
            if isinstance(row, Lines):
                count += len(lines) + row.count
                fh.write("".join(lines) + row.text)
                lines.clear()
                held = 0
                continue
            mb, tn, worker, start, total, ok, bad, elapsed, run, status, error, *more = row
            items, peak = (more[0], more[1]) if len(more) > 1 else ("", 0.0)
            who = names.get(worker)
            if who is None:
                who = names[worker] = _field(worker)
            how = names.get(status)
            if how is None:
                how = names[status] = _field(status)
            line = _line(mb, tn, who, start, total, ok, bad, elapsed, run, how, error, items, peak)
            lines.append(line)
            held += len(line)
            if len(lines) >= 4096 or held >= FLUSH_CHARS:  # (long errors: a few MB at most)
                count += len(lines)
                fh.write("".join(lines))
                lines.clear()
                held = 0
        count += len(lines)
        fh.write("".join(lines))
    return count


# fmt: off
def _line(
    mb: Any, tn: Any, who: str, start: float | None, total: Any, ok: Any, bad: Any,
    elapsed: float, run: float, how: str, error: str, items: str, peak: float,
) -> str:
    """One row of the file, its worker and status already quoted."""
    # fmt: on
    return (
        f"{mb},{tn},{who},{_iso(start)},{total},{ok},{bad},{elapsed:.4f},{run:.4f},{how},"
        f"{_field(error_line(error)) if error else ''},"
        f"{_field(items) if items else ''},{f'{peak:.1f}' if peak else ''}\r\n"
    )


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
