"""``score()``'s partitions, and the worker processes that die under them.

A ``run()`` may end its own process: ``os._exit``, a crash in native code, the out-of-memory
killer, or the ``retry_settings.timeout`` watchdog.  Under :func:`daskscore.run` the driver
charges that try (``PROCESS_DIED``, ``RUN_TIMEOUT``) from the attempt's ledger.  The DataFrame
of :func:`daskscore.score` is computed by Dask instead.  When a worker dies, Dask runs the
partition's task again elsewhere, and once ``distributed.scheduler.allowed-failures`` (3)
workers died with a task on them it gives up with ``KilledWorker``: the whole computation
fails, for one mini-batch, and nobody says which.

So each partition keeps a small record in the scheduler's metadata (``[ROOT, job, partition]``):
whether a run of it is under way (``open``) and the deaths charged to its mini-batches.  While
it runs, a marker file names the mini-batch whose ``run()`` is in flight: a ``pwrite`` of a few
bytes as each ``run()`` starts and ends, in the session's staging folder
(``.daskscore/score-markers/<partition>``) where the worker sees that folder.  A task that finds
its record open was run before by a process that died:

* that death is charged to the mini-batch the marker names (the watchdog names a timed-out one
  in the record itself, with the stack of ``run()``, before it ends the process);
* a task that finds no marker (on another host, or one that does not see the session's folder)
  counts the death against the partition alone; from then on the partition names each
  mini-batch in the record as its ``run()`` starts and ends (a round trip to the scheduler
  each);
* a mini-batch charged with a death is not run again: it fails (``PROCESS_DIED`` or
  ``RUN_TIMEOUT``, its rows left out) and the partition goes on with the others; ``on_error``
  decides, as for an exception.  Unlike ``daskscore run``, ``retry_settings.max_retries`` does
  not retry it: every death also counts against the tasks Dask had queued on that worker, which
  Dask would give up on after a few.

The deaths stay charged for the session: a partition computed again does not run a mini-batch
that ended its process.

Dask also counts each death against every task it had on the dead worker (those queued behind
the one running, too).  :class:`DeathCounts`, a scheduler plugin, takes back the counts of the
tasks that were not running there, and a partition that starts again clears its own once the
death is placed (:meth:`PartitionWatch._absolve`): any number of crashing mini-batches leave the
others' rows, where Dask alone gave up after three.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

from daskscore.engine.work import crash_error, planned_items
from daskscore.protocol import MiniBatchRecord, Status, WorkerJob
from daskscore.ui.taskkeys import PREFIX

logger = logging.getLogger(__name__)

#: The label of a session's partition tasks (``("daskscore-mb-<token>", i)``): the prefix the
#: Dask dashboard shows them under, as it does ``daskscore run``'s tasks
PARTITION_LABEL = PREFIX
#: ``[ROOT, job_id, partition]`` in the scheduler's metadata: a partition's record
ROOT = "daskscore-score-deaths"
#: A marker's width: the mini-batch in flight, or blanks
WIDTH = 20


def worker_scheduler() -> tuple[Any, Any] | None:
    """This worker's scheduler RPC and a blocking caller of it; None off a worker."""
    try:
        from distributed import get_worker
        from distributed.utils import sync

        worker = get_worker()
    except ValueError:  # (a test calling score_partition in its own process)
        return None
    return worker.scheduler, functools.partial(sync, worker.loop)


#: The folder of the markers, in the session's staging folder
MARKERS = "score-markers"


