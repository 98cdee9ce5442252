"""Predictions as a lazy Dask DataFrame: :func:`score` and :class:`ScoringSession`.

The scoring script is installed on the client's workers (``init()`` once per worker, through
the same :class:`~daskscore.worker.plugin.ScoringPlugin` as :func:`daskscore.run`); each
partition of the returned DataFrame runs a group of mini-batches through ``run()`` with the
same retries.
The columns are those of the DataFrames ``run()`` returns (or one ``prediction`` column for list
returns); ``meta`` is inferred by scoring the first mini-batch once, unless given (the next
one where it failed and ``on_error="drop"`` or ``settings.error_threshold`` leaves it out).

Nothing is dropped without a word.  A mini-batch whose every try failed has no rows, so by
default (``on_error="raise"``) the partition that ran it raises :class:`~daskscore.errors.JobFailed`
naming the mini-batch, its files and the script's traceback, and the computation fails.  A
deployment that sets ``settings.error_threshold`` to ``N >= 0`` allows ``N`` failed items as
``daskscore run`` does: failed items are counted over the session's partitions (each
partition's count in the scheduler's metadata), and the computation raises
:class:`~daskscore.errors.ErrorThresholdExceeded` once they are more than ``N``.  Azure's
default ``-1`` ("any number") does not let ``score()`` drop rows silently: a job's summary
records every failure, a DataFrame cannot.  ``on_error="drop"`` leaves the failed mini-batches'
rows out without raising.  Either way every failure is recorded where the caller reads it:
``session.failures`` (also ``ddf.attrs["daskscore"]``, the session, on the frame
:func:`open_session` and :func:`daskscore.score` return) and ``session.report()``, and a
warning is logged for each.
"""

from __future__ import annotations

import atexit
import functools
import logging
import math
import shutil
import tempfile
import threading
import uuid
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distributed import Client

from daskscore import _compat
from daskscore.config import Deployment
from daskscore.config.options import JobOptions
from daskscore.engine.connection import connected, require_connected
from daskscore.engine.framemeta import conform
from daskscore.engine.install import ScriptInstall
from daskscore.engine.noworkers import watch_session
from daskscore.engine.plan import mlflow_text_columns, plan_job
from daskscore.engine.scoredeaths import (
    PARTITION_LABEL,
    ROOT,
    PartitionWatch,
    count_deaths_fairly,
)
from daskscore.engine.scorefail import COUNTS_ROOT, failure_of, raise_if_over
from daskscore.engine.scorelive import LiveScore, mini_batch_done, partition_started, topic
from daskscore.engine.sessionmeta import first_rows, say_unknown, say_unwritable
from daskscore.engine.work import charged, tries_text
from daskscore.errors import InitFailed, UsageError
from daskscore.protocol import MiniBatchRecord, WorkerJob, error_line
from daskscore.worker.deadline import watch_deadlines
from daskscore.worker.plugin import get_runtime
from daskscore.worker.task import run_mini_batch

#: Partitions per worker when the caller does not choose: enough to balance, few enough that
#: each partition carries many mini-batches.
PARTITIONS_PER_WORKER = 4
RECORDS_TOPIC = "daskscore-records"
#: What ``on_error`` may be.
ON_ERROR = ("raise", "drop")

logger = logging.getLogger("daskscore")


def _forward(
    address: str,
    job_id: str,
    group: list[tuple[int, Any]],
    meta: Any,
    policy: tuple[str, int],
    live: bool,
    origin: str,
) -> Any:
    """Computed outside the cluster (``ddf.compute()`` with a client that is not the default
    one): run the partition on the cluster that has the script installed."""
    # a short-lived client: a cached one would outlive its cluster and keep reconnecting
    with Client(address, set_as_default=False) as client:
        fut = client.submit(
            score_partition, job_id, group, meta, address, policy, live, origin, pure=False
        )
        return fut.result()


