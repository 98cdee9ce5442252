"""Numbers as ``report.html`` shows them: read leniently (strings, NaN, missing), counted with
thousands separators, rounded to three figures, durations in ms, s, min or h."""

from __future__ import annotations

import math
from typing import Any


def num(value: Any) -> float:
    """``value`` as a finite float; 0 for anything else (missing, text, NaN)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) else 0.0


def count(value: Any) -> str:
    """``1,234``; ``?`` when unknown."""
    return "?" if value is None or value == "" else f"{int(num(value)):,}"


def figures(value: float) -> str:
    """Three significant figures (``0.207``, ``41.5``), a whole number from 1,000."""
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def nice(value: float) -> float:
    """The round number (1, 2, 2.5 or 5 times a power of ten) at or above ``value``."""
    exp = 10 ** math.floor(math.log10(value))
    return next(m * exp for m in (1, 2, 2.5, 5, 10) if m * exp >= value)


def duration(seconds: Any) -> str:
    """``698 ms``, ``14.7 s``, ``2 min 9 s``, ``1 h 5 min``; ``?`` when unknown."""
    if seconds is None or seconds == "":
        return "?"
    s = num(seconds)
    if s < 1:
        return f"{s * 1000:.3g} ms" if s else "0 s"
    if s >= 3600:
        return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"
    return f"{int(s // 60)} min {int(s % 60)} s" if s >= 60 else f"{s:.3g} s"
