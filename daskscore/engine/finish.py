"""The end of a job: the output assembled, the verdict, the summary and the logs users read.

:func:`finish_job` asks the job's output writer to assemble the output from the staged parts of
every mini-batch's final try (in mini-batch order), then writes ``job_summary.json``,
``logs/job_result.txt``, ``logs/job_error.txt``, ``processed_mini-batches.csv`` and
``report.html``, removes the staging folder, and returns the :class:`JobResult`.

``job_summary.json`` is written last: a summary in the folder means the job finished, whatever
happens after it.  The staging folder is then renamed out of the way in one step and deleted
(:func:`daskscore.io.outputdir.discard_staging`), so a job killed at any instant leaves either
its whole staging folder (no summary: resumable) or a finished job.  A job that ends with
mini-batches failed, partial or not run keeps it instead, for ``--retry-failed``
(:mod:`daskscore.engine.retry`): the books of its mini-batches written before the summary, the
folder renamed to ``.daskscore-kept/`` after it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daskscore.config import Deployment
from daskscore.engine import retry
from daskscore.engine.failed_items import FAILED_ITEMS, failed_files, write_failed_items
from daskscore.engine.outcomes import Outcomes
from daskscore.engine.phases import Phases
from daskscore.engine.recipe import replay_command
from daskscore.engine.resultview import ResultViews
from daskscore.errors import ErrorThresholdExceeded, InitFailed, JobFailed, OutputFailed
from daskscore.io import outputdir, storesecrets, triescsv
from daskscore.io.dataschema import SchemaConflict
from daskscore.io.inplace import uninterrupted
from daskscore.io.writers import Assembly, OutputWriter
from daskscore.protocol import failed_at_import, failed_before_init, init_untraced
from daskscore.ui import explain
from daskscore.ui.explain import failure_status, job_settings, shown_path, versions
from daskscore.ui.report import write_report

logger = logging.getLogger("daskscore")

#: Failed mini-batches listed one per line in the failure message before "... and N more".
SHOWN_FAILURES = 5
#: Tries ``report.html`` is drawn from, at most (it keeps ~0.5 KB of each while it draws).
REPORT_TRIES = 20_000
_REPORT_KEYS = (
    "mini_batch", "try", "worker", "start", "total", "succeeded", "failed", "elapsed_s", "run_s",
    "status", "error", "items", "peak_rss_mb",
)  # fmt: skip


@dataclass(repr=False)  # (repr, _repr_html_, mini_batches: ResultViews)
class JobResult(ResultViews):
    """The outcome of a job (also written to ``<output>/job_summary.json``).

    Attributes
    ----------
    status : str
        ``"Completed"`` or ``"Failed"``.
    output : Path or str
        The output folder (a URL for a remote output).
    predictions : Path or None
        The append_row file or dataset folder (``None`` for ``summary_only``, or when init()
        failed).
    summary : dict
        Everything in ``job_summary.json``; its counts are also attributes below.
    """

    status: str
    output: Path
    predictions: Path | None
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def logs(self) -> Path:
        """The job's ``logs/`` folder."""
        return Path(self.output) / "logs"

    @property
    def job_id(self) -> str:
        return str(self.summary.get("job_id", ""))

    @property
    def reason(self) -> str | None:
        """Why the job failed (``None`` when it completed)."""
        return self.summary.get("reason")

    @property
    def total_items(self) -> int:
        return int(self.summary.get("total_items", 0))

    @property
    def succeeded_items(self) -> int:
        return int(self.summary.get("succeeded_items", 0))

    @property
    def failed_items(self) -> int:
        return int(self.summary.get("failed_items", 0))

    @property
    def not_run_items(self) -> int:
        return int(self.summary.get("not_run_items", 0))

    @property
    def rows_written(self) -> int:
        return int(self.summary.get("rows_written", 0))

    @property
    def total_mini_batches(self) -> int:
        return int(self.summary.get("total_mini_batches", 0))

    @property
    def failed_mini_batches(self) -> int:
        return int(self.summary.get("failed_mini_batches", 0))

    @property
    def partial_mini_batches(self) -> int:
        return int(self.summary.get("partial_mini_batches", 0))

    @property
    def retried_mini_batches(self) -> int:
        return int(self.summary.get("retried_mini_batches", 0))

    @property
    def resumed_mini_batches(self) -> int:
        return int(self.summary.get("resumed_mini_batches", 0))

    @property
    def retried_in_this_pass(self) -> list[int] | None:
        """``--retry-failed``: the mini-batches this pass ran again (None: not a retry)."""
        return None if (found := self.summary.get("retried_in_this_pass")) is None else list(found)

    @property
    def duration_s(self) -> float:
        return float(self.summary.get("duration_s", 0.0))

    @property
    def failures(self) -> list[dict[str, Any]]:
        """One entry per mini-batch with failed items: id, status, tries, files, error."""
        return list(self.summary.get("failures", []))

    @property
    def init_error(self) -> str | None:
        return self.summary.get("init_error")

    @property
    def failed_items_path(self) -> Path | None:
        """``failed_items.csv``: one row per failed input item; None when nothing failed."""
        path = self.summary.get("failed_items_file")
        return Path(path) if path else None

    def failed_items_frame(self) -> Any:
        """``failed_items.csv`` as a pandas DataFrame (empty, with its columns, when nothing
        failed): ``mini_batch``, ``file``, ``status``, ``tries``, ``error``."""
        from daskscore.engine.failed_items import read_failed_items

        return read_failed_items(self.failed_items_path)


