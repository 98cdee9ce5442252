"""Memory deaths named: a worker process killed for its memory during ``run()`` is charged
``PROCESS_DIED`` with the error ``out of memory (limit 4GB, peak 4.1 GiB)``, not a bare "the
worker process died".

Two killers can be told apart without the kernel's log:

* **the worker's nanny**, which ends its worker above ``distributed.worker.memory.terminate``
  (95 %) of its memory limit (``--worker-memory``, or Dask's own: the machine's memory shared
  out) and logs a ``worker-restart-memory`` event in the scheduler with the worker's pid and
  the RSS it read.  The driver reads those events (:meth:`distributed.Client.get_events`) when
  a task's process died, and matches the pid that the attempt's ledger names (``M`` lines,
  :mod:`daskscore.worker.memory`); a shipped job's ledger is out of reach, so its events are
  matched by time instead.
* **the kernel's out-of-memory killer**, which sends SIGKILL: a process that ended by SIGKILL
  (the embedded cluster's nannies report their workers' exit signals,
  :func:`daskscore.worker.deaths.exit_status`) while the RSS last sampled during its
  ``run()`` was at least :data:`NEAR_LIMIT` of the limit.  Elsewhere (no exit signal known)
  such a death stays the plain "process died".
"""

from __future__ import annotations

import logging
import signal
import time
from typing import Any

from daskscore.engine.connection import connected
from daskscore.io.ledger import LedgerState
from daskscore.worker.deaths import exit_cause, exit_status, watching
from daskscore.worker.memory import mib

logger = logging.getLogger("daskscore")

#: The scheduler event a nanny logs when it restarts its worker for memory.
TOPIC = "worker-restart-memory"
#: A process killed by SIGKILL with its last sampled RSS at least this fraction of its memory
#: limit is taken for a victim of the kernel's OOM killer (Dask's own pause threshold).
NEAR_LIMIT = 0.8


#: How long a crash's charge waits for the embedded cluster's nanny to say how its worker
#: process ended (it logs that as it notices, about when the scheduler does; on a machine
#: busy with more than its cores can run, that was seen to take over 0.5 s, and the crash was
#: charged without its signal).  Only a death waits, and only until the nanny has spoken.
EXIT_WAIT_S = 2.0


def _exit_status_soon(pid: int | None) -> int | None:
    """The exit status of worker process ``pid`` of the embedded cluster, once its nanny
    logged it (None: not known, or another cluster's, whose nannies are elsewhere)."""
    status = exit_status(pid)
    give_up = time.monotonic() + EXIT_WAIT_S
    while status is None and pid and watching() and time.monotonic() < give_up:
        time.sleep(0.02)
        status = exit_status(pid)
    return status


def _terminate() -> str:
    """Dask's terminate threshold, as a percentage (``distributed.worker.memory.terminate``)."""
    import dask

    fraction = dask.config.get("distributed.worker.memory.terminate", 0.95)
    return f"{float(fraction):.0%}" if fraction else "the terminate threshold"


def out_of_memory(limit: str, peak: int, how: str) -> str:
    """The error of a try whose process was killed for memory."""
    from dask.utils import format_bytes

    shown = f", peak {format_bytes(peak)}" if peak else ""
    return f"out of memory (limit {limit}{shown}): {how}"


class MemoryDeaths:
    """Tells whether a task's dead process was killed for its memory (see the module's doc).

    ``limit``: the workers' memory limit as the user gave it (``--worker-memory``); None: read
    from the scheduler (Dask's own limit), when a death needs it.
    """

    def __init__(self, client: Any, limit: str | int | None = None) -> None:
        self.client = client
        self.limit_text = limit
        self._limit: int | None = None
        self._used: set[tuple[float, Any]] = set()

    def limit(self) -> int:
        """The workers' memory limit in bytes (0: none, or unknown)."""
        if self._limit is None:
            if not connected(self.client):
                return 0  # (no scheduler to ask: a call would wait for its connect timeout)
            try:
                workers = self.client.scheduler_info(n_workers=-1)["workers"].values()
                self._limit = max((int(w.get("memory_limit") or 0) for w in workers), default=0)
            except Exception:  # noqa: BLE001 - the death is charged all the same
                logger.debug("reading the workers' memory limit failed", exc_info=True)
                return 0
        return self._limit

    def _shown_limit(self) -> str:
        from dask.utils import format_bytes

        if isinstance(self.limit_text, str) and self.limit_text.strip():
            return self.limit_text.strip()

        limit = self.limit()
        return format_bytes(limit) if limit else "unknown"

    def explain(self, state: LedgerState) -> tuple[str, float]:
        """The error of the ``run()`` in flight when ``state``'s process died — ``""`` when it
        was not a memory death (the caller's own text applies) — and the peak RSS known of it,
        in MiB."""
        peak = state.running_rss
        if state.timed_out or state.running is None:
            return "", mib(peak)
        event = self._event(state.pid, state.running_start)
        if event is not None:
            peak = max(peak, int(event.get("rss") or 0))
            how = f"its nanny killed the worker process at {_terminate()} of the limit during run()"
            return out_of_memory(self._shown_limit(), peak, how), mib(peak)
        status = _exit_status_soon(state.pid)
        limit = self.limit() if status == -signal.SIGKILL and peak else 0
        if limit and peak >= NEAR_LIMIT * limit:
            how = (
                "the worker process was killed (SIGKILL) near the limit during run(), by the "
                "kernel's out-of-memory killer most likely"
            )
            return out_of_memory(self._shown_limit(), peak, how), mib(peak)
        if status is not None:
            return f"the worker process died during run(): {exit_cause(status, 'run()')}", mib(peak)
        return "", mib(peak)

    def during_init(self, pid: int | None, since: float) -> str:
        """The error of a worker process (``pid``; None: not known, then the first event
        since ``since``, a ``time.time()``) that its nanny killed for memory while the script
        was installed; ``""`` when it logged no such event."""
        event = self._event(pid, since)
        if event is None:
            return ""
        how = f"its nanny killed the worker process at {_terminate()} of the limit"
        return out_of_memory(self._shown_limit(), int(event.get("rss") or 0), how)

    def _event(self, pid: int | None, since: float | None) -> dict[str, Any] | None:
        """The nanny's memory event of process ``pid``, if it logged one (``pid`` unknown: the
        first unclaimed one since ``since``)."""
        if not connected(self.client):
            return None  # (no scheduler to ask: a call would wait for its connect timeout)
        try:
            events = self.client.get_events(TOPIC)
        except Exception:  # noqa: BLE001 - no events: a plain death
            logger.debug("reading the scheduler's memory events failed", exc_info=True)
            return None
        for when, msg in reversed(list(events or ())):
            if not isinstance(msg, dict):
                continue
            key = (when, msg.get("pid"))
            if key in self._used:
                continue
            if pid is not None:
                matched = msg.get("pid") == pid
            else:  # (a shipped job: no pid known; the first unclaimed event since it started)
                matched = bool(since) and when >= (since or 0) - 1
            if matched:
                self._used.add(key)
                return msg
        return None
