"""Unit tests of daskscore.engine.dispatch: the Dispatcher against a fake Dask client.

The fake client runs each task's :class:`~daskscore.protocol.Payload` through a scripted
worker — run() returns, raises on chosen mini-batches, returns too few results, or kills its
process on chosen tries — and its futures end at once or when the test releases them, in any
order.  A task whose process died fails with ``KilledWorker``; the fake transport then says
what its ledger holds (committed mini-batches, the run() in flight).  The Outcomes, the task
sizing, the progress counter and the output writer are the real ones.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pytest
from distributed.comm.core import CommClosedError
from distributed.scheduler import KilledWorker
from hypothesis import given, settings
from hypothesis import strategies as st

from daskscore.config import RetrySettings, Settings
from daskscore.engine import dispatch
from daskscore.engine.dispatch import MAX_UNCHARGED_LOSSES, Dispatcher
from daskscore.engine.outcomes import Outcomes
from daskscore.errors import DaskScoreError, InitFailed
from daskscore.io.ledger import LedgerState, make_staging
from daskscore.io.writers import get_writer
from daskscore.protocol import (
    PROGRESS_TOPIC,
    MiniBatchRecord,
    Payload,
    Status,
    TaskResult,
    WorkerJob,
)
from daskscore.ui.progress import Progress
from daskscore.worker.plugin import cancel_job
from daskscore.worker.task import run_task

#: A scripted job never needs long; a regression that hangs the loop fails here.
pytestmark = pytest.mark.timeout(60)

JOB_ID = "job-1"
WORKER = "tcp://127.0.0.1:40001"


def killed_worker(key: str) -> KilledWorker:
    return KilledWorker(key, SimpleNamespace(address=WORKER), 3)


# --------------------------------------------------------------------------- fakes


class FakeFuture:
    """What Dispatcher uses of a distributed.Future."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.status = "pending"
        self._result: Any = None
        self._exception: BaseException | None = None
        self._callbacks: list[Callable[[FakeFuture], None]] = []

    def result(self, timeout: float | None = None) -> Any:
        assert self.status == "finished", self.status
        return self._result

    def exception(self, timeout: float | None = None) -> BaseException | None:
        assert self.status == "error", self.status
        return self._exception

    def add_done_callback(self, fn: Callable[[FakeFuture], None]) -> None:
        if self.status == "pending":
            self._callbacks.append(fn)
        else:
            fn(self)

    def settle(self, outcome: tuple[str, Any]) -> None:
        status, value = outcome
        self.status = status
        if status == "error":
            self._exception = value
        else:
            self._result = value
        for fn in self._callbacks:
            fn(self)


@dataclass
class Task:
    attempt: str
    ids: list[int]
    payload: Payload
    future: FakeFuture


@dataclass
class FakeWorker:
    """A scoring script's behaviour, by mini-batch, run the way daskscore's task runs it:
    tries from ``tries_used + 1``, retried while run() raises, up to ``max_retries`` more.

    raising: run() raises on every try.  partial: run() returns this many results.
    crashes: this many of the mini-batch's tries kill the process (``timeouts``: the watchdog
    ends them).  losses: this many tasks starting with the mini-batch die before anything runs.
    flush: completed mini-batches are committed in the ledger in groups of this many (the
    rest of a task that dies is lost with it and runs again), and one that had a failed try
    at once, as the worker's task does; a failed try is noted in the ledger as it ends.
    home_after: a task comes home after this many mini-batches (its hand-off is full, or it
    was cancelled): the driver runs the rest in other tasks.  plans: what the next calls of a
    mini-batch do, one by one (``raise``, ``crash``, ``return``), before the rules above.
    """

    max_retries: int = 3
    raising: set[int] = field(default_factory=set)
    partial: dict[int, int] = field(default_factory=dict)
    crashes: dict[int, int] = field(default_factory=dict)
    timeouts: set[int] = field(default_factory=set)
    losses: dict[int, int] = field(default_factory=dict)
    flush: int = 1
    home_after: int | None = None
    plans: dict[int, list[str]] = field(default_factory=dict)
    #: what the fake transport knows of each attempt that did not return
    ledgers: dict[str, LedgerState] = field(default_factory=dict)
    #: (mini-batch, try) of every run() call
    calls: list[tuple[int, int]] = field(default_factory=list)

    def __call__(self, attempt: str, key: str, payload: Payload) -> tuple[str, Any]:
        items = payload.items
        if items and self.losses.get(items[0][0], 0) > 0:
            self.losses[items[0][0]] -= 1
            return "error", killed_worker(key)  # died before its first run()
        result = TaskResult(attempt=attempt, worker=WORKER)
        completed: list[MiniBatchRecord] = []
        kept = ran = 0  # records committed, mini-batches completed
        for mb, tries_used, work in items[: self.home_after]:
            try_no = tries_used
            records: list[MiniBatchRecord] = []
            while True:
                try_no += 1
                self.calls.append((mb, try_no))
                plan = self.plans.get(mb)
                action = plan.pop(0) if plan else None
                if action == "crash" or (action is None and self.crashes.get(mb, 0) > 0):
                    if action is None:
                        self.crashes[mb] -= 1
                    uncommitted = completed[kept:] + records
                    self.ledgers[attempt] = LedgerState(
                        committed=completed[:kept],
                        tried=[r for r in uncommitted if not r.done],
                        running=(mb, try_no),
                        running_start=1000.0,
                        running_worker=WORKER,
                        timed_out=mb in self.timeouts,
                        exists=True,
                    )
                    return "error", killed_worker(key)
                rec = self._try(mb, try_no, len(work), action)
                records.append(rec)
                if rec.final:
                    break
            completed.extend(records)
            ran += 1
            if ran % self.flush == 0 or not records[0].done:
                kept = len(completed)
        result.records = completed
        result.pack()  # as the worker's task does: the clean first tries as columns ...
        return "finished", pickle.loads(pickle.dumps(result))  # ... and the reply pickled

    def _try(self, mb: int, try_no: int, total: int, action: str | None = None) -> MiniBatchRecord:
        rec = MiniBatchRecord(mini_batch=mb, try_no=try_no, worker=WORKER, total=total)
        if action == "raise" or (action is None and mb in self.raising):
            rec.failed = total
            rec.error = f"Traceback (most recent call last):\nValueError: bad mini-batch {mb}"
            rec.final = try_no > self.max_retries
        else:
            ok = min(self.partial.get(mb, total), total)
            rec.succeeded = rec.rows = ok
            rec.failed = total - ok
            rec.status = Status.RUN_DONE
            rec.final = True
        return rec


