"""The scoring phase of a job: its transport chosen, the script installed on every worker
(``init()`` once per worker process), and every mini-batch not yet done dispatched.

Progress goes to the user's terminal or notebook (:mod:`daskscore.ui.progress`) and to the
daskscore page of the Dask dashboard (:mod:`daskscore.ui.dashboard`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from daskscore import _compat
from daskscore.cluster.local import ClusterHandle
from daskscore.cluster.nannies import keep_nannies
from daskscore.engine import jobview, probe, resume, transport
from daskscore.engine.connection import SchedulerWatch
from daskscore.engine.dispatch import Dispatcher
from daskscore.engine.finish import JobRecord
from daskscore.engine.install import ScriptInstall
from daskscore.engine.jobview import failures
from daskscore.engine.noworkers import WorkerWatch
from daskscore.engine.outcomes import Outcomes
from daskscore.engine.plan import JobPlan, mlflow_text_columns
from daskscore.engine.resultview import verdict
from daskscore.engine.resume import MANIFEST
from daskscore.engine.reuse import init_key
from daskscore.engine.work import planned_total, rows_note
from daskscore.errors import ClusterLost, DaskScoreError, InitFailed
from daskscore.io import outputdir, setaside, storesecrets
from daskscore.protocol import WorkerJob
from daskscore.ui import dashboard
from daskscore.ui.progress import Progress
from daskscore.worker.deadline import unwatched_workers, watch_deadlines
from daskscore.worker.plugin import WarmKeeper
from daskscore.worker.threads import intra_op_threads

logger = logging.getLogger("daskscore")

#: How often a cluster with no worker is asked again whether one joined.
WORKER_POLL_S = 0.5


@dataclass
class JobRun:
    """A planned job with its output folder claimed: what the scoring phase works on."""

    plan: JobPlan
    record: JobRecord
    outcomes: Outcomes
    #: the upload target of a remote output (the job runs in a local folder first)
    remote_out: str | None
    #: 1 for a new job; resuming continues the numbering
    run_no: int = 1
    #: the job's progress display, ended by :meth:`end_display` once the output is written
    progress: Progress | None = None
    #: daskscore's own files in the output folder as the job started (``io.setaside.note_own``)
    own_files: dict[str, Any] = field(default_factory=dict)

    @property
    def out_dir(self) -> Path:
        return self.record.out_dir

    @property
    def staging(self) -> Path:
        return self.out_dir / outputdir.STAGING_DIR

    def set_aside_script_files(self) -> None:
        """Before the job writes its summary, report and failed items: a file of one of those
        names that the scoring script wrote is kept beside it, with a warning in the summary
        (:func:`daskscore.io.setaside.set_aside_own`)."""
        noted, self.own_files = self.own_files, {}  # (once: what follows is the job's own)
        for text in setaside.set_aside_own(self.out_dir, noted):
            logger.warning("%s", text)
            self.record.warnings.append(text)

    def end_display(self, exc: BaseException | None = None) -> None:
        """The progress display says how the job ended, once its output is written (or
        uploaded), or not: done; interrupted; failed (``exc``), and what failed: the summary's
        reason (a :class:`~daskscore.errors.JobFailed` carries it), else the error's first
        line.  Only the first ending is shown."""
        if self.progress is None:
            return
        final_counts(self.progress, self.outcomes)  # (the summary's, whatever was live)
        if exc is None or isinstance(exc, KeyboardInterrupt):
            self.progress.close("done" if exc is None else "interrupted")
            return
        first = (str(exc).strip().splitlines() or [""])[0]
        reason = getattr(getattr(exc, "result", None), "reason", None) or first
        if not isinstance(exc, DaskScoreError):  # (a bug's: its type says which)
            reason = f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__
        self.progress.close("failed", _cut(reason))


def open_board(job: JobRun, handle: ClusterHandle) -> dashboard.JobBoard:
    """The job's row on the daskscore page, installed when the scheduler has a dashboard."""
    link = None
    if handle.dashboard_link and dashboard.install(handle.client):
        link = dashboard.page_link(handle.dashboard_link)
    source = job.plan.deployment.source
    about = jobview.about(source, job.record.input_path, job.out_dir, job.remote_out)
    return dashboard.JobBoard(
        handle.client if link else None, job.record.job_id, str(source) if source else None,
        link, about=about, verdict=verdict,
    )  # fmt: skip


