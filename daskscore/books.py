"""The job's books: every try of every mini-batch, the verdict, and the reports.

The driver folds the records that tasks send back (or that their ledgers hold, when a task's
process died) into :class:`Books`.  Each mini-batch gets exactly one *final* record — the try
whose rows go to the output — so rows are written once whatever was retried or crashed.
At the end, :meth:`Books.finish` assembles the append_row file in mini-batch order, writes
``job_summary.json`` and the logs, and returns the :class:`JobResult`.
"""

from __future__ import annotations

import logging
import operator
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import datasets
from . import output as out_mod
from .config import Deployment
from .errors import ErrorThresholdExceeded, InitFailed, JobFailed
from .plugin import failed_before_init
from .report import write_report
from .tasks import PROCESS_DIED, RUN_DONE, RUN_TIMEOUT

logger = logging.getLogger("daskscore")

#: Failed mini-batches listed one per line in the failure message before "... and N more".
SHOWN_FAILURES = 5


@dataclass
class JobResult:
    """The outcome of a job (also written to ``<output>/job_summary.json``).

    Attributes
    ----------
    status : str
        ``"Completed"`` or ``"Failed"``.
    output : Path
        The output folder.
    predictions : Path or None
        The append_row file (``None`` for ``summary_only``, or when init() failed).
    summary : dict
        Everything in ``job_summary.json``: counts, duration, failed mini-batches.
    """

    status: str
    output: Path
    predictions: Path | None
    summary: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        summary = self.__dict__.get("summary", {})
        if name in summary:
            return summary[name]
        raise AttributeError(name)

    @property
    def logs(self) -> Path:
        return self.output / "logs"


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