class FakeClient:
    """What Dispatcher uses of a distributed.Client.

    A submitted task runs at once through ``worker``; its future ends at once, or, with
    ``held``, when :meth:`release` settles the futures held so far (in the order given).
    ``hold_after``: futures after the first N stay pending for ever (unless released).
    """

    def __init__(
        self,
        worker: Callable[[str, str, Payload], tuple[str, Any]],
        held: bool = False,
        hold_after: int | None = None,
    ) -> None:
        self.worker = worker
        self.held = held
        self.hold_after = hold_after
        self.tasks: list[Task] = []
        self.waiting: list[tuple[FakeFuture, tuple[str, Any]]] = []
        self.cancelled: list[FakeFuture] = []
        self.ran: list[tuple[Any, tuple[Any, ...]]] = []
        self.topics: dict[str, Callable[[Any], None]] = {}
        self.run_raises: BaseException | None = None

    def submit(self, fn: Any, job_id: str, attempt: str, payload: Payload, **kw: Any) -> Any:
        assert fn is run_task and job_id == JOB_ID
        mbs = [mb for mb, _, _ in payload.items]
        assert kw["key"].startswith(f"daskscore-mb-{min(mbs)}-{max(mbs)}-")
        assert kw["key"].endswith(f"-{attempt}") and kw["pure"] is False
        fut = FakeFuture(kw["key"])
        self.tasks.append(Task(attempt, [mb for mb, _, _ in payload.items], payload, fut))
        if self.hold_after is not None and len(self.tasks) > self.hold_after:
            return fut
        outcome = self.worker(attempt, kw["key"], payload)
        if self.held:
            self.waiting.append((fut, outcome))
        else:
            fut.settle(outcome)
        return fut

    def release(self, shuffle: Callable[[list[Any]], None] = list.reverse) -> None:
        waiting, self.waiting = self.waiting, []
        shuffle(waiting)
        for fut, outcome in waiting:
            fut.settle(outcome)

    def cancel(self, futures: list[Any]) -> None:
        self.cancelled.extend(futures)
        for fut in futures:
            fut.status = "cancelled"

    def run(self, fn: Any, *args: Any) -> dict[str, Any]:
        self.ran.append((fn, args))
        if self.run_raises is not None:
            raise self.run_raises
        return {WORKER: True}

    def subscribe_topic(self, topic: str, handler: Callable[[Any], None]) -> None:
        self.topics[topic] = handler

    def unsubscribe_topic(self, topic: str) -> None:
        del self.topics[topic]

    # ------------------------------------------------------------------ what ran
    def runs_of(self, mb: int) -> list[Task]:
        return [t for t in self.tasks if mb in t.ids]

    def task(self, attempt: str) -> Task:
        return next(t for t in self.tasks if t.attempt == attempt)