def score_all(
    job: JobRun, handle: ClusterHandle, board: dashboard.JobBoard
) -> transport.SharedDisk:
    """Install the script on the workers and run every mini-batch not yet done; return the
    job's transport (the assembly needs it)."""
    # a caller's cluster object in this process keeps the nannies of workers that die under
    # the job (cluster.nannies), and is left as it was after
    release = (lambda: None) if handle.embedded else keep_nannies(handle.client)
    try:
        return _score(job, handle, board)
    finally:
        release()


def _score(job: JobRun, handle: ClusterHandle, board: dashboard.JobBoard) -> transport.SharedDisk:
    plan, outcomes, phases = job.plan, job.outcomes, job.record.phases
    phases.mark("start_cluster")
    notify = plan.options.notify or (lambda message: None)
    if handle.dashboard_link:
        notify(f"Dask dashboard: {handle.dashboard_link}")
    if board.link:
        notify(f"daskscore page: {board.link}")
    if job.run_no > 1 and job.record.retried is None:  # (a retry pass said what it reruns)
        notify(resumed_note(len(outcomes.final), len(plan.work)))

    def kept() -> str:
        return f"{outcomes.items_done()} items"

    # (any cluster may lose every worker: a caller's, the embedded one whose workers cannot
    # start again)
    watch = WorkerWatch(handle.client, notify, kept, str(job.out_dir))
    # every question the job's start asks the cluster goes through the job's watch on its
    # scheduler: a client that lost it asks nothing (the question would wait out Dask's connect
    # timeout, 30 s, then fail as an internal error) and ends the job with ClusterLost
    lost = SchedulerWatch(handle.client, kept, str(job.out_dir))
    if not handle.embedded:  # a cluster we did not start: it may have none yet
        _wait_for_a_worker(handle.client, notify, watch, lost)
    carrier, workers = lost.ask(lambda: _place(job, handle))
    job.record.ran_with = {"workers": workers, "output_format": plan.writer.name}
    wjob = lost.ask(lambda: carrier.worker_job(_worker_job(job, handle, workers), handle.client))
    job.record.shipped = carrier.sent
    if handle.keep_warm:  # the script stays initialised for the next job with the same key
        wjob = replace(wjob, warm_key=init_key(wjob))
    total_items = planned_total(plan.work)
    rows = f" ({rows_note(plan.work)})" if plan.unit == "rows" else ""
    notify(
        f"Scoring {_n(len(plan.files), 'file')}{rows} in {_n(len(plan.work), 'mini-batch')} "
        f"on {_n(workers, 'worker')}; output: {_output(job)}"
    )
    progress = Progress(len(plan.work), total_items, enabled=plan.options.progress)
    progress.page_link = board.link
    watch.show = lambda text: setattr(progress, "alert", text)  # (beside the counts)
    progress.backdate(phases.elapsed())  # (elapsed counts from the job's start)
    if outcomes.final:  # resumed or retried: what earlier runs did is done
        done, items = len(outcomes.final), outcomes.items_done()
        progress.resumed(
            done, items, outcomes.failed_mini_batches(), outcomes.partial_mini_batches()
        )
    recount = None
    if not handle.embedded:  # a cluster we did not start: workers come and go

        def recount() -> int:
            return probe.count_eligible(handle.client, plan.options.resources)

    script = ScriptInstall(
        handle.client,
        wjob,
        job.staging,
        plan.options.worker_memory,
        init_timeout=plan.options.init_timeout,
        notify=plan.options.notify,
        watch=lost,
        fresh=handle.warm,  # (a caller's workers hold its data: they are never restarted)
    )

    def checks() -> None:  # (at each recount: the install, and a cluster without workers)
        script.check()
        watch.check()

    loop = Dispatcher(
        handle.client, wjob, outcomes, carrier, plan.writer, plan.work, workers, progress,
        job.run_no, recount, plan.options.worker_memory, checks, lost,
    )  # fmt: skip

    def tick() -> None:
        board.tick(
            lambda: {**live_counts(outcomes, progress), "failures": failures(outcomes, plan.work)}
        )

    stopping, settled = False, False  # (until every mini-batch has settled)
    try:
        tick()
        logger.info("cluster ready with %d workers", workers)
        if handle.cluster is None:  # (local_cluster registered it on its own)
            _watch_timeouts(handle.client, lost)
        if wjob.warm_key:  # (idempotent: once per cluster)
            lost.ask(lambda: handle.client.register_plugin(WarmKeeper()))
        phases.current = "init"  # (the script imported and init() run on every worker)
        if plan.options.progress:
            notify("init()…")
        job.record.warm_workers = script.install()
        model = plan.deployment.model
        try:  # (what init() wrote into the model folder is the job's own: resume.refresh_model)
            if model is not None and not job.record.warm_workers:  # (no init() ran: as it was)
                resume.refresh_model(job.staging, model.path, job.out_dir)
        except OSError:
            logger.debug("noting the model folder after init() failed", exc_info=True)
        phases.mark("init", then="score")
        logger.info("scoring script installed and init() done on every worker")
        with _compat.span("daskscore", job.record.job_id):  # (Dask's metrics, per job)
            loop.run(on_tick=tick)
        phases.mark("score")
        logger.info("all mini-batches settled; %d tasks", loop.seq)
        settled = True
    except InitFailed as exc:
        outcomes.init_error, settled = exc.user_traceback, True
    except (KeyboardInterrupt, ClusterLost):
        stopping = True
        raise
    finally:
        # the output is written next: the display says how the job ended once it is, or the
        # job stops (JobRun.end_display: done, failed and why, interrupted)
        job.progress = progress
        if settled:  # (its last line: what settled, not the live counts of tasks stopped)
            final_counts(progress, outcomes)
            progress.settled()
        job.record.running_at_end = progress.running_now()  # (a job cut short: its stragglers)
        loop.stop()
        if not loop.lost:  # (no scheduler left to bring a shipped job's files home through)
            carrier.close(handle.client, wjob, job.out_dir)
        if stopping or outcomes.threshold_exceeded():
            # a job cut short (Ctrl-C, too many failures): removing the plugin runs in each
            # worker's task thread, after the run() calls still in flight there, which the
            # verdict need not wait for
            threading.Thread(target=script.uninstall, daemon=True).start()
        else:
            script.uninstall()
    return carrier


