"""The ``run()`` in flight, told to the driver once it is slow: what names the mini-batches a job
near its end waits for ("stuck at 95 %").

The driver knows which tasks are in flight, not which of a task's mini-batches is running, and
progress events (:data:`~daskscore.protocol.PROGRESS_TOPIC`) only come after a mini-batch ends.
So the runtime's watchdog thread, which looks at the ``run()`` in flight every quarter second
anyway, sends one progress event when a call has run :data:`ANNOUNCE_S` (``"running":
[mini_batch, try, start]``, ``start`` in epoch seconds) and one when it has ended (``"running":
None``).  Fast mini-batches cost nothing; a slow one costs two small events.  A call that keeps
the GIL from its start is never announced (the watchdog cannot run); the nanny ends it at its
timeout all the same.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from daskscore.protocol import PROGRESS_TOPIC

logger = logging.getLogger(__name__)

#: A ``run()`` call running this long is announced to the driver.
ANNOUNCE_S = 2.0


class Announcer:
    """Tells the driver about the slow ``run()`` call in flight in this process."""

    def __init__(self) -> None:
        self.worker: Any = None
        self.topic = ""
        self.attempt: str | None = None
        #: the call in flight: (mini_batch, try, start in epoch seconds, time.monotonic())
        self.call: tuple[int, int, float, float] | None = None
        #: the attempt, mini-batch and try announced running, until its end is announced
        self.announced: tuple[str, int, int] | None = None

    def attempt_starts(self, job_id: str, attempt: str | None) -> None:
        """The task attempt whose ``run()`` calls come next (called in the task's thread,
        where the worker is found)."""
        self.attempt = attempt
        if attempt is not None and self.worker is None:
            try:
                from distributed import get_worker

                self.worker = get_worker()
            except ValueError:  # not in a worker (a test's runtime): nothing to announce to
                pass
        self.topic = f"{PROGRESS_TOPIC}-{job_id}"

    def started(self, mini_batch: int, try_no: int, start: float) -> None:
        self.call = (mini_batch, try_no, start or time.time(), time.monotonic())

    def tick(self, running: bool) -> None:
        """Called by the watchdog: announce a call that became slow, or the end of one."""
        call = self.call if running else None
        now = (self.attempt, call[0], call[1]) if call is not None else None
        if self.announced is not None and self.announced != now:
            self._send(self.announced[0], None)
            self.announced = None
        if call is None or self.announced is not None or self.attempt is None:
            return
        if time.monotonic() - call[3] >= ANNOUNCE_S:
            self.announced = (self.attempt, call[0], call[1])
            self._send(self.attempt, [call[0], call[1], call[2]])

    def _send(self, attempt: str, running: list[Any] | None) -> None:
        if self.worker is None:
            return
        try:  # (thread-safe: the worker hands it to its event loop)
            self.worker.log_event(self.topic, {"attempt": attempt, "items": 0, "running": running})
        except Exception:  # noqa: BLE001 - progress is best effort
            logger.debug("announcing the run() in flight failed", exc_info=True)
