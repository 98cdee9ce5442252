"""The orchestration of one job: from a deployment and an input to a verdict.

:func:`execute` is the one function the CLI and the Python API both call::

    plan_job ─▶ claim the output (or resume it) ─▶ cluster ─▶ transport ─▶ ScoringPlugin
      ─▶ Dispatcher (tasks ─▶ MiniBatchRecords ─▶ Outcomes) ─▶ finish_job (writer.assemble)

The output folder is locked first (:mod:`daskscore.io.outputlock`), before the cluster starts,
and stays locked until the job has ended: a second job in the same folder is refused at once.
``--retry-failed`` (:mod:`daskscore.engine.retry`) is a resumed job whose books come from a
finished job's kept staging folder, with its failed mini-batches opened again.
The embedded cluster starts on a thread while the input is listed and planned.  Rows never
travel through the driver on a shared disk: workers write part files, and the output writer
assembles them at the end.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from daskscore.cluster import warm
from daskscore.cluster.forkserver import prestart_workers
from daskscore.cluster.local import (
    ClusterHandle,
    EarlyCluster,
    dashboard_link,
    existing_cluster,
    local_cluster,
)
from daskscore.config import Deployment
from daskscore.config.options import JobOptions
from daskscore.engine import bundles, interrupt, probe, recipe, resume, retry
from daskscore.engine.connection import require_connected
from daskscore.engine.finish import (
    JobRecord,
    JobResult,
    failure,
    finish_job,
)
from daskscore.engine.outcomes import Outcomes
from daskscore.engine.plan import JobPlan, plan_job
from daskscore.engine.publish import assembly_dir, finish_upload, publish, upload_left
from daskscore.engine.scoring import JobRun, open_board, score_all
from daskscore.errors import OutputError, UploadFailed, UsageError, WriteFailed
from daskscore.io import (
    inplace,
    outputdir,
    outputlock,
    pathroom,
    setaside,
    shipping,
    storage,
    storesecrets,
)
from daskscore.io.joblog import job_logging
from daskscore.io.ledger import make_staging, read_ledger
from daskscore.worker import script as script_mod

logger = logging.getLogger("daskscore")


def execute(
    deployment: Deployment,
    input_path: str | Path,
    output: str | Path,
    options: JobOptions | None = None,
) -> JobResult:
    """Run a deployment over an input and write the results into ``output``.

    Returns the :class:`JobResult` of a Completed job; raises :class:`JobFailed` (carrying the
    result) when the job fails, and a :class:`UsageError` before anything runs when the input,
    output or script cannot be used.
    """
    options = options or JobOptions()
    input_path = pathroom.local_path(input_path, "input")
    output = pathroom.local_path(output, "output")
    if options.retry_failed and storage.is_remote(str(output)):
        raise UsageError(
            f"--retry-failed needs a local output folder: '{output}' is a URL, and a job "
            "written to a URL does not keep the staged results a retry assembles the output "
            "from. Run the job into a local folder (and upload it) to retry its failures."
        )
    if not storage.is_remote(str(output)):  # (a path too long: refused, nothing created)
        pathroom.check_room(output, deployment.settings.output_file_name)
    lock = outputlock.lock_output(output, uuid.uuid4().hex[:12])  # refuses a folder in use
    try:
        return _execute(deployment, input_path, output, options, lock)
    except UploadFailed as exc:  # (the store is likely gone: its marker, said in the error)
        if isinstance(lock, outputlock.RemoteMarker) and not lock.release(quiet=True):
            exc.args = (
                f"{exc} Its marker {lock.where} could not be removed either: a job started on "
                "this machine ignores it (its job has ended); elsewhere, delete it first.",
            )
        raise
    finally:
        lock.release()


def _execute(
    deployment: Deployment,
    input_path: str | Path,
    output: str | Path,
    options: JobOptions,
    lock: outputlock.OutputLock | outputlock.RemoteMarker,
) -> JobResult:
    if not storage.is_remote(str(output)):  # (whatever this job is: before it looks)
        retry.clear_leftovers(Path(output).expanduser().resolve())
    if options.retry_failed:  # nothing left to do: say so before any cluster starts
        done = _nothing_to_retry(Path(output).expanduser().resolve(), options)
        if done is not None:
            return done
    if storage.is_remote(str(output)) and not options.overwrite:
        left = upload_left(str(output))  # (a job whose upload was cut short: --resume ends it)
        if left is not None:
            return _finish_upload(deployment, input_path, str(output), options, left)
    running, starting = None, ""
    # (--worker-memory sizes a fresh embedded cluster: the warm one's workers have their own;
    # find_running says so, and that --dashboard does not give the warm one a dashboard)
    if options.client is None and not options.scheduler and options.warm:
        running = warm.find_running(
            options.resources,
            options.workers,
            options.notify,
            dashboard=options.dashboard,
            worker_memory=options.worker_memory,
        )
    if running is not None:
        early = EarlyCluster(warm.warm_cluster(running))  # connects while this thread plans
    elif options.client is None and not options.scheduler:
        # the embedded cluster's fork server imports what the workers need, then the cluster
        # starts, while this thread lists and plans the inputs
        prestart_workers(
            options.workers or deployment.worker_count,
            script_mod.preloadable_imports(deployment.scoring_script, deployment.code)
            + _backends(input_path),
        )
        early = EarlyCluster(_cluster(deployment, options))
        n = options.workers or deployment.worker_count
        starting = f"starting {n} worker{'s' if n != 1 else ''}…"  # (said once planned)
    else:  # (the scheduler's connection is made while the inputs are planned)
        early = EarlyCluster(_cluster(deployment, options), connects=True)
    try:
        plan = plan_job(deployment, input_path, options, output=output)
        assert plan is not None  # (plan_job raises its first problem)
        if starting:  # (not before: a job refused by its plan starts no workers, says none)
            _say(options, starting)
        # a cluster that cannot be used fails the job before the output is claimed: an
        # --overwrite would have removed the earlier job's results for nothing
        handle = early.check()
        if options.resources and not handle.embedded:  # (before the claim: exit 2, no trace)
            probe.eligible_workers(handle.client, options.resources)  # refuses a cluster
        if options.shared_filesystem is False or (
            options.shared_filesystem is None and (options.scheduler or options.client)
        ):  # (the code may be shipped: a file it cannot read is refused before the claim)
            _check_shippable(plan.deployment, output)
        job = _claim(plan, output, lock)
    except BaseException as exc:
        early.discard()
        if isinstance(exc, KeyboardInterrupt):  # nothing claimed: the command starts again
            raise interrupt.before_claim() from None
        raise
    phases = job.record.phases  # (where a Ctrl-C lands: the job moves its phase on)
    try:
        result = _run_claimed(job, plan, options, early)
    except BaseException as exc:  # (the display says so: its output not written, or uploaded)
        job.end_display(exc)
        if not isinstance(exc, KeyboardInterrupt) or not phases.current:
            raise  # (a Ctrl-C already written up, in the install and scoring phases)
        # Ctrl-C: what is done is written up, job resumable
        raise interrupt.interrupted(job, phases.current, exc) from None
    job.end_display()  # (done: the output written, and uploaded)
    return result


def _run_claimed(job: JobRun, plan: JobPlan, options: JobOptions, early: EarlyCluster) -> JobResult:
    deployment, phases = plan.deployment, job.record.phases
    settings = deployment.settings
    secrets = storesecrets.job_secrets(settings.environment_variables)  # (and the storage ones)
    with (
        job_logging(job.out_dir, settings.logging_level, secrets),
        early as handle,
        open_board(job, handle) as board,
    ):
        for note in plan.notes:  # what the listing left out (the output folder, broken links)
            logger.info(note)
        if job.record.retried is not None:
            _note_retry(job, job.record.retried, options)
        try:  # (init, then score: its phases)
            transport = score_all(job, handle, board)
        except OSError as exc:  # (the driver's books: a full disk)
            _raise_if_disk(exc, job, "writing the job's books")
            raise
        except KeyboardInterrupt as exc:  # (written up while the job log and board are open)
            stopped, phases.current = interrupt.interrupted(job, phases.current, exc), ""
            summary = getattr(stopped, "summary", None)
            if summary is not None:  # (the page's last counts: the summary's, not the live)
                board.finish(summary)
            raise stopped from None
        except UsageError:
            # found out while running (a partition column run() does not return): nothing is
            # kept, so that the corrected command can run in the same folder (a retry pass
            # drops its own tries and keeps the earlier passes' results for the next one)
            if job.record.retried is None:
                shutil.rmtree(job.staging, ignore_errors=True)
            else:
                outputdir.drop_run(job.staging, f"r{job.run_no:02d}a")
                outputdir.keep_staging(job.staging, job.record.job_id)
            raise
        writes = plan.writer.target(settings.output_file_name)
        _say(options, "writing predictions…" if writes else "writing the summary…")
        phases.current = "assemble"
        try:
            job.set_aside_script_files()
            result = finish_job(
                job.record,
                job.outcomes,
                plan.writer,
                job.staging,
                transport.assembly_client(handle.client),
                keep=not job.remote_out,
                url=job.remote_out or "",
            )
        except OSError as exc:
            _raise_if_disk(exc, job, "writing the predictions and the job's summary")
            raise
        board.finish(result.summary)
    if job.remote_out:
        phases.current = "upload"  # (a Ctrl-C now: the job has ended, its upload not)
        result = publish(result, job.out_dir, job.remote_out, secrets)
    logger.info("job %s: %s in %.2f s", job.record.job_id, result.status, result.duration_s)
    if result.status != "Completed":
        raise failure(result)
    return result


def _finish_upload(
    deployment: Deployment,
    input_path: str | Path,
    url: str,
    options: JobOptions,
    summary: dict[str, Any],
) -> JobResult:
    """``--resume`` of a job to ``url`` that ended but whose upload did not: its kept output
    folder uploaded (refused without ``--resume``)."""
    source = str(input_path)
    shown = source if storage.is_remote(source) else str(Path(source).expanduser().resolve())
    secrets = storesecrets.job_secrets(deployment.settings.environment_variables)
    if options.resume and options.notify is not None:
        options.notify(f"Resuming: the job {summary.get('job_id')} had ended; uploading its output")
    result = finish_upload(url, summary, options.resume, shown, secrets)
    if result.status != "Completed":
        raise failure(result)
    return result


def _backends(input_path: object) -> list[str]:
    """The storage backends the workers will download the inputs with (imported by the fork
    server while the inputs are listed, not by each worker at its first mini-batch)."""
    urls = input_path if isinstance(input_path, (list, tuple)) else [input_path]
    return sorted({m for u in urls if isinstance(u, str) for m in storage.backend_modules(u)})


def _nothing_to_retry(out_dir: Path, options: JobOptions) -> JobResult | None:
    """``--retry-failed`` on a finished job with nothing failed: its result as it stands (the
    job is left as it is); None when there is something to run again."""
    summary = retry.finished_summary(out_dir)  # refuses a folder without a finished job
    if retry.left_to_do(summary):
        return None
    message = (
        f"Nothing to retry: no mini-batch of the job in {out_dir} failed, returned too few "
        "results or was left unrun; nothing was run."
    )
    logger.info(message)
    if options.notify is not None:
        options.notify(message)
    predictions = summary.get("predictions")
    summary["retried_in_this_pass"] = []
    return JobResult(
        str(summary.get("status", "Completed")),
        out_dir,
        Path(predictions) if predictions else None,
        summary,
    )


def _check_shippable(deployment: Deployment, output: str | Path) -> None:
    bundles.cache_bytes()  # (a DASKSCORE_BUNDLE_CACHE_MB that is not a size: exit 2)
    skip = None if storage.is_remote(str(output)) else Path(output).expanduser().resolve()
    shipping.check_shippable(Path(deployment.code), skip)
    if deployment.model is not None and not deployment.model.is_url:
        shipping.check_shippable(Path(deployment.model.path))


def _claim(
    plan: JobPlan, output: str | Path, lock: outputlock.OutputLock | outputlock.RemoteMarker
) -> JobRun:
    """Claim the output folder (or find the interrupted job to resume there); ``lock`` is
    this job's lock on it, which names the job once the folder is found usable."""
    deployment, options = plan.deployment, plan.options
    settings = deployment.settings
    target = plan.writer.target(settings.output_file_name)
    remote_out = str(output) if storage.is_remote(str(output)) else None
    if remote_out:
        outputdir.claim_remote_output(remote_out, target, options.overwrite, lock.announce)
        out_dir = assembly_dir(remote_out)  # (the same folder again: --resume finds it)
    else:
        out_dir = Path(output).expanduser().resolve()
    kept = None
    if options.retry_failed:  # a finished job's kept staging folder (refused when none)
        retry.finished_summary(out_dir)
        kept = retry.kept_staging(out_dir)
        unfinished = False
    else:
        try:
            unfinished = outputdir.claim_output(
                out_dir, target, options.overwrite, options.resume, lock.announce
            )
        except OutputError as exc:
            if remote_out:  # (its local folder, named for what it is)
                exc.args = (f"output '{remote_out}' is assembled locally, and its {exc}",)
            raise
    source = plan.input_path
    shown_input = source if storage.is_remote(source) else str(Path(source).expanduser().resolve())
    record = JobRecord(lock.holder.job_id, deployment, shown_input, out_dir)
    outcomes = Outcomes(plan.work, settings, isolate=options.isolate_failures)
    job = JobRun(plan, record, outcomes, remote_out)
    fp, splits = recipe.job_fingerprint(plan, out_dir), recipe.job_splits(plan)
    if kept is not None:  # (refuses before anything in the folder changes)
        job.run_no, record.retried = retry.restore(
            job.outcomes, kept, fp, out_dir, splits, plan.files
        )
    elif unfinished:  # (refuses before anything in the folder changes)
        job.run_no = _restore(job.outcomes, job.staging, fp, out_dir, splits, plan.files)
    lock.announce()  # (the folder is this job's: a job refused from now on names it)
    if kept is not None:
        outputdir.reopen_kept(kept, out_dir)
    if kept is not None or unfinished:  # (a run killed as it replaced its output: settled)
        inplace.settle(job.staging, out_dir)
    outputdir.clear_trash(out_dir)
    if options.resume:
        outputdir.remove_stale(out_dir, target)
    job.own_files = setaside.note_own(out_dir, outputdir.OWN_FILES)  # (an earlier run's)
    make_staging(job.staging)
    resume.write_manifest(job.staging, resume.manifest(fp, job.run_no, splits))
    resume.write_inputs(job.staging, plan.files)
    # what `daskscore replay` and --retry-failed need once the staging folder is gone
    recipe.write_recipe(
        out_dir, record.job_id, deployment, plan.input_path, options, fp, len(plan.work), splits
    )
    return job