def _wait_for_a_worker(
    client: Any, notify: Callable[[str], None], watch: WorkerWatch, lost: SchedulerWatch
) -> None:
    """A cluster with no worker yet (one that scales up, workers still starting): wait for one
    before asking the workers anything (whether they see the driver's disk: an empty answer
    would ship the job), saying so now and after 1, 2, 4... minutes.  Ctrl-C stops it; a
    cluster of this process that can start no worker ends the job (``watch``), and so does a
    scheduler that went away (``lost``)."""
    started, note_at = time.monotonic(), 0.0
    while not lost.ask(lambda: client.scheduler_info(n_workers=-1)["workers"]):
        now = time.monotonic()
        waited = now - started
        if waited >= note_at:
            text = "the cluster has no worker yet: waiting for one to join"
            text += f" ({waited:.0f} s so far)" if note_at else " (Ctrl-C stops)"
            logger.warning("%s", text)
            notify(text)
            note_at = max(60.0, 2 * note_at)
        watch.note_at = float("inf")  # (said here already)
        watch.check(now, 0)
        time.sleep(WORKER_POLL_S)
    watch.note_at = watch.note_s


def _place(job: JobRun, handle: ClusterHandle) -> tuple[transport.SharedDisk, int]:
    """The job's transport, checked against the cluster; and the workers that can run it."""
    options = job.plan.options
    carrier = transport.choose(handle, options.shared_filesystem, _probes(job))
    if carrier.shipped:
        probe.check_inputs_visible(handle.client, job.plan.files, job.record.input_path)
    return carrier, max(1, probe.eligible_workers(handle.client, options.resources))


def _probes(job: JobRun) -> list[Path]:
    """Files the workers read if they share the driver's disk: the job's manifest (in the
    output), the scoring script, and a file of a local model."""
    deployment = job.plan.deployment
    probes = [job.staging / MANIFEST, deployment.scoring_script]
    model = deployment.model
    if model is not None and not model.is_url:
        path = Path(model.path)
        first = path if path.is_file() else next((p for p in path.rglob("*") if p.is_file()), None)
        if first is not None:
            probes.append(first)
    return probes