@dataclass
class JobRecord:
    """What the summary says of a job besides its outcomes."""

    job_id: str
    deployment: Deployment
    input_path: str
    out_dir: Path
    phases: Phases = field(default_factory=Phases)
    #: the workers reused a script an earlier job had initialised (no init() this job)
    warm_workers: bool = False
    #: a shipped job: its code and model bundles, and the bytes sent of each (0: held already)
    shipped: dict[str, Any] | None = None
    #: --retry-failed: the mini-batches this pass ran again (None: not a retry pass)
    retried: list[int] | None = None
    #: the slow run() calls still in flight when the job stopped (error_threshold exceeded)
    running_at_end: list[dict[str, Any]] = field(default_factory=list)
    #: report.html's "settings": the workers and output format the job ran with
    ran_with: dict[str, Any] = field(default_factory=dict)
    #: why the output could not be written (a dataset column of types that are not one)
    output_error: str | None = None
    #: what assembling the output warned about (a script's file of its name, set aside)
    warnings: list[str] = field(default_factory=list)


def finish_job(
    job: JobRecord,
    outcomes: Outcomes,
    writer: OutputWriter,
    staging: Path,
    client: Any = None,
    keep: bool = True,
    url: str = "",
) -> JobResult:
    """Assemble the output, write the summary and logs, and return the result.

    ``keep``: a job left with failures keeps its staging folder for ``--retry-failed`` (False
    for a remote output, whose local folder goes once uploaded); ``url``: that output's URL,
    which the logs and ``report.html`` then name (they are uploaded there)."""
    predictions, name = None, job.deployment.settings.output_file_name
    if outcomes.init_error is None or outcomes.succeeded_items():  # (what was scored is kept)
        try:
            predictions = writer.assemble(
                Assembly(job.out_dir, staging, name, outcomes.done_finals(), client, job.warnings)
            )
        except SchemaConflict as exc:  # the job's verdict, with its summary and logs
            job.output_error = str(exc)
    job.phases.mark("assemble")
    for text in job.deployment.warnings:  # (a lenient load's unknown keys)
        logger.warning("deployment: %s", text)
    summary = summarize(job, outcomes, predictions)
    result = JobResult(summary["status"], job.out_dir, predictions, summary)
    keep = keep and retry.needs_keeping(outcomes) and staging.is_dir()
    if keep:
        retry.write_book(staging, outcomes)  # (before the summary: a summary finds it there)
    write_logs(job, outcomes, result, url, lambda: retry.put_away(staging, job.job_id, keep))
    return result


