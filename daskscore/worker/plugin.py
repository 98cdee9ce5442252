"""The worker plugin: installs a scoring job in every worker process, once.

Modelled on ``distributed.diagnostics.plugin.UploadFile``: :class:`ScoringPlugin` carries plain
data (a :class:`~daskscore.protocol.WorkerJob`) from the driver, and its ``setup`` installs the
job in the worker as a :class:`~daskscore.worker.runtime.JobRuntime`, in the worker's task
thread (the thread ``run()`` will use), so that ``init()`` runs once per process before any
``run()``.  Workers that join the cluster later get it too.  A job that asks for worker
``resources`` installs only on workers that offer them.  ``teardown`` uninstalls it (the
script's ``shutdown()`` runs).

A job with a ``warm_key`` (on a cluster that outlives the job) is *parked* instead at its
teardown: the script stays initialised in the process, and the next job with the same key
takes it over without ``init()`` (:meth:`JobRuntime.adopt`).  Installing anything else first
uninstalls what is parked (its ``shutdown()`` runs), and so does the worker's closing
(:class:`WarmKeeper`'s teardown).  On the warm cluster a process that must install another
script is replaced by a fresh one instead, where it can be (:func:`retire`).  A job whose
driver is gone never unregisters its plugin: the next job's driver removes it
(:func:`claim_plugin`, :func:`remove_plugins`).

Tasks find the installed job with :func:`get_runtime`; the driver asks every worker with
``Client.run`` for :func:`init_report`, :func:`cancel_job` and :func:`drain_job`.  When a
worker process died during ``init()``, the driver takes the plugin off the scheduler's list
(:func:`forget_plugin`) before its nanny restarts the worker into the same death, and off the
workers after (:func:`remove_plugin`).
"""

from __future__ import annotations

import asyncio
import gc
import os
import re
import time
import traceback
from dataclasses import replace
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from daskscore import _compat
from daskscore.protocol import WorkerJob
from daskscore.worker.deaths import end_leftovers, lead_group
from daskscore.worker.handoff import drain_logs
from daskscore.worker.hosting import interrupt_script_on_sigint, ordinary_process
from daskscore.worker.localize import fetch_bundles, offers
from daskscore.worker.retire import RETIRE
from daskscore.worker.runtime import JobRuntime

__all__ = [
    "JobRuntime",
    "ScoringPlugin",
    "WarmKeeper",
    "cancel_job",
    "claim_plugin",
    "drain_job",
    "forget_plugin",
    "get_runtime",
    "init_report",
    "remove_plugin",
    "remove_plugins",
    "retire",
    "warm_report",
]

#: the jobs installed in this process, by job id
_RUNTIMES: dict[str, JobRuntime] = {}
#: the workers of this process that use each installed job (an in-process cluster runs
#: several in one process: the script is installed once for them all, as Azure does per
#: process, and uninstalled with the last)
_USERS: dict[str, set[str]] = {}
#: scripts kept initialised after their job, by ``WorkerJob.warm_key``: no job uses them now
_PARKED: dict[str, JobRuntime] = {}


def get_runtime(job_id: str) -> JobRuntime:
    """The job installed in this worker process by :class:`ScoringPlugin`."""
    try:
        return _RUNTIMES[job_id]
    except KeyError:
        raise RuntimeError(
            f"daskscore job {job_id} is not installed in this process: its tasks must run on "
            "the cluster whose client installed it, while it is installed. For a DataFrame "
            "from daskscore.score(..., client=c), compute with c.compute(ddf), or inside "
            "`with c.as_current():`; and before its session is closed (session.close(), or "
            "the end of its `with open_session(...)` block), which uninstalls the script."
        ) from None


def is_installed(job_id: str) -> bool:
    """Whether ``job_id`` is installed in this process."""
    return job_id in _RUNTIMES


def worker_label(name: Any) -> str:
    """A file-name-safe label for a worker: ``worker-0`` for LocalCluster's, else its address."""
    text = str(name)
    if text.isdigit():
        return f"worker-{text}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text.replace("tcp://", "")).strip("_") or "worker"