class FakeTransport:
    """A transport whose ledgers are what the fake worker says they are."""

    shipped = False

    def __init__(self, worker: FakeWorker) -> None:
        self.worker = worker
        self.landed: list[str] = []
        self.asked: list[str] = []

    def land(self, job: WorkerJob, result: TaskResult) -> None:
        self.landed.append(result.attempt)

    def lost(self, client: Any, job: WorkerJob, attempt: str) -> LedgerState:
        self.asked.append(attempt)
        return self.worker.ledgers.get(attempt, LedgerState())

    def salvage(self, job: WorkerJob, attempt: str) -> list[MiniBatchRecord]:
        state = self.worker.ledgers.get(attempt, LedgerState())
        return state.committed + state.tried


@dataclass
class Job:
    dispatcher: Dispatcher
    client: FakeClient
    worker: FakeWorker
    transport: FakeTransport
    outcomes: Outcomes
    progress: Progress

    def tries(self, mb: int) -> list[tuple[int, str]]:
        return [(r.try_no, r.status.value) for r in self.outcomes.attempts if r.mini_batch == mb]


def make_job(
    root: Path,
    worker: FakeWorker,
    sizes: list[int],
    *,
    workers: int = 1,
    error_threshold: int = -1,
    **client: Any,
) -> Job:
    """A Dispatcher of mini-batches of ``sizes`` files on a fake client running ``worker``."""
    batches = [[f"in/mb{mb}/f{i}.csv" for i in range(n)] for mb, n in enumerate(sizes)]
    config = Settings(
        retry_settings=RetrySettings(max_retries=worker.max_retries, timeout=5.0),
        error_threshold=error_threshold,
    )
    outcomes = Outcomes(batches, config)
    job = WorkerJob(
        job_id=JOB_ID,
        code=str(root / "code"),
        script=str(root / "code" / "score.py"),
        model_path=None,
        output=str(root / "out"),
        logs=str(root / "out" / "logs"),
        staging=str(root / "out" / ".daskscore"),
        max_retries=worker.max_retries,
        output_action="summary_only",
        output_format="summary_only",
    )
    make_staging(job.staging)  # (as the runner does: a dead task's charges are noted there)
    fake = FakeClient(worker, **client)
    transport = FakeTransport(worker)
    progress = Progress(len(batches), sum(sizes), enabled=False)
    dispatcher = Dispatcher(
        fake,  # type: ignore[arg-type]
        job,
        outcomes,
        transport,  # type: ignore[arg-type]
        get_writer("summary_only"),
        batches,
        workers,
        progress,
    )
    return Job(dispatcher, fake, worker, transport, outcomes, progress)


@pytest.fixture
def no_poll() -> Iterator[None]:
    """The loop waits for a future POLL_S at most; held futures need no wait at all."""
    with mock.patch.object(dispatch, "POLL_S", 0.0):
        yield


def assert_settled_once(job: Job, n: int) -> None:
    """Every mini-batch has exactly one final try, and the failed items add up."""
    outcomes = job.outcomes
    assert sorted(outcomes.final) == list(range(n))
    for mb in range(n):
        final = outcomes.final[mb]
        assert final.final and final.mini_batch == mb
        tries = [t for t, _ in job.tries(mb)]
        assert tries == list(range(1, len(tries) + 1)), (mb, tries)  # no gap, no repeat
    assert outcomes.failed_items == sum(r.failed for r in outcomes.final.values())
    assert not job.dispatcher.queue and not job.dispatcher.inflight


# --------------------------------------------------------------------------- plain runs


def test_every_mini_batch_runs_and_settles_once(tmp_path: Path) -> None:
    job = make_job(tmp_path, FakeWorker(), [3] * 40, workers=2)
    job.dispatcher.run()
    assert_settled_once(job, 40)
    for mb in range(40):
        (task,) = job.client.runs_of(mb)
        assert job.outcomes.final[mb].attempt == task.attempt
        assert job.tries(mb) == [(1, "RUN_DONE")]
    assert len(job.client.tasks) > 1  # several mini-batches a task, several tasks
    assert [t.attempt for t in job.client.tasks] == [
        f"r01a{seq:06d}-{JOB_ID}" for seq in range(1, len(job.client.tasks) + 1)
    ]
    # tasks take the mini-batches in order
    assert [mb for t in job.client.tasks for mb in t.ids] == list(range(40))
    assert job.transport.landed == [t.attempt for t in job.client.tasks]
    assert job.transport.asked == []
    assert job.progress.done_mb == 40 and job.progress.done_items == 120
    assert job.outcomes.succeeded_items() == 120 and job.outcomes.failed_items == 0


def test_finals_are_in_mini_batch_order_whatever_order_tasks_end_in(
    tmp_path: Path, no_poll: None
) -> None:
    job = make_job(tmp_path, FakeWorker(), [2] * 30, workers=2, held=True)
    job.dispatcher.run(on_tick=job.client.release)  # each round's tasks end last first
    assert_settled_once(job, 30)
    assert [r.mini_batch for r in job.outcomes.done_finals()] == list(range(30))
    for mb in range(30):
        (task,) = job.client.runs_of(mb)
        assert job.outcomes.final[mb].attempt == task.attempt