def summarize(job: JobRecord, outcomes: Outcomes, predictions: Path | None) -> dict[str, Any]:
    """The content of ``job_summary.json``."""
    settings = job.deployment.settings
    total_items = outcomes.total_items()
    succeeded = outcomes.succeeded_items()
    failures = [_failure(outcomes, mb) for mb in outcomes.failure_ids()]
    failed = outcomes.init_error or outcomes.threshold_exceeded() or job.output_error
    first_failed = failures[0]["mini_batch_id"] if failures else None
    source = job.deployment.source
    n_work, n_final = len(outcomes.work), len(outcomes.final)
    return {
        "status": "Failed" if failed else "Completed",
        "reason": _reason(outcomes) or job.output_error,
        "job_id": job.job_id,
        "deployment": str(source) if source else None,
        "input": job.input_path,
        "output": str(job.out_dir),
        "predictions": str(predictions) if predictions else None,
        "output_action": settings.output_action,
        "total_items": total_items,
        "succeeded_items": succeeded,
        "failed_items": outcomes.failed_items,
        "not_run_items": total_items - succeeded - outcomes.failed_items,
        "rows_written": 0 if job.output_error else outcomes.rows_written(),
        "total_mini_batches": n_work,
        "failed_mini_batches": outcomes.failed_mini_batches(),
        "partial_mini_batches": outcomes.partial_mini_batches(),
        "not_run_mini_batches": n_work - n_final,
        "retried_mini_batches": outcomes.retried_mini_batches(),
        # --isolate-failures: mini-batches split so that only their failing items failed
        "split_mini_batches": len(outcomes.split.settled),
        "resumed_mini_batches": outcomes.resumed,
        # (those it ran: not those error_threshold cancelled before they did)
        "retried_in_this_pass": None
        if job.retried is None
        else [mb for mb in job.retried if outcomes.ran(mb)],
        "error_threshold": settings.error_threshold,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(job.phases.started)),
        "duration_s": job.phases.elapsed(),
        "phases": dict(job.phases.seconds),
        "warm_workers": job.warm_workers,
        "shipped": job.shipped,
        "running_at_end": job.running_at_end,
        "warnings": [*job.deployment.warnings, *job.warnings],
        "settings": job_settings(settings, **job.ran_with),
        "versions": versions(),
        "failures": failures,
        "init_error": outcomes.init_error,
        "failed_items_file": str(job.out_dir / FAILED_ITEMS) if failures else None,
        # how to run the first failed mini-batch again, here, under a debugger
        "replay": replay_command(job.out_dir, first_failed) if failures else None,
    }


def _failure(outcomes: Outcomes, mb: int) -> dict[str, Any]:
    rec = outcomes.final[mb]
    return {
        "mini_batch_id": mb,
        "status": rec.status.value,
        "tries": outcomes.all_tries(mb) or 1,
        "succeeded": rec.succeeded,
        "failed": rec.failed,
        "rows_unknown": mb in outcomes.rows_unknown,
        "files": failed_files(outcomes, mb),
        "error": rec.error,
    }


def _reason(outcomes: Outcomes) -> str | None:
    done, first = outcomes.succeeded_items(), (outcomes.init_error or "").split("\n", 1)[0]
    tail = f"; {done} of {outcomes.total_items()} items were scored before" if done else ""
    tail = tail and f" started again during the job{tail}" or "; nothing was scored"
    if failed_before_init(outcomes.init_error):
        return "the job could not be prepared on a worker (before init())" + tail
    if failed_at_import(outcomes.init_error):
        return f"{first} (on a worker)" + tail
    if init_untraced(outcomes.init_error):
        return first + tail
    if outcomes.init_error:
        return "init() of the scoring script raised on a worker" + tail
    if outcomes.threshold_exceeded():
        return (
            f"error_threshold exceeded: {outcomes.failed_items} items failed, more than "
            f"the {outcomes.settings.error_threshold} allowed (settings.error_threshold); "
            "the remaining mini-batches were cancelled"
        )
    return None


