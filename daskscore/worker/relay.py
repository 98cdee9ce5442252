"""The ledger of a shipped job's task: worker-local files, and the ``run()`` in flight noted in
the scheduler, which outlives the worker process.

Workers that do not share the driver's disk cannot leave a ledger the driver can read when
their process dies.  :class:`RelayLedger` writes the part file and ledger as on a shared disk
(in the worker's own staging folder), and also sets, synchronously, which mini-batch and try is
running (and whether the watchdog, or the worker's nanny, ended it for a timeout) in the
scheduler's metadata under
:func:`daskscore.protocol.relay_key`; the driver reads it back with
:func:`daskscore.engine.transport.relay_state`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from daskscore.io.ledger import LedgerWriter
from daskscore.protocol import relay_key


class RelayLedger(LedgerWriter):
    """A worker-local ledger that also tells the scheduler which ``run()`` is in flight."""

    def __init__(self, staging: str | Path, attempt: str, job_id: str) -> None:
        from distributed import get_worker

        super().__init__(staging, attempt)
        self.key = self.relay_key = relay_key(job_id, attempt)  # (where the nanny notes too)
        # found now, in the task's thread: the watchdog thread that calls timed_out() has none
        self.worker = get_worker()
        self.entry: dict[str, Any] = {"running": None, "timed_out": None}

    def claim(self) -> bool:
        """Mark the attempt as started; False if it started before (its process died)."""
        if self._call("get_metadata", keys=self.key, default=None) is not None:
            return False
        self._send()
        return True

    def started(self, mini_batch: int, attempt: int, worker: str, start: float) -> None:
        super().started(mini_batch, attempt, worker, start)
        self.entry["running"] = [mini_batch, attempt, start, worker]
        self._send()

    def finished(self, mini_batch: int) -> None:
        super().finished(mini_batch)
        self.entry["running"] = None
        self._send()

    def timed_out(self, mini_batch: int, error: str = "") -> None:
        super().timed_out(mini_batch, error)
        self.entry["timed_out"] = mini_batch
        self.entry["error"] = error
        self._send()

    @staticmethod
    def timeout_entry(running: list[Any], error: str = "") -> dict[str, Any]:
        """The note of a task whose ``run()`` (``running``: mini-batch, try, start, worker)
        was ended for a timeout (``error``: where it hung): what :meth:`timed_out` leaves, as
        the nanny writes it when the process could not (:mod:`daskscore.worker.deadline`)."""
        entry = {"running": list(running), "timed_out": running[0]}
        return {**entry, "error": error} if error else entry

    def _send(self) -> None:
        self._call("set_metadata", keys=self.key, value=dict(self.entry))

    def _call(self, op: str, **kwargs: Any) -> Any:
        """Call a scheduler handler from a task (or watchdog) thread, and wait for it."""
        from distributed.utils import sync

        return sync(self.worker.loop, getattr(self.worker.scheduler, op), **kwargs)
