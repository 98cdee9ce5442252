"""What the driver asks a cluster's workers: whether init() worked, which workers can run the
job, and what they can see.

Before a job on an existing cluster, the driver learns whether the workers share its disk (they
read a file it just wrote), whether they have daskscore, and which of them offer the resources
the job asks for.  A job whose workers do not share the disk is *shipped* (see
:mod:`daskscore.engine.transport`); its workers' logs (and the ``AZUREML_BI_OUTPUT_PATH`` files
no task brought home) are collected at the end by :func:`collect`.
"""

from __future__ import annotations

import logging
import os
import time
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

from daskscore.errors import InitFailed, UsageError
from daskscore.io.replyfiles import put_files
from daskscore.io.shipping import file_digests
from daskscore.worker.localize import offers
from daskscore.worker.plugin import drain_job, init_report

logger = logging.getLogger("daskscore")

#: How long a question to the workers is asked again while their processes die as they are
#: asked (another job's run() ending one on a shared cluster, a crash), and how often.
ASK_AGAIN_S, ASK_POLL_S = 30.0, 0.25


def ask_workers(client: Any, fn: Any, *args: Any) -> dict[str, Any]:
    """``client.run(fn, *args)``: every worker's answer.  A worker whose process dies as it is
    asked closes its connection, and Dask fails the whole question: it is asked again of the
    workers there then (once one is: a nanny's new process joins), for
    :data:`ASK_AGAIN_S` at most."""
    give_up, died = time.monotonic() + ASK_AGAIN_S, False
    while True:
        try:
            seen = client.run(fn, *args)
        except OSError:  # (CommClosedError) a worker's process died as it was asked
            if time.monotonic() >= give_up:
                raise
            logger.info("a worker process ended as the workers were asked; asking again")
            died = True
        else:
            if seen or not died or time.monotonic() >= give_up:
                return seen
        time.sleep(ASK_POLL_S)


def workers_share_disk(client: Any, probes: list[Path]) -> bool:
    """Whether every worker reads each of the driver's files ``probes`` (the staging folder's
    manifest, the scoring script, a model file) with the same contents."""
    paths = [str(p) for p in probes]
    mine = file_digests(paths)
    seen = ask_workers(client, file_digests, paths)
    blind = sorted(w for w, digests in seen.items() if digests != mine)
    if blind or not seen:
        logger.info("workers do not share the driver's disk: %s cannot read %s", blind, paths)
        return False
    logger.info("workers share the driver's disk (they read %s)", ", ".join(paths))
    return True


def daskscore_version() -> str:
    """This process's daskscore version (run on workers with ``Client.run``); ``unknown`` for
    a source checkout on ``sys.path`` that was never installed."""
    try:
        return package_version("daskscore")
    except PackageNotFoundError:
        return "unknown"


def check_daskscore(client: Any) -> None:
    """Refuse a cluster whose workers lack daskscore (tasks are daskscore functions)."""
    mine = daskscore_version()
    try:
        versions = client.run(daskscore_version)
    except Exception as exc:  # noqa: BLE001 - Dask re-raises a worker's ImportError as Exception
        if not (isinstance(exc, ImportError) or "No module named 'daskscore" in str(exc)):
            raise
        versions = None  # the function could not be unpickled there: no daskscore
    if versions is None:
        raise UsageError(
            "the cluster's workers do not have daskscore installed: its tasks run daskscore's "
            f"code. Install the same version in the workers' environment (daskscore=={mine})."
        )
    other = {w: v for w, v in versions.items() if v != mine}
    if other:
        logger.warning(
            "workers run another daskscore version than the driver (%s): %s", mine, other
        )


def count_eligible(client: Any, resources: dict[str, float]) -> int:
    """How many of the cluster's workers offer ``resources`` (all of them when none asked)."""
    return _able(client.scheduler_info(n_workers=-1)["workers"], resources)


def _able(workers: dict[str, Any], resources: dict[str, float]) -> int:
    return sum(1 for w in workers.values() if offers(w.get("resources") or {}, resources))


def eligible_workers(client: Any, resources: dict[str, float]) -> int:
    """How many workers can run the job's tasks; refuse a cluster where none can."""
    workers = client.scheduler_info(n_workers=-1)["workers"]
    able = _able(workers, resources)
    if resources and not able and workers:
        offered = sorted(
            {f"{k}={v:g}" for w in workers.values() for k, v in (w.get("resources") or {}).items()}
        ) or ["none"]
        wanted = ",".join(f"{k}={v:g}" for k, v in resources.items())
        raise UsageError(
            f"resources {wanted}: no worker of the cluster offers them (workers offer: "
            f"{', '.join(offered)}). Start workers with `dask worker ... --resources "
            f'"{wanted}"`, or drop --resources.'
        )
    return able


def check_inputs_visible(client: Any, files: list[str], what: str) -> None:
    """A shipped job reads local inputs only if every worker sees them (a shared mount)."""
    if not files or "://" in files[0]:
        return
    seen = ask_workers(client, os.path.exists, files[0])
    blind = sorted(w for w, ok in seen.items() if not ok)
    if blind:
        raise UsageError(
            f"input '{what}' is on the driver's disk, which worker {blind[0]} cannot see "
            f"({len(blind)} of {len(seen)} workers cannot). Put the input where every worker "
            "can read it — a URL (s3://, az://, gs://, ...) or a filesystem all hosts mount."
        )


def collect(client: Any, job_id: str, out_dir: Path) -> None:
    """Bring a shipped job's worker logs home into ``out_dir``, and the script's files that
    its tasks did not bring (files it held open, or wrote after its last task)."""
    try:
        drained = client.run(drain_job, job_id)
    except Exception:  # noqa: BLE001 - a worker that left took its logs with it
        logger.warning("collecting the workers' logs failed", exc_info=True)
        return
    for _, found in sorted(drained.items()):
        put_files(out_dir / "logs", found.get("logs", {}), append=True)
        # (a name written before, by a task's reply or another worker, is replaced: the last
        # write wins, as in a folder all workers share)
        put_files(out_dir, found.get("output", {}))


def raise_init_errors(client: Any, job_id: str) -> bool:
    """Raise :class:`InitFailed` with the script's traceback if init() failed on any worker;
    return whether every worker that runs the job reused a script an earlier job initialised
    (no init() this time)."""
    reports = list(client.run(init_report, job_id).values())
    for report in reports:
        if report.get("error"):
            raise InitFailed(f"init() failed:\n{report['error']}", user_traceback=report["error"])
    running = [r for r in reports if r.get("installed") and r.get("eligible")]
    return bool(running) and all(r.get("reused") for r in running)
