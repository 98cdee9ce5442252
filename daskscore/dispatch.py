"""The dispatcher: keeps tasks in flight and folds their outcomes into the job's books.

Each task is a run of several mini-batches, sized by guided self-scheduling
(:func:`daskscore.batching.next_task_size`), never less than a tenth of a second of work once
the mini-batches' mean time is known; two are in flight per worker.  When a task's
process dies, its ledger says which mini-batches it committed (kept), which ``run()`` was in
flight (charged one try: ``PROCESS_DIED`` or ``RUN_TIMEOUT``) and which had not started (run
again, uncharged).  A shipped job's tasks bring their part files home with their records (see
:mod:`daskscore.shipping`): the dispatcher writes them, and their ledger, into the staging
folder; a task lost with its process tells which ``run()`` it was in through the scheduler.
"""

from __future__ import annotations

import logging
import queue
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distributed import Client

from . import batching
from .books import Books
from .errors import DaskScoreError, InitFailed
from .ledger import LedgerState, LedgerWriter, read_ledger
from .plugin import WorkerJob, cancel_job, raise_init_errors
from .progress import Progress
from .shipping import put_files, relay_state
from .tasks import PROGRESS_TOPIC, Payload, TaskResult, run_task

logger = logging.getLogger("daskscore")

#: Tasks in flight per worker: one running, one queued behind it so a worker never waits for
#: the driver's round trip between two tasks.
TASKS_PER_WORKER = 2
#: The shortest task worth sending once mini-batches are known to be quick: the round trip
#: between a worker finishing a task and the driver's next one reaching it (5-50 ms on two
#: busy cores) must fit in the task queued behind it.
MIN_TASK_SECONDS = 0.1
#: How long the driver waits for a task before it redraws progress.
POLL_S = 0.25
#: Seconds between two lines of logs/job_progress_overview.txt.
OVERVIEW_S = 10.0
#: A mini-batch whose task is lost this many times without it ever being charged (the worker
#: died before it started) is failed rather than retried for ever.
MAX_UNCHARGED_LOSSES = 10
#: How often the driver recounts the cluster's workers: on a cluster it did not start, workers
#: come and go, and the window of tasks in flight and their size follow them.
RECOUNT_S = 2.0