def score_partition(
    job_id: str,
    group: list[tuple[int, Any]],
    meta: Any,
    address: str | None = None,
    policy: tuple[str, int] = ("drop", -1),
    live: bool = True,
    origin: str = "given as meta=",
) -> Any:
    """Run a group of mini-batches on this worker; return their rows as one DataFrame, with
    ``meta``'s columns and dtypes (:mod:`daskscore.engine.framemeta`; ``origin``: where it
    came from).

    ``policy``: ``on_error`` and ``settings.error_threshold`` (see the module's doc): whether
    a failed mini-batch makes this partition raise.  ``live``: tell the session's progress
    display as each mini-batch ends (``progress=False`` sends nothing).
    """
    import pandas as pd

    from daskscore.worker.plugin import is_installed

    if not is_installed(job_id) and address is not None and not _on_worker():
        return _forward(address, job_id, group, meta, policy, live, origin)
    state = get_runtime(job_id)
    if state.init_error is not None:
        raise InitFailed("init() failed", user_traceback=state.init_error)
    frames, finals = [], []
    state.meters = _compat.TaskMeters()  # (Dask's metrics of this partition's task)
    partition = group[0][0] if group else -1
    if live:  # (the live display)
        partition_started(job_id, partition)
    watch = PartitionWatch(state.job, partition)
    try:
        for mb, work in group:
            lost = watch.given_up(mb, work)  # (its run() ended its process too often)
            if lost is not None:
                recs, frame = [lost], None
            else:
                with state.turn():  # one run() at a time per process, as in Azure
                    # (where the nanny notes a run() it ends for keeping the GIL too long)
                    state.watch_attempt(None, watch)
                    recs, frame = run_mini_batch(state, watch, mb, 0, work)
            finals.append(charged(recs[-1], work))  # (a file never read counts its lines)
            if live:
                mini_batch_done(job_id, partition, mb, finals[-1])
            if recs[-1].done and frame is not None and len(frame):
                frames.append(frame)
    finally:
        state.watch_attempt(None)
        watch.close()
    state.meters.report()
    failures = [failure_of(rec, work) for rec, (_, work) in zip(finals, group, strict=True)]
    failures = [f for f in failures if f is not None]
    _report(job_id, group[0][0] if group else -1, finals, failures)
    if failures and policy[0] == "raise":
        raise_if_over(job_id, group[0][0], failures, policy[1])
    if not frames:
        return meta.copy()
    out = pd.concat(frames)  # (each mini-batch's own index, as run() returned it)
    return conform(out, meta, partition, origin)


def _on_worker() -> bool:
    try:
        from distributed import get_worker

        get_worker()
    except ValueError:
        return False
    return True


def _report(
    job_id: str, partition: int, finals: list[MiniBatchRecord], failures: list[dict[str, Any]]
) -> None:
    """Tell the session what a partition did: one event, its counts and its failures."""
    event = {
        "partition": partition,
        "mini_batches": len(finals),
        "succeeded": sum(r.succeeded for r in finals),
        "failed": sum(r.failed for r in finals),
        "failures": failures,
    }
    try:
        from distributed import get_worker

        get_worker().log_event(f"{RECORDS_TOPIC}-{job_id}", event)
    except Exception:  # noqa: BLE001 - accounting is best effort off a worker
        pass


