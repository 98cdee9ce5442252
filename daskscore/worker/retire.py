"""A warm worker process that a new deployment replaces by a fresh one, worker side.

A warm cluster's worker runs deployment after deployment in one process, and what a script set
in that process besides what daskscore undoes (``warnings.simplefilter("error")``,
``gc.disable()``, a logger's level, a thread it started, ``sys.__stderr__`` closed) outlived its
uninstall and changed the next deployment's results.  So before a job installs on the warm
cluster, the driver asks every worker (:func:`daskscore.worker.plugin.retire`) whether its
process must be replaced: one in which a script was installed before (:attr:`Retirement.used`),
none of whose scripts is live now (no job uses one, no install is under way), and which keeps
no script initialised with the job's warm key.  Such a process uninstalls its scripts (their
``shutdown()`` runs) and its nanny then starts a fresh one, where the job installs.

Between that answer and the process's end, an install of another job (a job started at the same
moment on another client) waits here (:meth:`Retirement.setting_up`) rather than install a script
in a process about to end: it ends with the process, and the fresh process installs that job's
script as it joins, as a worker that joins mid-job does.  A process that is still there after
:data:`RETIRE_WAIT_S` (its restart failed) lets such installs go on in it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

#: Seconds an install of another job waits for a process being replaced to end.
RETIRE_WAIT_S = 60.0
#: How often it looks.
POLL_S = 0.05


class Retirement:
    """This worker process's part in its replacement (one per process: :data:`RETIRE`)."""

    def __init__(self) -> None:
        #: a script was installed in this process (it is no longer as it started)
        self.used = False
        #: the installs under way in this process (``ScoringPlugin.setup`` calls)
        self.setups = 0
        #: the job whose install replaces this process, and since when (``time.monotonic()``)
        self.by: str | None = None
        self.since = 0.0

    def may_retire(self, live: bool) -> bool:
        """Whether this process may be replaced now: a script was installed in it, no install
        is under way, ``live`` is False (no job uses a script here) and no other job's install
        replaces it already."""
        return self.used and not live and not self.setups and not self.retiring()

    def retire_for(self, job_id: str) -> None:
        """This process is to be replaced before ``job_id`` installs."""
        self.by, self.since = job_id, time.monotonic()

    def retiring(self) -> bool:
        """Whether this process is being replaced (for at most :data:`RETIRE_WAIT_S`)."""
        return self.by is not None and time.monotonic() - self.since < RETIRE_WAIT_S

    @asynccontextmanager
    async def setting_up(self, job_id: str) -> AsyncIterator[None]:
        """Held by an install: another job's waits while this process is being replaced."""
        while self.retiring() and self.by != job_id:
            await asyncio.sleep(POLL_S)
        if self.by == job_id or not self.retiring():
            self.by = None  # (its restart failed: the job installs here)
        self.setups += 1
        try:
            yield
        finally:
            self.setups -= 1


#: This process's part in its replacement.
RETIRE = Retirement()