class Dispatcher:
    """Keeps tasks in flight and folds their outcomes into the books."""

    def __init__(
        self,
        client: Client,
        job: WorkerJob,
        books: Books,
        batches: list[list[str]],
        workers: int,
        progress: Progress,
        run_no: int = 1,
        count_workers: Callable[[], int] | None = None,
    ) -> None:
        self.client = client
        self.job = job
        self.books = books
        self.batches = batches
        self.workers = workers
        self.progress = progress
        self.run_no = run_no
        self.count_workers = count_workers
        self.last_count = time.monotonic()
        self.queue: deque[int] = deque(mb for mb in range(len(batches)) if not books.is_final(mb))
        self.isolate: set[int] = set()
        self.losses: dict[int, int] = {}
        self.inflight: dict[Any, tuple[str, list[int]]] = {}
        self.seq = 0
        #: seconds and count of the mini-batches finished so far (sizes the tail's tasks)
        self.mb_seconds = 0.0
        self.mb_count = 0
        self.last_overview = time.monotonic()
        self.done: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.topic = f"{PROGRESS_TOPIC}-{job.job_id}"
        client.subscribe_topic(self.topic, self._on_progress)

    def _on_progress(self, event: Any) -> None:
        _, msg = event
        self.progress.add_live(int(msg.get("items", 0)))

    def check_init(self) -> None:
        raise_init_errors(self.client, self.job.job_id)

    def run(self, on_tick: Callable[[], None] | None = None) -> None:
        """Run every mini-batch left; ``on_tick`` is called after each redraw of progress."""
        while self.queue or self.inflight:
            self._fill()
            try:
                fut = self.done.get(timeout=POLL_S)
            except queue.Empty:
                fut = None
            while fut is not None:
                if fut in self.inflight:
                    self._handle(fut)
                try:
                    fut = self.done.get_nowait()
                except queue.Empty:
                    fut = None
            self.progress.draw()
            if on_tick is not None:
                on_tick()
            now = time.monotonic()
            if self.count_workers is not None and now - self.last_count >= RECOUNT_S:
                self._recount()
                self.last_count = now
            if now - self.last_overview >= OVERVIEW_S:
                self.books.write_overview()
                self.last_overview = now
            if self.books.threshold_exceeded():
                self._abort()
                return

    def _recount(self) -> None:
        try:
            count = self.count_workers() if self.count_workers else 0
        except Exception:  # noqa: BLE001 - a busy scheduler: keep the last count
            logger.debug("counting the workers failed", exc_info=True)
            return
        if count and count != self.workers:
            logger.info("the cluster has %d workers (was %d)", count, self.workers)
            self.workers = count

    def _fill(self) -> None:
        window = self.workers * TASKS_PER_WORKER
        while self.queue and len(self.inflight) < window:
            ids = self._take()
            self.seq += 1
            attempt = f"r{self.run_no:02d}a{self.seq:06d}"
            payload = Payload([(mb, self.books.tries_used(mb), self.batches[mb]) for mb in ids])
            fut = self.client.submit(
                run_task,
                self.job.job_id,
                attempt,
                payload,
                key=f"daskscore-{self.job.job_id}-{attempt}",
                pure=False,
                resources=self.job.resources or None,
            )
            self.inflight[fut] = (attempt, ids)
            fut.add_done_callback(self.done.put)

    def _take(self) -> list[int]:
        if self.queue[0] in self.isolate:
            return [self.queue.popleft()]
        size = batching.next_task_size(len(self.queue), self.workers, least=self._least())
        ids: list[int] = []
        while self.queue and len(ids) < size and self.queue[0] not in self.isolate:
            ids.append(self.queue.popleft())
        return ids

    def _least(self) -> int:
        """The fewest mini-batches that make a task of MIN_TASK_SECONDS, from the mean time
        of the mini-batches finished so far (1 until one has)."""
        if not self.mb_count or self.mb_seconds <= 0:
            return 1
        mean = self.mb_seconds / self.mb_count
        return max(1, min(batching.MAX_TASK_MINI_BATCHES, int(MIN_TASK_SECONDS / mean)))

    def _handle(self, fut: Any) -> None:
        attempt, ids = self.inflight.pop(fut)
        if fut.status == "finished":
            result: TaskResult = fut.result()
            if result.init_error is not None:
                raise InitFailed("init() failed", user_traceback=result.init_error)
            if not result.interrupted:
                if self.job.shipped:
                    self._land(attempt, result)
                self._fold(attempt, result.records, ids)
                return
        else:
            exc = fut.exception()
            if not _is_worker_loss(exc):
                raise DaskScoreError(f"task {attempt} failed inside daskscore: {exc!r}") from exc
        self._recover(attempt, ids)

    def _land(self, attempt: str, result: TaskResult) -> None:
        """A shipped task's part files, then its ledger, into the staging folder."""
        staging = Path(self.job.staging)
        put_files(Path(self.job.logs), result.logs, append=True)
        put_files(staging / "parts", result.files)
        writer = LedgerWriter(staging, attempt)
        try:
            if result.records:
                writer.commit(b"", result.records)
        finally:
            writer.close()

    def _lost(self, attempt: str) -> LedgerState:
        """What is known of an attempt whose process died: its ledger, or for a shipped job
        the scheduler's note of the run() it was in (its finished mini-batches died with it)."""
        if self.job.shipped:
            return relay_state(self.client, self.job.job_id, attempt)
        return read_ledger(self.job.staging, attempt)

    def _fold(self, attempt: str, records: list[dict[str, Any]], ids: list[int]) -> None:
        finished = self.books.record(attempt, records)
        self.mb_count += len(records)
        self.mb_seconds += sum(float(rec.get("elapsed_s") or 0.0) for rec in records)
        failed = sum(1 for mb in finished if self.books.is_failed(mb))
        self.progress.add_done(len(finished), self._items(finished), failed)
        left = [mb for mb in ids if mb not in finished and not self.books.is_final(mb)]
        self.queue.extendleft(reversed(left))  # a cancelled task's rest, back to the front

    def _items(self, mbs: set[int]) -> int:
        return sum(self.books.final[mb]["total"] for mb in mbs if mb in self.books.final)

    def _recover(self, attempt: str, ids: list[int]) -> None:
        """A task's process died: keep what it committed, charge the run() it was in."""
        state = self._lost(attempt)
        finished = self.books.record(attempt, state.committed)
        self.progress.add_done(len(finished), self._items(finished))
        requeue: list[int] = []
        for mb in ids:
            if mb in finished or self.books.is_final(mb):
                continue
            if state.running is not None and state.running[0] == mb:
                final = self.books.charge_crash(
                    mb,
                    state.running[1],
                    state.timed_out,
                    worker=state.running_worker,
                    start=state.running_start,
                )
                if not final:
                    self.isolate.add(mb)
                    requeue.append(mb)
                continue
            self.losses[mb] = self.losses.get(mb, 0) + 1
            if self.losses[mb] >= MAX_UNCHARGED_LOSSES:
                self.books.charge_crash(mb, self.books.tries_used(mb) + 1, False, final=True)
                continue
            requeue.append(mb)
        # crashed work goes to the front, in order, so the output can be assembled early
        self.queue.extendleft(reversed(sorted(requeue)))

    def _abort(self) -> None:
        """error_threshold exceeded: stop everything, keep what was committed."""
        futures = list(self.inflight)
        self.client.cancel(futures)
        try:
            self.client.run(cancel_job, self.job.job_id)
        except Exception:  # noqa: BLE001 - a dying worker must not hide the verdict
            logger.debug("cancel_job failed", exc_info=True)
        for fut in futures:
            attempt, _ = self.inflight.pop(fut)
            if not self.job.shipped:  # a shipped task's work is lost with it
                self.books.record(attempt, read_ledger(self.job.staging, attempt).committed)
        self.queue.clear()

    def stop(self) -> None:
        try:
            self.client.unsubscribe_topic(self.topic)
        except Exception:  # noqa: BLE001
            pass
        if self.inflight:
            self.client.cancel(list(self.inflight))
            self.inflight.clear()


def _is_worker_loss(exc: BaseException | None) -> bool:
    from distributed.comm.core import CommClosedError
    from distributed.scheduler import KilledWorker

    return isinstance(exc, (KilledWorker, CommClosedError, OSError))
