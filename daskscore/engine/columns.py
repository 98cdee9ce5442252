"""The clean final tries of a job, in fixed-width rows: 54 bytes per mini-batch, in memory
while the job is small and in a temporary file beyond that; and the views that make records
of them again.

Most mini-batches of a job end with one try whose ``run()`` returned every result.  The books
(:class:`daskscore.engine.outcomes.Outcomes`) keep no record object for them: their numbers go
into a row of a :class:`~daskscore.io.rowstore.RowStore` at the mini-batch's id (worker,
attempt and part-file names interned), and :meth:`CleanFinals.record` makes the record again
when someone asks for it.  A try that does not fit (a value out of a field's range, a field
the rows do not know) is refused, and the books keep it whole.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any

from daskscore.io.rowstore import RowStore
from daskscore.io.triescsv import Lines, clean_lines
from daskscore.protocol import (
    CLEAN_COLUMNS,
    CleanTries,
    MiniBatchRecord,
    Status,
    is_clean_final,
)

_NAN = math.nan

#: A mini-batch's state in the books: not settled; settled by a clean first try of this run,
#: or of an earlier run (``--resume``); settled by a record kept whole, whose run() returned,
#: or not.
OPEN, CLEAN, RESTORED, DONE, FAILED = 0, 1, 2, 3, 4

#: A clean final's row (54 bytes): peak RSS during run() in MiB as float32 (0.1 MiB is all it
#: says); ``offset``/``bytes``: append_row's byte range; ``part``: the part file (0: none).
ROW = [
    ("worker", "<u2"), ("attempt", "<u4"), ("start", "<f8"), ("total", "<u4"), ("rows", "<u4"),
    ("elapsed", "<f8"), ("run", "<f8"), ("peak", "<f4"), ("offset", "<u4"), ("bytes", "<u4"),
    ("part", "<u4"),
]  # fmt: skip
#: The columns of a :class:`CleanTries` the driver reads ...
_BLOCK = [name for name, _, _ in CLEAN_COLUMNS]
#: ... and the fields here, of the same names, that take them as they are (the others:
#: :meth:`CleanFinals.keep_block`).
_KEPT = ("total", "rows", "start", "elapsed", "run", "peak")
_U32 = (1 << 32) - 1
#: Rows read at a time by :meth:`CleanFinals.maker` and single look-ups of a stored file.
_WINDOW = 256


def _values(column: Any) -> Any:
    """An ``array.array`` as a numpy array (a view; numpy takes its typecode)."""
    import numpy as np

    return np.frombuffer(column, column.typecode)


def _u32(value: Any) -> int:
    """``value`` as an int of 0 .. 2**32-1; TypeError or OverflowError otherwise."""
    v = operator.index(value)
    if not 0 <= v <= _U32:
        raise OverflowError(v)
    return v


class CleanFinals:
    """Rows of the clean final tries of ``n`` mini-batches (try 1, every result); ``budget``:
    the bytes kept in memory before the rows go to a file (default
    :data:`daskscore.io.rowstore.IN_MEMORY_BYTES`)."""

    def __init__(self, n: int, budget: int | None = None) -> None:
        self.n = n
        self.workers: list[Any] = []
        self._worker_ids: dict[Any, int] = {}
        self.attempts: list[str] = []
        self._attempt_ids: dict[str, int] = {}
        self.parts: list[str] = []
        self._part_ids: dict[str, int] = {}
        self.store = RowStore(n, ROW, budget)
        #: whether any row has a byte range, a part file
        self.any_range = self.any_part = False
        #: rows read from a stored file (first id, rows), and writes so far: a window read
        #: while a write happened is not kept
        self._window: tuple[int, list[tuple[Any, ...]]] = (-1, [])
        self._writes = 0

    def keep(self, mb: int, rec: MiniBatchRecord, attempt_id: int) -> bool:
        """Keep ``rec`` as mini-batch ``mb``'s final, written by attempt ``attempt_id``, if it
        is clean (:func:`~daskscore.protocol.is_clean_final`) and its values fit; False
        otherwise (nothing is kept)."""
        if not is_clean_final(rec):
            return False
        wid = self._intern_worker(rec.worker)
        try:
            if wid > 0xFFFF:
                raise OverflowError(wid)
            offset, size = _u32(rec.start_offset), _u32(rec.bytes)
            row = (
                wid, attempt_id, _NAN if rec.start is None else float(rec.start),
                _u32(rec.total), _u32(rec.rows), float(rec.elapsed_s), float(rec.run_s),
                float(rec.peak_rss_mb), offset, size,
                0 if rec.part is None else _u32(self._part_id(rec.part)),
            )  # fmt: skip
        except (OverflowError, TypeError, ValueError):
            return False
        self.any_range |= bool(offset or size)
        self.any_part |= rec.part is not None
        self.store.put(mb, row)
        self._wrote()
        return True

    def keep_block(
        self, block: CleanTries, state: bytearray, aid: int, whole: Collection[int]
    ) -> Any:
        """Keep ``block``'s tries (clean first tries, columns) as the finals of their
        mini-batches, written by attempt ``aid``, and mark those ``CLEAN`` in ``state``: the
        ones still open, not in ``whole`` (mini-batches kept whole: earlier tries, being
        split) and whose values fit the rows.  Returns a mask of ``block``'s rows kept
        (a numpy array): a handful of array operations for a task, whatever its size."""
        import numpy as np

        ids = block.ids_array()
        ok = (ids >= 0) & (ids < self.n)
        states = np.frombuffer(state, np.uint8)
        ok[ok] = states[ids[ok]] == OPEN
        if whole:
            ok &= ~np.isin(ids, np.fromiter(whole, np.int64, len(whole)))
        columns = {name: _values(getattr(block, name)) for name in _BLOCK}
        for name in ("total", "rows", "offset", "size"):  # unsigned 32-bit fields here
            ok &= (columns[name] >= 0) & (columns[name] <= _U32)
        take = ids[ok]
        wid = self._intern_worker(block.worker) if len(take) else 0
        if not len(take) or wid > 0xFFFF:
            return ok & (wid <= 0xFFFF)
        rows = np.zeros(len(take), self.store.dtype)
        rows["worker"], rows["attempt"] = wid, aid
        for name in _KEPT:
            rows[name] = columns[name][ok]
        rows["offset"], rows["bytes"] = columns["offset"][ok], columns["size"][ok]
        self.any_range |= bool(rows["offset"].any() or rows["bytes"].any())
        if block.part is not None:
            ids_of = np.array([0, *map(self._part_id, block.part_names)], np.uint32)
            rows["part"] = ids_of[_values(block.part)[ok]]
            self.any_part |= bool(rows["part"].any())
        self.store.write(take, rows)
        self._wrote()
        states[take] = CLEAN
        return ok

    def intern_attempt(self, attempt: str) -> int:
        aid = self._attempt_ids.get(attempt)
        if aid is None:
            aid = self._attempt_ids[attempt] = len(self.attempts)
            self.attempts.append(attempt)
        return aid

    def _intern_worker(self, worker: Any) -> int:
        wid = self._worker_ids.get(worker)
        if wid is None:
            wid = self._worker_ids[worker] = len(self.workers)
            self.workers.append(worker)
        return wid

    def _part_id(self, part: str) -> int:
        pid = self._part_ids.get(part)
        if pid is None:
            pid = self._part_ids[part] = len(self.parts) + 1
            self.parts.append(part)
        return pid

    def _wrote(self) -> None:
        """After a write (not before: a window read meanwhile is not kept)."""
        self._writes += 1
        self._window = (-1, [])

    def _get(self, mb: int) -> tuple[Any, ...]:
        """Mini-batch ``mb``'s row as a tuple (a stored file's: read a window at a time)."""
        if not self.store.on_disk:
            return self.store.get(mb)
        lo, window = self._window
        if not lo <= mb < lo + len(window):
            lo, writes = mb - mb % _WINDOW, self._writes
            window = self.store.span(lo, min(self.n, lo + _WINDOW)).tolist()
            if writes == self._writes:
                self._window = (lo, window)
        return window[mb - lo]

    def has_part(self, mb: int) -> bool:
        return self.any_part and self._get(mb)[10] != 0

    def total_of(self, mb: int) -> int:
        """Items of mini-batch ``mb``'s clean final."""
        return int(self._get(mb)[3])

    def record(self, mb: int, final: bool) -> MiniBatchRecord:
        """Mini-batch ``mb``'s record: its final (its attempt named), or its try as the worker
        sent it (``final=False``)."""
        return self.maker(final)(mb)

    def maker(self, final: bool) -> Callable[[int], MiniBatchRecord]:
        """:meth:`record` for many mini-batches: the names looked up once, the rows read a
        window at a time."""
        workers, attempts, names, get = self.workers, self.attempts, self.parts, self._get
        done = Status.RUN_DONE

        def make(mb: int) -> MiniBatchRecord:
            wid, aid, start, total, rows, elapsed, run, peak, offset, size, part = get(mb)
            return MiniBatchRecord(
                mini_batch=mb,
                try_no=1,
                worker=workers[wid],
                start=None if start != start else start,  # NaN: no start
                total=total,
                succeeded=total,
                rows=rows,
                status=done,
                final=True,
                run_s=run,
                elapsed_s=elapsed,
                start_offset=offset,
                bytes=size,
                part=names[part - 1] if part else None,
                attempt=attempts[aid] if final else None,
                peak_rss_mb=round(peak, 1),
            )

        return make

    def csv_lines(self, ids: Any) -> Lines:
        """The rows of ``processed_mini-batches.csv`` of the clean finals ``ids`` (a numpy
        array, in order), formatted in one go from the rows."""
        rows = self.store.read(ids)
        return clean_lines(
            ids, rows["worker"], self.workers, rows["start"], rows["total"],
            rows["elapsed"], rows["run"], rows["peak"],
        )  # fmt: skip

    def row(self, mb: int) -> tuple[Any, ...]:
        """Mini-batch ``mb``'s try as a row of ``processed_mini-batches.csv`` (unformatted)."""
        return self._row(mb, self._get(mb))

    def rows(self, ids: Any) -> list[tuple[Any, ...]]:
        """:meth:`row` of the clean finals ``ids`` (a numpy array), read together."""
        values = self.store.read(ids).tolist()
        return [self._row(mb, v) for mb, v in zip(ids.tolist(), values, strict=True)]

    def _row(self, mb: int, values: tuple[Any, ...]) -> tuple[Any, ...]:
        wid, _, start, total, _, elapsed, run, peak, *_ = values
        return (
            mb, 1, self.workers[wid], None if start != start else start, total,
            total, 0, elapsed, run, "RUN_DONE", "", "", peak,
        )  # fmt: skip


