"""How a job's results reach the driver: chosen once per job, when its cluster is known.

* :class:`SharedDisk` — the workers see the driver's files (an embedded cluster always does):
  they read the code and model where they are and write part files and ledgers straight into
  the output's staging folder; a dead task's ledger is read from there.
* :class:`Shipped` — they do not (other hosts, containers): the code folder and a local model
  travel in the worker plugin as bundles; tasks bring their part files home in their replies,
  which the driver writes into its own staging folder and ledger, so resuming and assembling
  work as on one machine; the ``run()`` a dead task was in is read from the scheduler's
  metadata (:func:`relay_state`).  The files the script wrote into ``AZUREML_BI_OUTPUT_PATH``
  come home in the same replies, and are written into the output folder before the task's
  mini-batches are committed; at the end, the workers' logs and what is left of those files
  (files the script held open) are collected.

The rest of the engine calls the transport and never asks which mode the job is in.  The
worker side of the same choice is :mod:`daskscore.worker.handoff`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from daskscore.engine import bundles, probe
from daskscore.engine.connection import ASK_S, connected
from daskscore.io.ledger import LedgerState, LedgerWriter, abandon_ledger, read_ledger
from daskscore.io.replyfiles import put_files
from daskscore.protocol import RELAY_ROOT, MiniBatchRecord, TaskResult, WorkerJob, relay_key

logger = logging.getLogger("daskscore")


class SharedDisk:
    """The workers share the driver's disk."""

    #: whether the job's results travel in the tasks' replies
    shipped = False

    #: a shipped job's bundles: what was sent, by folder (the job summary's ``shipped``)
    sent: dict[str, Any] | None = None

    def worker_job(self, job: WorkerJob, client: Any) -> WorkerJob:
        """The job as it is sent to the workers."""
        return job

    def land(self, job: WorkerJob, result: TaskResult) -> None:
        """Store what a finished task brought home (nothing: it wrote onto the shared disk)."""

    def lost(self, client: Any, job: WorkerJob, attempt: str) -> LedgerState:
        """What is known of an attempt whose process died: its ledger on the shared disk."""
        return read_ledger(job.staging, attempt)

    def salvage(self, job: WorkerJob, attempt: str) -> list[MiniBatchRecord]:
        """What a cancelled attempt committed before it stopped, and the failed tries of
        the mini-batches it had not committed.  Its ledger is ended first (an ``X`` line):
        the task still ends its ``run()`` call, and what it commits then, after the job's
        books, is never read as done."""
        abandon_ledger(job.staging, attempt)
        state = read_ledger(job.staging, attempt)
        return state.committed + state.tried

    def assembly_client(self, client: Any) -> Any:
        """Where a dataset output is computed: the cluster, which sees the staged parts."""
        return client

    def close(self, client: Any, job: WorkerJob, out_dir: Path) -> None:
        """At the end of the job: bring home what is still on the workers (nothing here)."""


class Shipped(SharedDisk):
    """The workers do not share the driver's disk: code goes out, results come home."""

    shipped = True

    def worker_job(self, job: WorkerJob, client: Any) -> WorkerJob:
        # (the code folder's bundle leaves out an output folder inside it)
        shipped, self.sent = bundles.ship(client, job)
        return shipped

    def land(self, job: WorkerJob, result: TaskResult) -> None:
        """A shipped task's custom output files into the output folder, its part files into
        the staging folder, then its ledger: once a mini-batch is committed its files are
        here, and a resumed job that keeps it need not run it again."""
        staging = Path(job.staging)
        put_files(Path(job.logs), result.logs, append=True)
        put_files(Path(job.output), result.outputs)  # (a later file of a name replaces it)
        put_files(staging / "parts", result.files)
        writer = LedgerWriter(staging, result.attempt)
        try:
            records = result.all_records()
            if records:
                writer.commit(b"", records)
        finally:
            writer.close()

    def lost(self, client: Any, job: WorkerJob, attempt: str) -> LedgerState:
        # its finished mini-batches died with it; the scheduler knows the run() it was in
        return relay_state(client, job.job_id, attempt)

    def salvage(self, job: WorkerJob, attempt: str) -> list[MiniBatchRecord]:
        return []  # a shipped task's work is lost with it

    def assembly_client(self, client: Any) -> Any:
        return None  # the staged parts are on the driver's disk only: assemble here

    def close(self, client: Any, job: WorkerJob, out_dir: Path) -> None:
        probe.collect(client, job.job_id, out_dir)
        forget_job(client, job.job_id)
        bundles.release(client, job.job_id)


def relay_state(client: Any, job_id: str, attempt: str) -> LedgerState:
    """What the scheduler knows of a shipped attempt whose process died."""
    state = LedgerState()
    if not connected(client):  # (asked, it would wait out Dask's connect timeout, 30 s, and
        return state  # hold back the 20 s SchedulerWatch gives it: the job ends meanwhile)
    try:
        entry = client.sync(
            client.scheduler.get_metadata,
            keys=relay_key(job_id, attempt),
            default=None,
            callback_timeout=ASK_S,  # (one lost as it is asked: not 30 s either)
        )
    except Exception:  # noqa: BLE001 - a scheduler that lost it knows nothing: run it again
        logger.debug("reading the relay ledger of %s failed", attempt, exc_info=True)
        entry = None
    if not entry:
        return state
    state.exists = True
    running = entry.get("running")
    if running:
        state.running = (int(running[0]), int(running[1]))
        state.running_start, state.running_worker = running[2], str(running[3])
        state.timed_out = entry.get("timed_out") == running[0]
        state.error = str(entry.get("error") or "") if state.timed_out else ""
    return state


def forget_job(client: Any, job_id: str) -> None:
    """Drop a finished job's entries from the scheduler's metadata."""
    try:
        client.set_metadata([RELAY_ROOT, job_id], {})
    except Exception:  # noqa: BLE001 - housekeeping only
        logger.debug("clearing the job's metadata failed", exc_info=True)


def choose(handle: Any, wanted: bool | None, probes: list[Path]) -> SharedDisk:
    """The transport of a job on ``handle``'s cluster.

    ``wanted``: the user's ``--shared-filesystem`` (True), ``--no-shared-filesystem`` (False),
    or None to find out: an embedded cluster shares this machine's disk; on another cluster
    the workers are asked to read ``probes`` (files the driver just wrote or will use).
    """
    if handle.embedded:  # our own LocalCluster shares our disk
        return Shipped() if wanted is False else SharedDisk()
    probe.check_daskscore(handle.client)
    if wanted is None:
        wanted = probe.workers_share_disk(handle.client, probes)
    return SharedDisk() if wanted else Shipped()
