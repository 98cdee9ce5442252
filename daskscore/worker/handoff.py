"""How a worker hands a task's results to the driver: chosen once per job, when it is installed.

* :class:`SharedDisk` — the worker sees the driver's output folder (an embedded cluster, or a
  cluster that mounts it): part files and ledgers are written straight into the job's staging
  folder, and only small records travel in the task's reply.
* :class:`Shipped` — the worker does not: it writes into a worker-local staging folder, notes
  the ``run()`` in flight in the scheduler (:class:`~daskscore.worker.relay.RelayLedger`), and
  returns its part files and log lines with the task's reply, after about
  :data:`SHIPPED_TASK_SECONDS` of work so that results come home often.  The files the script
  writes into ``AZUREML_BI_OUTPUT_PATH`` (a worker-local folder too) are taken as each try of
  a mini-batch ends (:class:`~daskscore.io.replyfiles.OutputTaker`) and travel in the same
  reply: the driver writes them into the output folder before it commits the mini-batches,
  so a mini-batch that counts as done has its files there, whatever happens to the worker or
  the driver later.  A try that failed leaves none (its files are removed unread: the retry
  writes its own).

The task code (:mod:`daskscore.worker.task`) asks the hand-off, never which mode it is in.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from daskscore.io.ledger import LedgerWriter, ledger_path
from daskscore.io.replyfiles import OutputTaker, read_new, take_files
from daskscore.protocol import TaskResult, WorkerJob
from daskscore.worker.relay import RelayLedger

if TYPE_CHECKING:
    from daskscore.worker.runtime import JobRuntime

#: A shipped job's task returns after this much work ...
SHIPPED_TASK_SECONDS = 5.0
#: ... or this much output, whichever comes first: what it ran is lost if its worker dies
#: before it returns, and its output travels in one message.
SHIPPED_TASK_BYTES = 64 << 20


class SharedDisk:
    """Results go straight into the job's staging folder on the shared disk."""

    #: whether the job's folders on this worker are its own (not the driver's)
    local_folders = False

    def open_ledger(self, job: WorkerJob, attempt: str) -> LedgerWriter | None:
        """The attempt's ledger; None when the attempt ran before (on a process that died)."""
        if ledger_path(job.staging, attempt).exists():
            return None
        return LedgerWriter(job.staging, attempt)

    def task_full(self, elapsed_s: float, produced: int) -> bool:
        """Whether a task should go home now with what it has (the driver requeues the rest)."""
        return False

    def task_started(self, runtime: JobRuntime) -> None:
        """A task begins (under the run lock), before its first mini-batch."""

    def try_ended(self, runtime: JobRuntime, done: bool) -> None:
        """A try of a mini-batch ended; ``done``: run() returned (else it failed)."""

    def pack(self, runtime: JobRuntime, result: TaskResult) -> None:
        """Put what the driver cannot read from the disk into the task's reply."""

    def outputs_left(self, runtime: JobRuntime) -> dict[str, bytes]:
        """At the end of the job: the script's files still on this worker (none here)."""
        return {}

    def cleanup(self, job: WorkerJob) -> None:
        """Remove what the job left on this worker when it is uninstalled."""


class Shipped(SharedDisk):
    """Results travel home in the task's reply; the run() in flight is noted in the scheduler."""

    local_folders = True

    def __init__(self) -> None:
        self._taker: OutputTaker | None = None
        #: the script's files taken during the running task: they go home with its reply
        self._outputs: dict[str, bytes] = {}
        self._output_bytes = 0

    def _take(self, runtime: JobRuntime, keep: bool = True) -> None:
        if self._taker is None:  # (the job's own folder, once it is localized)
            self._taker = OutputTaker(Path(runtime.job.output))
        found = self._taker.take(keep)
        self._outputs.update(found)
        self._output_bytes += sum(map(len, found.values()))

    def task_started(self, runtime: JobRuntime) -> None:
        # what init() (or anything between two tasks) wrote: no try's own, it goes home now
        self._take(runtime)

    def try_ended(self, runtime: JobRuntime, done: bool) -> None:
        self._take(runtime, keep=done)

    def open_ledger(self, job: WorkerJob, attempt: str) -> LedgerWriter | None:
        relay = RelayLedger(job.staging, attempt, job.job_id)
        if relay.claim():
            return relay
        relay.close()
        return None

    def task_full(self, elapsed_s: float, produced: int) -> bool:
        produced += self._output_bytes  # (the script's files travel in the same reply)
        return elapsed_s >= SHIPPED_TASK_SECONDS or produced >= SHIPPED_TASK_BYTES

    def pack(self, runtime: JobRuntime, result: TaskResult) -> None:
        # (the log files' read offsets are the process's, so this runs under the run lock)
        staging = Path(runtime.job.staging)
        result.files = take_files(staging / "parts", result.attempt)
        take_files(staging / "ledger", result.attempt)
        result.logs = drain_logs(runtime)
        result.outputs, self._outputs, self._output_bytes = self._outputs, {}, 0

    def outputs_left(self, runtime: JobRuntime) -> dict[str, bytes]:
        self._take(runtime)  # (files held open, or written after the last task)
        found, self._outputs, self._output_bytes = self._outputs, {}, 0
        return found

    def cleanup(self, job: WorkerJob) -> None:
        shutil.rmtree(Path(job.staging).parent, ignore_errors=True)


def drain_logs(runtime: JobRuntime) -> dict[str, bytes]:
    """What ``runtime``'s worker log files gained since the last call (names relative to
    ``logs/``): a shipped job's tasks take them home with their results."""
    runtime.flush_output()
    logs: dict[str, bytes] = {}
    for kind in ("stdout", "error"):
        rel = f"user/{kind}/{runtime.worker_name}.txt"
        seen = runtime.drained.get(rel, 0)
        data, runtime.drained[rel] = read_new(Path(runtime.job.logs) / rel, seen)
        if data:
            logs[rel] = data
    return logs


def handoff_for(job: WorkerJob) -> SharedDisk:
    """The hand-off of ``job``: shipped when its workers do not share the driver's disk."""
    return Shipped() if job.shipped else SharedDisk()
