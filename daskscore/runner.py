"""The orchestration of one job: from a deployment and an input to a verdict.

:func:`execute` is the one function the CLI and the Python API both call.  It lists the input,
claims the output folder, installs the scoring script on every worker through
:class:`~daskscore.plugin.ScoringPlugin`, then keeps a small window of tasks in flight — each
task a run of several mini-batches, sized by guided self-scheduling — and folds their records
into the job's books (:class:`~daskscore.books.Books`).  Rows never travel through the driver:
workers write part files, and the append_row file is assembled from them by streaming.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distributed import Client

from . import batching, dashboard, placement, storage, tabular
from . import output as out_mod
from . import resume as resume_mod
from . import script as script_mod
from .books import Books, JobResult, planned_items
from .cluster import (
    ClusterHandle,
    EarlyCluster,
    dashboard_link,
    existing_cluster,
    gpu_ids,
    intra_op_threads,
    local_cluster,
)
from .config import Deployment, secret_values
from .datasets import FORMATS as DATASET_FORMATS
from .dispatch import Dispatcher
from .errors import InitFailed, OutputError, UsageError
from .joblog import job_logging
from .ledger import make_staging, read_ledger
from .plugin import ScoringPlugin, WorkerJob
from .progress import Progress
from .shipping import forget_job
from .workerfork import prestart_workers

logger = logging.getLogger("daskscore")


@dataclass
class JobOptions:
    """How to run a job, beside the deployment's own settings."""

    overwrite: bool = False
    workers: int | None = None
    scheduler: str | None = None
    client: Client | None = None
    progress: bool = True
    dashboard: bool = True
    notify: Callable[[str], None] | None = None
    #: None: the deployment's output_action; or a dataset format, "parquet" / "csv"
    output_format: str | None = None
    partition_on: tuple[str, ...] = ()
    rows_per_file: int | None = None
    #: tabular mode: run() gets a DataFrame; None: on when mini_batch_size is a byte size
    tabular: bool | None = None
    carry_columns: tuple[str, ...] = ()
    #: finish an interrupted job in the same output folder
    resume: bool = False
    #: whether the workers see the driver's files: None finds out (an embedded cluster does);
    #: False ships code and model to them and brings results home in the tasks' replies
    shared_filesystem: bool | None = None
    #: a ``distributed.security.Security`` for a TLS-secured scheduler
    security: Any = None
    #: worker resources each task needs (Dask's ``resources=``), e.g. ``{"GPU": 1}``
    resources: dict[str, float] = field(default_factory=dict)


@dataclass
class _Plan:
    """Everything decided before the cluster is touched."""

    deployment: Deployment
    options: JobOptions
    fmt: str
    files: list[str]
    work: list[Any]
    unit: str
    csv_kwargs: dict[str, Any]
    out_dir: Path
    remote_out: str | None
    books: Books
    run_no: int
    #: workers do not share the driver's disk (decided once the cluster is known)
    shipped: bool = False

    @property
    def staging(self) -> Path:
        return self.out_dir / out_mod.STAGING_DIR


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
    early: EarlyCluster | None = None
    if options.client is None and not options.scheduler:
        # the embedded cluster's fork server imports what the workers need, then the cluster
        # starts, while this thread lists and plans the inputs
        prestart_workers(
            options.workers or deployment.worker_count,
            script_mod.preloadable_imports(deployment.scoring_script, deployment.code),
        )
        early = EarlyCluster(_cluster(deployment, options))
    try:
        plan = _prepare(deployment, input_path, output, options)
    except BaseException:
        if early is not None:
            early.discard()
        raise
    settings = deployment.settings
    plan.books.partition_on = tuple(options.partition_on)
    with (
        job_logging(
            plan.out_dir, settings.logging_level, secret_values(settings.environment_variables)
        ),
        early if early is not None else _cluster(deployment, options) as h,
        _board(plan, h) as board,
    ):
        try:
            _score(plan, h, board)
        except UsageError:
            # found out while running (a partition column run() does not return): nothing is
            # kept, so that the corrected command can run in the same folder
            shutil.rmtree(plan.staging, ignore_errors=True)
            raise
        # a shipped job's staging folder is on the driver's disk only: assemble it here
        client = None if plan.shipped else h.client
        result = plan.books.finish(
            plan.staging, plan.fmt, client, options.partition_on, options.rows_per_file
        )
        board.finish(result.summary)
    if plan.remote_out:
        result = publish(result, plan.out_dir, plan.remote_out)
    logger.info("job %s: %s in %.2f s", plan.books.job_id, result.status, result.duration_s)
    if result.status != "Completed":
        raise plan.books.failure(result)
    return result


