"""Every try of a job, in mini-batch and try order: as records (:attr:`TryRows.attempts`),
or as the rows of ``processed_mini-batches.csv`` and ``report.html``
(:meth:`TryRows.attempt_rows`).  The clean finals' rows come from the columns; for the CSV
file they are formatted a few thousand at a time from them
(:meth:`daskscore.engine.columns.CleanFinals.csv_lines`).  A mixin of
:class:`daskscore.engine.outcomes.Outcomes`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from daskscore.engine.columns import CLEAN, OPEN, RESTORED, CleanFinals
from daskscore.engine.isolate import items_text
from daskscore.io.triescsv import Lines
from daskscore.protocol import MiniBatchRecord

#: Clean rows of ``processed_mini-batches.csv`` formatted at a time.
LINES_AT_ONCE = 16384
#: Mini-batches whose tries are walked at a time.
CHUNK = 1 << 16


class TryRows:
    """The tries of the books, as records and as rows."""

    state: bytearray
    clean: CleanFinals
    _hist: dict[int, list[MiniBatchRecord]]
    _full: dict[int, MiniBatchRecord]
    _n_final: int
    _n_tries: int
    _listed: tuple[int, list[MiniBatchRecord]] | None

    if TYPE_CHECKING:  # (SplitBooks')

        def _in_order(self, mb: int, tries: list[MiniBatchRecord]) -> list[MiniBatchRecord]: ...

    @property
    def attempts(self) -> list[MiniBatchRecord]:
        """Every try, by mini-batch and try number (made on the first read after a change, and
        kept until the next: :meth:`iter_attempts` walks a big job's without keeping them)."""
        if self._listed is None or self._listed[0] != self._n_tries:
            self._listed = (self._n_tries, list(self.iter_attempts()))
        return self._listed[1]

    def attempt_count(self) -> int:
        return self._n_tries

    def iter_attempts(self) -> Iterator[MiniBatchRecord]:
        """Every try, by mini-batch and try number (a split one's parts after it)."""
        make = self.clean.maker(final=False)
        for ids in self._tried_chunks():
            for mb in map(int, ids):
                tries = self._hist.get(mb)
                if tries is not None:
                    yield from self._in_order(mb, tries)
                else:
                    yield make(mb)

    def attempt_lines(self) -> Iterator[tuple[Any, ...] | Lines]:
        """:meth:`attempt_rows`, with the clean finals' rows formatted for the CSV file a few
        thousand at a time (:class:`~daskscore.io.triescsv.Lines`): what
        :func:`~daskscore.io.triescsv.write_attempt_rows` writes, at a fraction of the cost."""
        import numpy as np

        state = np.frombuffer(self.state, np.uint8)
        for ids in self._tried_chunks():
            states = state[ids]
            whole = np.flatnonzero((states != CLEAN) & (states != RESTORED))
            at = 0
            for pos in [*whole.tolist(), len(ids)]:
                for a in range(at, pos, LINES_AT_ONCE):
                    yield self.clean.csv_lines(ids[a : min(pos, a + LINES_AT_ONCE)])
                if pos < len(ids):
                    yield from self._rows_of(int(ids[pos]))
                at = pos + 1

    def _rows_of(self, mb: int) -> Iterator[tuple[Any, ...]]:
        tries = self._hist.get(mb)
        if tries is None:
            yield self.clean.row(mb)
            return
        for r in self._in_order(mb, tries):
            yield (
                mb, r.try_no, r.worker, r.start, r.total, r.succeeded, r.failed,
                r.elapsed_s, r.run_s, r.status.value, r.error, items_text(r.items),
                r.peak_rss_mb,
            )  # fmt: skip

    def attempt_rows(self, every: int = 1) -> Iterator[tuple[Any, ...]]:
        """Every try as a row of ``processed_mini-batches.csv`` (before formatting): mini-batch,
        try, worker, start, total, succeeded, failed, elapsed_s, run_s, status, error, items,
        peak_rss_mb; by mini-batch and try.  ``every``: the tries of every n-th mini-batch with
        tries only."""
        import numpy as np

        state, seen = np.frombuffer(self.state, np.uint8), 0
        for ids in self._tried_chunks():
            picked = ids[-seen % every :: every]  # (the chunk's every n-th)
            seen += len(ids)
            states = state[picked]
            clean = (states == CLEAN) | (states == RESTORED)
            rows = iter(self.clean.rows(picked[clean]))  # (read together, not one by one)
            for mb, is_clean in zip(picked.tolist(), clean.tolist(), strict=True):
                if is_clean:
                    yield next(rows)
                else:
                    yield from self._rows_of(mb)

    def tried_count(self) -> int:
        """Mini-batches with a try."""
        return self._n_final - len(self._full) + len(self._hist)  # a full final has tries

    def _tried_chunks(self) -> Iterator[Any]:
        """The mini-batches with a try, in order, a chunk of :data:`CHUNK` mini-batches at a
        time (numpy arrays, none empty): those settled, and those kept whole.  A big job's
        ids are never all in memory at once."""
        import numpy as np

        state = np.frombuffer(self.state, np.uint8)
        hist = np.sort(np.fromiter(self._hist, np.int64, len(self._hist)))
        for lo in range(0, len(state), CHUNK):
            hi = min(lo + CHUNK, len(state))
            tried = state[lo:hi] != OPEN
            a, b = np.searchsorted(hist, [lo, hi])
            tried[hist[a:b] - lo] = True
            ids = np.flatnonzero(tried)
            if len(ids):
                yield ids + lo
