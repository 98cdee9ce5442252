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

It also carries the counts of the mini-batches that ended (:meth:`Announcer.ended`): at most
one event per :data:`PROGRESS_SECONDS`, sent by the task's thread as mini-batches end, or by
the watchdog's when none ends for a while, so that mini-batches that ended just before a slow
one are counted while it runs, not only after it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from daskscore.protocol import PROGRESS_TOPIC

logger = logging.getLogger(__name__)

#: A ``run()`` call running this long is announced to the driver.
ANNOUNCE_S = 2.0
#: The counts of ended mini-batches are sent at most this often (one event per task at least).
PROGRESS_SECONDS = 0.5


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
        #: mini-batches and items ended in ``attempt`` and not sent yet; when last sent
        self.pending = [0, 0]
        self.sent_at = time.monotonic()
        self._lock = threading.Lock()

    def attempt_starts(self, job_id: str, attempt: str | None) -> None:
        """The task attempt whose ``run()`` calls come next (called in the task's thread,
        where the worker is found).  What the previous one ended and did not send goes now."""
        self.flush(force=True)
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

    def ended(self, mini_batches: int, items: int) -> None:
        """``mini_batches`` more ended in this attempt, with ``items``: counted, sent soon."""
        with self._lock:
            self.pending[0] += mini_batches
            self.pending[1] += items
        self.flush()

    def flush(self, force: bool = False) -> None:
        """Send the counts not sent yet: now (``force``), or once :data:`PROGRESS_SECONDS`
        have passed since the last were sent."""
        with self._lock:
            if not self.pending[0] and not self.pending[1]:
                return
            now = time.monotonic()
            if not force and now - self.sent_at < PROGRESS_SECONDS:
                return
            (mini_batches, items), self.pending = self.pending, [0, 0]
            self.sent_at = now
            attempt = self.attempt
        if attempt is not None and self.worker is not None:
            self._log({"attempt": attempt, "items": items, "mini_batches": mini_batches})

    def tick(self, running: bool) -> None:
        """Called by the watchdog: send the counts of mini-batches that ended a while ago,
        announce a call that became slow, or the end of one."""
        self.flush()
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
        if self.worker is not None:
            self._log({"attempt": attempt, "items": 0, "running": running})

    def _log(self, message: dict[str, Any]) -> None:
        try:  # (thread-safe: the worker hands it to its event loop)
            self.worker.log_event(self.topic, message)
        except Exception:  # noqa: BLE001 - progress is best effort
            logger.debug("telling the driver of progress failed", exc_info=True)
