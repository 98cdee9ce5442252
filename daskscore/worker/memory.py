"""The memory a ``run()`` call took: the peak RSS of the worker process while it ran.

What ``peak_rss_mb`` (in ``processed_mini-batches.csv``) means, and what it costs:

* The kernel keeps each process's high-water mark of resident memory (``getrusage``'s
  ``ru_maxrss``).  It only ever grows, so it is read before and after each ``run()`` (a few
  microseconds each, see ``_WHO``): when it grew during the call, the call set a new high for
  the process, and the new mark *is* the call's peak, exactly, however short the spike.
* When it did not grow, the call's peak was at most an earlier high: the number is then the
  highest RSS seen during the call — sampled every 0.25 s by the runtime's watchdog thread
  (which wakes that often anyway), and read once more when the call returns.  A spike
  shorter than the sampling period below an earlier high can be missed: a lower bound.
* A call whose process died has no "after": its number is the last RSS sampled (the
  watchdog also writes each new high of a call into the attempt's ledger, an ``M`` line, so
  the driver reads it back), or the reading of the nanny that killed it for memory.

RSS is read from ``/proc/self/statm`` through a descriptor kept open (a few microseconds),
with ``psutil`` as the fallback elsewhere.
"""

from __future__ import annotations

import os
import sys
from typing import Any

#: Bytes in a MiB: peak_rss_mb is in MiB, rounded to 0.1.
MIB = 1 << 20
#: A new ``M`` line goes into the ledger when a call's sampled RSS grows this much (5 %) over
#: the last one written: a handful of lines per call at most.
LEDGER_STEP = 1.05

try:
    import resource
except ImportError:  # pragma: no cover - Windows
    resource = None  # type: ignore[assignment]

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
#: ru_maxrss is in KiB on Linux, in bytes on macOS
_MAXRSS_UNIT = 1 if sys.platform == "darwin" else 1024
#: Linux gives the process's mark to ``RUSAGE_THREAD`` too (threads share one memory map), and
#: that call does not add up the CPU times of every thread of the process as ``RUSAGE_SELF``
#: does: in a Dask worker ``RUSAGE_SELF`` took 14 µs a call on a quiet machine and 100-200 µs
#: with more runnable threads than cores, ``RUSAGE_THREAD`` 3.6 and 7 µs.
_WHO: int | None = None
if resource is not None:
    _WHO = resource.RUSAGE_SELF
    if sys.platform.startswith("linux"):
        _WHO = getattr(resource, "RUSAGE_THREAD", _WHO)
_statm: int | None = None


def _forget_statm() -> None:
    global _statm
    _statm = None  # (a forked child opens its own: the descriptor names the parent's /proc)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_statm)


def rss_bytes() -> int:
    """This process's resident memory now, in bytes (0 when it cannot be read)."""
    global _statm
    if _statm is None:
        try:
            _statm = os.open("/proc/self/statm", os.O_RDONLY)
        except OSError:
            return _psutil_rss()
    try:
        return int(os.pread(_statm, 128, 0).split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return _psutil_rss()


def _psutil_rss() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:  # noqa: BLE001 - a number for a report; never fail a run() for it
        return 0


def max_rss_bytes() -> int:
    """This process's high-water mark of resident memory, in bytes (0 where unknown)."""
    if resource is None:  # pragma: no cover - Windows
        return 0
    return resource.getrusage(_WHO).ru_maxrss * _MAXRSS_UNIT


def mib(nbytes: int) -> float:
    """``nbytes`` in MiB, to 0.1."""
    return int(nbytes * 10 / MIB + 0.5) / 10


class RunMemory:
    """The peak RSS of the ``run()`` call in flight: :meth:`start` before it, :meth:`sample`
    from the watchdog thread while it runs, :meth:`finish` after it."""

    def __init__(self) -> None:
        self.high_before = 0
        #: the highest RSS sampled during the call in flight (bytes)
        self.sampled = 0
        self._written = 0
        self._mini_batch: int | None = None
        self._ledger: Any = None

    def start(self, mini_batch: int, ledger: Any) -> None:
        self.high_before = max_rss_bytes()
        self.sampled = self._written = 0
        self._mini_batch, self._ledger = mini_batch, ledger

    def sample(self) -> None:
        """One reading during the call (the watchdog thread); a new high goes into the ledger
        so that the driver knows it if the process dies."""
        mini_batch, ledger = self._mini_batch, self._ledger
        if mini_batch is None:
            return
        now = rss_bytes()
        if now <= self.sampled:
            return
        self.sampled = now
        note = getattr(ledger, "memory", None)
        if note is not None and now >= self._written * LEDGER_STEP:
            self._written = now
            try:
                note(mini_batch, now, os.getpid())
            except OSError:  # the ledger is gone (the task ended meanwhile)
                pass

    def finish(self) -> float:
        """The call's peak in MiB (see the module's doc)."""
        self._mini_batch = self._ledger = None
        high = max_rss_bytes()
        if high > self.high_before:
            return mib(high)
        return mib(max(self.sampled, rss_bytes()))
