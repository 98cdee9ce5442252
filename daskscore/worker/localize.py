"""A job as one worker runs it: code and model unpacked or fetched into the worker's cache, and,
for a shipped job, worker-local output, log and staging folders."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from daskscore.io.ledger import make_staging
from daskscore.io.shipping import fetch_model, unpack
from daskscore.protocol import WorkerJob


def localize(job: WorkerJob, local_directory: str) -> WorkerJob:
    """The job as this worker runs it: code and model unpacked (or fetched) into the worker's
    cache; for a shipped job, output, logs and staging in a worker-local folder too."""
    root = Path(local_directory) / "daskscore"
    changes: dict[str, Any] = {"code_bundle": None, "model_bundle": None}
    if job.code_bundle is not None:
        code = unpack(job.code_bundle, root / "code")
        changes.update(code=str(code), script=str(code / Path(job.script).relative_to(job.code)))
    if job.model_url:
        changes["model_path"] = str(fetch_model(job.model_url, root / "models"))
    elif job.model_bundle is not None:
        changes["model_path"] = str(unpack(job.model_bundle, root / "models"))
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
