"""A job as one worker runs it: code and model unpacked or fetched into the worker's cache, and,
for a shipped job, worker-local output, log and staging folders."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from daskscore.io.ledger import make_staging
from daskscore.io.shipping import fetch_model, unpack
from daskscore.protocol import BUNDLES_ROOT, Bundle, WorkerJob

logger = logging.getLogger("daskscore")


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


async def fetch_bundles(job: WorkerJob, local_directory: str, scheduler: Any) -> WorkerJob:
    """``job`` with the bytes of each bundle it refers to that this worker's cache lacks (a
    worker new to them, or restarted), fetched from the scheduler (``scheduler``: the
    worker's connection to it), which keeps them (:mod:`daskscore.engine.bundles`).  One it
    no longer holds stays a reference: unpacking it says so, as the job's ``init()`` failure."""
    root = Path(local_directory) / "daskscore"
    changes: dict[str, Bundle] = {}
    for field, cache in (("code_bundle", "code"), ("model_bundle", "models")):
        bundle: Bundle | None = getattr(job, field)
        if bundle is None or bundle.data is not None:
            continue
        if (root / cache / bundle.digest / bundle.name).exists():
            continue
        try:
            data = await scheduler.get_metadata(
                keys=[BUNDLES_ROOT, "data", bundle.digest], default=None
            )
        except Exception:  # noqa: BLE001 - said when it is unpacked
            logger.warning("fetching %s from the scheduler failed", bundle.name, exc_info=True)
            continue
        if isinstance(data, bytes | bytearray | memoryview):
            changes[field] = replace(bundle, data=bytes(data))
    return replace(job, **changes) if changes else job


def offers(total_resources: dict[str, float], wanted: dict[str, float]) -> bool:
    """Whether a worker with ``total_resources`` can run tasks that need ``wanted``."""
    return all(total_resources.get(name, 0) >= amount for name, amount in wanted.items())
