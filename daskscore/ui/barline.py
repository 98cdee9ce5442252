"""The text forms of a job's progress: the line written every few seconds when stderr is no
terminal, and the bar redrawn in place on a terminal, fitted to its width.

The bar never is wider than the terminal (a line one column too wide wraps, and every redraw
then becomes a new line): fields are dropped by priority until it fits, down to the bar, its
percentage and the mini-batch count, and cut short past that.
"""

from __future__ import annotations

from typing import Any

#: The bar's width in characters: at most, and at least while a field beside it is kept.
BAR_MAX, BAR_MIN = 30, 8


def fmt_s(seconds: float) -> str:
    seconds = int(max(0, seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def running_text(running: list[tuple[int, float]]) -> str:
    """``waiting on mini-batch 7 (running 2m05s), 12 (1m40s)`` for (mini-batch, seconds)."""
    shown = [
        f"{mb} ({'running ' if i == 0 else ''}{fmt_s(sec)})" for i, (mb, sec) in enumerate(running)
    ]
    return "waiting on mini-batch " + ", ".join(shown)


def fmt_rate(value: float) -> str:
    """A rate as the progress line shows it: one decimal under 10 (``0.4``), none above."""
    return f"{value:,.1f}" if 0 < value < 10 else f"{value:,.0f}"


def fields(s: dict[str, Any]) -> list[tuple[int, str]]:
    """The fields of a progress line, in order, each with its priority (0: always shown;
    the highest number is dropped first when the line must be shorter)."""
    total_mb = s["mini_batches_total"]
    mb = f"{s['mini_batches_done']}/{total_mb} mini-batch{'' if total_mb == 1 else 'es'}"
    if s["failed_mini_batches"]:
        mb += f", {s['failed_mini_batches']} failed"
    if s.get("partial_mini_batches"):  # (run() returned fewer results than items)
        mb += f", {s['partial_mini_batches']} partial"
    out = [(0, mb), (4, f"{s['items_done']:,}/{s['items_total']:,} items")]
    if s.get("alert"):  # (the cluster has no worker: why nothing moves)
        out.insert(1, (1, s["alert"]))
    now, avg = s.get("items_per_s_now"), s["items_per_s"]
    out.append((3, f"{fmt_rate(avg if now is None else now)} items/s"))
    if now is not None:  # (the current rate, over the last seconds; then the average)
        out.append((5, f"avg {fmt_rate(avg)}/s"))
    out.append((6, f"elapsed {fmt_s(s['elapsed_s'])}"))
    if s["eta_s"] is not None:
        out.append((2, f"ETA {fmt_s(s['eta_s'])}"))
    if s.get("running"):
        out.append((7, running_text(s["running"])))
    return out


def plain_line(s: dict[str, Any]) -> str:
    """Every field, as the line written when stderr is no terminal."""
    return " | ".join(text for _, text in fields(s))


def fit_bar(s: dict[str, Any], width: int) -> str:
    """The terminal bar of a snapshot in at most ``width`` characters: ``[####----] 25% ...``.

    The bar's own width depends on the terminal's alone (it does not jump between redraws);
    the fields after it are dropped by priority until they fit, and the bar shrinks only when
    the mini-batch count alone does not fit beside it."""
    total = s["items_total"]
    frac = s["items_done"] / total if total else 1.0
    pct = f"{frac:4.0%}"
    bar_w = max(BAR_MIN, min(BAR_MAX, (width - 40) // 2))
    shown = fields(s)
    room = width - bar_w - len(pct) - 4  # "[" bar "] " pct " " text
    while len(shown) > 1 and len(" | ".join(t for _, t in shown)) > room:
        shown.pop(max(range(len(shown)), key=lambda i: shown[i][0]))
    text = " | ".join(t for _, t in shown)
    bar_w = min(bar_w, width - len(text) - len(pct) - 4)
    if bar_w < BAR_MIN // 2:  # not even the count fits beside a bar: the count alone, cut
        return f"{pct.strip()} {text}"[:width]
    filled = int(frac * bar_w)
    return f"[{'#' * filled}{'-' * (bar_w - filled)}] {pct} {text}"[:width]