def write_overview(out_dir: Path, outcomes: Outcomes) -> None:
    """One line of ``logs/job_progress_overview.txt``: scheduled, processed, failed."""
    outputdir.append_text(
        out_dir / "logs" / "job_progress_overview.txt",
        f"{time.strftime('%Y-%m-%d %H:%M:%S')} {len(outcomes.work)} mini-batches scheduled, "
        f"{len(outcomes.final)} processed, {outcomes.failed_mini_batches()} failed; "
        f"{outcomes.succeeded_items()} items succeeded, {outcomes.failed_items} failed",
    )


def write_logs(
    job: JobRecord, outcomes: Outcomes, result: JobResult, url: str = "", then: Any = None
) -> None:
    """The job's logs (as Azure names them), ``report.html``, and last the summary, ``then()``
    with it: no stop signal between (``url``: where they go, which the logs and report name)."""
    logs = job.out_dir / "logs"
    triescsv.write_attempt_rows(
        logs / "sys" / "job_report" / "processed_mini-batches.csv", outcomes.attempt_lines()
    )
    s = result.summary
    shown = explain.uploaded(s, url) if url else s  # (the summary itself: publish() rewrites it)
    secrets = storesecrets.job_secrets(job.deployment.settings.environment_variables)
    write_failed_items(job.out_dir, outcomes, secrets)
    write_overview(job.out_dir, outcomes)
    outputdir.write_text(logs / "job_result.txt", _result_text(shown))
    outputdir.write_text(
        logs / "job_error.txt",
        failure_message(shown) if s["status"] != "Completed" or s["failures"] else "No errors.",
    )
    try:
        write_report(job.out_dir, shown, report_tries(outcomes), job.phases.started)
    except Exception:  # noqa: BLE001 - a report bug must never fail a job
        logger.warning("could not write report.html", exc_info=True)
    with uninterrupted():  # (Ctrl-C, SIGTERM: held until the staging folder is put away)
        outputdir.write_summary(job.out_dir, s)  # last: a summary says the job finished
        if then is not None:
            then()