def _restore(
    outcomes: Outcomes,
    staging: Path,
    fp: dict[str, str],
    out_dir: Path,
    splits: dict[str, list[Any]] | None,
    files: Sequence[str],
) -> int:
    """Fold in what an interrupted run committed; return this run's number (``splits``: a
    tabular job's, compared with those its manifest noted; ``files``: the job's inputs)."""
    previous = resume.read_manifest(staging)
    if previous is None:
        raise OutputError(
            f"cannot resume the job in '{out_dir}': its staging folder has no job.json (it "
            "was not started by this version of daskscore). Pass --overwrite to start again."
        )
    resume.check_resumable(previous, fp, out_dir, splits=splits, inputs=(staging, files))
    for ledger in sorted((staging / "ledger").glob("*.log")):
        state = read_ledger(staging, ledger.stem)  # (its commits, and the tries charged to it)
        outcomes.restore(ledger.stem, state.committed + state.charged)
    if splits is not None:  # (a file not cut whose kept mini-batch read other lines)
        resume.check_uncut(previous, splits, outcomes, out_dir, "resume")
    logger.info("resumed: %d mini-batches restored from earlier runs", len(outcomes.final))
    return int(previous.get("runs", 1)) + 1


def _raise_if_disk(exc: OSError, job: JobRun, what: str) -> None:
    """A full (or read-only) disk under the job's own files: say so, the job resumable."""
    failed = WriteFailed.of(exc, job.out_dir, what)
    if failed is not None:
        logger.error("%s", failed, exc_info=exc)
        raise failed from exc


def _say(options: JobOptions, message: str) -> None:
    if options.notify is not None and options.progress:
        options.notify(message)


def _note_retry(job: JobRun, rerun: list[int], options: JobOptions) -> None:
    """Say in the job log (and to the user) what this retry pass runs again."""
    kept = len(job.outcomes.final)
    message = (
        f"Retrying the job in {job.out_dir}: {retry.describe(rerun)} run again "
        f"(failed, partial or not run); {kept} of {len(job.plan.work)} kept as they were."
    )
    logger.info(message)
    if options.notify is not None:
        options.notify(message)


@contextmanager
def _cluster(deployment: Deployment, options: JobOptions) -> Iterator[ClusterHandle]:
    if options.client is not None:
        require_connected(options.client)
        link = dashboard_link(options.client)
        yield ClusterHandle(options.client, None, link, keep_warm=options.warm)
    elif options.scheduler:
        with existing_cluster(options.scheduler, options.security) as handle:
            yield handle
    else:
        with local_cluster(
            options.workers or deployment.worker_count,
            dashboard=options.dashboard,
            resources=options.resources or None,
            memory_limit=options.worker_memory,
        ) as handle:
            yield handle