class ScoringPlugin(WorkerPlugin):
    """Installs a scoring job in every worker: ``init()`` once per worker process.

    Parameters
    ----------
    job : WorkerJob
        The job; plain data, sent once to every worker (and to workers that join later).
    """

    idempotent = False

    def __init__(self, job: WorkerJob) -> None:
        self.job = job
        self.name = f"daskscore-{job.job_id}"

    async def setup(self, worker: Any) -> None:
        async with RETIRE.setting_up(self.job.job_id):  # (not in a process being replaced)
            await self._setup(worker)

    async def _setup(self, worker: Any) -> None:
        job = self.job
        if job.code_bundle is not None or job.model_bundle is not None:
            # the worker keeps this plugin until the job ends: without the packed code and
            # model (a model may be gigabytes), which the install unpacks once into its cache
            self.job = replace(job, code_bundle=None, model_bundle=None)
        users = _USERS.setdefault(job.job_id, set())
        users.add(worker.address)
        if len(users) > 1 and job.job_id in _RUNTIMES:
            return  # (another worker of this process installed it: one script per process)
        if _own_process(worker):  # before any script code: what it starts ends with it
            lead_group()
            ordinary_process()
            interrupt_script_on_sigint(_script_thread)
        label = worker_label(worker.name)
        if job.resources and not offers(worker.state.total_resources, job.resources):
            _RUNTIMES[job.job_id] = JobRuntime(job, label, eligible=False)
            return
        device = None
        if job.gpu_ids and str(worker.name).isdigit():  # an embedded cluster's worker number
            device = job.gpu_ids[int(str(worker.name)) % len(job.gpu_ids)]
        parked = _PARKED.pop(job.warm_key, None) if job.warm_key else None
        if parked is not None:
            _RUNTIMES[job.job_id] = parked
            try:
                await _in_task_thread(worker, parked.adopt, job)
                return
            except Exception:  # noqa: BLE001 - could not take it over: install afresh
                del _RUNTIMES[job.job_id]
                await _in_task_thread(worker, parked.uninstall)
        await release_parked(worker)
        if job.shipped:  # the code and model it has not got yet, from the scheduler
            job = await fetch_bundles(job, worker.local_directory, worker.scheduler)
        # a worker with a nanny has its timeouts enforced from outside, too (see deadline.py)
        nanny = bool(getattr(worker, "nanny", None))
        state = JobRuntime(job, label, worker.local_directory, device, nanny=nanny)
        _RUNTIMES[job.job_id] = state
        RETIRE.used = True
        await _in_task_thread(worker, state.install)

    async def teardown(self, worker: Any) -> None:
        users = _USERS.get(self.job.job_id, set())
        users.discard(worker.address)
        if users:
            return  # (another worker of this process still uses it)
        _USERS.pop(self.job.job_id, None)
        state = _RUNTIMES.pop(self.job.job_id, None)
        if state is None:
            return
        key = self.job.warm_key
        keep = (
            key is not None
            and key not in _PARKED
            and state.eligible
            and state.module is not None
            and state.init_error is None
            and not _closing(worker)
            # (a worker in the caller's own process, a notebook's processes=False cluster: the
            # script's streams and environment would stay on in that process, its prints gone)
            and _own_process(worker)
        )
        if keep:
            await _in_task_thread(worker, state.park)
            _PARKED[key] = state  # type: ignore[index]
        else:
            await _uninstall(worker, state)


class WarmKeeper(WorkerPlugin):
    """Registered once on a cluster whose jobs keep their script initialised: when the worker
    closes (or the plugin is removed), what is parked is uninstalled (``shutdown()`` runs)."""

    idempotent = True
    name = "daskscore-warm"

    async def teardown(self, worker: Any) -> None:
        await release_parked(worker)


async def retire(key: str | None, job_id: str, dask_worker: Any = None) -> int | None:
    """Run on every worker of the warm cluster (``Client.run``) before job ``job_id``, of warm
    key ``key``, installs: when this worker process is to be replaced by a fresh one — its
    nanny started it, a script was installed in it, none is live (see
    :meth:`Retirement.may_retire`) and none kept here has ``key`` — its kept scripts are
    uninstalled (their ``shutdown()`` runs) and its pid returned: the driver then has its nanny
    replace it (:mod:`daskscore.worker.retire`).  None where the job installs in it as it is."""
    live = any(rt.eligible for rt in _RUNTIMES.values())
    if key in _PARKED or not _own_process(dask_worker) or not RETIRE.may_retire(live):
        return None
    RETIRE.retire_for(job_id)
    await release_parked(dask_worker)
    return os.getpid()


async def release_parked(worker: Any) -> None:
    """Uninstall every script parked in this process (their ``shutdown()`` runs)."""
    while _PARKED:
        _, state = _PARKED.popitem()
        await _uninstall(worker, state)