class Finals(Mapping[int, MiniBatchRecord]):
    """The final try of each settled mini-batch, by id: a clean one's record is made from the
    columns when it is read, the others' are the records kept whole (``full``)."""

    def __init__(
        self, state: bytearray, clean: CleanFinals, full: dict[int, MiniBatchRecord]
    ) -> None:
        self._state, self._clean, self._full = state, clean, full

    def __getitem__(self, mb: int) -> MiniBatchRecord:
        s = self._state[mb] if 0 <= mb < len(self._state) else OPEN
        if s == CLEAN or s == RESTORED:
            return self._clean.record(mb, final=True)
        if s == OPEN:
            raise KeyError(mb)
        return self._full[mb]

    def __contains__(self, mb: object) -> bool:
        return isinstance(mb, int) and 0 <= mb < len(self._state) and self._state[mb] != OPEN

    def __iter__(self) -> Iterator[int]:
        return (mb for mb, s in enumerate(self._state) if s)

    def __len__(self) -> int:
        return len(self._state) - self._state.count(OPEN)


class DoneFinals(Sequence[MiniBatchRecord]):
    """The final try of every mini-batch whose run() returned, in mini-batch order; read once
    by the output writer, each record made as it is read.  A mini-batch split into parts
    (``--isolate-failures``) gives the final tries of its parts that returned, in item order
    (``pieces``): its rows are theirs, one after the other."""

    def __init__(
        self,
        state: bytearray,
        clean: CleanFinals,
        full: dict[int, MiniBatchRecord],
        pieces: Mapping[int, list[MiniBatchRecord]] | None = None,
    ) -> None:
        self._state, self._clean, self._full = state, clean, full
        self._pieces = pieces or {}

    def __iter__(self) -> Iterator[MiniBatchRecord]:
        make, full, pieces = self._clean.maker(final=True), self._full, self._pieces
        for mb, s in enumerate(self._state):
            if s == CLEAN or s == RESTORED:
                yield make(mb)
            elif s == DONE:
                if pieces and mb in pieces:
                    yield from pieces[mb]
                else:
                    yield full[mb]

    def byte_ranges(self) -> Iterator[tuple[str, int, int]]:
        """``(attempt, start_offset, bytes)`` of each final in order, as :meth:`__iter__`'s
        records give them, without making the records: the clean ones' ranges come from the
        columns an array at a time, consecutive ranges of one part file joined."""
        import numpy as np

        clean, full, pieces = self._clean, self._full, self._pieces
        states = np.frombuffer(self._state, np.uint8)
        for lo in range(0, len(states), _RANGES_AT_ONCE):  # (a few MB at a time, whatever the job)
            state = states[lo : lo + _RANGES_AT_ONCE]
            whole = np.flatnonzero(state == DONE) + lo
            done = np.flatnonzero((state == CLEAN) | (state == RESTORED)) + lo
            at = 0
            for mb in [*whole.tolist(), -1]:
                upto = len(done) if mb < 0 else int(np.searchsorted(done, mb))
                yield from _joined(clean, done[at:upto])
                at = upto
                if mb >= 0:
                    for rec in pieces[mb] if mb in pieces else (full[mb],):
                        yield rec.attempt, rec.start_offset, rec.bytes

    def __len__(self) -> int:
        state = self._state
        extra = sum(len(p) - 1 for mb, p in self._pieces.items() if state[mb] == DONE)
        return len(state) - state.count(OPEN) - state.count(FAILED) + extra

    def __getitem__(self, index: Any) -> Any:
        return list(self)[index]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]


#: Clean finals whose byte ranges are joined at a time (the ranges of two such runs that
#: follow on are joined by the assembly).
_RANGES_AT_ONCE = 1 << 16


def _joined(clean: CleanFinals, ids: Any) -> Iterator[tuple[str, int, int]]:
    """The byte ranges of the clean finals ``ids`` (in order): consecutive ranges of one
    attempt's part file joined into one."""
    import numpy as np

    if not len(ids) or not clean.any_range:
        return
    rows = clean.store.read(ids)
    attempt, start, size = (rows[c].astype(np.int64) for c in ("attempt", "offset", "bytes"))
    keep = size > 0
    attempt, start, size = attempt[keep], start[keep], size[keep]
    if not len(size):
        return
    # a new range where the attempt changes or the bytes do not follow on
    new = np.ones(len(size), bool)
    new[1:] = (attempt[1:] != attempt[:-1]) | (start[1:] != start[:-1] + size[:-1])
    heads = np.flatnonzero(new)
    lengths = np.add.reduceat(size, heads)
    names = clean.attempts
    for head, length in zip(heads.tolist(), lengths.tolist(), strict=True):
        yield names[int(attempt[head])], int(start[head]), length