def _prepare(
    deployment: Deployment, input_path: str | Path, output: str | Path, options: JobOptions
) -> _Plan:
    """List and plan the inputs, check the script, claim the output (or resume it)."""
    settings = deployment.settings
    fmt = resolve_format(settings.output_action, options)
    files = list_inputs(str(input_path))
    work, unit = plan_work(files, settings.mini_batch_size, options)
    script_mod.check_script(deployment.scoring_script)
    if deployment.model is not None and deployment.model.is_url:
        _check_model_url(str(deployment.model.path))
    csv_kwargs = script_mod.read_csv_settings(deployment.code)
    target = settings.output_file_name if fmt == "append_row" else None
    if fmt in DATASET_FORMATS:
        target = Path(settings.output_file_name).stem
    remote_out = str(output) if storage.is_remote(str(output)) else None
    if remote_out:
        claim_remote_output(remote_out, target, options.overwrite)
        out_dir = Path(tempfile.mkdtemp(prefix="daskscore-output-"))
    else:
        out_dir = Path(output).expanduser().resolve()
    unfinished = out_mod.claim_output(out_dir, target, options.overwrite, options.resume)
    books = Books(uuid.uuid4().hex[:12], deployment, out_dir, work, input_path)
    plan = _Plan(
        deployment, options, fmt, files, work, unit, csv_kwargs, out_dir, remote_out, books, 1
    )
    fp = resume_mod.fingerprint(
        deployment.code,
        deployment.model.path if deployment.model else None,
        files,
        batching=[settings.mini_batch_size, unit],
        output=[
            fmt,
            settings.output_file_name,
            csv_kwargs,
            options.partition_on,
            options.rows_per_file,
            options.carry_columns,
        ],
    )
    if unfinished:
        plan.run_no = _restore(books, plan.staging, fp, out_dir)  # refuses before any change
    if options.resume:
        out_mod.remove_stale(out_dir, target)
    make_staging(plan.staging)
    resume_mod.write_manifest(plan.staging, {"fingerprint": fp, "runs": plan.run_no})
    return plan


def _check_model_url(url: str) -> None:
    fs, root = storage.filesystem(url, verb="reading")
    if not fs.exists(root):
        raise UsageError(f"model.path: '{url}' does not exist (nothing there to fetch).")


def _place(plan: _Plan, handle: ClusterHandle) -> int:
    """Decide whether the job is shipped, check the cluster can run it; return its workers."""
    client, wanted = handle.client, plan.options.shared_filesystem
    if handle.embedded:  # our own LocalCluster shares our disk
        plan.shipped = wanted is False
    else:
        placement.check_daskscore(client)
        if wanted is None:
            wanted = placement.workers_share_disk(client, _probes(plan))
        plan.shipped = not wanted
    if plan.shipped:
        placement.check_inputs_visible(client, plan.files, str(plan.books.input_path))
    return placement.eligible_workers(client, plan.options.resources)


def _probes(plan: _Plan) -> list[Path]:
    """Files the workers read if they share the driver's disk: the job's manifest (in the
    output), the scoring script, and a file of a local model."""
    probes = [plan.staging / resume_mod.MANIFEST, plan.deployment.scoring_script]
    model = plan.deployment.model
    if model is not None and not model.is_url:
        path = Path(model.path)
        first = path if path.is_file() else next((p for p in path.rglob("*") if p.is_file()), None)
        if first is not None:
            probes.append(first)
    return probes


