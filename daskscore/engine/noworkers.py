"""A cluster without a worker under a job or a ``score()`` session: said, and, where no worker
can come back, the end of the job.

A job's tasks wait on the scheduler for a worker, without an error, for as long as it has none.
A scheduler reached by its address may be waiting for an autoscaler, so the job only says so
(in the job log, and on the terminal), after :data:`NOTE_S` and again after 1, 2, 4... minutes.
A cluster object of this process (``client.cluster``: a ``LocalCluster``) tells more: once it
has been without a worker for :data:`GIVE_UP_S` and can start none again
(:func:`daskscore.cluster.nannies.cannot_start_workers`: closed, scaled to 0, its nannies
closed, not adapting) for as long, the job ends with
:class:`~daskscore.errors.NoWorkersLeft`, keeping what it did, as when its scheduler goes away.
A ``score()`` session cannot end a computation the user started: it says so in its logger
(:class:`SessionWatch`), once as an error where no worker can come back.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from daskscore.cluster.nannies import cannot_start_workers, keep_nannies
from daskscore.engine.connection import connected
from daskscore.errors import NoWorkersLeft

logger = logging.getLogger("daskscore")

#: Seconds without a worker before the first warning.
NOTE_S = 10.0
#: Seconds without a worker, and unable to start one, before a job on a cluster object of this
#: process ends (a caller may scale it up by hand meanwhile).
GIVE_UP_S = 30.0
#: ... both that many seconds instead, from this environment variable (a test hook).
NO_WORKER_ENV = "DASKSCORE_NO_WORKER_S"
#: How often a session's watch looks at its cluster.
SESSION_POLL_S = 2.0


class WorkerWatch:
    """The workers of ``client``'s cluster, counted at each :meth:`check` (the dispatcher's
    recount, or the wait for a first worker)."""

    def __init__(
        self,
        client: Any,
        notify: Callable[[str], None],
        kept: Callable[[], str] | None = None,
        output: str = "",
        tasks: str = "the job's tasks",
    ) -> None:
        #: ``kept()``: what was committed, in words; ``output``: where (for the error only)
        self.client, self.notify, self.kept, self.output = client, notify, kept, output
        self.tasks = tasks
        #: shows a short text in the job's progress (None: takes it away)
        self.show: Callable[[str | None], None] = lambda text: None
        limit = os.environ.get(NO_WORKER_ENV)
        self.note_s = float(limit) if limit else NOTE_S
        self.give_up_s = float(limit) if limit else GIVE_UP_S
        #: since when the cluster has had no worker; since when it can start none
        self.since: float | None = None
        self.dead_since: float | None = None
        self.note_at = self.note_s
        self.counted = float("-inf")  # (when it last asked the scheduler)

    def check(self, now: float | None = None, count: int | None = None) -> None:
        """Count the workers (``count``: already counted); say so, or raise
        :class:`NoWorkersLeft`, as the module says."""
        now = time.monotonic() if now is None else now
        if count is None:
            if now - self.counted < 1.0:  # (also called as each lost task is handled)
                return
            if not connected(self.client):
                return  # (no scheduler: a question would wait out the connect timeout)
            self.counted = now
            try:
                count = len(self.client.scheduler_info(n_workers=-1)["workers"])
            except Exception:  # noqa: BLE001 - a busy scheduler: look again next time
                logger.debug("counting the workers failed", exc_info=True)
                return
        if count:
            if self.since is not None and self.note_at > self.note_s:  # (it was said)
                logger.info("the cluster has %d worker(s) again", count)
            self.since = self.dead_since = None
            self.note_at = self.note_s
            self.show(None)
            return
        self.since = now if self.since is None else self.since
        why = cannot_start_workers(self.client)
        self.dead_since = None if why is None else (self.dead_since or now)
        waited = now - self.since
        if waited >= self.note_s:
            self.show(f"no worker for {waited:.0f}s")
        if waited >= self.note_at:
            text = gone_text(waited, why, self.tasks)
            logger.warning("%s", text)
            self.notify(text)
            self.note_at = max(60.0, 2 * self.note_at)
        if why and waited >= self.give_up_s and now - self.dead_since >= self.give_up_s:
            error = NoWorkersLeft(self.error(why, waited))
            logger.error("%s", error)  # (the job log says why the job stopped)
            raise error

    def error(self, why: str, waited: float) -> str:
        kept = self.kept() if self.kept else "nothing"
        return (
            f"the Dask cluster has had no worker for {waited:.0f} s and can start none: {why}. "
            f"The job cannot go on. What was committed ({kept}) is kept in {self.output}; "
            "once the cluster has workers again (cluster.scale(n), or a new cluster), the same "
            "call with resume=True (the command: --resume) finishes the job."
        )


def gone_text(waited: float, why: str | None, tasks: str = "the job's tasks") -> str:
    """The warning for a cluster that has had no worker for ``waited`` seconds."""
    text = f"the cluster has had no worker for {waited:.0f} s: {tasks} wait for one"
    if why:
        return f"{text}, and none will come back ({why})"
    return f"{text} (a cluster that scales up starts some; Ctrl-C stops)"


class SessionWatch:
    """The ``score()`` sessions open on one client: its cluster's nannies kept
    (:func:`~daskscore.cluster.nannies.keep_nannies`), and a look at its workers every
    :data:`SESSION_POLL_S` on a thread of its own.  Whenever the client waits on results (it
    holds futures) and the cluster has had no worker for a while, a warning in the session's
    logger, repeated at growing intervals; where no worker can come back, an error, once.

    It lasts while a session is open: until the last one closes, or the client does (a frame of
    ``score()`` whose session is never closed keeps its script installed that long, and tasks
    of it persisted may run after the frame itself is gone)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.sessions = 0
        self.stopped = threading.Event()
        limit = os.environ.get(NO_WORKER_ENV)
        tasks = "score(): the computation's tasks"
        self.watch = WorkerWatch(client, lambda text: None, tasks=tasks)
        self.said_dead = False
        self.release = keep_nannies(client)
        self.poll = min(SESSION_POLL_S, float(limit) / 2) if limit else SESSION_POLL_S
        self.thread = threading.Thread(target=self._loop, name="daskscore-workers", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stopped.wait(self.poll):
            if getattr(self.client, "status", "running") in ("closing", "closed"):
                self.close()
                return
            if not getattr(self.client, "futures", None):  # (nothing computing: no concern)
                self.watch.since = self.watch.dead_since = None
                continue
            try:
                self.watch.check()
                self.said_dead = self.said_dead and self.watch.since is not None
            except NoWorkersLeft as exc:
                if not self.said_dead:
                    self.said_dead = True
                    logger.error(
                        "score(): %s: what this session computes now waits for ever; scale the "
                        "cluster up, or interrupt the computation.",
                        str(exc).split(". The job", 1)[0],
                    )
            except Exception:  # noqa: BLE001 - only a note depends on it
                logger.debug("watching the session's workers failed", exc_info=True)

    def close(self) -> None:
        with _LOCK:
            self.stopped.set()
            if _WATCHES.get(id(self.client)) is self:
                del _WATCHES[id(self.client)]
        self.release()


#: the watch of each client with sessions open, by ``id``
_WATCHES: dict[int, SessionWatch] = {}
_LOCK = threading.Lock()


def watch_session(client: Any) -> Callable[[], None]:
    """Count a session open on ``client`` in its :class:`SessionWatch` (started with the
    first); the function returned counts it closed (the last one stops the watch)."""
    with _LOCK:
        watch = _WATCHES.get(id(client))
        if watch is None:
            watch = _WATCHES[id(client)] = SessionWatch(client)
        watch.sessions += 1
    left = threading.Event()

    def leave() -> None:
        with _LOCK:
            if left.is_set():
                return
            left.set()
            watch.sessions -= 1
            last = watch.sessions == 0
            if last and _WATCHES.get(id(client)) is watch:  # (a session opened next: a new one)
                del _WATCHES[id(client)]
        if last:
            watch.close()

    return leave