class Books:
    """Per mini-batch tries and outcomes of one job."""

    def __init__(
        self,
        job_id: str,
        deployment: Deployment,
        out_dir: Path,
        batches: list[list[str]],
        input_path: Any,
    ) -> None:
        self.job_id = job_id
        self.deployment = deployment
        self.settings = deployment.settings
        self.out_dir = out_dir
        self.batches = batches
        self.input_path = str(Path(input_path).expanduser().resolve())
        self.attempts: list[dict[str, Any]] = []
        self.final: dict[int, dict[str, Any]] = {}
        self.tries: dict[int, int] = {}
        self.init_error: str | None = None
        #: mini-batches restored from an interrupted earlier run (``--resume``)
        self.resumed = 0
        #: tries of earlier runs per mini-batch (numbering continues after them)
        self.offset: dict[int, int] = {}
        self._earlier: dict[int, dict[str, int]] = {}
        #: dataset outputs: partition columns, checked against the first staged part
        self.partition_on: tuple[str, ...] = ()
        self.started = time.time()
        self._t0 = self._last_mark = time.perf_counter()
        self._failed_items = 0
        #: seconds spent in each phase of the job (see :meth:`mark`)
        self.phases: dict[str, float] = {}

    def mark(self, phase: str) -> None:
        """Close ``phase``: the time since the previous mark is charged to it."""
        now = time.perf_counter()
        self.phases[phase] = round(self.phases.get(phase, 0.0) + now - self._last_mark, 3)
        self._last_mark = now

    # ------------------------------------------------------------------ folding records
    def record(self, attempt: str, records: list[dict[str, Any]]) -> set[int]:
        """Fold a task's records in; return the mini-batches that became final."""
        finished: set[int] = set()
        for rec in records:
            mb = rec["mini_batch"]
            if mb in self.final:
                continue  # already settled by another attempt: never count or write twice
            self.tries[mb] = max(self.tries.get(mb, 0), rec["try"])
            rec = self._numbered(rec)
            self.attempts.append(rec)
            if rec.get("final"):
                self._finalize(mb, {**rec, "attempt": attempt})
                finished.add(mb)
            if self.partition_on and rec.get("part"):
                staging = self.out_dir / out_mod.STAGING_DIR
                datasets.check_columns(
                    datasets.part_columns(staging, rec["part"]), self.partition_on
                )
                self.partition_on = ()  # checked once: the first part tells
        return finished

    def restore(self, attempt: str, records: list[dict[str, Any]]) -> None:
        """Fold in an earlier run's committed records (ledgers in run order): only succeeded
        mini-batches stay final; failed ones get a fresh retry budget in this run, and their
        earlier tries stay in the history, numbered before this run's."""
        run = attempt.split("a", 1)[0]  # "r01a000003" -> "r01"
        for rec in records:
            mb = rec["mini_batch"]
            if mb in self.final:
                continue
            runs = self._earlier.setdefault(mb, {})
            before = sum(n for r, n in runs.items() if r < run)
            rec = {**rec, "try": rec["try"] + before}
            runs[run] = max(runs.get(run, 0), rec["try"] - before)
            self.offset[mb] = sum(runs.values())
            self.attempts.append(rec)
            if rec.get("final") and rec["status"] == RUN_DONE:
                self._finalize(mb, {**rec, "attempt": attempt})

    def _numbered(self, rec: dict[str, Any]) -> dict[str, Any]:
        """A record of this run, its try numbered after the tries of earlier runs."""
        offset = self.offset.get(rec["mini_batch"], 0)
        return {**rec, "try": rec["try"] + offset} if offset else rec

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
        total = planned_items(self.batches[mb])
        status = RUN_TIMEOUT if timed_out else PROCESS_DIED
        timeout = self.settings.retry_settings.timeout
        error = (
            f"run() exceeded retry_settings.timeout ({timeout:g} s); the worker process "
            "was restarted"
            if timed_out
            else "the worker process died during run() (crash, os._exit, or killed, e.g. "
            "out of memory)"
        )
        elapsed = time.time() - start if start else 0.0
        rec = {
            "mini_batch": mb,
            "try": try_no,
            "worker": worker,
            "start": start,
            "total": total,
            "succeeded": 0,
            "failed": total,
            "rows": 0,
            "status": status,
            "error": error,
            "elapsed_s": elapsed,
            "run_s": elapsed,
            "bytes": 0,
        }
        self.attempts.append(self._numbered(rec))
        self.tries[mb] = max(self.tries.get(mb, 0), try_no)
        if final or try_no > self.settings.retry_settings.max_retries:
            self._finalize(mb, {**self._numbered(rec), "final": True, "attempt": None})
            return True
        return False

    def _finalize(self, mb: int, rec: dict[str, Any]) -> None:
        self.final[mb] = rec
        self._failed_items += rec["failed"]

    def tries_used(self, mb: int) -> int:
        return self.tries.get(mb, 0)

    def is_final(self, mb: int) -> bool:
        return mb in self.final

    def is_failed(self, mb: int) -> bool:
        return mb in self.final and self.final[mb]["status"] != RUN_DONE

    def threshold_exceeded(self) -> bool:
        limit = self.settings.error_threshold
        return limit >= 0 and self._failed_items > limit

    # ------------------------------------------------------------------ the end
    def finish(
        self,
        staging: Path,
        fmt: str,
        client: Any = None,
        partition_on: tuple[str, ...] = (),
        rows_per_file: int | None = None,
    ) -> JobResult:
        """Assemble the output, write the summary and logs, and return the result.

        ``fmt`` is ``append_row`` (streamed from the part files), ``summary_only`` (nothing),
        or a dataset format, ``parquet`` / ``csv`` (written through ``client``).
        """
        predictions = None
        if self.init_error is None and fmt == "append_row":
            predictions = self.out_dir / self.settings.output_file_name
            size = out_mod.assemble_append_row(staging, self._pieces(), predictions)
            logger.info("assembled %s (%d bytes)", predictions, size)
        elif self.init_error is None and fmt in datasets.FORMATS:
            predictions = self.out_dir / Path(self.settings.output_file_name).stem
            self._write_dataset(staging, predictions, fmt, client, partition_on, rows_per_file)
        self.mark("assemble")
        summary = self.summary(predictions)
        result = JobResult(summary["status"], self.out_dir, predictions, summary)
        self._write_logs(result)
        shutil.rmtree(staging, ignore_errors=True)
        return result

    def _pieces(self) -> Any:
        for mb in sorted(self.final):
            rec = self.final[mb]
            if rec["status"] == RUN_DONE:
                yield rec["attempt"], rec.get("start_offset", 0), rec.get("bytes", 0)

    def _write_dataset(
        self,
        staging: Path,
        dest: Path,
        fmt: str,
        client: Any,
        partition_on: tuple[str, ...],
        rows_per_file: int | None,
    ) -> None:
        finals = [
            (mb, self.final[mb].get("part"), self.final[mb].get("rows", 0))
            for mb in sorted(self.final)
            if self.final[mb]["status"] == RUN_DONE
        ]
        groups = datasets.plan_groups(finals, rows_per_file)
        if not groups:
            dest.mkdir(parents=True, exist_ok=True)
            logger.info("no rows to write into %s", dest)
            return
        ddf = datasets.staged_frame(str(staging), groups)
        files = datasets.write_dataset(client, ddf, dest, fmt, partition_on)
        logger.info("wrote %d %s files into %s", len(files), fmt, dest)

    def summary(self, predictions: Path | None) -> dict[str, Any]:
        total_items = sum(
            self.final[mb]["total"] if mb in self.final else planned_items(w)
            for mb, w in enumerate(self.batches)
        )
        finals = self.final.values()
        succeeded = sum(r["succeeded"] for r in finals)
        failures = [self._failure(mb) for mb in sorted(self.final) if self.final[mb]["failed"]]
        status = "Failed" if self.init_error or self.threshold_exceeded() else "Completed"
        not_run = len(self.batches) - len(self.final)
        return {
            "status": status,
            "reason": self._reason(),
            "job_id": self.job_id,
            "deployment": str(self.deployment.source) if self.deployment.source else None,
            "input": self.input_path,
            "output": str(self.out_dir),
            "predictions": str(predictions) if predictions else None,
            "output_action": self.settings.output_action,
            "total_items": total_items,
            "succeeded_items": succeeded,
            "failed_items": self._failed_items,
            "not_run_items": total_items - succeeded - self._failed_items,
            "rows_written": sum(r.get("rows", 0) for r in finals if r["status"] == RUN_DONE),
            "total_mini_batches": len(self.batches),
            "failed_mini_batches": sum(1 for r in finals if r["status"] != RUN_DONE),
            "partial_mini_batches": sum(
                1 for r in finals if r["status"] == RUN_DONE and r["failed"]
            ),
            "not_run_mini_batches": not_run,
            "retried_mini_batches": len({r["mini_batch"] for r in self.attempts if r["try"] > 1}),
            "resumed_mini_batches": self.resumed,
            "error_threshold": self.settings.error_threshold,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started)),
            "duration_s": round(time.perf_counter() - self._t0, 3),
            "phases": dict(self.phases),
            "failures": failures,
            "init_error": self.init_error,
        }

    def _failure(self, mb: int) -> dict[str, Any]:
        rec = self.final[mb]
        return {
            "mini_batch_id": mb,
            "status": rec["status"],
            "tries": self.tries.get(mb, 1),
            "succeeded": rec["succeeded"],
            "failed": rec["failed"],
            "files": describe_work(self.batches[mb]),
            "error": rec.get("error", ""),
        }

    def _reason(self) -> str | None:
        if failed_before_init(self.init_error):
            return "the job could not be prepared on a worker (before init()); nothing was scored"
        if self.init_error:
            return "init() of the scoring script raised on a worker; nothing was scored"
        if self.threshold_exceeded():
            return (
                f"error_threshold exceeded: {self._failed_items} items failed, more than "
                f"the {self.settings.error_threshold} allowed (settings.error_threshold); "
                "the remaining mini-batches were cancelled"
            )
        return None

    def write_overview(self) -> None:
        """One line of ``logs/job_progress_overview.txt``: scheduled, processed, failed."""
        failed_mb = sum(1 for r in self.final.values() if r["status"] != RUN_DONE)
        succeeded = sum(r["succeeded"] for r in self.final.values())
        out_mod.append_text(
            self.out_dir / "logs" / "job_progress_overview.txt",
            f"{time.strftime('%Y-%m-%d %H:%M:%S')} {len(self.batches)} mini-batches scheduled, "
            f"{len(self.final)} processed, {failed_mb} failed; {succeeded} items succeeded, "
            f"{self._failed_items} failed",
        )

    def _write_logs(self, result: JobResult) -> None:
        logs = self.out_dir / "logs"
        out_mod.write_attempts(
            logs / "sys" / "job_report" / "processed_mini-batches.csv",
            sorted(self.attempts, key=operator.itemgetter("mini_batch", "try")),
        )
        s = result.summary
        self.write_overview()
        out_mod.write_text(logs / "job_result.txt", _result_text(s))
        out_mod.write_text(
            logs / "job_error.txt",
            failure_message(s) if s["status"] != "Completed" or s["failures"] else "No errors.",
        )
        out_mod.write_summary(self.out_dir, s)
        try:
            write_report(self.out_dir, s, self.attempts)
        except Exception:  # noqa: BLE001 - a report bug must never fail a job
            logger.warning("could not write report.html", exc_info=True)

    def failure(self, result: JobResult) -> JobFailed:
        cls = InitFailed if self.init_error else ErrorThresholdExceeded
        first = result.summary["failures"][0]["error"] if result.summary["failures"] else None
        return cls(
            failure_message(result.summary), result=result, user_traceback=self.init_error or first
        )