class ScoringSession:
    """A scoring script installed on a cluster, and the lazy DataFrame of its predictions.

    Attributes
    ----------
    frame : dask.dataframe.DataFrame
        The predictions, one partition per group of mini-batches.
    job_dir : Path
        ``AZUREML_BI_OUTPUT_PATH`` of the session, and its ``logs/``.
    on_error : str
        ``"raise"`` or ``"drop"`` (see the module's doc).
    """

    def __init__(
        self,
        client: Client,
        job: WorkerJob,
        work: list[Any],
        meta: Any,
        partitions: int | None,
        on_error: str = "raise",
        error_threshold: int = -1,
        progress: bool | None = None,
    ) -> None:
        self.client = client
        self.job = job
        self.job_dir = Path(job.output)
        self.on_error = on_error
        self.error_threshold = error_threshold
        #: what each partition computed so far reported, by partition (its first mini-batch)
        self.events: dict[int, dict[str, Any]] = {}
        self.topic = f"{RECORDS_TOPIC}-{job.job_id}"
        self.live: LiveScore | None = None
        self.leave: Callable[[], None] = lambda: None
        try:  # (anything raised, a Ctrl-C too, does not leave the script installed)
            self._build(work, meta, partitions, progress)
        except BaseException:
            self.close()
            raise

    def _build(self, work: list[Any], meta: Any, partitions: int | None, progress: Any) -> None:
        import dask
        import dask.dataframe as dd
        from dask.dataframe.utils import pyarrow_strings_enabled

        client, job = self.client, self.job
        client.subscribe_topic(self.topic, self._on_records)
        #: the nannies of a cluster of this process kept, its workers watched (noworkers)
        self.leave = watch_session(client)
        count_deaths_fairly(client)  # (a partition queued behind a crash is not charged)
        workers = max(1, len(client.scheduler_info(n_workers=-1)["workers"]))
        n = partitions or max(1, min(len(work), workers * PARTITIONS_PER_WORKER))
        size = math.ceil(len(work) / n)
        groups = [list(enumerate(work))[i : i + size] for i in range(0, len(work), size)]
        origin, found = "given as meta=", None  # (found: the columns to_parquet cannot write)
        if meta is None:  # (mini-batches tried in order, a failed one where it may be left out)
            strings = bool(pyarrow_strings_enabled())  # (this process's Dask config)
            allowed = None if self.on_error == "drop" else self.error_threshold
            items = list(enumerate(work))
            future = client.submit(first_rows, job.job_id, items, strings, allowed, pure=False)
            meta, unknown, found, mb = future.result()
            origin = f"inferred from mini-batch {mb}"
            if unknown:
                say_unknown(unknown, bool(len(work) > 1), mb)
        say_unwritable(meta, found)
        # (Dask's convert-string would make every object column text: the frame keeps
        # run()'s values and dtypes, the text columns of mini-batch 0 made strings above)
        with dask.config.set({"dataframe.convert-string": False}):
            self.frame = dd.from_map(
                functools.partial(
                    score_partition,
                    job.job_id,
                    meta=meta,
                    address=client.scheduler.address,
                    policy=(self.on_error, self.error_threshold),
                    live=progress is not False,
                    origin=origin,
                ),
                groups,
                meta=meta,
                label=PARTITION_LABEL,  # (the prefix of its tasks in the Dask dashboard)
                enforce_metadata=False,
            )
        # (set past DataFrame.__setattr__: a column named "attrs" must not be assigned)
        object.__setattr__(self.frame, "attrs", {"daskscore": self})
        _OPEN.add(self)  # (its folder is removed at exit, should it never be closed)
        #: in a Jupyter kernel, the live display of each cell's computation (scorelive)
        self.live = LiveScore.for_session(client, job.job_id, work, progress)

    def _on_records(self, event: Any) -> None:
        msg = event[1]
        if not isinstance(msg, dict):
            return
        # (a partition computed again: once; one that raised said it all itself)
        raised = self.on_error == "raise" and self.error_threshold < 0
        if msg.get("partition") not in self.events:
            for f in msg.get("failures") or []:
                if raised and f.get("dropped"):
                    continue
                what = "its rows are left out" if f.get("dropped") else "it returned too few"
                logger.warning(
                    "score(): mini-batch %s failed (%s, %s; %s): %s",
                    f.get("mini_batch"), f.get("status"), tries_text(f.get("try")), what,
                    error_line(f.get("error"), empty="?"),
                )  # fmt: skip
        self.events[int(msg.get("partition", -1))] = msg

    def _reported(self) -> list[dict[str, Any]]:
        """Every partition's latest event: those delivered, and those the scheduler holds that
        were not yet (a computation that just returned)."""
        try:
            for _, msg in self.client.get_events(self.topic):
                if isinstance(msg, dict):
                    self.events.setdefault(int(msg.get("partition", -1)), msg)
        except Exception:  # noqa: BLE001 - the cluster may be gone: what was delivered
            pass
        return [self.events[k] for k in sorted(self.events)]

    @property
    def failures(self) -> list[dict[str, Any]]:
        """The mini-batches with failed items in the partitions computed so far, in order:
        ``mini_batch``, ``status``, ``try`` (its last), ``total``, ``succeeded``, ``failed``,
        ``files``, ``error`` (the script's traceback), ``dropped`` (its rows are not in the
        frame: every try failed)."""
        found = [
            {**f, "files": list(f.get("files") or ())}  # (events come back with tuples)
            for e in self._reported()
            for f in e.get("failures") or []
        ]
        return sorted(found, key=lambda f: f["mini_batch"])

    def report(self) -> dict[str, Any]:
        """Counts over the partitions computed so far: items, failures, failed mini-batches."""
        events = self._reported()  # a partition computed twice counts once
        return {
            "mini_batches": sum(e["mini_batches"] for e in events),
            "succeeded_items": sum(e["succeeded"] for e in events),
            "failed_items": sum(e["failed"] for e in events),
            "failures": self.failures,
            "logs": str(self.job_dir / "logs"),
        }

    def __enter__(self) -> ScoringSession:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        """Uninstall the script from the workers (its ``shutdown()`` runs); remove the
        session's folder (:attr:`job_dir`, its logs) unless a mini-batch failed."""
        if self.live is not None:
            self.live.close()
        self.leave()
        self.failed = bool(self.failures)  # (before its events are forgotten)
        try:
            _compat.unsubscribe_topic(self.client, self.topic)
            job_id = self.job.job_id  # (the scheduler would keep them for its life)
            _compat.forget_topics(
                self.client, [self.topic, topic(job_id)], [[COUNTS_ROOT, job_id], [ROOT, job_id]]
            )
            self.client.unregister_worker_plugin(f"daskscore-{self.job.job_id}")
        except Exception:  # noqa: BLE001 - the cluster may be gone
            pass
        self.tidy()

    def tidy(self) -> None:
        """Remove the session's folder unless a mini-batch failed (its logs say why)."""
        _OPEN.discard(self)
        failed = getattr(self, "failed", None)
        if failed is None:  # (at exit, the cluster perhaps gone: what was delivered)
            failed = any(e.get("failures") for e in self.events.values())
        if failed:
            logger.info("score(): the session's logs are kept in %s", self.job_dir / "logs")
        else:
            shutil.rmtree(self.job_dir, ignore_errors=True)


