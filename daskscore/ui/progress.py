"""Progress display: a bar on a terminal, a line every few seconds elsewhere, and a live HTML
display in a Jupyter notebook.

Near the end of a job ("stuck at 95 %") the display names the mini-batches still running and
for how long: the workers tell the driver about each ``run()`` call that has run a while
(:mod:`daskscore.worker.inflight`), and they are shown when at most :data:`NAME_LEFT`
mini-batches are left, or when one has run :data:`SLOW_FACTOR` times the median mini-batch.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, TextIO

from daskscore.ui.barline import fit_bar, fmt_s, plain_line, running_text
from daskscore.ui.progresshtml import ENDINGS, ProgressView, render_html
from daskscore.ui.termtext import escapes_allowed, write

__all__ = [
    "ENDINGS",
    "Progress",
    "ProgressView",
    "in_jupyter_kernel",
    "render_html",
    "running_text",
]

#: Seconds between progress lines when stderr is not a terminal (CI logs, nohup).
LINE_PERIOD_S = 10.0
#: Seconds between redraws of the terminal bar.
BAR_PERIOD_S = 0.2
#: Seconds between two updates of the notebook display.
HTML_PERIOD_S = 0.5
#: The mini-batches still running are named when this few are left ...
NAME_LEFT = 3
#: ... or when one has run this many times the median mini-batch's time.
SLOW_FACTOR = 5.0
#: Running mini-batches named at most.
NAMED = 3
#: Mini-batch times the median is taken over (the latest).
TIMES_KEPT = 1001
#: Seconds the current rate is measured over.
RATE_WINDOW_S = 10.0


_fmt_s = fmt_s


def _line(s: dict[str, Any]) -> str:
    """The one-line form of a :meth:`Progress.snapshot`."""
    return plain_line(s)


def in_jupyter_kernel() -> bool:
    """Whether this process is a Jupyter kernel (IPython's ``IPKernelApp`` runs it).

    IPython is never imported here: a process that did not import it is no kernel.

    Returns
    -------
    bool
        True inside a Jupyter kernel; False in a terminal IPython or plain Python.
    """
    get_ipython = getattr(sys.modules.get("IPython"), "get_ipython", None)
    if get_ipython is None:
        return False
    try:
        shell = get_ipython()
        return shell is not None and "IPKernelApp" in shell.config
    except Exception:  # noqa: BLE001 - a half-made shell is no kernel to draw in
        return False


def _ipython_display() -> Callable[..., Any]:
    from IPython.display import display

    return display


class Progress:
    """Counts mini-batches and items; draws itself on ``stream`` when enabled.

    Mini-batches and items are counted from two sources: live events from the workers, sent
    as each mini-batch ends (by task attempt, :meth:`add_live`), and the records of finished
    tasks (:meth:`add_done`), which replace their attempt's live counts
    (:meth:`end_attempt`).  The counts shown never go back: a task lost with its process
    leaves its uncommitted mini-batches to run again, and they are not counted twice, nor
    taken off.  A resumed job's earlier mini-batches count as done
    (:meth:`resumed`), but not in its rate.  Inside a
    Jupyter kernel (and when no ``stream`` is given) it draws a live HTML display instead,
    through IPython's ``display(..., display_id=True)``; ``display`` replaces that function.
    """

    def __init__(
        self,
        total_mini_batches: int,
        total_items: int,
        *,
        enabled: bool = True,
        stream: TextIO | None = None,
        display: Callable[..., Any] | None = None,
    ) -> None:
        self.total_mb = total_mini_batches
        self.total_items = total_items
        self.done_mb = 0
        self.failed_mb = self.partial_mb = 0
        self.done_items = 0
        #: live counts of the task attempts in flight: attempt -> [mini-batches, items]
        self.live: dict[Any, list[int]] = {}
        self._ended: set[Any] = set()
        #: the counts last shown (mini-batches, items): what is shown never goes back
        self._floor = (0, 0)
        #: the job's final counts are shown (:meth:`final`)
        self._final = False
        #: done before this run (a resumed job's): not part of its rate
        self.base_items = 0
        self.started = self.scoring_started = time.monotonic()
        self._samples: deque[tuple[float, int]] = deque()
        #: the slow run() calls in flight, by task attempt: (mini-batch, try, start epoch s)
        self.running: dict[str, tuple[int, int, float]] = {}
        self._times: deque[float] = deque(maxlen=TIMES_KEPT)
        if enabled and display is None and stream is None and in_jupyter_kernel():
            display = _ipython_display()
        self._display = display
        self.html = enabled and display is not None
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = (
            enabled and not self.html and hasattr(self.stream, "isatty") and self.stream.isatty()
        )
        #: what holds the job up, shown beside the counts (a cluster without workers)
        self.alert: str | None = None
        #: the job's page on the Dask dashboard, linked from the notebook display
        self.page_link: str | None = None
        self._handle: Any = None
        self._shown = False
        self._closed = self._line_ended = False
        #: when every mini-batch had settled (:meth:`settled`)
        self._settled_at: float | None = None
        self._last_draw = 0.0
        self._lock = threading.Lock()

    @property
    def live_items(self) -> int:
        return sum(counts[1] for counts in self.live.values())

    def add_live(self, items: int, attempt: Any = None, mini_batches: int = 0) -> None:
        """A worker's news: ``mini_batches`` more ended in task ``attempt``, with ``items``.
        News of an attempt already ended comes too late, and is dropped."""
        with self._lock:
            if attempt in self._ended or self._final:
                return
            counts = self.live.setdefault(attempt, [0, 0])
            counts[0] += mini_batches
            counts[1] += items

    def end_attempt(self, attempt: Any) -> None:
        """A task attempt came back (or was lost): its records, folded in with
        :meth:`add_done`, replace its live counts; its slow run() call ended with it."""
        with self._lock:
            self._ended.add(attempt)
            self.live.pop(attempt, None)
            self.running.pop(attempt, None)

    def resumed(
        self, mini_batches: int, items: int, failed_mini_batches: int = 0, partial: int = 0
    ) -> None:
        """What earlier runs of a resumed (or retried) job did: done, though not by this run."""
        self.add_done(mini_batches, items, failed_mini_batches, partial)
        self.base_items += items

    def backdate(self, seconds: float) -> None:
        """The job began ``seconds`` before this display (its cluster started): elapsed
        time counts from then; the average rate still counts from the first mini-batch."""
        self.started -= max(0.0, seconds)

    def add_done(
        self, mini_batches: int, items: int, failed_mini_batches: int = 0, partial: int = 0
    ) -> None:
        """``mini_batches`` settled, with ``items``: ``failed_mini_batches`` of them failed,
        ``partial`` returned fewer results than items (``partial_mini_batches``)."""
        with self._lock:
            self.done_mb += mini_batches
            self.done_items += items
            self.failed_mb += failed_mini_batches
            self.partial_mb += partial

    def final(
        self, mini_batches: int, items: int, failed_mini_batches: int = 0, partial: int = 0
    ) -> None:
        """The job's final counts, as its summary has them: what it settled (a job cut short
        by ``error_threshold`` or Ctrl-C: what its tasks committed, not the live counts of
        those it stopped).  Shown from now on, with no ETA and no mini-batch named as running
        (:meth:`running_now` still lists them, for the report)."""
        with self._lock:
            self._final = True
            self._floor = (min(self.total_mb, mini_batches), min(self.total_items, items))
            self.failed_mb, self.partial_mb = failed_mini_batches, partial
            self.live.clear()  # (the slow calls still running stay known: running_now)

    def set_running(self, attempt: str, running: Any) -> None:
        """A worker's news of a slow ``run()`` call (``[mini_batch, try, start]``), or of its
        end (None); a finished task ends its call too."""
        with self._lock:
            if running:
                self.running[attempt] = (int(running[0]), int(running[1]), float(running[2]))
            else:
                self.running.pop(attempt, None)

    def observe(self, seconds: Iterable[float]) -> None:
        """The times of finished mini-batches (what a straggler is compared with)."""
        with self._lock:
            self._times.extend(seconds)

    def stragglers(self, now: float | None = None) -> list[tuple[int, float]]:
        """The mini-batches worth naming now, longest-running first: (mini-batch, seconds).
        All the slow ones known when at most :data:`NAME_LEFT` are left; else those running
        over :data:`SLOW_FACTOR` times the median mini-batch."""
        now = time.time() if now is None else now
        with self._lock:
            calls = sorted(((mb, now - start) for mb, _, start in self.running.values()),
                           key=lambda c: -c[1])  # fmt: skip
            times = list(self._times)
        if self.total_mb - self.mini_batches > NAME_LEFT:
            if not times:
                return []
            limit = SLOW_FACTOR * statistics.median(times)
            calls = [c for c in calls if c[1] > limit]
        return calls[:NAMED]

    def running_now(self) -> list[dict[str, Any]]:
        """Every slow ``run()`` call known to be in flight (for the report of a job that
        stops): mini-batch, try, start (epoch seconds), seconds running."""
        now = time.time()
        with self._lock:
            calls = sorted(self.running.values())
        return [
            {"mini_batch": mb, "try": t, "start": start, "running_s": round(now - start, 3)}
            for mb, t, start in calls
        ]

    def _counts(self) -> tuple[int, int]:
        """Mini-batches and items done as shown: the settled ones and the live counts, never
        fewer than shown before.  A task whose process died loses the live counts of the
        mini-batches it ran but had not committed yet; they run again, and the count stays
        where it was until the ones run again pass it (it does not go back)."""
        with self._lock:
            if self._final:
                return self._floor
            live = sum(counts[0] for counts in self.live.values())
            mini_batches = min(self.total_mb, self.done_mb + live)
            items = min(self.total_items, self.done_items + self.live_items)
            shown_mb, shown_items = self._floor
            self._floor = (max(shown_mb, mini_batches), max(shown_items, items))
            return self._floor

    @property
    def items(self) -> int:
        return self._counts()[1]

    @property
    def mini_batches(self) -> int:
        return self._counts()[0]

    def _current_rate(self, now: float, items: int) -> float | None:
        """Items per second over the last :data:`RATE_WINDOW_S` (None before a second)."""
        samples = self._samples
        if not samples or samples[-1][1] != items or now - samples[-1][0] >= 1.0:
            samples.append((now, items))
        while len(samples) > 2 and now - samples[1][0] >= RATE_WINDOW_S:
            samples.popleft()
        t0, n0 = samples[0]
        return (items - n0) / (now - t0) if now - t0 >= 1.0 else None

    def snapshot(self) -> dict[str, Any]:
        """The counts now: mini-batches, items, the average and current items per second,
        elapsed and ETA seconds, and the mini-batches worth naming."""
        now = time.monotonic()
        until = self._settled_at or now  # (the rates are the scoring's: not the writing's)
        items = self.items
        scored = until - self.scoring_started
        rate = (items - self.base_items) / scored if scored > 0 else 0.0
        ended = self._final or self._closed  # (no ETA, no current rate: the average)
        current = None if ended else self._current_rate(until, items)
        pace = current if current else rate
        left = 0 if ended else self.total_items - items
        return {
            "mini_batches_done": self.mini_batches,
            "mini_batches_total": self.total_mb,
            "failed_mini_batches": self.failed_mb,
            "partial_mini_batches": self.partial_mb,
            "items_done": items,
            "items_total": self.total_items,
            "items_per_s": rate,
            "items_per_s_now": current,
            "elapsed_s": now - self.started,
            "eta_s": left / pace if left > 0 and pace > 0 else None,
            "running": [] if ended else self.stragglers(),
            "alert": self.alert,
        }

    def line(self) -> str:
        return _line(self.snapshot())

    def draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        period = HTML_PERIOD_S if self.html else BAR_PERIOD_S if self.tty else LINE_PERIOD_S
        if not force and now - self._last_draw < period:
            return
        self._last_draw = now
        if self.html:
            self._show()
            return
        if self.tty:  # (one column spare: a line as wide as the terminal wraps on some)
            width = max(20, shutil.get_terminal_size().columns - 1)
            bar = fit_bar(self.snapshot(), width)  # (erased to its end; TERM=dumb: by spaces)
            write(f"\r{bar}\033[K" if escapes_allowed() else f"\r{bar:<{width}}", self.stream)
        else:  # (a closed pipe, `2>&1 | head`: nothing more is written, the job goes on)
            write(f"progress: {self.line()}\n", self.stream)

    def _show(
        self,
        finished: bool = False,
        ending: str = "done",
        reason: str | None = None,
        state: str = "running",
    ) -> None:
        """Show the notebook display, or update the one shown."""
        snapshot = self.snapshot()
        text = _line(snapshot)
        if finished:
            text += f" | {ending}" + (f": {reason}" if reason else "")
        elif state != "running":
            text += f" | {state}"
        html = render_html(snapshot, self.page_link, finished, ending, reason, state)
        view = ProgressView(html, text)
        if not self._shown:
            self._shown = True
            self._handle = self._display(view, display_id=True)  # type: ignore[misc]
        elif self._handle is not None:
            self._handle.update(view)

    def settled(self) -> None:
        """Every mini-batch has settled, and the output is written next: a terminal's bar
        ends its line; a notebook's display says "writing the output" until :meth:`close`
        says how the job ended (its output written, or not)."""
        self._settled_at = time.monotonic()
        if not self.enabled or self._closed:
            return
        if self.html:
            self._show(state="writing the output")
        else:
            self._end_line()

    def close(self, ending: str = "done", reason: str | None = None) -> None:
        """The last drawing: in a notebook, the display says how the job ended (``ending``,
        one of :data:`ENDINGS`), in its colour, and ``reason``, what failed.  Only the first
        call draws."""
        if not self.enabled or self._closed:
            return
        self._closed = True
        if self.html:
            self._show(finished=True, ending=ending, reason=reason)
        elif not self._line_ended:
            self._end_line()

    def _end_line(self) -> None:
        self._line_ended = True
        self.draw(force=True)
        if self.tty:
            write("\n", self.stream)
