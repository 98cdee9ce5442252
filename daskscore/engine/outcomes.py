"""The outcome of every mini-batch: each try, and the one final try whose rows are written.

The dispatcher folds the records that tasks send back (or that their ledgers hold, when a
task's process died) into :class:`Outcomes`.  Each mini-batch gets exactly one *final* record,
so rows are written once whatever was retried or crashed; a try charged to a process that died
(``PROCESS_DIED``, ``RUN_TIMEOUT``) is recorded by :meth:`Outcomes.charge_crash`.  After a
``--resume``, the tries of earlier runs are folded in first (:meth:`Outcomes.restore`) and this
run's tries are numbered after them.

Pure state: no Dask, no files.  Summaries and logs are made from it by
:mod:`daskscore.engine.finish`.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from daskscore.config import Settings
from daskscore.protocol import MiniBatchRecord, Status


def planned_items(work: Any) -> int:
    """Items of a mini-batch before it runs: its files, or the rows of a tabular split if known."""
    if isinstance(work, list):
        return len(work)
    return getattr(work, "n_rows", None) or 0


def describe_work(work: Any) -> list[str]:
    """The files of a mini-batch, for reports (a tabular split names its rows)."""
    if isinstance(work, list):
        return list(work)
    return [f"{work.path} (rows from {work.first_row})"]


def crash_error(timed_out: bool, timeout: float) -> str:
    """The error of a try that ended with its process."""
    if timed_out:
        return (
            f"run() exceeded retry_settings.timeout ({timeout:g} s); the worker process "
            "was restarted"
        )
    return "the worker process died during run() (crash, os._exit, or killed, e.g. out of memory)"


class Outcomes:
    """Per mini-batch tries and final outcomes of one job.

    Parameters
    ----------
    work : list
        The job's mini-batches (file lists or tabular splits), by id.
    settings : Settings
        The deployment's settings (retries, timeout, error threshold).
    """

    def __init__(self, work: list[Any], settings: Settings) -> None:
        self.work = work
        self.settings = settings
        #: every try of this job, in the order they were recorded
        self.attempts: list[MiniBatchRecord] = []
        #: the final try of each settled mini-batch
        self.final: dict[int, MiniBatchRecord] = {}
        self.tries: dict[int, int] = {}
        #: the first worker's init() traceback, when init() failed (nothing was scored)
        self.init_error: str | None = None
        #: mini-batches restored from an interrupted earlier run (``--resume``)
        self.resumed = 0
        #: tries of earlier runs per mini-batch (numbering continues after them)
        self.offset: dict[int, int] = {}
        self._earlier: dict[int, dict[str, int]] = {}
        self.failed_items = 0

    # ------------------------------------------------------------------ folding records
    def record(self, attempt: str, records: list[MiniBatchRecord]) -> set[int]:
        """Fold a task's records in; return the mini-batches that became final."""
        finished: set[int] = set()
        for rec in records:
            mb = rec.mini_batch
            if mb in self.final:
                continue  # already settled by another attempt: never count or write twice
            self.tries[mb] = max(self.tries.get(mb, 0), rec.try_no)
            rec = self._numbered(rec)
            self.attempts.append(rec)
            if rec.final:
                self._finalize(mb, replace(rec, attempt=attempt))
                finished.add(mb)
        return finished

    def restore(self, attempt: str, records: list[MiniBatchRecord]) -> None:
        """Fold in an earlier run's committed records (ledgers in run order): only succeeded
        mini-batches stay final; failed ones get a fresh retry budget in this run, and their
        earlier tries stay in the history, numbered before this run's."""
        run = attempt.split("a", 1)[0]  # "r01a000003" -> "r01"
        for rec in records:
            mb = rec.mini_batch
            if mb in self.final:
                continue
            runs = self._earlier.setdefault(mb, {})
            before = sum(n for r, n in runs.items() if r < run)
            rec = replace(rec, try_no=rec.try_no + before)
            runs[run] = max(runs.get(run, 0), rec.try_no - before)
            self.offset[mb] = sum(runs.values())
            self.attempts.append(rec)
            if rec.final and rec.done:
                self._finalize(mb, replace(rec, attempt=attempt))
        self.resumed = len(self.final)

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
    ) -> bool:
        """Record a try that ended with its process; return True when the mini-batch is final."""
        total = planned_items(self.work[mb])
        elapsed = time.time() - start if start else 0.0
        rec = MiniBatchRecord(
            mini_batch=mb,
            try_no=try_no,
            worker=worker,
            start=start,
            total=total,
            failed=total,
            status=Status.RUN_TIMEOUT if timed_out else Status.PROCESS_DIED,
            error=crash_error(timed_out, self.settings.retry_settings.timeout),
            elapsed_s=elapsed,
            run_s=elapsed,
        )
        self.attempts.append(self._numbered(rec))
        self.tries[mb] = max(self.tries.get(mb, 0), try_no)
        if final or try_no > self.settings.retry_settings.max_retries:
            self._finalize(mb, replace(self._numbered(rec), final=True))
            return True
        return False

    def _finalize(self, mb: int, rec: MiniBatchRecord) -> None:
        self.final[mb] = rec
        self.failed_items += rec.failed

    # ------------------------------------------------------------------ questions
    def tries_used(self, mb: int) -> int:
        return self.tries.get(mb, 0)

    def is_final(self, mb: int) -> bool:
        return mb in self.final

    def is_failed(self, mb: int) -> bool:
        return mb in self.final and not self.final[mb].done

    def threshold_exceeded(self) -> bool:
        limit = self.settings.error_threshold
        return limit >= 0 and self.failed_items > limit

    def succeeded_items(self) -> int:
        return sum(r.succeeded for r in self.final.values())

    def failed_mini_batches(self) -> int:
        return sum(1 for r in self.final.values() if not r.done)

    def items_done(self) -> int:
        """Items of the settled mini-batches."""
        return sum(r.total for r in self.final.values())

    def done_finals(self) -> list[MiniBatchRecord]:
        """The final try of every mini-batch whose run() returned, in mini-batch order."""
        return [self.final[mb] for mb in sorted(self.final) if self.final[mb].done]
