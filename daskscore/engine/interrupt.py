"""Ctrl-C, in whichever phase of a job it comes: what is kept, and how to go on.  (SIGTERM and
SIGHUP stop ``daskscore run`` the same way: :class:`~daskscore.errors.StopSignal`.)

* Before the output folder is claimed (the cluster starting while the input is listed and
  planned): nothing was run and the folder was not changed; the same command starts again.
* After it (the cluster starting, ``init()``, scoring, the final assembly: the job's
  :class:`~daskscore.engine.phases.Phases`): the mini-batches
  done so far are in the staging folder; the summary (status ``Interrupted``) and the report
  of what was done are written, and ``--resume`` finishes the job.  A Ctrl-C that lands once
  the job's own summary is written (as the staging folder is removed) finds the job finished:
  nothing is rewritten and nothing is left to resume.

A job to an output URL is written up the same way in its local assembly folder (named by the
URL: :func:`daskscore.engine.publish.assembly_dir`), which ``--resume`` finds again.  A Ctrl-C
while that folder is uploaded, once the job has ended, leaves it whole with the job's summary:
``--resume`` uploads it (:func:`daskscore.engine.publish.finish_upload`), nothing scored again.

The CLI prints what :class:`JobInterrupted` carries (``daskscore.cli._interrupted``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from daskscore.engine.finish import JobResult, summarize, write_logs
from daskscore.engine.scoring import JobRun
from daskscore.errors import StopSignal
from daskscore.io import outputdir
from daskscore.io.ledger import read_ledger

logger = logging.getLogger("daskscore")

#: How each phase is named in the interrupted job's summary and on the terminal.
PHASE_WORDS = {
    "plan": "while the cluster started and the input was listed",
    "start_cluster": "while the cluster started",
    "init": "while init() ran",
    "score": "while scoring",
    "assemble": "while the output was assembled",
    "upload": "while the output was uploaded",
}


class JobInterrupted(KeyboardInterrupt):
    """A job stopped by Ctrl-C.

    ``out_dir`` is None when nothing was claimed yet (``rerun``: the same command starts the
    job again).  Otherwise ``summary`` (status ``Interrupted``) and ``report`` were written
    of what was done (None for a retry pass, whose folder keeps the finished job's summary: it
    goes on with ``--retry-failed``), and the staging folder is kept for ``--resume``;
    ``finished``: the job had written its own summary when Ctrl-C came (nothing to resume).
    ``url``: the job had ended, and its output was being uploaded to this URL: the whole
    output is kept in ``out_dir``, and ``--resume`` uploads it.
    """

    def __init__(
        self,
        out_dir: Path | str | None,
        summary: dict[str, Any] | None,
        report: Path | None,
        retry: bool,
        *,
        phase: str = "score",
        finished: bool = False,
        url: str | None = None,
        reason: str | None = None,
    ) -> None:
        self.out_dir, self.summary, self.report, self.retry = out_dir, summary, report, retry
        self.phase, self.finished, self.url = phase, finished, url
        #: what was done, in words (a summary's ``reason``; a retry pass's, which writes none)
        self.reason = reason or (summary or {}).get("reason")
        super().__init__(self._message())

    def _message(self) -> str:
        """What a notebook or a driver script shows of it (the CLI prints its own lines)."""
        if self.out_dir is None:
            return f"interrupted {self.when}: nothing was run; the output folder was not changed"
        if self.finished:
            return f"interrupted as the job ended; its results are in {self.out_dir}"
        if self.url:
            return (
                f"interrupted while the output was uploaded to {self.url}: the job had ended, "
                f"and its whole output is kept in {self.out_dir} (resume=True uploads it)"
            )
        how = "retry_failed=True" if self.retry else "resume=True"
        reason = self.reason or f"interrupted {self.when}"
        return f"{reason}; what is done is kept in {self.out_dir} (run it again with {how})"

    @property
    def rerun(self) -> bool:
        """Nothing was claimed: the same command starts again (no ``--resume``)."""
        return self.out_dir is None

    @property
    def when(self) -> str:
        return PHASE_WORDS.get(self.phase, f"in phase {self.phase}")


def before_claim() -> JobInterrupted:
    """Ctrl-C while the input was listed and planned (the cluster starting beside it)."""
    logger.info("interrupted before the output folder was claimed: nothing was run")
    return JobInterrupted(None, None, None, False, phase="plan")


def interrupted(job: JobRun, phase: str, cause: BaseException | None = None) -> KeyboardInterrupt:
    """Write up what ``job`` did before Ctrl-C came in ``phase``; the exception to raise.
    ``cause``: the ``KeyboardInterrupt`` that stopped it (a :class:`StopSignal` names its
    signal)."""
    record, outcomes = job.record, job.outcomes
    record.phases.mark(phase)
    own = (_read_summary(record.out_dir) or {}).get("job_id") == record.job_id
    if record.retried is not None and not own:  # (the folder's summary: the finished job's)
        _fold_ledgers(job)
        done = sum(1 for mb in record.retried if outcomes.is_final(mb))
        reason = (
            f"interrupted ({stopped_by(cause)}) {PHASE_WORDS.get(phase, phase)}, with at least "
            f"{done} of the {len(record.retried)} mini-batches this retry pass runs again done "
            "(tasks in flight may commit more as they stop); --retry-failed keeps them and "
            "runs the rest"
        )
        logger.info("retry pass interrupted %s: %d mini-batches done", phase, done)
        return JobInterrupted(record.out_dir, None, None, True, phase=phase, reason=reason)
    if phase == "upload" and job.remote_out:  # (the job ended: its summary is written)
        done = _read_summary(record.out_dir)
        if done is None:  # (uploaded: its local folder was being removed)
            return JobInterrupted(job.remote_out, None, None, False, phase=phase, finished=True)
        logger.info("interrupted while the output was uploaded to %s", job.remote_out)
        report = record.out_dir / "report.html"
        return JobInterrupted(record.out_dir, done, report, False, phase=phase, url=job.remote_out)
    if outputdir.finished(record.out_dir):  # its own summary is written: the job is done
        done = _read_summary(record.out_dir)
        logger.info("interrupted after the job's summary was written: the job is finished")
        return JobInterrupted(
            record.out_dir, done, record.out_dir / "report.html", False, phase=phase, finished=True
        )
    _fold_ledgers(job)
    job.set_aside_script_files()
    s = summarize(record, outcomes, None)
    s["status"] = outputdir.INTERRUPTED
    s["interrupted_phase"] = phase
    s["reason"] = (
        f"interrupted ({stopped_by(cause)}) {PHASE_WORDS.get(phase, phase)}, with at least "
        f"{len(outcomes.final)} of {len(job.plan.work)} mini-batches done (tasks in flight may "
        "commit more as they stop); --resume finishes it"
    )
    try:  # (the summary last: it says Interrupted, so the folder stays resumable)
        write_logs(record, outcomes, JobResult(s["status"], record.out_dir, None, s))
    except Exception:  # noqa: BLE001 - the staging folder, not these logs, is what resumes
        logger.warning("could not write the interrupted job's summary", exc_info=True)
    logger.info("interrupted %s: %d mini-batches done", phase, len(outcomes.final))
    return JobInterrupted(record.out_dir, s, record.out_dir / "report.html", False, phase=phase)


def _fold_ledgers(job: JobRun) -> None:
    """Fold into ``job``'s books what its tasks in flight committed (their records come back
    when they end)."""
    for ledger in sorted((job.staging / "ledger").glob(f"r{job.run_no:02d}a*.log")):
        try:
            job.outcomes.record(ledger.stem, read_ledger(job.staging, ledger.stem).committed)
        except Exception:  # noqa: BLE001 - the summary is best effort; --resume reads them again
            logger.debug("reading ledger %s failed", ledger, exc_info=True)


def stopped_by(cause: BaseException | None) -> str:
    """``Ctrl-C``, or the signal that stopped the job as Ctrl-C does (``SIGTERM``)."""
    return cause.signal_name if isinstance(cause, StopSignal) else "Ctrl-C"


def _read_summary(out_dir: Path) -> dict[str, Any] | None:
    try:
        value = json.loads((out_dir / outputdir.SUMMARY_FILE).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