class PartitionWatch:
    """One run of a partition's task: the deaths charged by earlier runs, and its own record.

    Used as the ledger of :func:`~daskscore.worker.task.run_mini_batch` (``started``,
    ``finished``, ``timed_out``, ``tried``).
    """

    offset = 0

    def __init__(self, job: WorkerJob, partition: int | str) -> None:
        self.keys = [ROOT, job.job_id, str(partition)]
        #: where a nanny notes the run() it ended for its timeout (one that kept the GIL)
        self.relay_key = [*self.keys, "timeout"]
        self._rpc = worker_scheduler()
        record: dict[str, Any] = {}
        charged: dict[str, Any] = {}  # (those charged while the columns were inferred, too)
        if self._rpc is not None:
            scheduler, call = self._rpc
            record = call(scheduler.get_metadata, keys=self.keys, default=None) or {}
            if str(partition) != "meta":
                meta = [ROOT, job.job_id, "meta"]
                charged = (call(scheduler.get_metadata, keys=meta, default=None) or {}).get(
                    "deaths"
                ) or {}
        #: mini-batch -> [status, error] of the death charged to it
        self.deaths: dict[int, list[Any]] = {
            int(k): list(v) for k, v in {**charged, **(record.get("deaths") or {})}.items()
        }
        self._marker = Path(job.staging) / MARKERS / str(partition)
        self._fd: int | None = None
        died = bool(record.get("open"))
        flight = record.get("in_flight") if died else None
        if died and flight is None:
            flight = self._marked()
        ended = record.get("timeout") if died else None  # (the nanny's note, see deadline.py)
        if flight is not None and isinstance(ended, dict) and ended.get("timed_out") == flight[0]:
            flight = [flight[0], str(Status.RUN_TIMEOUT), ended.get("error") or ""]
        if flight is not None:
            mb, status = int(flight[0]), flight[1]
            timed_out = status == str(Status.RUN_TIMEOUT)
            self.deaths[mb] = [status, flight[2] or crash_error(timed_out, job.timeout)]
        #: name each mini-batch in the record (a death nobody could place)
        self.careful = died and flight is None
        #: the record also says which task runs where (:class:`DeathCounts` reads it)
        self._where = _task_and_worker()
        if not self.careful:
            self._absolve()
        self._save(open=True, in_flight=None)
        if self._rpc is not None:
            self._open_marker()

    def _absolve(self) -> None:
        """Clear the count of worker deaths Dask holds against this partition's task, as it
        starts: each death of its own was charged to a mini-batch that is not run again (and
        :class:`DeathCounts` took back those it was only queued for).  Without this, Dask's
        ``allowed-failures`` (3) would give up on the whole computation with ``KilledWorker``
        once a partition held four crashing mini-batches.  A death that could not be placed
        still counts (``careful``): the next one is placed, and Dask's limit stays the guard
        against a partition that keeps dying outside ``run()``."""
        if self._rpc is None or "task" not in self._where:
            return
        try:
            from distributed.protocol.pickle import dumps

            key = self._where["task"]
            scheduler, call = self._rpc
            call(
                scheduler.run_function,
                function=dumps(absolve),
                args=dumps((key,)),
                kwargs=dumps({}),
                wait=True,
            )
        except Exception:  # noqa: BLE001 - (no daskscore on the scheduler): Dask's count stays
            return

    # -------------------------------------------------------------------- the marker file
    def _marked(self) -> list[Any] | None:
        """What a process that died left in this host's marker: the mini-batch in flight."""
        try:
            text = self._marker.read_text().strip()
        except OSError:  # (another host ran it, or it died between run() calls)
            return None
        return [int(text), str(Status.PROCESS_DIED), ""] if text.isdigit() else None

    def _open_marker(self) -> None:
        try:
            self._marker.parent.mkdir(exist_ok=True)  # (not where staging is not seen)
            self._fd = os.open(self._marker, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        except OSError:  # (no marker: a death here counts against the partition alone)
            self._fd = None

    def _mark(self, text: str) -> None:
        if self._fd is not None:
            os.pwrite(self._fd, text.rjust(WIDTH).encode(), 0)

    def _save(self, **fields: Any) -> None:
        if self._rpc is None:
            return
        scheduler, call = self._rpc
        record = {"deaths": {str(k): v for k, v in self.deaths.items()}, **self._where, **fields}
        call(scheduler.set_metadata, keys=self.keys, value=record)

    def given_up(self, mb: int, work: Any) -> MiniBatchRecord | None:
        """The final record of mini-batch ``mb`` when its ``run()`` ended its process before
        (it is not run again); else None."""
        entry = self.deaths.get(mb)
        if entry is None:
            return None
        status, error = entry
        n = planned_items(list(work) if isinstance(work, tuple) else work)
        return MiniBatchRecord(
            mini_batch=mb,
            try_no=1,
            total=n,
            failed=n,
            status=Status(status),
            error=f"{error} (score() does not run it again)",
            final=True,
        )

    # ---------------------------------------------------------- the ledger run_mini_batch keeps
    def started(self, mini_batch: int, *_: Any) -> None:
        self._mark(str(mini_batch))
        if self.careful:
            self._save(open=True, in_flight=[mini_batch, str(Status.PROCESS_DIED), ""])

    def finished(self, *_: Any) -> None:
        self._mark("")
        if self.careful:
            self._save(open=True, in_flight=None)

    def timed_out(self, mini_batch: int, error: str) -> None:
        """The watchdog, before it ends the process: the death is this mini-batch's."""
        self._save(open=True, in_flight=[mini_batch, str(Status.RUN_TIMEOUT), error])

    def tried(self, *_: Any) -> None: ...

    def close(self) -> None:
        """The task ran to its end: no death to charge at its next run."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self._marker.unlink(missing_ok=True)
        self._save(open=False, in_flight=None)


def absolve(key: Any, dask_scheduler: Any = None) -> int:
    """Scheduler side: forget the worker deaths counted against task ``key``; the count it
    had."""
    ts = dask_scheduler.tasks.get(key) if dask_scheduler is not None else None
    if ts is None:
        return 0
    count, ts.suspicious = ts.suspicious, 0
    return count


def _task_and_worker() -> dict[str, Any]:
    """The key of the task running this code, its worker's address and number of threads
    (empty off a worker)."""
    try:
        from distributed import get_worker

        worker = get_worker()
        return {
            "task": worker.get_current_task(),
            "worker": worker.address,
            "threads": worker.state.nthreads,
        }
    except (ValueError, AttributeError):  # (not in a task)
        return {}


class DeathCounts(SchedulerPlugin):
    """Scheduler side: when a worker dies, Dask counts the death against every task it had
    on that worker (``ws.processing``), the one running and the ones only queued behind it,
    and gives up on a task with ``KilledWorker`` past ``allowed-failures`` (3).  A
    ``score()`` partition queued behind another's crashing ``run()`` is innocent: this takes
    that count back, right after Dask made it (nothing runs in between).  The partition whose
    record says it was running on that worker keeps it (see :meth:`PartitionWatch._absolve`).

    One instance per scheduler, for every session; registered by the session where daskscore
    is importable on the scheduler (elsewhere Dask's counts stand).
    """

    name = "daskscore-score-deaths"
    idempotent = True

    def remove_worker(self, scheduler: Any, worker: str, **kwargs: Any) -> None:
        try:
            self._forgive(scheduler, worker)
        except Exception:  # noqa: BLE001 - never break the scheduler's handling of a death
            pass

    @staticmethod
    def _forgive(scheduler: Any, worker: str) -> None:
        event = next(
            (
                msg
                for _, msg in reversed(scheduler.get_events(worker))
                if isinstance(msg, dict) and msg.get("action") == "remove-worker"
            ),
            None,
        )
        if event is None or event.get("expected"):  # (no death counted)
            return
        queued = set(event.get("processing-tasks") or ())
        running = {
            record.get("task"): record
            for job in (scheduler.task_metadata.get(ROOT) or {}).values()
            for record in job.values()
            if isinstance(record, dict) and record.get("open") and record.get("worker") == worker
        }
        # a single-threaded worker running a partition ran nothing else: every other task on
        # it only waited (with more threads, only the other partitions are known to be clean)
        alone = any(record.get("threads") == 1 for record in running.values())
        for key in queued - set(running):
            if not (alone or _is_partition(key)):
                continue
            ts = scheduler.tasks.get(key)
            if ts is not None and ts.suspicious > 0:
                ts.suspicious -= 1


def _is_partition(key: Any) -> bool:
    """Whether ``key`` is a ``score()`` partition's task (``("daskscore-mb-<token>", i)``)."""
    return isinstance(key, tuple) and str(key[0]).startswith(f"{PARTITION_LABEL}-")


def count_deaths_fairly(client: Any) -> None:
    """Register :class:`DeathCounts` on ``client``'s scheduler (once); where daskscore is
    not importable there, Dask's own counts stand."""
    try:
        client.register_plugin(DeathCounts())
    except Exception:  # noqa: BLE001 - (no daskscore on the scheduler)
        logger.debug("the scheduler keeps Dask's counts of worker deaths", exc_info=True)
