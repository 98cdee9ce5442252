"""The dispatcher: keeps tasks in flight and folds their records into the job's outcomes.

Each task is a run of several mini-batches, sized by the task-sizing policy
(:class:`daskscore.engine.policy.TaskSizing`); two are in flight per worker.  When a task's
process dies, what its transport knows of it (its ledger, or for a shipped job the scheduler's
note) says which mini-batches it committed (kept), which tries of the others failed before it
died (recorded as they ended: a mini-batch with a failed try is committed as soon as it ends,
so these are the tries before a retry in flight), which ``run()`` was in flight (charged one
try: ``PROCESS_DIED`` or ``RUN_TIMEOUT``) and which had not started or not been committed
(run again, uncharged); see :mod:`daskscore.engine.recovery`, which also notes the tries it
counted in the dead attempt's ledger for a resume.
A mini-batch that was in flight when its process died runs alone in its next task, so that it
is charged alone if it kills its process again.  A task whose result was lost after it finished
(the worker holding it died before the driver fetched it) is recovered the same way: its
ledger says what it committed, read back; what it did not is run again, uncharged.

With ``--isolate-failures`` a mini-batch that failed every try is split by the outcomes
(:mod:`daskscore.engine.isolate`), and its parts run here, each in a task of its own and
before any other work, charged and retried as parts.  A process that died is asked whether it
was killed for its memory (:mod:`daskscore.engine.memory`): that try's error then says so.

Test hook: :data:`HOLD_ENV` (seconds, unset in real jobs) makes the driver wait that long
before it looks at a task that finished, so that a test can kill the worker holding the result
in between (``tests/engine/test_lost_result.py``).
"""

from __future__ import annotations

import logging
import os
import queue
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from distributed import Client

from daskscore import _compat
from daskscore.engine.connection import SchedulerWatch, wait_result
from daskscore.engine.finish import write_overview
from daskscore.engine.isolate import PartKey
from daskscore.engine.memory import MemoryDeaths
from daskscore.engine.outcomes import Outcomes
from daskscore.engine.policy import TaskSizing
from daskscore.engine.recovery import MAX_UNCHARGED_LOSSES as MAX_UNCHARGED_LOSSES
from daskscore.engine.recovery import Recovery
from daskscore.engine.transport import SharedDisk
from daskscore.engine.workqueue import WorkQueue
from daskscore.errors import DaskScoreError, InitFailed, WriteFailed
from daskscore.io.payloads import make_payload
from daskscore.io.writers import OutputWriter
from daskscore.protocol import (
    PROGRESS_TOPIC,
    CleanTries,
    MiniBatchRecord,
    Payload,
    TaskResult,
    WorkerJob,
)
from daskscore.ui.progress import Progress
from daskscore.ui.taskkeys import task_key
from daskscore.worker.plugin import cancel_job
from daskscore.worker.task import run_task

logger = logging.getLogger("daskscore")

#: How long the driver waits for a task before it redraws progress.
POLL_S = 0.25
#: Seconds between two lines of logs/job_progress_overview.txt.
OVERVIEW_S = 10.0
#: How often the driver recounts the cluster's workers: on a cluster it did not start, workers
#: come and go, and the window of tasks in flight and their size follow them.
RECOUNT_S = 2.0
#: Test hook: seconds the driver waits before it looks at each task that finished.
HOLD_ENV = "DASKSCORE_TEST_HOLD_RESULTS_S"


