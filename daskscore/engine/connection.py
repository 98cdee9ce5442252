"""Whether the driver's client still has its scheduler: a job whose scheduler went away (it
stopped, was killed, the network failed, a warm cluster was stopped mid-job) would wait for
ever on futures that no scheduler holds; :class:`SchedulerWatch` ends it instead."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

from daskscore.errors import ClusterLost, DaskScoreError, UsageError

logger = logging.getLogger("daskscore")

#: A client that has not been connected to its scheduler for this long ends the job
#: (:class:`~daskscore.errors.ClusterLost`): the tasks, and the results they hold, are gone with
#: the scheduler.
LOST_S = 20.0
#: ... that many seconds instead, from this environment variable (a test hook).
LOST_ENV = "DASKSCORE_SCHEDULER_LOST_S"
#: Seconds between the cluster's checks while a finished task's result is fetched.
RESULT_CHECK_S = 5.0
#: Seconds a question to the scheduler about a lost task may take (it went away meanwhile).
ASK_S = 5.0
#: Seconds a client is given to notice that its scheduler went away, once a question to the
#: cluster failed (the question's own connection may close first).
NOTICE_S = 1.0
#: How often a client without its scheduler is looked at while a question waits for it.
POLL_S = 0.1

T = TypeVar("T")


def connected(client: Any) -> bool:
    """Whether ``client`` has its scheduler now: a question to the cluster asked without it
    waits out the connect timeout (30 s)."""
    return getattr(client, "status", "running") == "running"


def require_connected(client: Any) -> None:
    """Raise :class:`UsageError` unless ``client`` has its scheduler: a closed client (or one
    whose cluster was closed) can run nothing, and said so as a KeyError of Dask's."""
    if connected(client):
        return
    status = getattr(client, "status", "?")
    raise UsageError(
        f"the Dask client given (client=) is not connected to its scheduler (status "
        f"{status!r}): it was closed, or its cluster was. Make a new Client (and cluster) and "
        "pass that; nothing was run or written."
    )


class SchedulerWatch:
    """Looks at ``client``'s connection each time :meth:`check` is called (the dispatcher's
    loop); ``lost``: it raised, and nothing more is to be asked of the client."""

    def __init__(self, client: Any, kept: Callable[[], str], output: str) -> None:
        #: ``kept()``: what was committed, in words; ``output``: where (for the error only)
        self.client, self.kept, self.output = client, kept, output
        #: since when the client has had no scheduler (None: it has one)
        self.since: float | None = None
        self.lost = False
        self.limit = float(os.environ.get(LOST_ENV) or LOST_S)
        #: the scheduler's address, taken while connected (a lost client has none)
        self.address = getattr(getattr(client, "scheduler", None), "address", None) or "?"

    def check(self, now: float) -> None:
        """Raise :class:`ClusterLost` once the client has been without its scheduler for
        :data:`LOST_S`."""
        if connected(self.client):
            self.since = None
            return
        if self.since is None:
            self.since = now
            logger.warning("the client lost its connection to the Dask scheduler")
            return
        if now - self.since < self.limit:
            return
        self.lost = True
        raise ClusterLost(
            f"the Dask scheduler at {self.address} has not answered for {now - self.since:.0f} s "
            "(it stopped, was killed, or the connection to it failed): the job cannot go on. "
            f"What was committed (at least {self.kept()}) is kept in {self.output}; once a "
            "scheduler runs again, the same command with --resume finishes the job."
        )

    def wait(self) -> None:
        """Return once the client has its scheduler; raise :class:`ClusterLost` once it has
        been without it for :data:`LOST_S` (a question asked meanwhile would wait out Dask's
        connect timeout, 30 s, and the client closes itself after that)."""
        while True:
            self.check(time.monotonic())
            if connected(self.client):
                return
            time.sleep(POLL_S)

    def gone(self) -> bool:
        """Whether the client lost its scheduler, asked once a question to the cluster failed
        (given :data:`NOTICE_S` to notice it)."""
        until = time.monotonic() + NOTICE_S
        while connected(self.client):
            if time.monotonic() >= until:
                return False
            time.sleep(POLL_S)
        return True

    def ask(self, question: Callable[[], T]) -> T:
        """``question()``, a question to the cluster (the job's start: which workers, what
        they see, the script's install), asked only while the client has its scheduler.  One
        that fails as the scheduler goes away is asked again once the client has one again;
        :class:`ClusterLost` ends the job once it has been without it for :data:`LOST_S`, as
        in the dispatcher's loop.  Any other failure is the question's own: raised."""
        while True:
            self.wait()
            try:
                return question()
            except DaskScoreError:  # (an answer: a refused cluster, a failed init())
                raise
            except Exception:
                if not self.gone():
                    raise
                logger.debug(
                    "a question to the cluster failed: its scheduler went away", exc_info=True
                )


def wait_result(
    fut: Any,
    watch: SchedulerWatch,
    checks: Callable[[], None] | None = None,
    every: float = RESULT_CHECK_S,
    get: Callable[..., Any] | None = None,
) -> Any:
    """``fut.result()`` of a finished task, with ``watch.check()`` and ``checks()`` (the
    dispatcher's: the install, a cluster without workers) every ``every`` seconds while it
    waits.  A result lost with its worker is computed again; where no worker can come back
    (they all closed, with their nannies) that wait had no end: the job hung.  Now
    :class:`~daskscore.errors.ClusterLost` or :class:`~daskscore.errors.NoWorkersLeft` ends it,
    as in the dispatcher's loop.  ``get``: ``fut.exception`` instead of ``fut.result``."""
    get = fut.result if get is None else get
    while True:
        try:
            return get(timeout=every)
        except TimeoutError:
            watch.check(time.monotonic())
            if checks is not None:
                checks()


def orphan_grace() -> float:
    """Seconds a job's client must have been gone before the next job takes its install for a
    dead driver's (:func:`daskscore.worker.plugin.claim_plugin`): longer than a driver waits
    for its scheduler before it gives up on its job itself."""
    return 1.5 * float(os.environ.get(LOST_ENV) or LOST_S)