def report_tries(outcomes: Outcomes, limit: int = REPORT_TRIES) -> Iterator[dict[str, Any]]:
    """The tries ``report.html`` is drawn from: every try, or for a job of more than ``limit``
    tries an even sample (the tries of every k-th mini-batch), which its charts and per-worker
    table then show; the counts at its top are the summary's."""
    every = 1
    if outcomes.attempt_count() > limit:
        every = max(1, -(-outcomes.tried_count() // limit))
    for row in outcomes.attempt_rows(every):
        yield dict(zip(_REPORT_KEYS, row, strict=True))


def failure(result: JobResult) -> JobFailed:
    """The exception of a failed job: init(), the error threshold, or the output failed (as
    its summary says: a job whose upload is finished later has no other books)."""
    s = result.summary
    limit, init_error = s.get("error_threshold", -1), s.get("init_error")
    over = limit is not None and limit >= 0 and s.get("failed_items", 0) > limit
    cls = InitFailed if init_error else ErrorThresholdExceeded if over else OutputFailed
    failures = s["failures"]
    first = failures[0]["error"] if failures else None
    return cls(failure_message(s), result=result, user_traceback=init_error or first)


def _result_text(s: dict[str, Any]) -> str:
    lines = [
        f"Job {s['status']}"
        + (f": {s['reason']}" if s["reason"] else "")
        + (" (no item succeeded)" if nothing_succeeded(s) else ""),
        f"items: {s['succeeded_items']} succeeded, {s['failed_items']} failed, "
        f"{s['total_items']} in all",
        f"mini-batches: {s['total_mini_batches']} in all, {s['failed_mini_batches']} failed",
        f"duration: {s['duration_s']:.1f} s",
    ]
    if s.get("retried_in_this_pass") is not None:
        lines.append(f"retried in this pass: {retry.describe(s['retried_in_this_pass'])}")
    if s["predictions"]:
        lines.append(f"predictions: {s['predictions']} ({s['rows_written']} rows)")
    return "\n".join(lines)


def nothing_succeeded(s: dict[str, Any]) -> bool:
    """A job that ran items and not one succeeded: its verdict is shown red, whatever its status."""
    return bool(s.get("total_items")) and not s.get("succeeded_items") and not s.get("init_error")


def failure_message(s: dict[str, Any]) -> str:
    """What went wrong, in one screen: why, which mini-batches, the first user traceback."""
    head = (
        f"Job {s['status']}: {s['reason']}."
        if s["reason"]
        else f"Job {s['status']} with failures: {s['failed_items']} of {s['total_items']} items "
        "failed (settings.error_threshold allows them)."
    )
    if nothing_succeeded(s) and not s["reason"]:
        head = (
            f"Job {s['status']}, but no item succeeded: all {s['total_items']} items failed "
            "(settings.error_threshold allows them, so the exit code is 0)."
        )
    lines = [head]
    failures = s["failures"]
    if failures:
        lines.append(
            f"{len(failures)} mini-batch{'' if len(failures) == 1 else 'es'} with failed items "
            f"({s['failed_items']} of {s['total_items']} items):"
        )
        for f in failures[:SHOWN_FAILURES]:
            files = ", ".join(shown_path(p, s.get("input")) for p in f["files"][:3])
            files += f" and {len(f['files']) - 3} more" if len(f["files"]) > 3 else ""
            unknown = ", rows unknown: lines counted" if f.get("rows_unknown") else ""
            failed = "" if f["status"] == "RUN_DONE" else f", {f['failed']} failed"  # (partial)
            lines.append(
                f"  mini-batch {f['mini_batch_id']} ({failure_status(f)}, {f['tries']} tr"
                f"{'y' if f['tries'] == 1 else 'ies'}{failed}{unknown}): {files}"
            )
        if len(failures) > SHOWN_FAILURES:
            lines.append(f"  ... and {len(failures) - SHOWN_FAILURES} more (see job_summary.json)")
    first_tb = s.get("init_error") or (failures[0]["error"] if failures else None)
    if first_tb:
        init = s.get("init_error")
        where = "init()" if init else f"mini-batch {failures[0]['mini_batch_id']}"
        where = "preparing" if init and failed_before_init(init) else where
        where = "import" if init and failed_at_import(init) else where
        same = 0 if init else sum(f["error"] == first_tb for f in failures)
        if same > 1:  # (a systematic failure: said at once, not found by reading them all)
            where += f"; the same in {same} of the {len(failures)} failed mini-batches"
        lines.append(f"First error ({where}):")
        lines.extend("  " + line for line in first_tb.splitlines())
    if s.get("failed_items_file"):
        lines.append(f"Failed items, one per line: {s['failed_items_file']}")
    if s.get("replay") and nothing_succeeded(s):
        lines.append(f"Debug the first failed mini-batch here, in pdb: {s['replay']} --pdb")
    elif s.get("replay"):
        lines.append(f"Run the first failed mini-batch again here: {s['replay']} [--pdb]")
    elif elsewhere := explain.replay_elsewhere(s):
        lines.append(f"Run the first failed mini-batch again: {elsewhere}.")
    lines.append(
        f"Full logs: {s['output']}/logs (start with logs/job_error.txt; tracebacks in "
        "logs/user/error/, per-try records in "
        f"logs/sys/job_report/processed_mini-batches.csv); report: {s['output']}/report.html"
    )
    return "\n".join(lines)