async def _uninstall(worker: Any, state: JobRuntime) -> None:
    """Uninstall ``state`` (its ``shutdown()`` runs); once no script is installed or parked in
    this process, the processes the scripts started and left running (a server ``init()``
    started, say, or one a shell of ``run()`` put in the background, whose parent is gone) are
    ended: they would outlive the job, and keep the driver's output pipes open."""
    await _in_task_thread(worker, state.uninstall)
    if not _RUNTIMES and not _PARKED and _own_process(worker):
        await _in_task_thread(worker, _end_leftovers)


def _end_leftovers() -> None:
    """End what the uninstalled scripts left running (:func:`end_leftovers`), once what they
    held is collected: a ``multiprocessing.Pool`` a script kept in a global is terminated by its
    own finalizer then (its workers, killed from outside while it lived, were started again
    by the pool's own thread)."""
    gc.collect()
    end_leftovers()


def _script_thread() -> int | None:
    """The thread running a ``run()`` call in this process now, if one is."""
    for runtime in list(_RUNTIMES.values()):
        if runtime.in_flight is not None and runtime.run_thread is not None:
            return runtime.run_thread
    return None


def _own_process(worker: Any) -> bool:
    """Whether ``worker`` has its process to itself: a nanny started it.  A worker without
    one may be a notebook's kernel (``processes=False``) or ``dask worker --no-nanny`` in a
    terminal, whose process group and other processes are not the script's to change."""
    return bool(getattr(worker, "nanny", None))


async def _in_task_thread(worker: Any, fn: Any, *args: Any) -> None:
    """``fn(*args)`` in the worker's task thread (where init() and run() run), or here when
    that is shut down already (the worker is closing)."""
    executor = worker.executors.get("default")
    try:
        done = asyncio.get_running_loop().run_in_executor(executor, fn, *args)
    except RuntimeError:  # the executor is already shut down: the worker is closing
        fn(*args)
        return
    await done


def _closing(worker: Any) -> bool:
    """Whether ``worker`` is closing (its plugins are being removed with it)."""
    return getattr(getattr(worker, "status", None), "name", "").startswith(("closing", "closed"))


#: ``[OWNERS, plugin name]`` in the scheduler's metadata: the id of the client that registered
#: a job's plugin, so that the next job can tell the plugins whose driver is gone
OWNERS = "daskscore-plugin-owners"
#: ... and since when (``time.time()``) each one's client has been found gone
ABSENT = "daskscore-plugin-absent"


def claim_plugin(
    name: str, client_id: str, grace: float = 30.0, dask_scheduler: Any = None
) -> list[str]:
    """Note that client ``client_id`` registers job plugin ``name`` (run with
    ``Client.run_on_scheduler``, before it does); take off the scheduler's list the job plugins
    whose client has been gone ``grace`` seconds or more (a driver killed mid-job never
    unregisters its plugin), and return their names: the caller removes them from the workers
    (:func:`remove_plugins`).  A plugin whose client is connected is its job's, running or not,
    and stays; so does one whose client was found gone less than ``grace`` seconds ago: a
    client that lost its connection for a moment comes back (one that does not gives up on
    its job before then, see :mod:`daskscore.engine.connection`)."""
    owners = dask_scheduler.get_metadata(keys=[OWNERS], default=None)
    if not isinstance(owners, dict):
        owners = {}
        dask_scheduler.set_metadata(keys=[OWNERS], value=owners)
    absent = dask_scheduler.get_metadata(keys=[ABSENT], default=None)
    if not isinstance(absent, dict):
        absent = {}
        dask_scheduler.set_metadata(keys=[ABSENT], value=absent)
    listed, now = dask_scheduler.worker_plugins, time.time()
    gone = []
    for plugin, owner in owners.items():
        if plugin not in listed or owner in dask_scheduler.clients:
            absent.pop(plugin, None)
        elif now - absent.setdefault(plugin, _left_at(dask_scheduler, owner) or now) >= grace:
            gone.append(plugin)
    for stale in [n for n in owners if n not in listed or n in gone]:
        del owners[stale]
        absent.pop(stale, None)
    for orphan in gone:
        del listed[orphan]
    owners[name] = client_id
    return gone


def _left_at(dask_scheduler: Any, client_id: str) -> float | None:
    """When client ``client_id`` left the scheduler, as its own event log says (None: not
    known, the time it is first found gone counts)."""
    try:
        for stamp, msg in reversed(dask_scheduler.get_events(client_id)):
            if isinstance(msg, dict) and msg.get("action") == "remove-client":
                return float(stamp)
    except Exception:  # noqa: BLE001 - (a scheduler without that log)
        pass
    return None


