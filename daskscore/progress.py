"""Progress display: a bar on a terminal, a line every few seconds elsewhere."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

#: Seconds between progress lines when stderr is not a terminal (CI logs, nohup).
LINE_PERIOD_S = 10.0
#: Seconds between redraws of the terminal bar.
BAR_PERIOD_S = 0.2


def _fmt_s(seconds: float) -> str:
    seconds = int(max(0, seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class Progress:
    """Counts mini-batches and items; draws itself on ``stream`` when enabled.

    Items are counted from two sources: live events from the workers (``live_items``) and
    the records of finished tasks; the display shows whichever is further along.
    """

    def __init__(
        self,
        total_mini_batches: int,
        total_items: int,
        *,
        enabled: bool = True,
        stream: TextIO | None = None,
    ) -> None:
        self.total_mb = total_mini_batches
        self.total_items = total_items
        self.done_mb = 0
        self.failed_mb = 0
        self.done_items = 0
        self.live_items = 0
        self.started = time.monotonic()
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last_draw = 0.0
        self._lock = threading.Lock()

    def add_live(self, items: int) -> None:
        with self._lock:
            self.live_items += items

    def add_done(self, mini_batches: int, items: int, failed_mini_batches: int = 0) -> None:
        with self._lock:
            self.done_mb += mini_batches
            self.done_items += items
            self.failed_mb += failed_mini_batches

    @property
    def items(self) -> int:
        return min(self.total_items, max(self.live_items, self.done_items))

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        items = self.items
        rate = items / elapsed if elapsed > 0 else 0.0
        eta = (self.total_items - items) / rate if rate > 0 else 0.0
        failed = f", {self.failed_mb} failed" if self.failed_mb else ""
        return (
            f"{self.done_mb}/{self.total_mb} mini-batches{failed} | {items}/{self.total_items} "
            f"items | {rate:,.0f} items/s | elapsed {_fmt_s(elapsed)}"
            + (f" | ETA {_fmt_s(eta)}" if items < self.total_items and rate > 0 else "")
        )

    def draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        period = BAR_PERIOD_S if self.tty else LINE_PERIOD_S
        if not force and now - self._last_draw < period:
            return
        self._last_draw = now
        if self.tty:
            frac = self.items / self.total_items if self.total_items else 1.0
            width = 24
            filled = int(frac * width)
            bar = "#" * filled + "-" * (width - filled)
            self.stream.write(f"\r[{bar}] {frac:4.0%} {self.line()}\033[K")
        else:
            self.stream.write(f"progress: {self.line()}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.draw(force=True)
            if self.tty:
                self.stream.write("\n")
                self.stream.flush()