def test_raising_and_partial_mini_batches_are_counted(tmp_path: Path) -> None:
    worker = FakeWorker(max_retries=2, raising={3}, partial={5: 1})
    job = make_job(tmp_path, worker, [4] * 8)
    job.dispatcher.run()
    assert_settled_once(job, 8)
    assert job.tries(3) == [(1, "RUN_EXCEPTION"), (2, "RUN_EXCEPTION"), (3, "RUN_EXCEPTION")]
    assert job.outcomes.is_failed(3)
    assert not job.outcomes.is_failed(5) and job.outcomes.final[5].failed == 3
    assert job.outcomes.failed_items == 4 + 3
    assert (job.progress.failed_mb, job.progress.partial_mb) == (1, 1)  # as the summary
    line = job.progress.line()
    assert "8/8 mini-batches, 1 failed, 1 partial" in line, line
    assert worker.calls.count((3, 1)) == 1  # retried within its task, not run again
    assert len(job.client.runs_of(3)) == 1


def test_progress_events_reach_the_progress_counter(tmp_path: Path) -> None:
    job = make_job(tmp_path, FakeWorker(), [2])
    topic = f"{PROGRESS_TOPIC}-{JOB_ID}"
    job.client.topics[topic]((0.0, {"items": 3, "attempt": "r01a000001"}))
    assert job.progress.live_items == 3
    job.dispatcher.stop()
    assert topic not in job.client.topics


# --------------------------------------------------------------------------- lost workers


def test_a_crash_charges_only_the_mini_batch_that_was_running(tmp_path: Path) -> None:
    # one worker: the first task carries mini-batches 0-9 and dies in run() of 4
    worker = FakeWorker(crashes={4: 1})
    job = make_job(tmp_path, worker, [2] * 40)
    job.dispatcher.run()
    assert_settled_once(job, 40)
    crashed = job.client.tasks[0]
    assert crashed.ids == list(range(10))
    assert job.transport.asked == [crashed.attempt]
    assert crashed.attempt not in job.transport.landed
    # committed before the crash: kept, from the dead task's ledger, never run again
    for mb in range(4):
        assert job.client.runs_of(mb) == [crashed]
        assert job.outcomes.final[mb].attempt == crashed.attempt
    # the one in run(): charged one try, then alone in its next task
    assert job.tries(4) == [(1, "PROCESS_DIED"), (2, "RUN_DONE")]
    died = next(r for r in job.outcomes.attempts if r.mini_batch == 4)
    assert died.worker == WORKER and died.start == 1000.0
    assert "worker process died" in died.error
    assert [t.ids for t in job.client.runs_of(4)] == [crashed.ids, [4]]
    # not started: run again, uncharged
    for mb in range(5, 10):
        assert len(job.client.runs_of(mb)) == 2
        assert job.tries(mb) == [(1, "RUN_DONE")]
    # crashed work goes back to the front of the queue, in order: the next tasks (the second,
    # 10-17, was in flight already) take 4 alone, then 5-9
    assert job.client.tasks[1].ids == list(range(10, 18))
    assert job.client.tasks[2].ids == [4]
    assert job.client.tasks[3].ids[:5] == [5, 6, 7, 8, 9]
    assert job.outcomes.failed_items == 0


def test_a_timed_out_run_is_charged_as_run_timeout(tmp_path: Path) -> None:
    worker = FakeWorker(crashes={1: 1}, timeouts={1})
    job = make_job(tmp_path, worker, [2] * 3)
    job.dispatcher.run()
    assert_settled_once(job, 3)
    assert job.tries(1) == [(1, "RUN_TIMEOUT"), (2, "RUN_DONE")]
    timed = next(r for r in job.outcomes.attempts if r.status is Status.RUN_TIMEOUT)
    assert "retry_settings.timeout (5 s)" in timed.error


def test_a_mini_batch_that_keeps_crashing_ends_after_max_retries(tmp_path: Path) -> None:
    worker = FakeWorker(max_retries=3, crashes={2: 100})
    job = make_job(tmp_path, worker, [3] * 6)
    job.dispatcher.run()
    assert_settled_once(job, 6)
    assert job.tries(2) == [(t, "PROCESS_DIED") for t in (1, 2, 3, 4)]
    assert job.outcomes.is_failed(2) and job.outcomes.final[2].try_no == 4
    assert job.outcomes.failed_items == 3
    assert [t.ids for t in job.client.runs_of(2)][1:] == [[2]] * 3  # alone after its crash
    for mb in (0, 1, 3, 4, 5):
        assert job.tries(mb) == [(1, "RUN_DONE")]


