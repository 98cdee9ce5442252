"""``--isolate-failures``: a mini-batch that failed every try is cut in halves, and a half that
fails is cut again, down to single items, so that only the items that fail on their own are
counted failed.

Azure counts a whole mini-batch as failed when ``run()`` raises, times out or kills its
process on every try, so one poison file fails the nine good files beside it; that stays the
default.  With isolation on, :class:`Bisections` (part of the job's
:class:`~daskscore.engine.outcomes.Outcomes`) takes over such a mini-batch instead of settling
it: its *parts* — items ``[lo, hi)`` by position in the mini-batch, the files of a file
mini-batch or the rows of a tabular one — are queued for the dispatcher, which runs each in a
task of its own (:class:`~daskscore.protocol.Part`), so that a part that kills its process is
charged alone.

Retry budget: a part of several items gets one try (the mini-batch already failed all of its
tries; a failure cuts it again at once); a single item gets the deployment's whole budget
(``retry_settings.max_retries`` retries), so an item is counted failed only after as many
tries as Azure gives a mini-batch.  One poison item in a mini-batch of ``n`` costs
``max_retries + 1`` tries of the whole, one try per level of halves (``log2 n``), and
``max_retries + 1`` tries of the item itself.

The mini-batch is settled when every part is: its final record sums its *leaves* (the parts
that returned, and those that failed and were not cut further: single items, or a part lost
too often), takes the status and error of the first failed one, and its rows are those of the
parts that returned, in item order (:class:`~daskscore.engine.columns.DoneFinals` hands them
to the output writer one after another).  ``processed_mini-batches.csv`` shows every try of
every part, with the part's items in the ``items`` column.
"""

from __future__ import annotations

import operator
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from daskscore.engine.work import rows_uncounted
from daskscore.protocol import MiniBatchRecord, Part, Status

_TRY_NO = operator.attrgetter("try_no")
#: A part of one mini-batch: ``(mini_batch, lo, hi)``.
PartKey = tuple[int, int, int]
Range = tuple[int, int]


@dataclass
class Bisection:
    """One mini-batch being split: its parts, which are still open, and the settled leaves."""

    n: int
    #: every part made so far, with its depth (1: a half of the mini-batch)
    depth: dict[Range, int] = field(default_factory=dict)
    #: tries used per part
    tries: dict[Range, int] = field(default_factory=dict)
    open: set[Range] = field(default_factory=set)
    #: the final try of each part that counts (done, or failed and not cut further)
    leaves: dict[Range, MiniBatchRecord] = field(default_factory=dict)


