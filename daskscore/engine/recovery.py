"""What the dispatcher does when a task's process died (mixed into
:class:`~daskscore.engine.dispatch.Dispatcher`).

What its transport knows of it (its ledger, or for a shipped job the scheduler's note) says
which mini-batches it committed (kept), which tries of the others failed before it died
(recorded as they ended), which ``run()`` was in flight (charged one try: ``PROCESS_DIED`` or
``RUN_TIMEOUT``, named out of memory when it was killed for that) and which had not started or
not been committed (run again, uncharged).  The tries counted beyond the commits are then noted
in the dead attempt's ledger (a ``D`` line, :func:`~daskscore.io.ledger.note_charged`), the
one file a ``--resume`` reads them back from.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from daskscore.engine.isolate import PartKey
from daskscore.engine.memory import MemoryDeaths
from daskscore.engine.outcomes import Outcomes
from daskscore.engine.transport import SharedDisk
from daskscore.engine.workqueue import WorkQueue
from daskscore.io.ledger import LedgerState, note_charged
from daskscore.protocol import MiniBatchRecord, WorkerJob
from daskscore.ui.progress import Progress
from daskscore.worker.deaths import exit_time

#: A mini-batch whose task is lost this many times without it ever being charged (the worker
#: died before it started) is failed rather than retried for ever.
MAX_UNCHARGED_LOSSES = 10


class Recovery:
    """Recovers the tasks whose process died (the dispatcher's part)."""

    client: Any
    job: WorkerJob
    outcomes: Outcomes
    transport: SharedDisk
    progress: Progress
    queue: WorkQueue
    memory: MemoryDeaths
    isolate: set[int]
    losses: dict[int, int]
    parts: deque[PartKey]
    part_losses: dict[PartKey, int]

    if TYPE_CHECKING:  # (the dispatcher's own)

        def _record(
            self, attempt: str, records: list[MiniBatchRecord], block: Any = None
        ) -> tuple[set[int], Any, int]: ...

        def _raise_if_disk(self, exc: BaseException | None) -> None: ...

    def _recover(self, attempt: str, ids: list[int], part: PartKey | None = None) -> None:
        """A task's process died: keep what it committed, charge the run() it was in."""
        state = self.transport.lost(self.client, self.job, attempt)
        # its failed tries of mini-batches it did not commit count as they ended, before the
        # run() in flight (a retry of one of them, maybe) is charged
        finished, _, _ = self._record(attempt, state.committed + state.tried)
        tried = {rec.mini_batch for rec in state.tried}
        requeue: list[int] = []
        for mb in ids if part is None else ():
            if mb in finished or self.outcomes.is_final(mb) or self.outcomes.splitting(mb):
                continue
            if state.running is not None and state.running[0] == mb:
                if self._charge(state, mb):
                    finished.add(mb)
                elif not self.outcomes.splitting(mb):
                    self.isolate.add(mb)
                    requeue.append(mb)
                continue
            if mb in tried:  # (charged: its retries go on from its last try)
                requeue.append(mb)
                continue
            self.losses[mb] = self.losses.get(mb, 0) + 1
            if self.losses[mb] >= MAX_UNCHARGED_LOSSES:
                self.outcomes.charge_crash(mb, self.outcomes.tries_used(mb) + 1, False, final=True)
                finished.add(mb)
                continue
            requeue.append(mb)
        if part is not None and self._recover_part(state, part):
            finished.add(part[0])
        # every mini-batch this loss settled — committed, or charged its last try — is done
        failed = self.outcomes.failed_among(finished)
        self.progress.add_done(len(finished), self.outcomes.items_of(finished), *failed)
        self._note(attempt, state.tried)
        # crashed work goes to the front, in order, so the output can be assembled early
        self.queue.extendleft(reversed(sorted(requeue)))
        self.parts.extend(self.outcomes.take_parts())

    def _note(self, attempt: str, tried: list[MiniBatchRecord]) -> None:
        """Note in the dead attempt's ledger the tries counted for it beyond its commits
        (``tried``, and those just charged): they are in no other file, and a resume reads
        them back from there."""
        records, self.outcomes.charged = tried + self.outcomes.charged, []
        if not records:
            return
        try:
            note_charged(self.job.staging, attempt, records)
        except OSError as exc:
            self._raise_if_disk(exc)
            raise

    def _charge(self, state: LedgerState, mb: int, part: PartKey | None = None) -> bool:
        """Charge the run() in flight when ``state``'s process died (of ``part``, if given)
        one try, named out of memory when it was killed for that; True when that settled its
        mini-batch."""
        assert state.running is not None
        error, peak = self.memory.explain(state)
        return self.outcomes.charge_crash(
            mb,
            state.running[1],
            state.timed_out,
            worker=state.running_worker,
            start=state.running_start,
            error=error or state.error,
            items=(part[1], part[2]) if part is not None else None,
            peak_rss_mb=peak,
            end=exit_time(state.pid),  # (as its nanny logged it; unknown: now)
        )

    def _recover_part(self, state: LedgerState, part: PartKey) -> bool:
        """A part's process died: charge its try, or run it again; True when that settled its
        mini-batch."""
        mb, lo, hi = part
        split = self.outcomes.split
        if not split.is_open(mb, lo, hi):
            return False  # (it committed before the process died)
        if state.running is not None and state.running[0] == mb:
            if self._charge(state, mb, part):
                return True
        else:
            self.part_losses[part] = self.part_losses.get(part, 0) + 1
            if self.part_losses[part] >= MAX_UNCHARGED_LOSSES:
                used = split.tries_used(mb, lo, hi)
                return self.outcomes.charge_crash(mb, used + 1, False, final=True, items=(lo, hi))
        if split.is_open(mb, lo, hi):
            self.parts.appendleft(part)
        return False
