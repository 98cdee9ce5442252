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
import queue
import shutil
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distributed import Client
from distributed.utils import silence_logging_cmgr

from . import batching, storage, tabular
from . import output as out_mod
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
from .errors import DaskScoreError, InitFailed, OutputError, UsageError
from .ledger import make_staging, read_ledger
from .plugin import ScoringPlugin, WorkerJob, cancel_job, init_report
from .progress import Progress
from .tasks import PROGRESS_TOPIC, TaskResult, run_task

logger = logging.getLogger("daskscore")

#: Tasks in flight per worker: one running, one queued behind it so a worker never waits for
#: the driver's round trip between two tasks.
TASKS_PER_WORKER = 2
#: How long the driver waits for a task before it redraws progress.
POLL_S = 0.25
#: Seconds between two lines of logs/job_progress_overview.txt.
OVERVIEW_S = 10.0
#: A mini-batch whose task is lost this many times without it ever being charged (the worker
#: died before it started) is failed rather than retried for ever.
MAX_UNCHARGED_LOSSES = 10


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
    out_mod.claim_output(out_dir, target, options.overwrite)
    job_id = uuid.uuid4().hex[:12]
    books = Books(job_id, deployment, out_dir, work, input_path)
    staging = out_dir / out_mod.STAGING_DIR
    make_staging(staging)
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
            f"Scoring {len(files)} files ({total_items} {unit}) in {len(work)} mini-batches on "
            f"{workers} worker{'s' if workers != 1 else ''}; output: {out_dir}"
        )
        progress = Progress(len(work), total_items, enabled=options.progress)
        loop = _Loop(handle.client, job, books, work, workers, progress)
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


def list_inputs(input_path: str) -> list[str]:
    """The input files: local paths, or full URLs for an fsspec URL."""
    if storage.is_remote(input_path):
        return storage.list_files(input_path)
    return batching.list_input_files(input_path)


def claim_remote_output(url: str, target: str | None, overwrite: bool) -> None:
    """Refuse a remote output folder that holds a job's results, unless overwriting them."""
    fs, root = storage.filesystem(url, verb="writing")
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


