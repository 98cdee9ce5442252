"""Progress display: a bar on a terminal, a line every few seconds elsewhere, and a live HTML
display in a Jupyter notebook."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from html import escape
from typing import Any, TextIO

#: Seconds between progress lines when stderr is not a terminal (CI logs, nohup).
LINE_PERIOD_S = 10.0
#: Seconds between redraws of the terminal bar.
BAR_PERIOD_S = 0.2
#: Seconds between two updates of the notebook display.
HTML_PERIOD_S = 0.5


def _fmt_s(seconds: float) -> str:
    seconds = int(max(0, seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def _line(s: dict[str, Any]) -> str:
    """The one-line form of a :meth:`Progress.snapshot`."""
    failed = f", {s['failed_mini_batches']} failed" if s["failed_mini_batches"] else ""
    return (
        f"{s['mini_batches_done']}/{s['mini_batches_total']} mini-batches{failed} | "
        f"{s['items_done']}/{s['items_total']} items | {s['items_per_s']:,.0f} items/s | "
        f"elapsed {_fmt_s(s['elapsed_s'])}"
        + (f" | ETA {_fmt_s(s['eta_s'])}" if s["eta_s"] is not None else "")
    )


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


class ProgressView:
    """What a notebook shows: HTML for Jupyter, the progress line for plain-text front ends.

    Parameters
    ----------
    html : str
        The HTML fragment (``_repr_html_``).
    text : str
        The plain-text form (``repr``).
    """

    def __init__(self, html: str, text: str) -> None:
        self.html = html
        self.text = text

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return self.text


def render_html(snapshot: dict[str, Any], link: str | None = None, finished: bool = False) -> str:
    """The notebook display of a :meth:`Progress.snapshot`: a small bar and the counts.

    Parameters
    ----------
    snapshot : dict
        Counts as :meth:`Progress.snapshot` returns them.
    link : str, optional
        The job's page on the Dask dashboard, shown as a link.
    finished : bool, default False
        The job is over: no ETA, and the bar says so.

    Returns
    -------
    str
        An HTML fragment with inline styles only (no script, nothing fetched).
    """
    s = snapshot
    total, items = s["items_total"], s["items_done"]
    frac = items / total if total else 1.0
    failed = s["failed_mini_batches"]
    colour = "#bf8700" if failed else "#2da44e"
    parts = [
        f'<span data-field="mini-batches">{s["mini_batches_done"]}/{s["mini_batches_total"]}'
        "</span> mini-batches",
        f'<span data-field="items">{items:,}/{total:,}</span> items',
        f'<span data-field="rate">{s["items_per_s"]:,.0f}</span> items/s',
        f"elapsed {_fmt_s(s['elapsed_s'])}",
    ]
    if failed:
        parts.insert(1, f'<span data-field="failed" style="color:#cf222e">{failed} failed</span>')
    if s["eta_s"] is not None and not finished:
        parts.append(f'ETA <span data-field="eta">{_fmt_s(s["eta_s"])}</span>')
    if link:
        parts.append(f'<a href="{escape(link)}" target="_blank">daskscore page</a>')
    state = "done" if finished else "running"
    return (
        '<div class="daskscore-progress" style="font:13px/1.6 sans-serif">'
        '<div style="display:flex;align-items:center;gap:8px">'
        f'<div role="progressbar" aria-valuenow="{frac * 100:.0f}" style="width:240px;'
        'height:10px;background:#e5e7eb;border-radius:5px;overflow:hidden">'
        f'<div style="width:{frac * 100:.1f}%;height:100%;background:{colour}"></div></div>'
        f"<b>{frac:.0%}</b> <span data-field='state'>{state}</span></div>"
        f"<div>{' &middot; '.join(parts)}</div></div>"
    )


class Progress:
    """Counts mini-batches and items; draws itself on ``stream`` when enabled.

    Items are counted from two sources: live events from the workers (``live_items``) and
    the records of finished tasks; the display shows whichever is further along.  Inside a
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
        self.failed_mb = 0
        self.done_items = 0
        self.live_items = 0
        self.started = time.monotonic()
        if enabled and display is None and stream is None and in_jupyter_kernel():
            display = _ipython_display()
        self._display = display
        self.html = enabled and display is not None
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = (
            enabled and not self.html and hasattr(self.stream, "isatty") and self.stream.isatty()
        )
        #: the job's page on the Dask dashboard, linked from the notebook display
        self.page_link: str | None = None
        self._handle: Any = None
        self._shown = False
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

    def snapshot(self) -> dict[str, Any]:
        """The counts now: mini-batches, items, items per second, elapsed and ETA seconds."""
        elapsed = time.monotonic() - self.started
        items = self.items
        rate = items / elapsed if elapsed > 0 else 0.0
        eta = (self.total_items - items) / rate if items < self.total_items and rate > 0 else None
        return {
            "mini_batches_done": self.done_mb,
            "mini_batches_total": self.total_mb,
            "failed_mini_batches": self.failed_mb,
            "items_done": items,
            "items_total": self.total_items,
            "items_per_s": rate,
            "elapsed_s": elapsed,
            "eta_s": eta,
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
        if self.tty:
            frac = self.items / self.total_items if self.total_items else 1.0
            width = 24
            filled = int(frac * width)
            bar = "#" * filled + "-" * (width - filled)
            self.stream.write(f"\r[{bar}] {frac:4.0%} {self.line()}\033[K")
        else:
            self.stream.write(f"progress: {self.line()}\n")
        self.stream.flush()

    def _show(self, finished: bool = False) -> None:
        """Show the notebook display, or update the one shown."""
        snapshot = self.snapshot()
        view = ProgressView(render_html(snapshot, self.page_link, finished), _line(snapshot))
        if not self._shown:
            self._shown = True
            self._handle = self._display(view, display_id=True)  # type: ignore[misc]
        elif self._handle is not None:
            self._handle.update(view)

    def close(self) -> None:
        if not self.enabled:
            return
        if self.html:
            self._show(finished=True)
            return
        self.draw(force=True)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