async def remove_plugins(names: list[str], dask_worker: Any = None) -> None:
    """Remove worker plugins ``names`` from this worker, those it has (run with
    ``Client.run``): their ``teardown`` runs — a job's script is uninstalled, or parked for the
    next job with its ``warm_key``.  Their tasks still running here stop after their current
    mini-batch: no driver waits for them."""
    for name in names:
        plugin = dask_worker.plugins.get(name)
        if isinstance(plugin, ScoringPlugin):
            cancel_job(plugin.job.job_id)
        await remove_plugin(name, dask_worker)


def forget_plugin(name: str, dask_scheduler: Any = None) -> bool:
    """Take worker plugin ``name`` off the scheduler's list (run with
    ``Client.run_on_scheduler``): workers that start from now on do not install it; those
    that have it keep it (see :func:`remove_plugin`).  Unlike ``unregister_worker_plugin`` it
    waits on no worker: one whose process just died may be listed still, and connecting to it
    would take ``distributed.comm.timeouts.connect``."""
    return dask_scheduler.worker_plugins.pop(name, None) is not None


async def remove_plugin(name: str, dask_worker: Any = None) -> None:
    """Remove worker plugin ``name`` from this worker, if it has it (run with ``Client.run``;
    its ``teardown`` runs)."""
    if name in dask_worker.plugins:
        await dask_worker.plugin_remove(name)


def warm_report() -> dict[str, Any]:
    """The scripts kept initialised in this process (run with ``Client.run``): by
    ``warm_key``, the script and whether a job uses it now."""
    found = {key: {"script": rt.job.script, "in_use": False} for key, rt in _PARKED.items()}
    for rt in _RUNTIMES.values():
        if rt.reused or rt.job.warm_key:
            found[str(rt.job.warm_key)] = {"script": rt.job.script, "in_use": True}
    return found


def init_report(job_id: str) -> dict[str, Any]:
    """This worker's init() outcome (run with ``Client.run``)."""
    state = _RUNTIMES.get(job_id)
    if state is None:
        return {"installed": False}
    return {
        "installed": True,
        "eligible": state.eligible,
        "worker": state.worker_name,
        "error": state.init_error,
        "init_s": state.init_s,
        "reused": state.reused,
    }


def installing(job_id: str) -> dict[str, Any] | None:
    """While this worker installs ``job_id``'s script (run with ``Client.run``): its name, the
    stage (``preparing``, ``import``, ``init()``), for how many seconds the install has run,
    and where its thread is now: its frames in the code folder, outermost first, as
    ``(file, line, function, source)`` (its innermost frame when none is).  None when it is
    not installing that job."""
    state = _RUNTIMES.get(job_id)
    mark = state.installing if state is not None else None
    if state is None or mark is None:
        return None
    frame = _compat.thread_frame(mark.thread)
    stack = traceback.extract_stack(frame) if frame is not None else []
    prefix = state.job.code.rstrip(os.sep) + os.sep
    mine = [f for f in stack if f.filename.startswith(prefix)] or stack[-1:]
    return {
        "worker": state.worker_name,
        "stage": mark.stage_now,
        "seconds": time.monotonic() - mark.started,
        "where": [(f.filename, f.lineno, f.name, (f.line or "").strip()) for f in mine],
    }


def cancel_job(job_id: str) -> bool:
    """Ask this worker's tasks of ``job_id`` to stop after their current mini-batch."""
    state = _RUNTIMES.get(job_id)
    if state is not None:
        state.cancelled = True
    return state is not None


def drain_job(job_id: str) -> dict[str, dict[str, bytes]]:
    """A shipped job's files on this worker (run with ``Client.run`` at the end of the job):
    ``logs`` — what its log files gained since the last drain, named relative to ``logs/`` —
    and ``output`` — the files the script wrote into ``AZUREML_BI_OUTPUT_PATH`` that no task
    took home (files it holds open, or wrote after its last task)."""
    state = _RUNTIMES.get(job_id)
    if (
        state is None
        or not state.handoff.local_folders
        or not state.eligible
        or not state.localized
    ):
        return {}  # nothing installed here (yet): its folders are not this worker's own
    return {"logs": drain_logs(state), "output": state.handoff.outputs_left(state)}
