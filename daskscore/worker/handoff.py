"""How a worker hands a task's results to the driver: chosen once per job, when it is installed.

* :class:`SharedDisk` — the worker sees the driver's output folder (an embedded cluster, or a
  cluster that mounts it): part files and ledgers are written straight into the job's staging
  folder, and only small records travel in the task's reply.
* :class:`Shipped` — the worker does not: it writes into a worker-local staging folder, notes
  the ``run()`` in flight in the scheduler (:class:`~daskscore.worker.relay.RelayLedger`), and
  returns its part files and log lines with the task's reply, after about
  :data:`SHIPPED_TASK_SECONDS` of work so that results come home often.

The task code (:mod:`daskscore.worker.task`) asks the hand-off, never which mode it is in.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from daskscore.io.ledger import LedgerWriter, ledger_path
from daskscore.io.shipping import take_files
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

    def pack(self, runtime: JobRuntime, result: TaskResult) -> None:
        """Put what the driver cannot read from the disk into the task's reply."""

    def cleanup(self, job: WorkerJob) -> None:
        """Remove what the job left on this worker when it is uninstalled."""


class Shipped(SharedDisk):
    """Results travel home in the task's reply; the run() in flight is noted in the scheduler."""

    local_folders = True

    def open_ledger(self, job: WorkerJob, attempt: str) -> LedgerWriter | None:
        relay = RelayLedger(job.staging, attempt, job.job_id)
        if relay.claim():
            return relay
        relay.close()
        return None

    def task_full(self, elapsed_s: float, produced: int) -> bool:
        return elapsed_s >= SHIPPED_TASK_SECONDS or produced >= SHIPPED_TASK_BYTES

    def pack(self, runtime: JobRuntime, result: TaskResult) -> None:
        # (the log files' read offsets are the process's, so this runs under the run lock)
        staging = Path(runtime.job.staging)
        result.files = take_files(staging / "parts", result.attempt)
        take_files(staging / "ledger", result.attempt)
        result.logs = runtime.drain_logs()

    def cleanup(self, job: WorkerJob) -> None:
        shutil.rmtree(Path(job.staging).parent, ignore_errors=True)


def handoff_for(job: WorkerJob) -> SharedDisk:
    """The hand-off of ``job``: shipped when its workers do not share the driver's disk."""
    return Shipped() if job.shipped else SharedDisk()