def test_a_crash_on_a_retry_continues_the_try_numbers(tmp_path: Path) -> None:
    # run() of mini-batch 0 crashes its first try, then raises on every try
    worker = FakeWorker(max_retries=2, crashes={0: 1}, raising={0})
    job = make_job(tmp_path, worker, [2, 2])
    job.dispatcher.run()
    assert_settled_once(job, 2)
    assert job.tries(0) == [(1, "PROCESS_DIED"), (2, "RUN_EXCEPTION"), (3, "RUN_EXCEPTION")]
    assert worker.calls.count((0, 1)) == 1


def test_failed_tries_before_a_crash_on_a_retry_are_kept(tmp_path: Path) -> None:
    # run() of mini-batch 2 raises, then kills its process on the retry, then returns
    worker = FakeWorker(max_retries=3, plans={2: ["raise", "crash"]})
    job = make_job(tmp_path, worker, [2] * 12)
    job.dispatcher.run()
    assert_settled_once(job, 12)
    assert job.tries(2) == [(1, "RUN_EXCEPTION"), (2, "PROCESS_DIED"), (3, "RUN_DONE")]
    assert [c for c in worker.calls if c[0] == 2] == [(2, 1), (2, 2), (2, 3)]
    raised = next(r for r in job.outcomes.attempts if r.mini_batch == 2)
    assert raised.status is Status.RUN_EXCEPTION and "bad mini-batch 2" in raised.error
    assert job.outcomes.retried_mini_batches() == 1


def test_failed_tries_before_a_crash_use_up_the_retry_budget(tmp_path: Path) -> None:
    worker = FakeWorker(max_retries=1, plans={2: ["raise", "crash"]})
    job = make_job(tmp_path, worker, [2] * 6)
    job.dispatcher.run()
    assert_settled_once(job, 6)
    assert job.tries(2) == [(1, "RUN_EXCEPTION"), (2, "PROCESS_DIED")]
    assert job.outcomes.is_failed(2) and job.outcomes.final[2].try_no == 2
    assert len(job.client.runs_of(2)) == 1  # not run again
    assert job.outcomes.failed_items == 2


@pytest.mark.parametrize("max_retries", [0, 2])
def test_a_mini_batch_that_failed_a_try_is_kept_when_its_task_dies_later(
    tmp_path: Path, max_retries: int
) -> None:
    """Mini-batch 2 raises once (or, with no retries, fails); 5, in the same task, kills the
    process.  Clean work is committed 8 mini-batches at a time, but 2 went wrong: it was
    committed with its tries as soon as it ended, so it is neither run again nor forgotten."""
    plan = ["raise"] if max_retries else ["raise"] * 5
    worker = FakeWorker(max_retries=max_retries, plans={2: plan, 5: ["crash"]}, flush=8)
    job = make_job(tmp_path, worker, [1] * 40)
    job.dispatcher.run()
    assert_settled_once(job, 40)
    first = job.client.tasks[0]
    assert job.client.runs_of(2) == [first]
    assert job.outcomes.final[2].attempt == first.attempt
    if max_retries:
        assert job.tries(2) == [(1, "RUN_EXCEPTION"), (2, "RUN_DONE")]
        assert job.tries(5) == [(1, "PROCESS_DIED"), (2, "RUN_DONE")]
        assert job.outcomes.retried_mini_batches() == 2
    else:
        assert job.tries(2) == [(1, "RUN_EXCEPTION")] and job.outcomes.is_failed(2)
        assert job.tries(5) == [(1, "PROCESS_DIED")] and job.outcomes.is_failed(5)
        assert job.outcomes.retried_mini_batches() == 0
    assert [c for c in worker.calls if c[0] == 2] == [(2, 1), (2, 2)][: max_retries + 1]
    for mb in (0, 1):  # committed with 2
        assert job.client.runs_of(mb) == [first]
    for mb in (3, 4):  # clean, not committed yet: run again, uncharged
        assert len(job.client.runs_of(mb)) == 2
        assert job.tries(mb) == [(1, "RUN_DONE")]


def test_uncommitted_work_of_a_dead_task_runs_again_uncharged(tmp_path: Path) -> None:
    # completed mini-batches are committed 4 at a time: 0-3 are kept, 4-5 die with the task
    worker = FakeWorker(crashes={6: 1}, flush=4)
    job = make_job(tmp_path, worker, [1] * 40)
    job.dispatcher.run()
    assert_settled_once(job, 40)
    first = job.client.tasks[0]
    assert 6 in first.ids
    for mb in range(4):
        assert job.outcomes.final[mb].attempt == first.attempt
    for mb in (4, 5):
        assert len(job.client.runs_of(mb)) == 2
        assert job.outcomes.final[mb].attempt != first.attempt
        assert job.tries(mb) == [(1, "RUN_DONE")]
    assert job.tries(6) == [(1, "PROCESS_DIED"), (2, "RUN_DONE")]