def _worker_job(plan: _Plan, handle: ClusterHandle, workers: int) -> WorkerJob:
    job = WorkerJob.for_deployment(
        plan.deployment,
        plan.books.job_id,
        plan.out_dir,
        plan.staging,
        output_format=plan.fmt,
        csv_kwargs=plan.csv_kwargs,
        carry_columns=tuple(plan.options.carry_columns),
        # an existing cluster's workers were sized by whoever started them
        intra_op_threads=intra_op_threads(workers) if handle.embedded else None,
        resources=dict(plan.options.resources),
        gpu_ids=gpu_ids() if handle.embedded else (),
    )
    return job.shipped_copy() if plan.shipped else job


def _board(plan: _Plan, handle: ClusterHandle) -> dashboard.JobBoard:
    """The job's row on the daskscore page, installed when the scheduler has a dashboard."""
    link = None
    if handle.dashboard_link and dashboard.install(handle.client):
        link = dashboard.page_link(handle.dashboard_link)
    source = str(plan.deployment.source) if plan.deployment.source else None
    return dashboard.JobBoard(handle.client if link else None, plan.books.job_id, source, link)


def _live_counts(books: Books, progress: Progress) -> dict[str, Any]:
    """A running job's counts for the daskscore page: the books', and the live item count."""
    finals = list(books.final.values())
    counts = progress.snapshot()
    counts.update(
        mini_batches_done=len(finals),
        failed_mini_batches=sum(1 for mb in books.final if books.is_failed(mb)),
        items_done=max(counts["items_done"], sum(r["total"] for r in finals)),
        failed_items=sum(r["failed"] for r in finals),
    )
    return counts


def _score(plan: _Plan, handle: ClusterHandle, board: dashboard.JobBoard) -> None:
    """Install the script on the workers and run every mini-batch not yet done."""
    plan.books.mark("start_cluster")
    notify = plan.options.notify or (lambda message: None)
    if handle.dashboard_link:
        notify(f"Dask dashboard: {handle.dashboard_link}")
    if board.link:
        notify(f"daskscore page: {board.link}")
    if plan.run_no > 1:
        notify(
            f"Resuming: {len(plan.books.final)} of {len(plan.work)} mini-batches were already done."
        )
    workers = max(1, _place(plan, handle))
    job = _worker_job(plan, handle, workers)
    total_items = sum(planned_items(w) for w in plan.work)
    rows = f" ({total_items} rows)" if plan.unit == "rows" else ""
    notify(
        f"Scoring {len(plan.files)} files{rows} in {len(plan.work)} mini-batches on "
        f"{workers} worker{'s' if workers != 1 else ''}; output: {plan.out_dir}"
    )
    progress = Progress(len(plan.work), total_items, enabled=plan.options.progress)
    progress.page_link = board.link
    recount = None
    if not handle.embedded:  # a cluster we did not start: workers come and go

        def recount() -> int:
            return placement.count_eligible(handle.client, plan.options.resources)

    loop = Dispatcher(
        handle.client, job, plan.books, plan.work, workers, progress, plan.run_no, recount
    )

    def tick() -> None:
        board.tick(lambda: _live_counts(plan.books, progress))

    try:
        tick()
        logger.info("cluster ready with %d workers", workers)
        handle.client.register_plugin(ScoringPlugin(job))
        loop.check_init()
        plan.books.mark("init")
        logger.info("scoring script installed and init() done on every worker")
        loop.run(on_tick=tick)
        plan.books.mark("score")
        logger.info("all mini-batches settled; %d tasks", loop.seq)
    except InitFailed as exc:
        plan.books.init_error = exc.user_traceback
    finally:
        progress.close()
        loop.stop()
        if plan.shipped:
            placement.collect(handle.client, job.job_id, plan.out_dir)
            forget_job(handle.client, job.job_id)
        _unregister(handle.client, job.job_id)


def resolve_format(output_action: str, options: JobOptions) -> str:
    """The job's output format: the deployment's output_action unless a dataset was asked."""
    fmt = options.output_format or output_action
    if fmt not in ("append_row", "summary_only", *DATASET_FORMATS):
        raise UsageError(
            f"output format '{fmt}': expected append_row, summary_only, parquet or csv."
        )
    if (options.partition_on or options.rows_per_file) and fmt not in DATASET_FORMATS:
        raise UsageError(
            "partition_on and rows_per_file need a dataset output: --output-format parquet or csv."
        )
    return fmt