class Bisections:
    """The mini-batches being split, and the parts ready to run (see the module's doc)."""

    def __init__(self, max_retries: int) -> None:
        self.max_retries = max_retries
        self.active: dict[int, Bisection] = {}
        #: split mini-batches that are settled (their leaves make their rows and failed items)
        self.settled: dict[int, Bisection] = {}
        #: parts to run next, in the order they were made
        self.ready: deque[PartKey] = deque()

    def __contains__(self, mb: object) -> bool:
        return mb in self.active

    def start(self, mb: int, n: int) -> None:
        """Split mini-batch ``mb`` of ``n`` items (``n >= 2``) into halves."""
        self.settled.pop(mb, None)
        cut = self.active[mb] = Bisection(n)
        self._halve(mb, cut, 0, n, 0)

    def _halve(self, mb: int, cut: Bisection, lo: int, hi: int, depth: int) -> None:
        mid = (lo + hi) // 2
        for part in ((lo, mid), (mid, hi)):
            cut.depth[part] = depth + 1
            cut.open.add(part)
            self.ready.append((mb, *part))

    def budget(self, lo: int, hi: int) -> int:
        """Retries a part gets: none for several items, the deployment's for one."""
        return self.max_retries if hi - lo == 1 else 0

    def tries_used(self, mb: int, lo: int, hi: int) -> int:
        cut = self.active.get(mb)
        return cut.tries.get((lo, hi), 0) if cut is not None else 0

    def is_open(self, mb: int, lo: int, hi: int) -> bool:
        """Whether a part still has to run (not settled, its mini-batch not given up)."""
        cut = self.active.get(mb)
        return cut is not None and (lo, hi) in cut.open

    def part(self, key: PartKey, work: Any) -> Part:
        """What a task runs for part ``key`` of a mini-batch whose work is ``work``."""
        _, lo, hi = key
        own = work[lo:hi] if isinstance(work, list) else work
        return Part(own, lo, hi, self.budget(lo, hi))

    def fold(self, mb: int, rec: MiniBatchRecord, final: bool | None = None) -> bool | None:
        """A try of a part (``rec.items``); return True when it settled its mini-batch, False
        when the mini-batch goes on, None when the try is not one this book waits for (a
        stale duplicate).  ``final``: settle the part on this try whatever it is (True: as a
        leaf, without cutting it further)."""
        cut = self.active.get(mb)
        part = rec.items
        if cut is None or part is None or part not in cut.open:
            return None
        cut.tries[part] = max(cut.tries.get(part, 0), rec.try_no)
        forced = bool(final)
        if not (forced or rec.final or rec.try_no > self.budget(*part)):
            return False
        cut.open.discard(part)
        if rec.done or forced or part[1] - part[0] == 1:
            cut.leaves[part] = replace(rec, final=True)
        else:
            self._halve(mb, cut, part[0], part[1], cut.depth[part])
        if cut.open:
            return False
        self.settled[mb] = self.active.pop(mb)
        return True

    def drop(self, mb: int) -> None:
        """Forget a mini-batch being split (the job is being stopped)."""
        self.active.pop(mb, None)

    # ------------------------------------------------------------------ settled mini-batches
    def final(self, mb: int, whole_tries: int) -> tuple[MiniBatchRecord, bool]:
        """The final record of a settled split mini-batch, and whether any of its parts
        returned (its rows are written)."""
        leaves = [rec for _, rec in sorted(self.settled[mb].leaves.items())]
        bad = [rec for rec in leaves if not rec.done]
        first = bad[0] if bad else leaves[0]
        rec = MiniBatchRecord(
            mini_batch=mb,
            try_no=whole_tries,
            worker=first.worker,
            start=min((r.start for r in leaves if r.start), default=None),
            total=sum(r.total for r in leaves),
            succeeded=sum(r.succeeded for r in leaves),
            failed=sum(r.failed for r in leaves),
            rows=sum(r.rows for r in leaves if r.done),
            status=first.status if bad else Status.RUN_DONE,
            error=first.error,
            final=True,
            run_s=sum(r.run_s for r in leaves),
            elapsed_s=sum(r.elapsed_s for r in leaves),
            peak_rss_mb=max(r.peak_rss_mb for r in leaves),
        )
        return rec, len(bad) < len(leaves)

    def pieces(self, mb: int) -> list[MiniBatchRecord]:
        """The final tries of a settled mini-batch's parts that returned, in item order."""
        cut = self.settled[mb]
        return [rec for _, rec in sorted(cut.leaves.items()) if rec.done]

    def failed_leaves(self, mb: int) -> Iterator[tuple[int, int, MiniBatchRecord, int]]:
        """``(lo, hi, final try, tries)`` of each part of a settled mini-batch with failed
        items (failed on its own, or returned too few results), in item order."""
        cut = self.settled.get(mb)
        if cut is None:
            return
        for (lo, hi), rec in sorted(cut.leaves.items()):
            if rec.failed:
                yield lo, hi, rec, cut.tries.get((lo, hi), rec.try_no)

    def order(self, mb: int, rec: MiniBatchRecord) -> tuple[Any, ...]:
        """Where a try goes among its mini-batch's in ``processed_mini-batches.csv``: the
        whole mini-batch's tries, then the parts by depth (halves, quarters, ...), position
        and try."""
        if rec.items is None:
            return (0, 0, 0, rec.try_no)
        cut = self.settled.get(mb) or self.active.get(mb)
        depth = cut.depth.get(rec.items, 99) if cut is not None else 99
        return (1, depth, rec.items[0], rec.try_no)


