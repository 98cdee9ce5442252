"""Predictions as a lazy Dask DataFrame: :func:`score` and :class:`ScoringSession`.

The scoring script is installed on the client's workers (``init()`` once per worker, through
the same :class:`~daskscore.worker.plugin.ScoringPlugin` as :func:`daskscore.run`); each
partition of the returned DataFrame runs a group of mini-batches through ``run()`` with the
same retries.
The columns are those of the DataFrames ``run()`` returns (or one ``prediction`` column for list
returns); ``meta`` is inferred by scoring the first mini-batch once, unless given.
"""

from __future__ import annotations

import functools
import math
import tempfile
import uuid
from pathlib import Path
from typing import Any

from distributed import Client

from daskscore.config import Deployment
from daskscore.config.options import JobOptions
from daskscore.engine.plan import plan_job
from daskscore.engine.probe import raise_init_errors
from daskscore.errors import InitFailed
from daskscore.protocol import MiniBatchRecord, WorkerJob
from daskscore.worker.plugin import ScoringPlugin, get_runtime
from daskscore.worker.task import run_mini_batch

#: Partitions per worker when the caller does not choose: enough to balance, few enough that
#: each partition carries many mini-batches.
PARTITIONS_PER_WORKER = 4
RECORDS_TOPIC = "daskscore-records"


class _NoLedger:
    """Lazy scoring keeps no ledger: a lost partition is simply computed again."""

    offset = 0

    def started(self, *args: Any) -> None: ...

    def finished(self, *args: Any) -> None: ...

    def timed_out(self, *args: Any) -> None: ...


def _forward(address: str, job_id: str, group: list[tuple[int, Any]], meta: Any) -> Any:
    """Computed outside the cluster (``ddf.compute()`` with a client that is not the default
    one): run the partition on the cluster that has the script installed."""
    # a short-lived client: a cached one would outlive its cluster and keep reconnecting
    with Client(address, set_as_default=False) as client:
        return client.submit(score_partition, job_id, group, meta, address, pure=False).result()


def score_partition(
    job_id: str, group: list[tuple[int, Any]], meta: Any, address: str | None = None
) -> Any:
    """Run a group of mini-batches on this worker; return their rows as one DataFrame."""
    import pandas as pd

    from daskscore.worker.plugin import is_installed

    if not is_installed(job_id) and address is not None and not _on_worker():
        return _forward(address, job_id, group, meta)
    state = get_runtime(job_id)
    if state.init_error is not None:
        raise InitFailed("init() failed", user_traceback=state.init_error)
    frames, records = [], []
    for mb, work in group:
        recs, frame = run_mini_batch(state, _NoLedger(), mb, 0, work)
        records.extend(recs)
        if recs[-1].done and frame is not None and len(frame):
            frames.append(frame)
    _report(job_id, records)
    if not frames:
        return meta.copy()
    out = pd.concat(frames, ignore_index=True)
    return out.reindex(columns=meta.columns)


def _on_worker() -> bool:
    try:
        from distributed import get_worker

        get_worker()
    except ValueError:
        return False
    return True


#: What a score() partition reports of each try, for ScoringSession.report()
REPORTED = ("mini_batch", "try", "status", "total", "succeeded", "failed", "error", "final")


def _report(job_id: str, records: list[MiniBatchRecord]) -> None:
    try:
        from distributed import get_worker

        slim = [{k: v for k, v in r.to_json().items() if k in REPORTED} for r in records]
        get_worker().log_event(f"{RECORDS_TOPIC}-{job_id}", slim)
    except Exception:  # noqa: BLE001 - accounting is best effort off a worker
        pass


def first_rows(job_id: str, work: Any) -> Any:
    """Score one mini-batch and return its empty frame: the DataFrame's ``meta``."""
    state = get_runtime(job_id)
    if state.init_error is not None:
        raise InitFailed("init() failed", user_traceback=state.init_error)
    recs, frame = run_mini_batch(state, _NoLedger(), 0, 0, work)
    last = recs[-1]
    if not last.done or frame is None:
        why = last.error.strip().splitlines()[-1] if last.error.strip() else "?"
        raise RuntimeError(
            f"cannot infer the predictions' columns: the first mini-batch failed ({why}); "
            "pass meta= to score()"
        )
    return frame.iloc[:0]


class ScoringSession:
    """A scoring script installed on a cluster, and the lazy DataFrame of its predictions.

    Attributes
    ----------
    frame : dask.dataframe.DataFrame
        The predictions, one partition per group of mini-batches.
    job_dir : Path
        ``AZUREML_BI_OUTPUT_PATH`` of the session, and its ``logs/``.
    """

    def __init__(
        self, client: Client, job: WorkerJob, work: list[Any], meta: Any, partitions: int | None
    ) -> None:
        import dask.dataframe as dd

        self.client = client
        self.job = job
        self.job_dir = Path(job.output)
        self.records: list[dict[str, Any]] = []
        client.subscribe_topic(f"{RECORDS_TOPIC}-{job.job_id}", self._on_records)
        workers = max(1, len(client.scheduler_info(n_workers=-1)["workers"]))
        n = partitions or max(1, min(len(work), workers * PARTITIONS_PER_WORKER))
        size = math.ceil(len(work) / n)
        groups = [list(enumerate(work))[i : i + size] for i in range(0, len(work), size)]
        if meta is None:
            meta = client.submit(first_rows, job.job_id, work[0], pure=False).result()
        self.frame = dd.from_map(
            functools.partial(
                score_partition, job.job_id, meta=meta, address=client.scheduler.address
            ),
            groups,
            meta=meta,
            label="daskscore",
            enforce_metadata=False,
        )

    def _on_records(self, event: Any) -> None:
        self.records.extend(event[1])

    def report(self) -> dict[str, Any]:
        """Counts over the partitions computed so far: items, failures, failed mini-batches."""
        latest = {r["mini_batch"]: r for r in self.records if r.get("final")}
        finals = list(latest.values())  # a partition computed twice counts once
        return {
            "mini_batches": len(finals),
            "succeeded_items": sum(r["succeeded"] for r in finals),
            "failed_items": sum(r["failed"] for r in finals),
            "failures": [r for r in finals if r["status"] != "RUN_DONE"],
            "logs": str(self.job_dir / "logs"),
        }

    def __enter__(self) -> ScoringSession:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        """Uninstall the script from the workers (its ``shutdown()`` runs)."""
        try:
            self.client.unsubscribe_topic(f"{RECORDS_TOPIC}-{self.job.job_id}")
            self.client.unregister_worker_plugin(f"daskscore-{self.job.job_id}")
        except Exception:  # noqa: BLE001 - the cluster may be gone
            pass


def open_session(
    deployment: Deployment,
    input_path: str,
    *,
    client: Client,
    meta: Any = None,
    partitions: int | None = None,
    options: JobOptions | None = None,
) -> ScoringSession:
    """Install ``deployment`` on ``client``'s workers and build the predictions' DataFrame."""
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
    )
    client.register_plugin(ScoringPlugin(job))
    raise_init_errors(client, job.job_id)
    return ScoringSession(client, job, plan.work, meta, partitions)
