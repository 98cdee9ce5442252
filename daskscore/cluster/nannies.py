"""A caller's cluster object in this process (``client.cluster``: a ``LocalCluster``, any
``SpecCluster``) while a job or a ``score()`` session runs on it: its nannies kept, and whether
it can still start a worker.

A SpecCluster closes the nanny of a worker that is still missing from the scheduler
``distributed.deploy.lost-worker-timeout`` (15 s) after it was removed.  A ``run()`` that kills
its process again and again leaves a worker caught restarting at that instant; once every
nanny was closed so, the job waited on a cluster without workers, for ever.  The embedded
cluster sets that timeout for its whole life (:data:`daskscore.cluster.local.KEEP_NANNIES`); a
caller's cluster outlives the job, so only the removals of workers whose nanny is running are
held while a job is open (:func:`keep_nannies`), and the cluster is left as it was after.
Scaling down is not affected: ``scale()`` closes the workers it removes itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import dask

from daskscore import _compat

logger = logging.getLogger("daskscore")

#: The timeout a removal of a worker whose nanny runs is handled with, while a job holds it.
HOLD = {"distributed.deploy.lost-worker-timeout": "3650d"}

#: The clusters held, by ``id``: [the jobs holding it, what undoes the hold].
_HELD: dict[int, list[Any]] = {}
_LOCK = threading.Lock()


def local_cluster_of(client: Any) -> Any:
    """``client``'s cluster object if it is a SpecCluster of this process, else None (a
    scheduler reached by its address, a cluster of another kind)."""
    cluster = getattr(client, "cluster", None)
    try:
        from distributed.deploy.spec import SpecCluster
    except ImportError:  # pragma: no cover - distributed always has it
        return None
    return cluster if isinstance(cluster, SpecCluster) else None


def keep_nannies(client: Any) -> Callable[[], None]:
    """Keep ``client``'s cluster (if it is in this process) from closing the nanny of a worker
    that died, until the function returned is called (jobs and sessions at once: until the
    last one calls it).  A worker without a running nanny (a job queue's, one being closed) is
    let go as Dask would."""
    cluster = local_cluster_of(client)
    if cluster is None:
        return lambda: None
    key = id(cluster)
    with _LOCK:
        if key in _HELD:
            _HELD[key][0] += 1
        else:
            undo = _compat.on_worker_removal(cluster, _around(cluster))
            if undo is None:
                return lambda: None
            _HELD[key] = [1, undo]
    done = threading.Event()

    def release() -> None:
        with _LOCK:
            if done.is_set():
                return
            done.set()
            held = _HELD[key]
            held[0] -= 1
            if held[0] == 0:
                del _HELD[key]
                held[1]()

    return release


def _around(cluster: Any) -> Callable[..., Any]:
    def update(original: Callable[..., Any], op: str, msg: Any) -> Any:
        if op == "remove" and _restarts_itself(cluster, msg):
            with dask.config.set(HOLD):  # (read as the close is scheduled, on this thread)
                return original(op, msg)
        return original(op, msg)

    return update


def _restarts_itself(cluster: Any, address: Any) -> bool:
    """Whether the worker at ``address`` has a running nanny of ``cluster``'s, which starts it
    again on its own."""
    try:
        from distributed import Nanny
        from distributed.core import Status

        name = cluster.scheduler_info["workers"][address]["name"]
        nanny = cluster.workers.get(name)
        return isinstance(nanny, Nanny) and nanny.status == Status.running
    except Exception:  # noqa: BLE001 - not known: Dask's own timeout
        return False


def cannot_start_workers(client: Any) -> str | None:
    """Why ``client``'s cluster can start no worker again, in words, if it is a cluster object
    of this process that cannot; None if it can, or if that cannot be known (a scheduler reached
    by its address may be waiting for an autoscaler)."""
    cluster = local_cluster_of(client)
    if cluster is None:
        return None
    try:
        from distributed.core import Status

        ended = (Status.closing, Status.closed, Status.failed)
        if cluster.status in ended:
            return f"{type(cluster).__name__} {cluster.name} was closed"
        if _compat.adapting(cluster) is not False:  # (it may start some as work waits)
            return None
        if any(getattr(w, "status", Status.running) not in ended for w in cluster.workers.values()):
            return None  # (a nanny that runs starts its worker again)
    except Exception:  # noqa: BLE001 - not known: say nothing
        logger.debug("looking at the cluster's workers failed", exc_info=True)
        return None
    what = f"{type(cluster).__name__} {cluster.name}, in this process,"
    if not cluster.worker_spec:
        return f"{what} was scaled to 0 workers"
    return (
        f"{what} has closed the nannies of its {len(cluster.worker_spec)} worker(s) (Dask closes "
        "the nanny of a worker still missing distributed.deploy.lost-worker-timeout after it "
        "was lost)"
    )


#: What Dask's nannies put into this process's environment before they start a worker (and
#: leave there): the ``distributed.nanny.pre-spawn-environ`` variables, and these.
NANNY_SET_VARIABLES = ("PYTHONHASHSEED", "__DASK_PARENT_PID")


@contextlib.contextmanager
def environment_kept() -> Iterator[None]:
    """Around an embedded cluster's life: this process's environment as it was, once it is
    closed.  Each nanny sets ``OMP_NUM_THREADS=1`` and its kin in the process that runs it
    before it starts a worker, and never takes them back: after a job in a notebook, torch and
    numpy imported there ran on one thread.  Also drops what Dask keeps of the closed nannies
    (:func:`daskscore._compat.forget_closed_nannies`)."""
    names = {*dask.config.get("distributed.nanny.pre-spawn-environ", {}), *NANNY_SET_VARIABLES}
    before = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        _compat.forget_closed_nannies()