class SplitBooks:
    """What :class:`~daskscore.engine.outcomes.Outcomes` does for ``--isolate-failures``:
    split a mini-batch whose last try failed instead of settling it, fold its parts' tries in,
    and settle it when they are (mixed into ``Outcomes``, whose books it uses)."""

    isolate: bool
    split: Bisections
    tries: dict[int, int]
    part_offset: dict[PartKey, int]
    work: Any
    _hist: dict[int, list[MiniBatchRecord]]

    if TYPE_CHECKING:  # (Outcomes' own)

        def planned(self, mb: int) -> int: ...

        def _add_try(self, mb: int, rec: MiniBatchRecord) -> None: ...

        def _finalize(self, mb: int, rec: MiniBatchRecord, done: bool | None = None) -> None: ...

    def _split_instead(self, mb: int, rec: MiniBatchRecord) -> bool:
        """With isolation on, split a mini-batch whose last try failed (rather than settle
        it), when it has two items or more; say whether it did."""
        if not self.isolate or rec.done:
            return False
        if rows_uncounted(self.work[mb]):  # rows known only from a try that read them
            n = rec.total  # (0: reading them failed, or the process died; no part would do)
        else:
            n = rec.total or max((r.total for r in self._hist.get(mb, ())), default=0)
            n = n or self.planned(mb)
        if n < 2:
            return False
        self.split.start(mb, n)
        return True

    def _part_try(self, rec: MiniBatchRecord, final: bool | None = None) -> bool:
        """Fold a try of a part in; return True when it settled its mini-batch."""
        mb = rec.mini_batch
        settled = self.split.fold(mb, rec, final)
        if settled is None:
            return False  # (a duplicate, or its mini-batch is no longer split)
        self._add_try(mb, self._part_numbered(rec))
        if settled:
            final_rec, done = self.split.final(mb, self.tries.get(mb, 0))
            self._finalize(mb, final_rec, done)
        return bool(settled)

    def _earlier_part(self, rec: MiniBatchRecord) -> None:
        """Note a try of a part from an earlier run (``--resume``, ``--retry-failed``): the
        part's tries in this run are numbered after it, as a whole mini-batch's are."""
        if rec.items is not None:
            key = (rec.mini_batch, *rec.items)
            self.part_offset[key] = max(self.part_offset.get(key, 0), rec.try_no)

    def _part_numbered(self, rec: MiniBatchRecord) -> MiniBatchRecord:
        """A part's try of this run, numbered after that part's tries in earlier runs."""
        key = (rec.mini_batch, *rec.items) if rec.items is not None else None
        offset = self.part_offset.get(key, 0) if key is not None else 0
        return replace(rec, try_no=rec.try_no + offset) if offset else rec

    def splitting(self, mb: int) -> bool:
        """Whether mini-batch ``mb`` is being split (its parts run, not itself)."""
        return mb in self.split

    def take_parts(self) -> list[PartKey]:
        """The parts made since the last call, to run, in order."""
        ready = list(self.split.ready)
        self.split.ready.clear()
        return ready

    def _in_order(self, mb: int, tries: list[MiniBatchRecord]) -> list[MiniBatchRecord]:
        """A mini-batch's tries in report order (see :meth:`Bisections.order`)."""
        if len(tries) > 1 and any(r.items is not None for r in tries):
            return sorted(tries, key=lambda r: self.split.order(mb, r))
        return sorted(tries, key=_TRY_NO)


def items_text(items: tuple[int, int] | None) -> str:
    """A part's items as ``processed_mini-batches.csv`` shows them: ``4`` or ``0-4`` (0-based,
    inclusive); empty for a whole mini-batch."""
    if items is None:
        return ""
    lo, hi = items
    return str(lo) if hi - lo == 1 else f"{lo}-{hi - 1}"