class _Loop:
    """Keeps tasks in flight and folds their outcomes into the books."""

    def __init__(
        self,
        client: Client,
        job: WorkerJob,
        books: Books,
        batches: list[list[str]],
        workers: int,
        progress: Progress,
    ) -> None:
        self.client = client
        self.job = job
        self.books = books
        self.batches = batches
        self.workers = workers
        self.progress = progress
        self.queue: deque[int] = deque(range(len(batches)))
        self.isolate: set[int] = set()
        self.losses: dict[int, int] = {}
        self.inflight: dict[Any, tuple[str, list[int]]] = {}
        self.seq = 0
        self.last_overview = time.monotonic()
        self.done: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.topic = f"{PROGRESS_TOPIC}-{job.job_id}"
        client.subscribe_topic(self.topic, self._on_progress)

    def _on_progress(self, event: Any) -> None:
        _, msg = event
        self.progress.add_live(int(msg.get("items", 0)))

    def check_init(self) -> None:
        reports = self.client.run(init_report, self.job.job_id)
        for report in reports.values():
            if report.get("error"):
                raise InitFailed("init() failed", user_traceback=report["error"])

    def run(self) -> None:
        while self.queue or self.inflight:
            self._fill()
            try:
                fut = self.done.get(timeout=POLL_S)
            except queue.Empty:
                fut = None
            while fut is not None:
                if fut in self.inflight:
                    self._handle(fut)
                try:
                    fut = self.done.get_nowait()
                except queue.Empty:
                    fut = None
            self.progress.draw()
            now = time.monotonic()
            if now - self.last_overview >= OVERVIEW_S:
                self.books.write_overview()
                self.last_overview = now
            if self.books.threshold_exceeded():
                self._abort()
                return

    def _fill(self) -> None:
        window = self.workers * TASKS_PER_WORKER
        while self.queue and len(self.inflight) < window:
            ids = self._take()
            self.seq += 1
            attempt = f"a{self.seq:06d}"
            payload = [(mb, self.books.tries_used(mb), self.batches[mb]) for mb in ids]
            fut = self.client.submit(
                run_task,
                self.job.job_id,
                attempt,
                payload,
                key=f"daskscore-{self.job.job_id}-{attempt}",
                pure=False,
            )
            self.inflight[fut] = (attempt, ids)
            fut.add_done_callback(self.done.put)

    def _take(self) -> list[int]:
        if self.queue[0] in self.isolate:
            return [self.queue.popleft()]
        size = batching.next_task_size(len(self.queue), self.workers)
        ids: list[int] = []
        while self.queue and len(ids) < size and self.queue[0] not in self.isolate:
            ids.append(self.queue.popleft())
        return ids

    def _handle(self, fut: Any) -> None:
        attempt, ids = self.inflight.pop(fut)
        if fut.status == "finished":
            result: TaskResult = fut.result()
            if result.init_error is not None:
                raise InitFailed("init() failed", user_traceback=result.init_error)
            if not result.interrupted:
                self._fold(attempt, result.records, ids)
                return
        else:
            exc = fut.exception()
            if not _is_worker_loss(exc):
                raise DaskScoreError(f"task {attempt} failed inside daskscore: {exc!r}") from exc
        self._recover(attempt, ids)

    def _fold(self, attempt: str, records: list[dict[str, Any]], ids: list[int]) -> None:
        finished = self.books.record(attempt, records)
        failed = sum(1 for mb in finished if self.books.is_failed(mb))
        self.progress.add_done(len(finished), self._items(finished), failed)
        left = [mb for mb in ids if mb not in finished and not self.books.is_final(mb)]
        self.queue.extendleft(reversed(left))  # a cancelled task's rest, back to the front

    def _items(self, mbs: set[int]) -> int:
        return sum(self.books.final[mb]["total"] for mb in mbs if mb in self.books.final)

    def _recover(self, attempt: str, ids: list[int]) -> None:
        """A task's process died: keep what it committed, charge the run() it was in."""
        state = read_ledger(self.job.staging, attempt)
        finished = self.books.record(attempt, state.committed)
        self.progress.add_done(len(finished), self._items(finished))
        requeue: list[int] = []
        for mb in ids:
            if mb in finished or self.books.is_final(mb):
                continue
            if state.running is not None and state.running[0] == mb:
                final = self.books.charge_crash(
                    mb,
                    state.running[1],
                    state.timed_out,
                    worker=state.running_worker,
                    start=state.running_start,
                )
                if not final:
                    self.isolate.add(mb)
                    requeue.append(mb)
                continue
            self.losses[mb] = self.losses.get(mb, 0) + 1
            if self.losses[mb] >= MAX_UNCHARGED_LOSSES:
                self.books.charge_crash(mb, self.books.tries_used(mb) + 1, False, final=True)
                continue
            requeue.append(mb)
        # crashed work goes to the front, in order, so the output can be assembled early
        self.queue.extendleft(reversed(sorted(requeue)))

    def _abort(self) -> None:
        """error_threshold exceeded: stop everything, keep what was committed."""
        futures = list(self.inflight)
        self.client.cancel(futures)
        try:
            self.client.run(cancel_job, self.job.job_id)
        except Exception:  # noqa: BLE001 - a dying worker must not hide the verdict
            logger.debug("cancel_job failed", exc_info=True)
        for fut in futures:
            attempt, _ = self.inflight.pop(fut)
            self.books.record(attempt, read_ledger(self.job.staging, attempt).committed)
        self.queue.clear()

    def stop(self) -> None:
        try:
            self.client.unsubscribe_topic(self.topic)
        except Exception:  # noqa: BLE001
            pass
        if self.inflight:
            self.client.cancel(list(self.inflight))
            self.inflight.clear()


def _is_worker_loss(exc: BaseException | None) -> bool:
    from distributed.comm.core import CommClosedError
    from distributed.scheduler import KilledWorker

    return isinstance(exc, (KilledWorker, CommClosedError, OSError))


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