def _restore(books: Books, staging: Path, fp: dict[str, str], out_dir: Path) -> int:
    """Fold in what an interrupted run committed; return this run's number."""
    previous = resume_mod.read_manifest(staging)
    if previous is None:
        raise OutputError(
            f"cannot resume the job in '{out_dir}': its staging folder has no job.json (it "
            "was not started by this version of daskscore). Pass --overwrite to start again."
        )
    resume_mod.check_resumable(previous, fp, out_dir)
    for ledger in sorted((staging / "ledger").glob("*.log")):
        books.restore(ledger.stem, read_ledger(staging, ledger.stem).committed)
    logger.info("resumed: %d mini-batches restored from earlier runs", len(books.final))
    books.resumed = len(books.final)
    return int(previous.get("runs", 1)) + 1


def list_inputs(input_path: str) -> list[str]:
    """The input files: local paths, or full URLs for an fsspec URL."""
    if storage.is_remote(input_path):
        return storage.list_files(input_path)
    return batching.list_input_files(input_path)


def claim_remote_output(url: str, target: str | None, overwrite: bool) -> None:
    """Refuse a remote output folder that holds a job's results, unless overwriting them."""
    fs, root = storage.filesystem(url, verb="writing")
    fs.invalidate_cache()
    names = [n for n in (target, out_mod.SUMMARY_FILE) if n]
    held = [n for n in names if fs.exists(f"{root.rstrip('/')}/{n}")]
    if held and not overwrite:
        raise out_mod.results_held(f"output '{url}'", held)
    for name in held:
        fs.rm(f"{root.rstrip('/')}/{name}", recursive=True)
    if held and fs.exists(f"{root.rstrip('/')}/logs"):
        fs.rm(f"{root.rstrip('/')}/logs", recursive=True)


def publish(result: JobResult, out_dir: Path, url: str) -> JobResult:
    """Upload a job's local output folder to ``url``; the result then names the URL."""
    summary = dict(result.summary)
    summary["output"] = url
    if result.predictions is not None:
        summary["predictions"] = f"{url.rstrip('/')}/{Path(result.predictions).name}"
    out_mod.write_summary(out_dir, summary)
    count = storage.upload_tree(out_dir, url, exclude=(out_mod.STAGING_DIR,))
    logger.info("uploaded %d files to %s", count, url)
    shutil.rmtree(out_dir, ignore_errors=True)
    return JobResult(result.status, url, summary["predictions"], summary)  # type: ignore[arg-type]


def plan_work(files: list[str], size: int | str, options: JobOptions) -> tuple[list[Any], str]:
    """Mini-batches of files, or (tabular mode) splits of the tabular files; and their unit."""
    tabular_mode = options.tabular
    if tabular_mode is None:
        tabular_mode = isinstance(size, str) and not size.strip().isdigit()
    if tabular_mode and files and storage.is_remote(files[0]):
        raise UsageError(
            "tabular mode reads local CSV/Parquet files; copy the input locally first (remote "
            "inputs work in file mode, where each mini-batch's files are downloaded)."
        )
    if not tabular_mode:
        if isinstance(size, str) and not size.strip().isdigit():
            raise UsageError(
                f"settings.mini_batch_size: '{size}' is a byte size, which only means something "
                "for tabular inputs (--tabular); give a number of files."
            )
        return batching.make_mini_batches(files, int(size)), "files"
    return tabular.plan_splits(files, tabular.parse_mini_batch_size(size)), "rows"


def _unregister(client: Client, job_id: str) -> None:
    try:
        client.unregister_worker_plugin(f"daskscore-{job_id}")
    except Exception:  # noqa: BLE001 - workers may be gone already
        logger.debug("unregistering the plugin failed", exc_info=True)


@contextmanager
def _cluster(deployment: Deployment, options: JobOptions) -> Iterator[ClusterHandle]:
    if options.client is not None:
        yield ClusterHandle(options.client, None, dashboard_link(options.client))
    elif options.scheduler:
        with existing_cluster(options.scheduler, options.security) as handle:
            yield handle
    else:
        with local_cluster(
            options.workers or deployment.worker_count,
            dashboard=options.dashboard,
            resources=options.resources or None,
        ) as handle:
            yield handle