class Dispatcher(Recovery):
    """Keeps tasks in flight and folds their records into the outcomes.

    Parameters
    ----------
    client : distributed.Client
    job : WorkerJob
        The job as the workers have it installed.
    outcomes : Outcomes
        Where the records go.
    transport : SharedDisk
        How results reach the driver (see :mod:`daskscore.engine.transport`).
    writer : OutputWriter
        The job's output writer (checks the first staged result).
    batches : list
        The mini-batches, by id.
    workers : int
        Workers that can run the job's tasks.
    progress : Progress
    run_no : int
        1 for a new job; task attempts are named ``r<run>a<seq>-<job id>``.
    count_workers : callable, optional
        Counts the workers again (a cluster daskscore did not start: workers come and go).
    memory_limit : str, optional
        The workers' memory limit as given (``--worker-memory``), for a try killed for memory.
    check_install : callable, optional
        Raises ``InitFailed`` when a restarted worker process died in ``init()``
        (``ScriptInstall.check``): called as tasks are lost, and every ``RECOUNT_S``.
    connection : SchedulerWatch, optional
        The job's watch on its scheduler (its start asked the cluster through it).
    """

    def __init__(
        self,
        client: Client,
        job: WorkerJob,
        outcomes: Outcomes,
        transport: SharedDisk,
        writer: OutputWriter,
        batches: list[Any],
        workers: int,
        progress: Progress,
        run_no: int = 1,
        count_workers: Callable[[], int] | None = None,
        memory_limit: str | int | None = None,
        check_install: Callable[[], None] | None = None,
        connection: SchedulerWatch | None = None,
    ) -> None:
        self.client = client
        self.check_install = check_install
        self.job = job
        self.outcomes = outcomes
        self.transport = transport
        self.writer = writer
        self.batches = batches
        self.workers = workers
        self.progress = progress
        self.run_no = run_no
        self.count_workers = count_workers
        self.last_count = time.monotonic()
        self.queue = WorkQueue(outcomes.state)
        self.isolate: set[int] = set()
        self.losses: dict[int, int] = {}
        #: parts of split mini-batches to run (--isolate-failures), before anything else
        self.parts: deque[PartKey] = deque()
        self.part_losses: dict[PartKey, int] = {}
        self.memory = MemoryDeaths(client, memory_limit)
        #: each task in flight: its attempt, its mini-batches, and the part it runs (if one)
        self.inflight: dict[Any, tuple[str, list[int], PartKey | None]] = {}
        self.seq = 0
        self.sizing = TaskSizing()
        self.last_overview = time.monotonic()
        self.done: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.hold_s = float(os.environ.get(HOLD_ENV) or 0)  # a test hook, see HOLD_ENV
        self.connection = connection or SchedulerWatch(  # (the job's start asked it too)
            client, lambda: f"{outcomes.items_done()} items", job.output
        )
        self.topic = f"{PROGRESS_TOPIC}-{job.job_id}"
        client.subscribe_topic(self.topic, self._on_progress)

    def _on_progress(self, event: Any) -> None:
        _, msg = event
        attempt = msg.get("attempt")  # (counted as each mini-batch ends, by task attempt)
        self.progress.add_live(int(msg.get("items", 0)), attempt, int(msg.get("mini_batches", 0)))
        if "running" in msg:  # a slow run() call, or its end (worker.inflight)
            self.progress.set_running(str(msg.get("attempt")), msg["running"])

    def run(self, on_tick: Callable[[], None] | None = None) -> None:
        """Run every mini-batch left; ``on_tick`` is called after each redraw of progress."""
        while self.queue or self.parts or self.inflight:
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
            self.connection.check(now)
            # (without its scheduler, a question to the cluster waits for the connect timeout,
            # 30 s, holding back the check above: ClusterLost came 50 s after, not 20)
            if now - self.last_count >= RECOUNT_S and self.connection.since is None:
                if self.count_workers is not None:
                    self._recount()
                if self.check_install is not None:
                    self.check_install()
                self.last_count = now
            if now - self.last_overview >= OVERVIEW_S:
                try:
                    write_overview(Path(self.job.output), self.outcomes)
                except OSError as exc:
                    self._raise_if_disk(exc)
                    raise
                self.last_overview = now
            if self.outcomes.threshold_exceeded():
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
        window = self.sizing.window(self.workers)
        while (self.parts or self.queue) and len(self.inflight) < window:
            self.seq += 1
            attempt = f"r{self.run_no:02d}a{self.seq:06d}-{self.job.job_id}"  # (this job's files)
            part = self.parts.popleft() if self.parts else None
            if part is not None:  # a part of a split mini-batch, alone in its task
                split, ids = self.outcomes.split, [part[0]]
                work = split.part(part, self.batches[part[0]])
                payload = Payload([(part[0], split.tries_used(*part), work)])
            else:
                ids = self._take()
                payload = make_payload(ids, self.outcomes.tries_used, self.batches)
            fut = self.client.submit(
                run_task,
                self.job.job_id,
                attempt,
                payload,
                key=task_key(ids, attempt, part),  # daskscore-mb-<first>-<last>-<attempt>
                pure=False,
                resources=self.job.resources or None,
            )
            self.inflight[fut] = (attempt, ids, part)
            fut.add_done_callback(self.done.put)

    def _take(self) -> list[int]:
        queue = self.queue
        if queue[0] in self.isolate:
            return [queue.popleft()]
        size = self.sizing.next_size(len(queue), self.workers)
        return queue.take(size, self.isolate)

    def _handle(self, fut: Any) -> None:
        attempt, ids, part = self.inflight.pop(fut)
        self.progress.end_attempt(attempt)  # (its records replace its live counts)
        if self.hold_s:
            time.sleep(self.hold_s)
        status = fut.status
        if status == "finished":
            # (a result lost while it is fetched is computed again: the task finds its ledger
            # and comes back interrupted, or its new workers died: a loss as below)
            try:
                result: TaskResult | None = wait_result(fut, self.connection, self.check_install)
            except Exception as exc:  # noqa: BLE001 - sorted out just below
                self._raise_if_disk(exc)
                if not _is_worker_loss(exc):
                    raise
                result = None
            if result is not None and result.init_error is not None:
                raise InitFailed("init() failed", user_traceback=result.init_error)
            if result is not None and not result.interrupted:
                self.transport.land(self.job, result)
                self._fold(attempt, result, ids, part)
                return
        elif status != "lost":
            exc = wait_result(fut, self.connection, self.check_install, get=fut.exception)
            self._raise_if_disk(exc)
            # no exception: cancelled by the scheduler, not by us; its ledger tells the rest
            if exc is not None and not _is_worker_loss(exc):
                raise DaskScoreError(f"task {attempt} failed inside daskscore: {exc!r}") from exc
        # "lost": the task finished, but the worker holding its result died before we fetched
        # it.  Its ledger (a shipped task's: the scheduler's note) says what it committed; not
        # waiting for Dask to compute it again (that would find the ledger and do nothing).
        if status == "lost":
            logger.info("task %s: its result was lost with its worker; recovering it", attempt)
        if self.check_install is not None:  # (its worker may have died in init())
            self.check_install()
        self._recover(attempt, ids, part)

    def _raise_if_disk(self, exc: BaseException | None) -> None:
        """A task that could not write its staged output (a full disk): the job stops, as
        every other task would fail the same way; no try is charged to its mini-batches."""
        failed = WriteFailed.of(exc, self.job.output, "writing the job's staged output")
        if failed is not None:
            raise failed from exc

    def _fold(
        self, attempt: str, result: TaskResult, ids: list[int], part: PartKey | None = None
    ) -> None:
        records, block = result.records, result.clean
        finished, kept, clean_items = self._record(attempt, records, block)
        outcomes = self.outcomes
        count, seconds = len(records), sum(rec.elapsed_s for rec in records)
        self.progress.observe(rec.elapsed_s for rec in records)
        items = outcomes.items_of(finished)
        if block is not None:  # (most of a task's tries: columns, added up as arrays)
            count, seconds = count + len(block), seconds + block.elapsed_sum()
            self.progress.observe(block.elapsed)
            items += clean_items
        self.sizing.observe(count, seconds)
        self.progress.add_done(len(finished) + len(kept), items, *outcomes.failed_among(finished))
        if part is not None and outcomes.split.is_open(*part):
            self.parts.appendleft(part)  # (cancelled before it ran)
        state = outcomes.state
        left = [mb for mb in ids if not state[mb] and not outcomes.splitting(mb)]
        if left:
            self.queue.extendleft(reversed(left))  # a cancelled task's rest, back to the front
        self.parts.extend(outcomes.take_parts())

    def _record(
        self, attempt: str, records: list[MiniBatchRecord], block: CleanTries | None = None
    ) -> tuple[set[int], Sequence[int], int]:
        """Fold records (and a task's clean tries in columns) into the outcomes; return the
        mini-batches that became final: from records, and those kept in columns (and their
        items).  The writer checks the first newly staged part file (a dataset's columns)."""
        outcomes = self.outcomes
        finished = outcomes.record(attempt, records)
        kept: Sequence[int] = ()
        items = 0
        if block is not None:
            kept, items, more = outcomes.record_clean(attempt, block)
            finished |= more
        if not outcomes.any_part:
            return finished, kept, items
        has_part = outcomes.has_part
        first = next((mb for mb in sorted(finished) if has_part(mb)), None)
        staged = next((int(mb) for mb in kept if has_part(int(mb))), None)
        if staged is not None and (first is None or staged < first):
            first = staged
        if first is not None:
            self.writer.check_staged(Path(self.job.staging), outcomes.final[first])
        return finished, kept, items

    def _abort(self) -> None:
        """error_threshold exceeded: stop everything, keep what was committed."""
        futures = list(self.inflight)
        self.client.cancel(futures)
        try:
            self.client.run(cancel_job, self.job.job_id)
        except Exception:  # noqa: BLE001 - a dying worker must not hide the verdict
            logger.debug("cancel_job failed", exc_info=True)
        for fut in futures:
            attempt, _, _ = self.inflight.pop(fut)
            self._record(attempt, self.transport.salvage(self.job, attempt))
        self.queue.clear()
        self.parts.clear()

    @property
    def lost(self) -> bool:
        """Whether the job ended because the client lost its scheduler."""
        return self.connection.lost

    def stop(self) -> None:
        if self.lost:  # (no scheduler to cancel anything on, or to unsubscribe from)
            self.inflight.clear()
            return
        try:
            _compat.unsubscribe_topic(self.client, self.topic)
        except Exception:  # noqa: BLE001 - a client closed meanwhile
            logger.debug("unsubscribing from %s failed", self.topic, exc_info=True)
        _compat.forget_topics(self.client, [self.topic])  # (a warm scheduler runs many jobs)
        if self.inflight:
            self.client.cancel(list(self.inflight))
            self.inflight.clear()


def _is_worker_loss(exc: BaseException | None) -> bool:
    from distributed.comm.core import CommClosedError
    from distributed.scheduler import KilledWorker

    # (a disk's error is raised before this is asked: Dispatcher._raise_if_disk)
    return isinstance(exc, (KilledWorker, CommClosedError, OSError))