#: sessions not closed yet: their folders are tidied when the interpreter exits
_OPEN: weakref.WeakSet[ScoringSession] = weakref.WeakSet()


@atexit.register
def _tidy_at_exit() -> None:
    """Sessions left open when the interpreter exits: uninstalled from a cluster that is
    still there (else its workers kept the script initialised, and installed it on each worker
    that joined later), within a few seconds; their folders tidied."""
    for session in list(_OPEN):
        if connected(session.client):
            closing = threading.Thread(target=session.close, daemon=True)
            closing.start()
            closing.join(EXIT_CLOSE_S)
        session.tidy()


#: How long the interpreter's exit waits for an open session to be uninstalled.
EXIT_CLOSE_S = 5.0


def open_session(
    deployment: Deployment,
    input_path: str,
    *,
    client: Client,
    meta: Any = None,
    partitions: int | None = None,
    options: JobOptions | None = None,
    on_error: str = "raise",
    progress: bool | None = None,
) -> ScoringSession:
    """Install ``deployment`` on ``client``'s workers and build the predictions' DataFrame
    (``progress``: see :meth:`LiveScore.for_session`)."""
    if on_error not in ON_ERROR:
        raise UsageError(f"on_error={on_error!r}: expected 'raise' or 'drop'.")
    require_connected(client)
    options = options or JobOptions()
    options.output_format = "frame"
    plan = plan_job(deployment, input_path, options)
    assert plan is not None  # (plan_job raises its first problem)
    job_dir = Path(tempfile.mkdtemp(prefix="daskscore-session-"))
    (job_dir / "logs" / "user").mkdir(parents=True)
    job = WorkerJob.for_deployment(
        deployment,
        uuid.uuid4().hex[:12],
        job_dir,
        job_dir / ".daskscore",
        output_format="frame",
        carry_columns=tuple(options.carry_columns),
        text_columns=mlflow_text_columns(plan.deployment) if plan.unit == "rows" else (),
    )
    import dask.dataframe  # noqa: F401 - (seconds the first time: before anything is installed)

    watch_deadlines(client)  # (the nannies end a run() that keeps the GIL past its timeout)
    script = ScriptInstall(client, job, job_dir / ".daskscore", init_timeout=options.init_timeout)
    try:
        script.install()
    except BaseException:  # (init() failed: not left installed, its streams on in-process)
        script.uninstall()
        raise
    threshold = deployment.settings.error_threshold
    return ScoringSession(
        client, job, plan.work, meta, partitions, on_error, threshold, progress=progress
    )