def test_the_rest_of_a_task_that_came_home_early_runs_next(tmp_path: Path) -> None:
    worker = FakeWorker()

    def early(attempt: str, key: str, payload: Payload) -> tuple[str, Any]:
        worker.home_after = 3 if attempt == f"r01a000001-{JOB_ID}" else None
        return worker(attempt, key, payload)

    job = make_job(tmp_path, worker, [1] * 40)
    job.client.worker = early
    job.dispatcher.run()
    assert_settled_once(job, 40)
    first, second, third = job.client.tasks[:3]
    assert first.ids == list(range(10)) and second.ids == list(range(10, 18))
    # 3-9 go back to the front, in order, before 18 and after
    assert third.ids[:7] == [3, 4, 5, 6, 7, 8, 9]
    for mb in range(40):
        assert job.tries(mb) == [(1, "RUN_DONE")]
    assert job.transport.asked == []


@pytest.mark.parametrize(
    "loss", [killed_worker("k"), CommClosedError("gone")], ids=["KilledWorker", "CommClosed"]
)
def test_a_task_lost_before_it_started_is_run_again_uncharged(
    tmp_path: Path, loss: BaseException
) -> None:
    worker = FakeWorker(losses={0: 2})

    def losing(attempt: str, key: str, payload: Payload) -> tuple[str, Any]:
        status, value = worker(attempt, key, payload)
        return status, (loss if status == "error" else value)

    job = make_job(tmp_path, worker, [2] * 3)
    job.client.worker = losing
    job.dispatcher.run()
    assert_settled_once(job, 3)
    for mb in range(3):
        assert job.tries(mb) == [(1, "RUN_DONE")]
    runs = job.client.runs_of(0)
    assert len(runs) == 3
    assert job.transport.asked == [t.attempt for t in runs[:2]]
    assert job.outcomes.final[0].attempt == runs[2].attempt


def test_a_mini_batch_lost_too_often_uncharged_is_failed(tmp_path: Path) -> None:
    worker = FakeWorker(losses={0: 1000})
    job = make_job(tmp_path, worker, [2])
    job.dispatcher.run()
    assert_settled_once(job, 1)
    assert len(job.client.tasks) == MAX_UNCHARGED_LOSSES
    assert job.tries(0) == [(1, "PROCESS_DIED")]
    assert job.outcomes.is_failed(0) and job.outcomes.failed_items == 2


def test_an_interrupted_task_is_read_from_its_ledger(tmp_path: Path) -> None:
    """Dask ran a task again after its process died; the rerun found the ledger and
    returned: the driver goes by the ledger, as for a lost task."""
    worker = FakeWorker()

    def rerun(attempt: str, key: str, payload: Payload) -> tuple[str, Any]:
        if attempt == f"r01a000001-{JOB_ID}":
            ids = [mb for mb, _, _ in payload.items]
            committed = [worker._try(ids[0], 1, 2)]
            worker.ledgers[attempt] = LedgerState(committed, running=(ids[1], 1), exists=True)
            return "finished", TaskResult(attempt, WORKER, interrupted=True)
        return worker(attempt, key, payload)

    job = make_job(tmp_path, worker, [2] * 12)
    job.client.worker = rerun
    job.dispatcher.run()
    assert_settled_once(job, 12)
    assert job.transport.asked == [f"r01a000001-{JOB_ID}"]
    assert f"r01a000001-{JOB_ID}" not in job.transport.landed
    assert job.outcomes.final[0].attempt == f"r01a000001-{JOB_ID}"
    assert job.tries(1) == [(1, "PROCESS_DIED"), (2, "RUN_DONE")]


def test_progress_counts_mini_batches_settled_by_a_crash(tmp_path: Path) -> None:
    # 0 fails in a task that dies later (committed, failed); 2 kills its process (no retries)
    worker = FakeWorker(max_retries=0, raising={0}, crashes={2: 1})
    job = make_job(tmp_path, worker, [3] * 40)
    job.dispatcher.run()
    assert_settled_once(job, 40)
    assert job.outcomes.failed_mini_batches() == 2
    assert job.progress.done_mb == 40
    assert job.progress.failed_mb == 2
    assert job.progress.done_items == job.outcomes.items_done() == 120


# --------------------------------------------------------------------------- any script


@st.composite
def scripts(draw: st.DrawFn) -> tuple[FakeWorker, list[int], int, Any]:
    n = draw(st.integers(1, 30))
    ids = st.integers(0, n - 1)
    # at most 4 crashing and 2 losing mini-batches: a mini-batch is then lost uncharged
    # fewer than MAX_UNCHARGED_LOSSES times, and the expected outcomes below hold
    crashing = draw(st.dictionaries(ids, st.integers(1, 5), max_size=4))
    worker = FakeWorker(
        max_retries=draw(st.integers(0, 3)),
        raising=draw(st.sets(ids, max_size=5)),
        partial=draw(st.dictionaries(ids, st.integers(0, 2), max_size=5)),
        crashes=dict(crashing),
        timeouts=draw(st.sets(st.sampled_from(sorted(crashing)))) if crashing else set(),
        losses=draw(st.dictionaries(ids, st.integers(1, 2), max_size=2)),
        flush=draw(st.integers(1, 4)),
        home_after=draw(st.none() | st.integers(1, 5)),
    )
    sizes = draw(st.lists(st.integers(1, 3), min_size=n, max_size=n))
    return worker, sizes, draw(st.integers(1, 3)), draw(st.randoms(use_true_random=False))