def _result_text(s: dict[str, Any]) -> str:
    lines = [
        f"Job {s['status']}" + (f": {s['reason']}" if s["reason"] else ""),
        f"items: {s['succeeded_items']} succeeded, {s['failed_items']} failed, "
        f"{s['total_items']} in all",
        f"mini-batches: {s['total_mini_batches']} in all, {s['failed_mini_batches']} failed",
        f"duration: {s['duration_s']:.1f} s",
    ]
    if s["predictions"]:
        lines.append(f"predictions: {s['predictions']} ({s['rows_written']} rows)")
    return "\n".join(lines)


def failure_message(s: dict[str, Any]) -> str:
    """What went wrong, in one screen: why, which mini-batches, the first user traceback."""
    head = (
        f"Job {s['status']}: {s['reason']}."
        if s["reason"]
        else f"Job {s['status']} with failures: {s['failed_items']} of {s['total_items']} items "
        "failed (settings.error_threshold allows them)."
    )
    lines = [head]
    failures = s["failures"]
    if failures:
        lines.append(
            f"{len(failures)} mini-batch(es) with failed items "
            f"({s['failed_items']} of {s['total_items']} items):"
        )
        for f in failures[:SHOWN_FAILURES]:
            files = ", ".join(Path(p).name for p in f["files"][:3])
            more = f" and {len(f['files']) - 3} more" if len(f["files"]) > 3 else ""
            lines.append(
                f"  mini-batch {f['mini_batch_id']} ({f['status']}, {f['tries']} "
                f"tries, {f['failed']} failed): {files}{more}"
            )
        if len(failures) > SHOWN_FAILURES:
            lines.append(f"  ... and {len(failures) - SHOWN_FAILURES} more (see job_summary.json)")
    first_tb = s.get("init_error") or (failures[0]["error"] if failures else None)
    if first_tb:
        if s.get("init_error"):
            where = "preparing" if failed_before_init(s["init_error"]) else "init()"
        else:
            where = f"mini-batch {failures[0]['mini_batch_id']}"
        lines.append(f"First error ({where}):")
        lines.extend("  " + line for line in first_tb.splitlines())
    lines.append(
        f"Full logs: {s['output']}/logs (start with logs/job_error.txt; tracebacks in "
        "logs/user/error/, per-try records in "
        "logs/sys/job_report/processed_mini-batches.csv)"
    )
    return "\n".join(lines)
