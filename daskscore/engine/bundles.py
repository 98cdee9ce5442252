"""A shipped job's code and model, kept by the scheduler between jobs.

A shipped job (workers that do not see the driver's disk) sends its code folder and its local
model folder to the workers as bundles (:mod:`daskscore.io.shipping`).  Packing and sending
them again for every job costs the driver seconds and the network the whole model each time,
so the scheduler keeps them, in its metadata under ``[BUNDLES_ROOT, "data", digest]``, named by
a hash of their contents:

* the driver hashes the folders (:func:`~daskscore.io.shipping.content_digest`: no packing)
  and asks the scheduler which it holds; only the others are packed and sent to it;
* the job's worker plugin carries references (a :class:`~daskscore.protocol.Bundle` without
  its bytes); a worker that has a bundle in its cache from an earlier job uses it, one that
  does not (a new worker, a restarted one) fetches it from the scheduler
  (:func:`daskscore.worker.localize.fetch_bundles`);
* when the job ends, the scheduler keeps the most recently used bundles up to
  ``DASKSCORE_BUNDLE_CACHE_MB`` (default :data:`DEFAULT_CACHE_MB`) and drops the rest, never
  one a running job uses (one whose plugin is registered, or noted in the last
  :data:`NOTED_GRACE_S` seconds, before its plugin is).

A scheduler without daskscore cannot run these functions: the bundles then travel inside the
plugin, whole, as before.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from daskscore.errors import UsageError
from daskscore.io.shipping import content_digest, pack, reference
from daskscore.protocol import BUNDLES_ROOT, Bundle, WorkerJob

logger = logging.getLogger("daskscore")

#: The bundles a scheduler keeps between jobs, in MB (``DASKSCORE_BUNDLE_CACHE_MB``).
DEFAULT_CACHE_MB = 1024
CACHE_ENV = "DASKSCORE_BUNDLE_CACHE_MB"
#: A job's bundles are kept this long after it noted them, while it has no plugin yet.
NOTED_GRACE_S = 600.0


def ship(client: Any, job: WorkerJob) -> tuple[WorkerJob, dict[str, Any]]:
    """``job`` with its code (and local model) as bundles; what was sent, by folder
    (``{"code": {"digest": ..., "sent_bytes": ...}, ...}``, for the job's summary)."""
    folders: dict[str, tuple[Path, Path | None]] = {"code": (Path(job.code), Path(job.output))}
    if job.model_path:
        folders["model"] = (Path(job.model_path), None)
    digests = {kind: content_digest(path, skip) for kind, (path, skip) in folders.items()}
    try:
        held = set(client.run_on_scheduler(note_bundles, job.job_id, list(digests.values())))
    except Exception:  # noqa: BLE001 - no daskscore on the scheduler: whole, in the plugin
        logger.debug("the scheduler cannot keep bundles: they travel in the plugin", exc_info=True)
        held = None
    bundles: dict[str, Bundle] = {}
    sent: dict[str, Any] = {}
    for kind, (path, skip) in folders.items():
        if held is not None and digests[kind] in held:
            bundles[kind] = reference(path, digests[kind])
            sent[kind] = {"digest": digests[kind], "sent_bytes": 0}
            continue
        bundle = pack(path, skip)  # (its digest: the folder as packed, changed or not)
        sent[kind] = {"digest": bundle.digest, "sent_bytes": len(bundle.data or b"")}
        if held is not None:
            try:
                client.set_metadata([BUNDLES_ROOT, "data", bundle.digest], bundle.data)
                client.run_on_scheduler(note_bundles, job.job_id, [bundle.digest])
                bundle = reference(path, bundle.digest)
            except Exception:  # noqa: BLE001 - it travels in the plugin then
                logger.debug("handing %s to the scheduler failed", path, exc_info=True)
        bundles[kind] = bundle
    shipped = replace(
        job, shipped=True, code_bundle=bundles["code"], model_bundle=bundles.get("model")
    )
    return shipped, sent


def release(client: Any, job_id: str) -> None:
    """At the end of a shipped job: the scheduler keeps the most recently used bundles, up to
    ``DASKSCORE_BUNDLE_CACHE_MB`` (checked as the job started: a value set wrong since then
    is warned of, and the default used)."""
    try:
        limit = cache_bytes()
    except UsageError as exc:
        logger.warning("%s The default, %d MB, is used.", exc, DEFAULT_CACHE_MB)
        limit = DEFAULT_CACHE_MB * 2**20
    try:
        client.run_on_scheduler(trim_bundles, job_id, limit)
    except Exception:  # noqa: BLE001 - housekeeping only
        logger.debug("trimming the scheduler's bundles failed", exc_info=True)


def cache_bytes() -> int:
    """``DASKSCORE_BUNDLE_CACHE_MB`` in bytes (:data:`DEFAULT_CACHE_MB` when unset or empty);
    called as a job that may be shipped starts, so that a value that is not a finite number of
    0 or more (``abc``, ``-1``, ``inf``, ``nan``, ``1e400``) is a
    :class:`~daskscore.errors.UsageError` (exit 2) before the output folder is claimed."""
    raw = os.environ.get(CACHE_ENV, "").strip()
    if not raw:
        return DEFAULT_CACHE_MB * 2**20
    try:
        mb = float(raw)
    except ValueError:
        mb = math.nan
    if not math.isfinite(mb) or mb < 0:
        raise UsageError(
            f"{CACHE_ENV}={raw!r} is not a size in MB: give a number of 0 or more (0 keeps no "
            f"bundles on the scheduler between jobs; unset, it keeps {DEFAULT_CACHE_MB} MB)."
        )
    return int(mb * 2**20)


# ----------------------------------------------------------------------- on the scheduler


def _store(dask_scheduler: Any) -> dict[str, Any]:
    store = dask_scheduler.task_metadata.setdefault(BUNDLES_ROOT, {})
    for part in ("data", "used", "jobs"):
        store.setdefault(part, {})
    return store


def note_bundles(job_id: str, digests: list[str], dask_scheduler: Any = None) -> list[str]:
    """Which of ``digests`` the scheduler holds (run with ``Client.run_on_scheduler``); all
    of them noted as used by ``job_id`` now."""
    store, now = _store(dask_scheduler), time.time()
    noted = store["jobs"].setdefault(job_id, {"at": now, "digests": []})
    noted["at"] = now
    noted["digests"] = sorted(set(noted["digests"]) | set(digests))
    for digest in digests:
        store["used"][digest] = now
    return [d for d in digests if d in store["data"]]


def trim_bundles(job_id: str, limit: int, dask_scheduler: Any = None) -> list[str]:
    """Forget ``job_id``'s use of its bundles, then drop the least recently used bundles no
    running job uses until those kept take at most ``limit`` bytes; return those dropped."""
    store, now = _store(dask_scheduler), time.time()
    store["jobs"].pop(job_id, None)
    plugins = getattr(dask_scheduler, "worker_plugins", {})
    for other, noted in list(store["jobs"].items()):
        if f"daskscore-{other}" not in plugins and now - noted["at"] > NOTED_GRACE_S:
            del store["jobs"][other]  # (a driver gone without releasing them)
    in_use = {d for noted in store["jobs"].values() for d in noted["digests"]}
    total = sum(len(data) for data in store["data"].values())
    dropped = []
    for digest in sorted(store["data"], key=lambda d: store["used"].get(d, 0.0)):
        if total <= limit:
            break
        if digest in in_use:
            continue
        total -= len(store["data"].pop(digest))
        store["used"].pop(digest, None)
        dropped.append(digest)
    return dropped
