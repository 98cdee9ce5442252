"""``--retry-failed``'s part of the books: what a pass leaves of its mini-batches kept whole,
and how the next pass folds it in (mixed into :class:`~daskscore.engine.outcomes.Outcomes`).

A clean mini-batch (one try, every result) is restored from its ledger line; the others are
written out whole at the end of a pass (:meth:`RetryBooks.book`: every try as numbered, and the
final one), since a ledger misses what the driver charged (a dead process, a timeout).  The
next pass folds them in (:meth:`RetryBooks.reopen`) and opens again every mini-batch that
failed, returned too few results or never ran.  Pure state, like the rest of the books.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from daskscore.engine.columns import DONE, OPEN
from daskscore.protocol import MiniBatchRecord

_TRY_NO = operator.attrgetter("try_no")
#: One mini-batch's books: its tries, and its final try (None: it did not settle).
Book = tuple[list[MiniBatchRecord], "MiniBatchRecord | None"]


class RetryBooks:
    """The books of a pass written out, and read back by the next (``--retry-failed``)."""

    state: bytearray
    tries: dict[int, int]
    offset: dict[int, int]
    resumed: int
    _hist: dict[int, list[MiniBatchRecord]]
    _full: dict[int, MiniBatchRecord]
    _n_final: int
    _earlier: dict[int, dict[str, int]]

    if TYPE_CHECKING:  # (Outcomes' own)

        def failure_ids(self) -> list[int]: ...

        def _add_try(self, mb: int, rec: MiniBatchRecord) -> None: ...

        def _earlier_part(self, rec: MiniBatchRecord) -> None: ...

        def _finalize(self, mb: int, rec: MiniBatchRecord, done: bool | None = None) -> None: ...

        def _uncount(self, rec: MiniBatchRecord, done: bool | None = None) -> None: ...

        def restore(self, attempt: str, records: Iterable[MiniBatchRecord]) -> None: ...

    def book(self) -> Iterator[Book]:
        """Every mini-batch kept whole (anything but one clean try), in order: its tries as
        numbered, and its final try (``None`` when it did not settle)."""
        for mb in sorted(self._hist):
            yield sorted(self._hist[mb], key=_TRY_NO), self._full.get(mb)

    def reopen(self, books: Iterable[Book]) -> list[int]:
        """Fold in an earlier pass's :meth:`book` (after its clean finals were restored from
        the ledgers) and open again every mini-batch that failed, returned too few results or
        never ran; return those, in order.  Their tries stay as history and this pass's are
        numbered after them; the others' finals stand."""
        for tries, final in books:
            mb = tries[0].mini_batch if tries else final.mini_batch if final else -1
            if not 0 <= mb < len(self.state) or self.state[mb]:
                continue  # (restored from a ledger already: the caller leaves them out)
            for rec in tries:
                self._earlier_part(rec)
                self._add_try(mb, rec)
            self.offset[mb] = max([r.try_no for r in tries] + [final.try_no if final else 0])
            split = any(r.items is not None for r in tries)  # (its parts run again, whole)
            if final is not None and final.done and not final.failed and not split:
                self._finalize(mb, final)
        for mb in self.failure_ids():  # partial returns (failed ones never settled here)
            rec = self._full.pop(mb)
            self._uncount(rec, self.state[mb] == DONE)
            self.state[mb] = OPEN
            self.offset[mb] = max(self.offset.get(mb, 0), rec.try_no)
        self.tries.clear()
        self.resumed = self._n_final
        return [mb for mb, s in enumerate(self.state) if s == OPEN]

    def fold_later(self, attempt: str, records: Iterable[MiniBatchRecord], book: str) -> None:
        """Fold in what a pass after the book's (``book``: the run that wrote it, ``r01``)
        committed before it was interrupted or killed, once :meth:`reopen` has folded the
        book: its tries are numbered after the book's, and a mini-batch it settled is final
        (one that failed every try there gets a fresh retry budget, as after a resume)."""
        records = [rec for rec in records if not self.state[rec.mini_batch]]
        for rec in records:
            self._earlier.setdefault(rec.mini_batch, {book: self.offset.get(rec.mini_batch, 0)})
        self.restore(attempt, records)