def _worker_job(job: JobRun, handle: ClusterHandle, workers: int) -> WorkerJob:
    from daskscore.cluster.local import gpu_ids

    plan = job.plan
    return WorkerJob.for_deployment(
        plan.deployment,
        job.record.job_id,
        job.out_dir,
        job.staging,
        output_format=plan.writer.name,
        csv_kwargs=plan.csv_kwargs,
        carry_columns=tuple(plan.options.carry_columns),
        text_columns=mlflow_text_columns(plan.deployment) if plan.unit == "rows" else (),
        partition_on=plan.writer.partition_on,
        # an existing cluster's workers were sized by whoever started them
        intra_op_threads=intra_op_threads(workers) if handle.embedded else None,
        resources=dict(plan.options.resources),
        gpu_ids=gpu_ids() if handle.embedded else (),
        prefetch=plan.options.prefetch,
        prefetch_bytes=int(plan.options.prefetch_mb * (1 << 20)),
        # the warm cluster's workers were started from another shell: they read the URLs
        # with this job's storage variables, not theirs
        storage_env=storesecrets.storage_environment() if handle.warm else None,
    )


def final_counts(progress: Progress, outcomes: Outcomes) -> None:
    """The display's last counts: the job's settled mini-batches and their items, as
    ``job_summary.json`` counts them (a job cut short: what its tasks committed)."""
    progress.final(
        len(outcomes.final),
        outcomes.succeeded_items() + outcomes.failed_items,
        outcomes.failed_mini_batches(),
        outcomes.partial_mini_batches(),
    )


def live_counts(outcomes: Outcomes, progress: Progress) -> dict[str, Any]:
    """A running job's counts for the daskscore page: the outcomes', and the live item count."""
    counts = progress.snapshot()
    counts.update(
        mini_batches_done=max(len(outcomes.final), counts["mini_batches_done"]),  # (live)
        failed_mini_batches=outcomes.failed_mini_batches(),
        partial_mini_batches=outcomes.partial_mini_batches(),
        items_done=max(counts["items_done"], outcomes.items_done()),
        failed_items=outcomes.failed_items,
    )
    return counts


def _watch_timeouts(client: Any, lost: SchedulerWatch) -> None:
    """Have the nannies of a cluster daskscore did not start enforce ``run()`` timeouts from
    outside the worker processes; say once in the job log which workers have no nanny.  Both
    asked through ``lost`` (a scheduler gone meanwhile: ClusterLost)."""
    lost.wait()  # (watch_deadlines keeps its errors: without its scheduler it would wait 30 s)
    watch_deadlines(client)
    try:
        bare = unwatched_workers(lost.ask(lambda: client.scheduler_info(n_workers=-1)["workers"]))
    except ClusterLost:
        raise
    except Exception:  # noqa: BLE001 - only a note in the log depends on it
        logger.debug("listing the workers' nannies failed", exc_info=True)
        return
    if bare:
        logger.warning(
            "%d worker(s) run without a nanny (%s): retry_settings.timeout is enforced only "
            "inside their processes there, so a run() that holds the GIL past it (C code, a "
            "catastrophic regular expression) cannot be stopped on them. Start workers with "
            "their nanny (dask worker without --no-nanny) to have them killed and restarted.",
            len(bare),
            ", ".join(bare[:5]) + (" ..." if len(bare) > 5 else ""),
        )


#: The longest reason a display shows (a summary's may hold a paragraph).
REASON_CHARS = 400


def _cut(text: str) -> str:
    return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 1].rstrip() + "…"


def resumed_note(done: int, total: int) -> str:
    """What a resumed job says of the mini-batches its earlier runs did."""
    verb = "was" if done == 1 or total == 1 else "were"  # (0 of 1 mini-batch was)
    return f"Resuming: {done} of {_n(total, 'mini-batch')} {verb} already done."


def _n(n: int, word: str) -> str:
    """``1 file``, ``2 files``, ``1 mini-batch``, ``3 mini-batches``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}{'es' if word.endswith('ch') else 's'}"


def _output(job: JobRun) -> str:
    """The job's output as the start line names it: an output URL, and where it is assembled."""
    if job.remote_out:
        return f"{job.remote_out} (assembled in {job.out_dir})"
    return str(job.out_dir)
