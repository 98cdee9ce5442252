"""The phases of a job, one after another, and the wall-clock seconds spent in each:

``start_cluster`` (the cluster starting, the output folder claimed), ``init`` (the scoring script
installed on every worker: its import and ``init()``), ``score`` (the mini-batches run) and
``assemble`` (the output, the summary and the logs written).  ``job_summary.json`` has them as
``phases``; a job stopped by Ctrl-C (or SIGTERM, SIGHUP) names the one it was in as
``interrupted_phase``.
"""

from __future__ import annotations

import time


class Phases:
    """Wall-clock seconds spent in each phase of a job, closed one after another.

    ``current``: the phase running now, where a Ctrl-C lands (``""`` once the interruption is
    written up).
    """

    def __init__(self, current: str = "start_cluster") -> None:
        self.started = time.time()
        self._t0 = self._last = time.perf_counter()
        self.seconds: dict[str, float] = {}
        self.current = current

    def mark(self, phase: str, then: str | None = None) -> None:
        """Close ``phase``: the time since the previous mark is charged to it; ``then``: the
        phase that runs from now on."""
        now = time.perf_counter()
        self.seconds[phase] = round(self.seconds.get(phase, 0.0) + now - self._last, 3)
        self._last = now
        if then is not None:
            self.current = then

    def elapsed(self) -> float:
        return round(time.perf_counter() - self._t0, 3)
