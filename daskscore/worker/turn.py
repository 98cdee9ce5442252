"""Whose turn it is in one worker process: :data:`TURN`, one for every job installed there.

Azure calls ``run()`` one call at a time per process, and a process has one environment, one
current directory, one ``sys.stdout`` and one root logger: what a job sets for its script is
the whole process's.  So the calls of every job installed in a process take turns — the tasks
of ``daskscore run`` (a whole task at a time), the partitions of ``score()`` sessions (a
mini-batch at a time), and each job's install (its ``init()``), takeover, parking and
uninstall (its ``shutdown()``) — on a worker with several threads, and on an in-process
cluster whose workers share a process, as on a worker with one thread.

A ``run()`` call past its timeout that is left to finish (an in-process cluster, whose process
is not ended: :mod:`daskscore.worker.overrun`) gives the turn to whoever waits for it — its
result is dropped anyway, and another job's tasks or uninstall must not wait on a call that may
never return; when the call does return, its task waits for the turn again before it goes on.
A job's own calls never run at once (:attr:`JobRuntime.run_lock`, taken before the turn).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class _Hold:
    """One taking of the turn: by whom, and whether its call overran or lost the turn."""

    __slots__ = ("lost", "overran", "runtime")

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.overran = False  # (its run() is past its timeout, left to finish)
        self.lost = False  # (given to another meanwhile: taken again when the call returns)


class Turn:
    """One process's turn: taken with :meth:`taken`, in the thread that runs the calls."""

    def __init__(self) -> None:
        self._changed = threading.Condition(threading.Lock())
        self._holder: _Hold | None = None
        self._mine = threading.local()

    @contextmanager
    def taken(self, runtime: Any) -> Iterator[None]:
        """Wait for the turn, hold it for the ``with`` block.  A thread that holds it already
        (a nested call) just goes on; so does a worker's event-loop thread, which must never
        wait (a task holding the turn may need it): what it does there runs at once."""
        if getattr(self._mine, "hold", None) is not None or _on_event_loop():
            yield
            return
        hold = _Hold(runtime)
        with self._changed:
            self._wait_free()
            self._seize(hold)
        self._mine.hold = hold
        try:
            yield
        finally:
            self._mine.hold = None
            with self._changed:
                if self._holder is hold:
                    self._holder = None
                    self._changed.notify()

    def overran(self, runtime: Any) -> None:
        """The watchdog: ``runtime``'s call in flight is past its timeout and left to finish;
        whoever waits may take the turn."""
        with self._changed:
            held = self._holder
            if held is not None and held.runtime is runtime and runtime.in_flight is not None:
                held.overran = True
                self._changed.notify_all()

    def resume(self) -> None:
        """A ``run()`` call of this thread returned: if it overran and lost the turn meanwhile,
        wait for it again (the task goes on under it)."""
        hold = getattr(self._mine, "hold", None)
        if hold is None or not (hold.overran or hold.lost):
            return  # (the call returned in time: nothing to wait for)
        with self._changed:
            hold.overran = False
            if hold.lost:
                self._wait_free()
                hold.lost = False
                self._seize(hold)

    def _wait_free(self) -> None:
        while self._holder is not None and not self._holder.overran:
            self._changed.wait()

    def _seize(self, hold: _Hold) -> None:
        if self._holder is not None:  # (one whose call overran: see the module's doc)
            self._holder.lost = True
        self._holder = hold


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


#: The turn of this process's calls (one run() at a time, whichever job's).
TURN = Turn()