@settings(max_examples=60, deadline=None, database=None)
@given(case=scripts())
def test_whatever_the_script_every_mini_batch_settles_once(
    tmp_path_factory: pytest.TempPathFactory, case: tuple[FakeWorker, list[int], int, Any]
) -> None:
    worker, sizes, workers, rng = case
    crashes, raising, partial = dict(worker.crashes), set(worker.raising), dict(worker.partial)
    tries = worker.max_retries + 1
    job = make_job(tmp_path_factory.getbasetemp(), worker, sizes, workers=workers, held=True)
    with mock.patch.object(dispatch, "POLL_S", 0.0):
        job.dispatcher.run(on_tick=lambda: job.client.release(rng.shuffle))
    n = len(sizes)
    assert_settled_once(job, n)
    # the progress counts the failed and partial mini-batches as the job's summary does
    assert job.progress.failed_mb == job.outcomes.failed_mini_batches()
    assert job.progress.partial_mb == job.outcomes.partial_mini_batches()
    for mb in range(n):
        final, history = job.outcomes.final[mb], job.tries(mb)
        charged = [t for t, status in history if status in ("PROCESS_DIED", "RUN_TIMEOUT")]
        assert len(charged) == min(crashes.get(mb, 0), tries)
        if crashes.get(mb, 0) >= tries:
            expected = "RUN_TIMEOUT" if mb in worker.timeouts else "PROCESS_DIED"
            assert (final.status.value, final.try_no) == (expected, tries)
        elif mb in raising:
            assert (final.status.value, final.try_no, final.failed) == (
                "RUN_EXCEPTION",
                tries,
                sizes[mb],
            )
        else:
            assert final.done and final.try_no == crashes.get(mb, 0) + 1
            assert final.succeeded == min(partial.get(mb, sizes[mb]), sizes[mb])
        # a committed mini-batch is never run again
        runs = job.client.runs_of(mb)
        assert runs[-1].attempt == final.attempt or not final.done


# --------------------------------------------------------------------------- stopping


def test_an_exceeded_error_threshold_aborts_the_job(tmp_path: Path) -> None:
    # two workers: four tasks in flight; the first ends with a failed mini-batch, the others
    # are still running (one has committed a mini-batch before it is cancelled)
    worker = FakeWorker(max_retries=0, raising={0})
    job = make_job(tmp_path, worker, [1] * 40, workers=2, error_threshold=0, hold_after=1)
    second = f"r01a000002-{JOB_ID}"
    worker.ledgers[second] = LedgerState(committed=[worker._try(5, 1, 1)], exists=True)
    job.dispatcher.run()
    held = [t.future for t in job.client.tasks[1:]]
    assert len(job.client.tasks) == 4  # nothing submitted after the verdict
    assert job.client.task(second).ids[0] == 5
    assert job.client.cancelled == held
    assert job.client.ran == [(cancel_job, (JOB_ID,))]
    assert not job.dispatcher.queue and not job.dispatcher.inflight
    assert job.outcomes.threshold_exceeded() and job.outcomes.is_failed(0)
    # what the cancelled tasks committed is kept; nothing else settled
    assert job.outcomes.final[5].attempt == second and job.outcomes.final[5].done
    assert set(job.outcomes.final) == {0, 1, 2, 3, 4, 5}


def test_an_abort_survives_workers_that_cannot_be_told(tmp_path: Path) -> None:
    worker = FakeWorker(max_retries=0, raising={0})
    job = make_job(tmp_path, worker, [1] * 20, workers=2, error_threshold=0, hold_after=1)
    job.client.run_raises = CommClosedError("worker gone")
    job.dispatcher.run()
    assert job.client.ran == [(cancel_job, (JOB_ID,))]
    assert not job.dispatcher.queue and not job.dispatcher.inflight
    assert len(job.client.cancelled) == 3


def test_no_threshold_lets_every_failure_through(tmp_path: Path) -> None:
    worker = FakeWorker(max_retries=0, raising=set(range(10)))
    job = make_job(tmp_path, worker, [1] * 10, error_threshold=-1)
    job.dispatcher.run()
    assert_settled_once(job, 10)
    assert job.outcomes.failed_items == 10 and job.client.cancelled == []


