"""The outcome of every mini-batch: each try, and the one final try whose rows are written.

The dispatcher folds the records that tasks send back (or that their ledgers hold, when a
task's process died) into :class:`Outcomes`.  Each mini-batch gets exactly one *final* record,
so rows are written once whatever was retried or crashed; a try charged to a process that died
(``PROCESS_DIED``, ``RUN_TIMEOUT``) is recorded by :meth:`Outcomes.charge_crash` (and kept in
:attr:`Outcomes.charged` until the driver notes it in the dead attempt's ledger).  After a
``--resume``, the tries of earlier runs (commits and those notes) are folded in first
(:meth:`Outcomes.restore`) and this run's tries are numbered after them.

The books cost the driver a byte of state per mini-batch, whatever the job's size: the common
case, a mini-batch whose first try returned every result, is a 54-byte row by mini-batch id
(worker and attempt names interned; :class:`~daskscore.engine.columns.CleanFinals`), in memory
while a job is small and past that in a temporary file, and no record object is kept for it.  Only
mini-batches that failed, were retried, crashed or returned too few results keep their tries as
:class:`~daskscore.protocol.MiniBatchRecord` objects.  :attr:`Outcomes.final`,
:attr:`Outcomes.attempts` and :meth:`Outcomes.done_finals` make records on demand.

With ``--isolate-failures`` a mini-batch that failed every try is split instead, and settled
when its parts are (:mod:`daskscore.engine.isolate`).

Pure state: no Dask, and no files but the temporary one of a big job's rows.  Summaries and
logs are made from it by :mod:`daskscore.engine.finish`.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from daskscore.config import Settings
from daskscore.engine.columns import (
    CLEAN,
    DONE,
    FAILED,
    OPEN,
    RESTORED,
    CleanFinals,
    DoneFinals,
    Finals,
)
from daskscore.engine.isolate import Bisections, SplitBooks
from daskscore.engine.rebook import RetryBooks
from daskscore.engine.tryrows import TryRows
from daskscore.engine.work import (
    charged,
    counted_itself,
    crash_error,
    planned_items,
    rows_uncounted,
)
from daskscore.protocol import CleanTries, MiniBatchRecord, Status

_TRY_NO = operator.attrgetter("try_no")


class Outcomes(SplitBooks, RetryBooks, TryRows):
    """Per mini-batch tries and final outcomes of one job.

    Parameters
    ----------
    work : sequence
        The job's mini-batches (file lists or tabular splits), by id.
    settings : Settings
        The deployment's settings (retries, timeout, error threshold).
    isolate : bool
        ``--isolate-failures``: split a mini-batch that failed every try.
    """

    def __init__(self, work: Sequence[Any], settings: Settings, isolate: bool = False) -> None:
        self.work = work
        self.settings = settings
        self.isolate = isolate
        #: the mini-batches being split (--isolate-failures), and their parts
        self.split = Bisections(settings.retry_settings.max_retries)
        n = len(work)
        #: each mini-batch's state (OPEN, CLEAN, RESTORED, DONE, FAILED)
        self.state = bytearray(n)
        #: this run's tries of the mini-batches kept whole (a clean one has used 1)
        self.tries: dict[int, int] = {}
        #: the first worker's init() traceback, when init() failed (nothing was scored)
        self.init_error: str | None = None
        #: mini-batches restored from an interrupted earlier run (``--resume``)
        self.resumed = 0
        #: tries of earlier runs per mini-batch (numbering continues after them)
        self.offset: dict[int, int] = {}
        #: tries of earlier runs per part of a split mini-batch (``(mb, lo, hi)``)
        self.part_offset: dict[tuple[int, int, int], int] = {}
        self._earlier: dict[int, dict[str, int]] = {}
        self.failed_items = 0
        #: mini-batches whose final try failed before their rows were read (a CSV file that
        #: could not be cut, whose rows are not counted): charged their lines
        self.rows_unknown: set[int] = set()
        # the tries (numbered, in arrival order) and final record of mini-batches kept whole
        self._hist: dict[int, list[MiniBatchRecord]] = {}
        self._full: dict[int, MiniBatchRecord] = {}
        self._texts: dict[str, str] = {}  # the error texts of failed tries, each held once
        #: the clean finals (most of them), in columns
        self.clean = CleanFinals(n)
        # running counts
        self._n_final = self._n_failed = self._n_partial = self._n_tries = 0
        self._items_done = self._succeeded = self._rows_done = self._full_parts = 0
        self._listed: tuple[int, list[MiniBatchRecord]] | None = None
        #: the tries charged to dead processes, as their tasks numbered them, until the driver
        #: notes them in the dead attempts' ledgers (a resume reads them back from there)
        self.charged: list[MiniBatchRecord] = []

    # ------------------------------------------------------------------ folding records
    def record(self, attempt: str, records: Iterable[MiniBatchRecord]) -> set[int]:
        """Fold a task's records in; return the mini-batches that became final."""
        finished: set[int] = set()
        state, hist, keep = self.state, self._hist, self.clean.keep
        aid = self.clean.intern_attempt(attempt)
        clean = total = rows = 0  # the clean finals, counted once at the end
        for rec in records:
            mb = rec.mini_batch
            if state[mb]:
                continue  # already settled by another attempt: never count or write twice
            if rec.error:
                rec.error = self._shared(rec.error)
            if rec.items is not None or mb in self.split:  # a part's try (or a stale whole one)
                if rec.items is not None and self._part_try(replace(rec, attempt=attempt)):
                    finished.add(mb)
                continue
            if rec.try_no == 1 and mb not in hist and keep(mb, rec, aid):
                state[mb] = CLEAN
                finished.add(mb)
                clean += 1
                total += rec.total
                rows += rec.rows
                continue
            self.tries[mb] = max(self.tries.get(mb, 0), rec.try_no)
            rec = self._numbered(rec)
            self._add_try(mb, rec)
            if rec.final and not self._split_instead(mb, rec):
                self._finalize(mb, replace(rec, attempt=attempt))
                finished.add(mb)
        self._count_clean(clean, total, rows)
        return finished

    def record_clean(self, attempt: str, block: CleanTries) -> tuple[Any, int, set[int]]:
        """Fold a task's clean first tries (columns) in: most go into the columns in a few
        array operations; those of a mini-batch kept whole (earlier tries, being split) or
        with a value the columns cannot hold are folded as records.  Returns the ids kept in
        the columns (a numpy array), their items, and the other mini-batches that became
        final."""
        aid = self.clean.intern_attempt(attempt)
        hist, active = self._hist, self.split.active
        if len(hist) + len(active) <= len(block):
            whole: Collection[int] = hist.keys() | active.keys()
        else:  # (many kept whole: look up this task's own only)
            whole = {mb for mb in block.ids if mb in hist or mb in active}
        kept = self.clean.keep_block(block, self.state, aid, whole)
        ids, total = block.ids_array()[kept], 0
        if len(ids):
            total, rows = block.sums(kept)
            self._count_clean(len(ids), total, rows)
        finished: set[int] = set()
        if not kept.all():
            rest = [rec for rec, k in zip(block.records(), kept.tolist(), strict=True) if not k]
            finished = self.record(attempt, rest)
        return ids, total, finished

    def restore(self, attempt: str, records: Iterable[MiniBatchRecord]) -> None:
        """Fold in an earlier run's committed records (ledgers in run order): only succeeded
        mini-batches stay final; failed ones get a fresh retry budget in this run, and their
        earlier tries stay in the history, numbered before this run's."""
        run = attempt.split("a", 1)[0]  # "r01a000003" -> "r01"
        aid = self.clean.intern_attempt(attempt)
        for rec in records:
            mb = rec.mini_batch
            if self.state[mb]:
                continue
            if rec.error:
                rec.error = self._shared(rec.error)
            if rec.items is not None:  # a part of an earlier split: shown, not kept (it reruns)
                self._earlier_part(rec)
                self._add_try(mb, rec)
                continue
            if mb not in self._earlier and rec.try_no == 1 and self._keep(mb, rec, aid, RESTORED):
                continue
            runs = self._earlier.setdefault(mb, {})
            before = sum(n for r, n in runs.items() if r < run)
            rec = replace(rec, try_no=rec.try_no + before)
            runs[run] = max(runs.get(run, 0), rec.try_no - before)
            self.offset[mb] = sum(runs.values())
            self._add_try(mb, rec)
            if rec.final and rec.done:
                self._finalize(mb, replace(rec, attempt=attempt))
        self.resumed = self._n_final

    def _shared(self, error: str) -> str:
        """``error``, held once however many tries failed with the same text (a systematic
        failure over 10^5 mini-batches would otherwise keep 10^5 copies of its traceback)."""
        return self._texts.setdefault(error, error)

    def _numbered(self, rec: MiniBatchRecord) -> MiniBatchRecord:
        """A record of this run, its try numbered after the tries of earlier runs."""
        offset = self.offset.get(rec.mini_batch, 0)
        return replace(rec, try_no=rec.try_no + offset) if offset else rec

    def charge_crash(
        self,
        mb: int,
        try_no: int,
        timed_out: bool,
        final: bool = False,
        worker: str = "",
        start: float | None = None,
        error: str = "",
        items: tuple[int, int] | None = None,
        peak_rss_mb: float = 0.0,
        end: float | None = None,
    ) -> bool:
        """Record a try that ended with its process; return True when the mini-batch is final.
        ``error``: what is known of it (a timeout's stack, out of memory), else the usual text;
        ``items``: of that part (--isolate-failures); ``final``: settle it now, never split;
        ``end``: when the process died, where known (else now: an upper bound)."""
        if items is not None:
            total = items[1] - items[0]
        else:  # (rows not counted and not read: the books charge the split's lines)
            total = 0 if rows_uncounted(self.work[mb]) else self.planned(mb)
        end = end if end is not None and start and end >= start else time.time()
        elapsed = end - start if start else 0.0
        if timed_out:  # (ended at its deadline: not the worker's restart and init() since)
            elapsed = min(elapsed, float(self.settings.retry_settings.timeout))
        rec = MiniBatchRecord(
            mini_batch=mb,
            try_no=try_no,
            worker=worker,
            start=start,
            total=total,
            failed=total,
            status=Status.RUN_TIMEOUT if timed_out else Status.PROCESS_DIED,
            error=error or crash_error(timed_out, self.settings.retry_settings.timeout),
            elapsed_s=elapsed,
            run_s=elapsed,
            items=items,
            peak_rss_mb=peak_rss_mb,
        )
        self.charged.append(rec)
        if items is not None:
            return self._part_try(rec, True if final else None)
        self._expand(mb)
        self._add_try(mb, self._numbered(rec))
        self.tries[mb] = max(self.tries.get(mb, 0), try_no)
        if final or try_no > self.settings.retry_settings.max_retries:
            rec = replace(self._numbered(rec), final=True)
            if not final and self._split_instead(mb, rec):
                return False
            self._finalize(mb, rec)
            return True
        return False

    # ------------------------------------------------------------------ the books
    def _keep(self, mb: int, rec: MiniBatchRecord, aid: int, state: int) -> bool:
        """Keep a clean final first try in the columns; False when it is not one (it is then
        kept whole)."""
        if not self.clean.keep(mb, rec, aid):
            return False
        self.state[mb] = state
        self._count_clean(1, rec.total, rec.rows)
        return True

    def _count_clean(self, count: int, total: int, rows: int) -> None:
        self._n_final += count
        self._n_tries += count
        self._items_done += total
        self._succeeded += total
        self._rows_done += rows

    def _add_try(self, mb: int, rec: MiniBatchRecord) -> None:
        self._hist.setdefault(mb, []).append(self._charged(mb, rec))
        self._n_tries += 1

    def _charged(self, mb: int, rec: MiniBatchRecord) -> MiniBatchRecord:
        """``rec`` as counted: a failed try that never read its split's uncounted rows
        counts the split's lines (see :func:`~daskscore.engine.work.charged`; ``work[mb]``
        is only made for a try that did not count its items itself)."""
        return rec if counted_itself(rec) else charged(rec, self.work[mb])

    def _finalize(self, mb: int, rec: MiniBatchRecord, done: bool | None = None) -> None:
        """Settle ``mb`` with ``rec``; ``done``: its rows are written (default: its run()
        returned; a split mini-batch's when any part returned)."""
        self._expand(mb)
        if self.state[mb]:  # settled again (a crash charged after all): replace, as before
            self._uncount(self._full.pop(mb), self.state[mb] == DONE)
        counted = self._charged(mb, rec)
        if counted is not rec:
            self.rows_unknown.add(mb)
        else:
            self.rows_unknown.discard(mb)
        rec, done = counted, rec.done if done is None else done
        self._full[mb] = rec
        self.state[mb] = DONE if done else FAILED
        self._full_parts += rec.part is not None
        self._n_final += 1
        self.failed_items += rec.failed
        self._items_done += rec.total
        self._succeeded += rec.succeeded
        if done:
            self._rows_done += rec.rows
            self._n_partial += bool(rec.failed)
        else:
            self._n_failed += 1

    def _uncount(self, rec: MiniBatchRecord, done: bool | None = None) -> None:
        self._full_parts -= rec.part is not None
        self._n_final -= 1
        self.failed_items -= rec.failed
        self._items_done -= rec.total
        self._succeeded -= rec.succeeded
        if rec.done if done is None else done:
            self._rows_done -= rec.rows
            self._n_partial -= bool(rec.failed)
        else:
            self._n_failed -= 1

    def _expand(self, mb: int) -> None:
        """Keep a clean mini-batch whole from now on (a crash charged to it after all)."""
        if self.state[mb] not in (CLEAN, RESTORED):
            return
        clean = self.state[mb] == CLEAN
        final = self.clean.record(mb, final=True)
        self.state[mb] = OPEN
        self._n_final -= 1
        self._n_tries -= 1
        self._items_done -= final.total
        self._succeeded -= final.succeeded
        self._rows_done -= final.rows
        self._add_try(mb, replace(final, attempt=None))
        if clean:
            self.tries[mb] = max(self.tries.get(mb, 0), 1)
        self._finalize(mb, final)

    # ------------------------------------------------------------------ questions
    def planned(self, mb: int) -> int:
        """Items of mini-batch ``mb`` before it runs (a split whose rows are not counted: its
        lines)."""
        of = getattr(self.work, "planned", None)
        return int(of(mb)) if of is not None else planned_items(self.work[mb])

    def tries_used(self, mb: int) -> int:
        tries = self.tries.get(mb)
        if tries is not None:
            return tries
        return 1 if self.state[mb] == CLEAN else 0

    def is_final(self, mb: int) -> bool:
        return 0 <= mb < len(self.state) and self.state[mb] != OPEN

    def is_failed(self, mb: int) -> bool:
        return 0 <= mb < len(self.state) and self.state[mb] == FAILED

    def threshold_exceeded(self) -> bool:
        limit = self.settings.error_threshold
        return limit >= 0 and self.failed_items > limit

    def succeeded_items(self) -> int:
        return self._succeeded

    def failed_mini_batches(self) -> int:
        return self._n_failed

    def partial_mini_batches(self) -> int:
        """Settled mini-batches whose run() returned fewer results than items."""
        return self._n_partial

    def rows_written(self) -> int:
        """Rows of the mini-batches whose run() returned."""
        return self._rows_done

    def items_done(self) -> int:
        """Items of the settled mini-batches."""
        return self._items_done

    def total_items(self) -> int:
        """Items of the job: of each settled mini-batch's final try, or planned."""
        total, state = self._items_done, self.state
        pos = state.find(0)
        while pos >= 0:
            total += self.planned(pos)
            pos = state.find(0, pos + 1)
        return total

    def items_of(self, mbs: Iterable[int]) -> int:
        """Items of the final tries of ``mbs`` (those settled)."""
        total, state, full = 0, self.state, self._full
        for mb in mbs:
            s = state[mb]
            if s == CLEAN or s == RESTORED:
                total += self.clean.total_of(mb)
            elif s:
                total += full[mb].total
        return total

    def failed_among(self, mbs: Iterable[int]) -> tuple[int, int]:
        """How many of ``mbs`` are settled failed, and how many settled partial (their run()
        returned fewer results than items), as ``job_summary.json`` counts them."""
        state, full, failed, partial = self.state, self._full, 0, 0
        for mb in mbs:
            failed += state[mb] == FAILED
            partial += state[mb] == DONE and bool(full[mb].failed)
        return failed, partial

    @property
    def any_part(self) -> bool:
        """Whether a final try staged a part file (a dataset output) yet."""
        return self.clean.any_part or self._full_parts > 0

    def has_part(self, mb: int) -> bool:
        """Whether mini-batch ``mb``'s final try staged a part file (a dataset output)."""
        s = self.state[mb]
        if s == CLEAN or s == RESTORED:
            return self.clean.has_part(mb)
        return s != OPEN and self._full[mb].part is not None

    def retried_mini_batches(self) -> int:
        """Mini-batches with more than one try (in this run or an earlier one)."""
        return sum(1 for tries in self._hist.values() if any(r.try_no > 1 for r in tries))

    def ran(self, mb: int) -> bool:
        """Whether mini-batch ``mb`` had a try in this run (settled, tried, or split)."""
        return self.is_final(mb) or mb in self.tries or mb in self.split or mb in self.split.settled

    def all_tries(self, mb: int) -> int:
        """The tries of mini-batch ``mb`` (whole, not its parts') in every run of the job."""
        rec = self._full.get(mb)
        return max(self.offset.get(mb, 0) + self.tries.get(mb, 0), rec.try_no if rec else 0)

    def failure_ids(self) -> list[int]:
        """The settled mini-batches with failed items, in order."""
        return sorted(mb for mb, rec in self._full.items() if rec.failed)

    @property
    def final(self) -> Mapping[int, MiniBatchRecord]:
        """The final try of each settled mini-batch, by id (records made on demand)."""
        return Finals(self.state, self.clean, self._full)

    def done_finals(self) -> Sequence[MiniBatchRecord]:
        """The final try of every mini-batch whose run() returned, in mini-batch order (records
        made as they are read; a split one's parts that returned, in item order)."""
        pieces = {mb: self.split.pieces(mb) for mb in self.split.settled}
        return DoneFinals(self.state, self.clean, self._full, pieces)
