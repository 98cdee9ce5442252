"""Fresh worker processes for a new deployment on the warm cluster, driver side.

A warm worker keeps a script initialised for the next job with its key; one that must install
another script (another deployment, a changed one) used to uninstall the old one in place, and
whatever that script set in the process beyond what daskscore undoes — ``sys.path`` entries of
its own, warnings made errors, ``gc.disable()``, loggers' levels, a ``logging.basicConfig`` bound
to its closed log, a closed ``sys.__stderr__``, threads — changed the next deployment's results.
So before a job installs on the warm cluster, :func:`replace_used_workers` asks every worker
(:func:`daskscore.worker.plugin.retire`): a process in which a script was installed, whose
scripts none is live (no job uses one, no install is under way there — a ``score()`` session
left open, a job running on another client, a killed driver's job in its 30 s of grace) and
which keeps none with the job's key, uninstalls its scripts (their ``shutdown()`` runs) and
says so; its nanny then replaces it (``Client.restart_workers``), and the job installs on the
fresh process, as on a new cluster.  A process with a live script stays, and the job installs
beside it, in place, as before (see :mod:`daskscore.worker.residue` for what is then undone).

A replaced process ends as a worker that closed, not as one that died: no job is charged with
it (none had a live script there), and the job's own install leaves its pid out of the deaths
it looks at.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from daskscore.errors import ClusterLost
from daskscore.protocol import WorkerJob
from daskscore.worker.deaths import note_replaced
from daskscore.worker.plugin import retire

logger = logging.getLogger("daskscore")

#: Seconds the replaced workers have to close and come back.
RESTART_S = 60.0

T = TypeVar("T")


def replace_used_workers(
    client: Any, job: WorkerJob, ask: Callable[[Callable[[], T]], T]
) -> set[int]:
    """Replace by fresh processes the workers of ``client`` that ``job`` must not install in
    as they are (see the module's docstring); return the pids of the processes replaced.
    ``ask``: how the job asks its cluster (a scheduler lost meanwhile ends it with
    :class:`~daskscore.errors.ClusterLost`)."""
    try:
        found = ask(lambda: client.run(retire, job.warm_key, job.job_id, on_error="ignore"))
    except ClusterLost:
        raise
    except Exception:  # noqa: BLE001 - no daskscore there: the job installs in place
        logger.debug("asking the workers whether to replace their processes failed", exc_info=True)
        return set()
    used = {address: int(pid) for address, pid in found.items() if isinstance(pid, int)}
    if not used:
        return set()
    pids = set(used.values())
    logger.info(
        "replacing worker process(es) %s by fresh ones before this deployment installs (another "
        "script was initialised there; its shutdown() ran)",
        ", ".join(map(str, sorted(pids))),
    )
    try:
        client.run(note_replaced, sorted(pids), nanny=True, on_error="ignore")
    except Exception:  # noqa: BLE001 - another job's install may take the end for a death
        logger.debug("noting the replaced processes on the nannies failed", exc_info=True)
    try:
        done = ask(lambda: client.restart_workers(list(used), RESTART_S, raise_for_error=False))
    except ClusterLost:
        raise
    except Exception:  # noqa: BLE001 - the job installs where the processes are
        logger.warning("replacing worker processes by fresh ones failed", exc_info=True)
        return pids
    failed = {a: s for a, s in (done or {}).items() if s != "OK"}
    if failed:
        logger.warning("worker processes not replaced by fresh ones: %s", failed)
    return pids