def test_a_failed_init_raises_init_failed(tmp_path: Path) -> None:
    traceback = "Traceback (most recent call last):\nImportError: no module named torch"

    def init_failed(attempt: str, key: str, payload: Payload) -> tuple[str, Any]:
        return "finished", TaskResult(attempt, WORKER, init_error=traceback)

    job = make_job(tmp_path, FakeWorker(), [1] * 4)
    job.client.worker = init_failed
    with pytest.raises(InitFailed) as info:
        job.dispatcher.run()
    assert info.value.user_traceback == traceback
    assert job.outcomes.final == {}


def test_a_task_error_that_is_no_worker_loss_names_the_attempt(tmp_path: Path) -> None:
    bug = RuntimeError("a bug in daskscore")

    def broken(attempt: str, key: str, payload: Payload) -> tuple[str, Any]:
        return "error", bug

    job = make_job(tmp_path, FakeWorker(), [1] * 4)
    job.client.worker = broken
    failed = rf"task r01a000001-{JOB_ID} failed inside daskscore"
    with pytest.raises(DaskScoreError, match=failed) as info:
        job.dispatcher.run()
    assert not isinstance(info.value, InitFailed)
    assert info.value.__cause__ is bug
    assert "a bug in daskscore" in str(info.value)
    assert job.transport.asked == []  # not mistaken for a dead worker


def test_stop_cancels_what_is_still_in_flight(tmp_path: Path) -> None:
    job = make_job(tmp_path, FakeWorker(), [1] * 10, workers=2, hold_after=0)
    job.dispatcher._fill()
    futures = [t.future for t in job.client.tasks]
    assert len(futures) == 4
    job.dispatcher.stop()
    assert job.client.cancelled == futures and not job.dispatcher.inflight
    assert job.client.topics == {}


# --------------------------------------------------------------------------- big jobs


def test_mini_batches_restored_from_an_earlier_run_are_not_run_again(tmp_path: Path) -> None:
    job = make_job(tmp_path, FakeWorker(), [2] * 50, workers=2)
    restored = [mb for mb in range(50) if mb % 7 == 3]
    clean = [FakeWorker()._try(mb, 1, 2) for mb in restored]
    job.outcomes.restore("r01a000001", clean)
    job.dispatcher.queue = dispatch.WorkQueue(job.outcomes.state)  # as built after a restore
    job.dispatcher.run()
    assert_settled_once(job, 50)
    ran = [mb for t in job.client.tasks for mb in t.ids]
    assert ran == [mb for mb in range(50) if mb not in restored]  # in order, each once
    for mb in restored:
        assert job.outcomes.final[mb].attempt == "r01a000001"
    assert job.outcomes.resumed == len(restored)


def test_a_big_job_keeps_records_only_of_what_went_wrong(tmp_path: Path) -> None:
    """3,000 mini-batches: a few raise, return too few results or crash; the books keep
    records of those alone, and the counts are those of a record per try."""
    worker = FakeWorker(
        max_retries=1, raising={10, 2000}, partial={500: 1}, crashes={1500: 1, 2999: 5}
    )
    job = make_job(tmp_path, worker, [3] * 3000, workers=2)
    job.dispatcher.run()
    assert_settled_once(job, 3000)
    assert sorted(job.outcomes._hist) == [10, 500, 1500, 2000, 2999]
    assert job.outcomes.failed_mini_batches() == 3  # 10, 2000 and 2999 (crashed twice)
    assert job.outcomes.failed_items == 3 + 3 + 2 + 3
    assert job.tries(1500) == [(1, "PROCESS_DIED"), (2, "RUN_DONE")]
    assert job.outcomes.items_done() == job.progress.done_items == 9000
    assert job.progress.done_mb == 3000 and job.progress.failed_mb == 3
    assert job.progress.partial_mb == job.outcomes.partial_mini_batches() == 1
    assert [r.mini_batch for r in job.outcomes.done_finals()] == [
        mb for mb in range(3000) if mb not in (10, 2000, 2999)
    ]


def test_the_work_queue_takes_in_order_and_puts_back_in_front() -> None:
    state = bytearray(10)
    state[2] = state[5] = 1  # settled before the run (resumed)
    queue = dispatch.WorkQueue(state)
    assert len(queue) == 8 and queue[0] == 0
    assert queue.take(3, set()) == [0, 1, 3]
    queue.extendleft(reversed([1, 3]))
    assert queue[0] == 1 and len(queue) == 7
    assert queue.take(1, set()) == [1]
    assert queue.take(10, {3}) == []  # an isolated mini-batch goes alone
    assert queue.popleft() == 3
    assert queue.take(10, set()) == [4, 6, 7, 8, 9]
    assert not queue and len(queue) == 0
    fresh = dispatch.WorkQueue(bytearray(5))
    assert fresh.take(2, set()) == [0, 1] and len(fresh) == 3
    fresh.clear()
    assert not fresh
