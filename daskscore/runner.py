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
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distributed import Client
from distributed.utils import silence_logging_cmgr

from . import batching, storage, tabular
from . import output as out_mod
from . import resume as resume_mod
from . import script as script_mod
from .books import Books, JobResult, planned_items
from .cluster import (
    ClusterHandle,
    dashboard_link,
    existing_cluster,
    intra_op_threads,
    local_cluster,
)
from .config import Deployment
from .datasets import FORMATS as DATASET_FORMATS
from .dispatch import Dispatcher
from .errors import InitFailed, OutputError, UsageError
from .ledger import make_staging, read_ledger
from .plugin import ScoringPlugin, WorkerJob
from .progress import Progress

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
    notify = options.notify or (lambda message: None)
    settings = deployment.settings
    fmt = resolve_format(settings.output_action, options)
    files = list_inputs(str(input_path))
    work, unit = plan_work(files, settings.mini_batch_size, options)
    script_mod.check_script(deployment.scoring_script)
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
    job_id = uuid.uuid4().hex[:12]
    books = Books(job_id, deployment, out_dir, work, input_path)
    staging = out_dir / out_mod.STAGING_DIR
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
    run_no = _restore(books, staging, fp, out_dir) if unfinished else 1
    make_staging(staging)
    resume_mod.write_manifest(staging, {"fingerprint": fp, "runs": run_no})
    if run_no > 1:
        notify(f"Resuming: {len(books.final)} of {len(work)} mini-batches were already done.")
    with _job_logging(out_dir, settings.logging_level), _cluster(deployment, options) as handle:
        if handle.dashboard_link:
            notify(f"Dask dashboard: {handle.dashboard_link}")
        workers = max(1, handle.workers)
        job = WorkerJob(
            job_id=job_id,
            code=str(deployment.code),
            script=str(deployment.scoring_script),
            model_path=str(deployment.model.path) if deployment.model else None,
            output=str(out_dir),
            logs=str(out_dir / "logs"),
            staging=str(staging),
            env=dict(settings.environment_variables),
            timeout=settings.retry_settings.timeout,
            max_retries=settings.retry_settings.max_retries,
            output_action=settings.output_action,
            output_format=fmt,
            csv_kwargs=csv_kwargs,
            carry_columns=tuple(options.carry_columns),
            logging_level=settings.logging_level,
            intra_op_threads=intra_op_threads(workers),
        )
        total_items = sum(planned_items(w) for w in work)
        notify(
            f"Scoring {len(files)} files{f' ({total_items} rows)' if unit == 'rows' else ''} "
            f"in {len(work)} mini-batches on "
            f"{workers} worker{'s' if workers != 1 else ''}; output: {out_dir}"
        )
        progress = Progress(len(work), total_items, enabled=options.progress)
        loop = Dispatcher(handle.client, job, books, work, workers, progress, run_no)
        try:
            logger.info("cluster ready with %d workers", workers)
            handle.client.register_plugin(ScoringPlugin(job))
            loop.check_init()
            logger.info("scoring script installed and init() done on every worker")
            loop.run()
            logger.info("all mini-batches settled; %d tasks", loop.seq)
        except InitFailed as exc:
            books.init_error = exc.user_traceback
        finally:
            progress.close()
            loop.stop()
            _unregister(handle.client, job_id)
        result = books.finish(
            staging, fmt, handle.client, options.partition_on, options.rows_per_file
        )
    if remote_out:
        result = publish(result, out_dir, remote_out)
    logger.info("job %s: %s in %.2f s", job_id, result.status, result.summary["duration_s"])
    if result.status != "Completed":
        raise books.failure(result)
    return result


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
        raise OutputError(
            f"output '{url}' already holds a job's results ({', '.join(held)}); daskscore does "
            "not overwrite them. Pass --overwrite (overwrite=True) to replace them, or choose "
            "another --output."
        )
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
        with existing_cluster(options.scheduler) as handle:
            yield handle
    else:
        with local_cluster(
            options.workers or deployment.worker_count, dashboard=options.dashboard
        ) as handle:
            yield handle


@contextmanager
def _job_logging(out_dir: Path, level: str) -> Iterator[None]:
    """daskscore's and Dask's own log lines go to logs/sys/daskscore.txt, not to stderr."""
    # Dask's stderr lines go quiet (they still reach the file); silence before adding ours, which
    # is a StreamHandler too
    quiet = silence_logging_cmgr(logging.CRITICAL)
    quiet.__enter__()
    path = out_dir / "logs" / "sys" / "daskscore.txt"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(level.upper())
    names = ("daskscore", "distributed")
    for name in names:
        logging.getLogger(name).addHandler(handler)
    saved_level = logger.level
    logger.setLevel(level.upper())
    started = time.time()
    logger.info("job started at %s", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)))
    try:
        yield
    finally:
        for name in names:
            logging.getLogger(name).removeHandler(handler)
        logger.setLevel(saved_level)
        quiet.__exit__(None, None, None)
        handler.close()
