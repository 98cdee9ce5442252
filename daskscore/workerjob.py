"""What a worker needs to know of a job: :class:`WorkerJob`, plain data sent in the plugin.

:func:`localize` turns the driver's view of a job into a worker's: code and model unpacked (or
fetched) into the worker's cache, and for a shipped job, worker-local output, log and staging
folders.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .config import Deployment
from .ledger import make_staging
from .shipping import Bundle, fetch_model


@dataclass(frozen=True)
class WorkerJob:
    """Everything a worker needs to run a job's mini-batches; plain, picklable data."""

    job_id: str
    code: str
    script: str
    model_path: str | None
    output: str
    logs: str
    staging: str
    env: dict[str, str] = field(default_factory=dict)
    timeout: float = 30.0
    max_retries: int = 3
    output_action: str = "append_row"
    #: append_row, summary_only (Azure's), or a dataset: parquet, csv
    output_format: str = "append_row"
    csv_kwargs: dict[str, Any] = field(default_factory=dict)
    #: tabular mode: input columns to carry into the output (``file`` and ``row`` included)
    carry_columns: tuple[str, ...] = ()
    logging_level: str = "info"
    intra_op_threads: int | None = None
    #: workers do not share the driver's disk: code (and model) travel in the bundles, outputs
    #: come back with each task's result
    shipped: bool = False
    code_bundle: Bundle | None = None
    model_bundle: Bundle | None = None
    #: model.path given as a URL: every worker fetches it into its cache
    model_url: str | None = None
    #: the code folder as the user knows it (tracebacks name it, wherever the code was unpacked)
    display_code: str = ""
    #: worker resources every task needs (Dask's ``resources=``); workers without them idle
    resources: dict[str, float] = field(default_factory=dict)
    #: GPUs of an embedded cluster, shared out round-robin as CUDA_VISIBLE_DEVICES
    gpu_ids: tuple[str, ...] = ()

    @classmethod
    def for_deployment(
        cls, deployment: Deployment, job_id: str, output: Path, staging: Path, **options: Any
    ) -> WorkerJob:
        """The worker's view of ``deployment``: paths as strings, settings unpacked.

        ``options`` are the job's own fields (``output_format``, ``csv_kwargs``,
        ``carry_columns``, ``intra_op_threads``).
        """
        settings = deployment.settings
        model = deployment.model
        return cls(
            job_id=job_id,
            code=str(deployment.code),
            script=str(deployment.scoring_script),
            model_path=str(model.path) if model and not model.is_url else None,
            model_url=str(model.path) if model and model.is_url else None,
            display_code=str(deployment.code),
            output=str(output),
            logs=str(output / "logs"),
            staging=str(staging),
            env=dict(settings.environment_variables),
            timeout=settings.retry_settings.timeout,
            max_retries=settings.retry_settings.max_retries,
            output_action=settings.output_action,
            logging_level=settings.logging_level,
            **options,
        )

    def shipped_copy(self) -> WorkerJob:
        """This job with its code (and local model) packed to travel to other hosts."""
        model = Bundle.of(Path(self.model_path)) if self.model_path else None
        return replace(
            self, shipped=True, code_bundle=Bundle.of(Path(self.code)), model_bundle=model
        )

    @property
    def needs_localizing(self) -> bool:
        return self.shipped or self.model_url is not None


def localize(job: WorkerJob, local_directory: str) -> WorkerJob:
    """The job as this worker runs it: code and model unpacked (or fetched) into the worker's
    cache; for a shipped job, output, logs and staging in a worker-local folder too."""
    root = Path(local_directory) / "daskscore"
    changes: dict[str, Any] = {"code_bundle": None, "model_bundle": None}
    if job.code_bundle is not None:
        code = job.code_bundle.unpack(root / "code")
        changes.update(code=str(code), script=str(code / Path(job.script).relative_to(job.code)))
    if job.model_url:
        changes["model_path"] = str(fetch_model(job.model_url, root / "models"))
    elif job.model_bundle is not None:
        changes["model_path"] = str(job.model_bundle.unpack(root / "models"))
    if job.shipped:
        home = root / "jobs" / job.job_id
        make_staging(home / "staging")
        (home / "output").mkdir(exist_ok=True)
        changes.update(
            output=str(home / "output"), logs=str(home / "logs"), staging=str(home / "staging")
        )
    return replace(job, **changes)


def offers(total_resources: dict[str, float], wanted: dict[str, float]) -> bool:
    """Whether a worker with ``total_resources`` can run tasks that need ``wanted``."""
    return all(total_resources.get(name, 0) >= amount for name, amount in wanted.items())
