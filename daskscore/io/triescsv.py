"""``logs/sys/job_report/processed_mini-batches.csv``: a row per try of each mini-batch,
written as :func:`csv.writer` writes them (CRLF line ends, fields quoted only when they must
be).  Rows come unformatted (:func:`write_attempt_rows`), or, for the clean first tries that
make most of a big job, formatted thousands at a time from the books' columns
(:func:`clean_lines`)."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Sequence
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

    The fields are made by Arrow's compute kernels, a column at a time, with no Python object
    per row: about 0.3 µs a row, where formatting each row in Python took 5.  A number Arrow's
    arithmetic might round otherwise than Python's ``format`` (within a millionth of a tie,
    negative, not finite, or too big) is formatted by Python.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(ids)
    if n == 0:
        return Lines("", 0)
    quoted = _texts([_field(name) for name in names])
    total = _digits(totals)
    fields = [
        _digits(ids), _text("1"), quoted.take(_ints(workers)),
        _iso_column(starts), total, total, _text("0"), _fixed(elapsed, 4), _fixed(runs, 4),
        _text("RUN_DONE"), _text(""), _text(""), _fixed(peaks, 1, blank_zero=True),
    ]  # fmt: skip
    # the line end joined to the last field, so that the rows lie back to back in one buffer
    fields[-1] = pc.binary_join_element_wise(fields[-1], _text("\r\n"), _text(""))
    rows = pc.binary_join_element_wise(*fields, _text(","))
    ends = np.frombuffer(rows.buffers()[1], np.int32)[rows.offset : rows.offset + n + 1]
    data = rows.buffers()[2]
    assert data is not None and rows.null_count == 0
    return Lines(data[int(ends[0]) : int(ends[-1])].to_pybytes().decode("utf-8"), n)


# Arrow arrays are made from their buffers here: ``pyarrow.array`` imports pandas on its first
# call (0.6 s), which the driver has no other use for.


def _ints(values: Any) -> Any:
    """An Arrow int64 array of ``values``."""
    import numpy as np
    import pyarrow as pa

    data = np.ascontiguousarray(values, np.int64)
    return pa.Array.from_buffers(pa.int64(), len(data), [None, pa.py_buffer(data)])


def _bools(values: Any) -> Any:
    """An Arrow boolean array of ``values``."""
    import numpy as np
    import pyarrow as pa

    data = np.asarray(values, bool)
    bits = np.packbits(data, bitorder="little")
    return pa.Array.from_buffers(pa.bool_(), len(data), [None, pa.py_buffer(bits)])


def _texts(values: Sequence[str]) -> Any:
    """An Arrow string array of ``values``."""
    import numpy as np
    import pyarrow as pa

    encoded = [v.encode("utf-8") for v in values]
    offsets = np.zeros(len(encoded) + 1, np.int32)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    return pa.Array.from_buffers(
        pa.string(), len(encoded), [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))]
    )


def _text(value: str) -> Any:
    """An Arrow string scalar (a ``str`` argument to a compute function is made into one by
    ``pyarrow.scalar``, which imports pandas)."""
    return _texts([value])[0]


def _digits(values: Any) -> Any:
    """Integers as text, an Arrow array."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.cast(_ints(values), pa.string())


#: a scaled value at or above this is formatted by Python: a float's product with 10**digits
#: is then no longer sure to be within a millionth of the exact one
_FIXED_MAX = 1e9


def _fixed(values: Any, digits: int, blank_zero: bool = False) -> Any:
    """``f"{v:.{digits}f}"`` of each value, an Arrow array (``""`` for a zero, where
    ``blank_zero``, as ``f"..." if v else ""`` writes it)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    x = np.asarray(values, np.float64)
    scale = 10**digits
    with np.errstate(invalid="ignore", over="ignore"):
        scaled = x * scale
        safe = np.isfinite(scaled) & ~np.signbit(scaled) & (scaled < _FIXED_MAX)
        # a tie is rounded on the exact binary value by Python, on the product here: leave
        # the values near one (and the others Arrow's path cannot take) to Python
        safe &= np.abs(scaled - np.floor(scaled) - 0.5) > 1e-6
        whole = np.rint(np.where(safe, scaled, 0.0)).astype(np.int64)
    text = pc.binary_join_element_wise(
        _digits(whole // scale),
        pc.utf8_lpad(_digits(whole % scale), width=digits, padding="0"),
        _text("."),
    )
    odd = np.flatnonzero(~safe)
    if odd.size:
        mask = np.zeros(len(x), bool)
        mask[odd] = True
        text = pc.replace_with_mask(
            text, _bools(mask), _texts([f"{v:.{digits}f}" for v in x[odd].tolist()])
        )
    if blank_zero:
        text = pc.if_else(_bools(x == 0), _text(""), text)
    return text


def _iso_column(starts: Any) -> Any:
    """:func:`_iso` of each start (``""`` for NaN and zero), an Arrow array."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    ts = np.asarray(starts, np.float64)
    with np.errstate(invalid="ignore"):
        has = np.isfinite(ts) & (ts != 0)
        t = np.where(has, ts, 0.0)
        sec = np.floor(t)
        micro = np.round((t - sec) * 1e6)  # as _iso: to the microsecond, then to the ms
        carry = micro >= 1_000_000
        sec[carry] += 1
        micro[carry] -= 1_000_000
    # the seconds' text by numpy (a job's starts fall in few seconds: each is made once),
    # the milliseconds' from a table
    seconds, which = np.unique(sec.astype(np.int64), return_inverse=True)
    days = np.datetime_as_string(seconds.astype("datetime64[s]"), unit="s")
    text = pc.binary_join_element_wise(
        _texts(days.tolist()).take(_ints(which.reshape(-1))),
        _texts(_MILLIS).take(_ints(micro // 1000)),
        _text(""),
    )
    return pc.if_else(_bools(has), text, _text(""))


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
