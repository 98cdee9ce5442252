"""The report's throughput chart, and which of the job's tries the report's charts of time draw.

A job run once draws every chart from all its tries.  A resumed job or a ``--retry-failed``
pass reports the whole job (the counts at the top of ``report.html`` are the job's), and its
tries are every run's; but its duration is this run's, so its charts of time — the busy time
and overhead around ``run()``, the throughput, the workers' table and the timeline — are drawn
from the tries this run made (:func:`this_run`: those that started after it did), and a note
says so (:func:`run_note`).  The tables of tries (the slowest, those whose process ended) and
``processed_mini-batches.csv`` list every run's.

An item counts as succeeded in the try that counts for it: a try run again later (a partial
return retried by ``--retry-failed``, a part of a split mini-batch run again whole) counts its
items with those of the tries that failed (:func:`mark_counted`), so that the succeeded items
charted never exceed the job's.
"""

from __future__ import annotations

import datetime as dt
from html import escape
from typing import Any

from daskscore.ui.numbers import count, duration, figures, nice, num

#: Bars of the throughput chart, at most.
MAX_BUCKETS = 60
_WIDTHS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600)


def mark_counted(tries: list[dict[str, Any]]) -> None:
    """Set each try's ``counted``: False for a try of a mini-batch that a later try covers (a
    try of the whole mini-batch, or of the same part: ``items``), True for the others."""
    groups: dict[Any, list[dict[str, Any]]] = {}
    for t in tries:
        groups.setdefault(t["mini_batch"], []).append(t)
    for group in groups.values():
        whole, parts = False, set()  # (covered by a later try: every item, these parts)
        for t in sorted(group, key=lambda t: (t["start"] or 0.0, num(t["try"])), reverse=True):
            t["counted"] = not whole and t["items"] not in parts
            if t["items"]:
                parts.add(t["items"])
            else:
                whole = True


def this_run(
    summary: dict[str, Any], tries: list[dict[str, Any]], since: float | None = None
) -> list[dict[str, Any]]:
    """The tries of the run the summary reports: all of them, unless the job was resumed or
    this is a ``--retry-failed`` pass; then those that started after this run did (``since``;
    default: the summary's ``started``, to the second)."""
    again = num(summary.get("resumed_mini_batches")) > 0
    again = again or summary.get("retried_in_this_pass") is not None
    started = since if since is not None else _started(summary.get("started"))
    if not again or started is None:
        return tries
    return [t for t in tries if t["start"] is None or t["start"] >= started]


def _started(value: Any) -> float | None:
    try:
        return dt.datetime.strptime(str(value), "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except ValueError:
        return None


def run_note(now: int, earlier: int) -> str:
    """Says what the charts of a resumed job or a retry pass draw (nothing for a job run
    once: ``earlier`` is 0)."""
    if not earlier:
        return ""
    return (
        '<p class="muted" id="this-run">A resumed job or a <code>--retry-failed</code> pass: '
        "the counts above are the whole job's, its duration this run's. The busy time, "
        f"throughput, workers and timeline below are this run's {count(now)} tries, over this "
        f"run's time; the {count(earlier)} tries of earlier runs are in the slowest tries and in "
        "<code>processed_mini-batches.csv</code>.</p>\n"
    )


def throughput_section(tries: list[dict[str, Any]], earlier: int = 0) -> str:
    """Items finished per second over the span of ``tries`` (marked by
    :func:`mark_counted`); ``earlier``: tries of earlier runs left out."""
    head = '<h2>Throughput</h2><div id="throughput">'
    timed = [t for t in tries if t["start"] is not None]
    if not timed:
        ran = "No mini-batch ran in this run." if earlier else "No mini-batch ran."
        return head + f'<p class="muted">{ran}</p></div>\n'
    t0 = min(t["start"] for t in timed)
    span = max(t["start"] + t["elapsed_s"] for t in timed) - t0
    width = next((w for w in _WIDTHS if span / w < MAX_BUCKETS), span / (MAX_BUCKETS - 1))
    n = int(span // width) + 1
    ok, bad = [0.0] * n, [0.0] * n
    for t in timed:
        i = min(n - 1, int((t["start"] + t["elapsed_s"] - t0) // width))
        kept = t["succeeded"] if t.get("counted", True) else 0.0
        ok[i] += kept
        bad[i] += t["failed"] + t["succeeded"] - kept
    rates = [(o / width, b / width) for o, b in zip(ok, bad, strict=True)]
    done = sum(ok) + sum(bad)
    which = " of this run's tries" if earlier else ""
    note = (
        f'<p class="muted">Items finished per second, in {figures(width)} s buckets, over '
        f"{duration(span)}{which}: {count(sum(ok))} succeeded (green), {count(sum(bad))} in "
        "tries that failed or were run again (red; a retried item counts once per try); "
        f"{figures(done / max(span, 1e-9))} items/s on average.</p>"
    )
    return head + note + _bar_chart(rates, width) + "</div>\n"


def _bar_chart(rates: list[tuple[float, float]], width: float) -> str:
    w, h, left, bottom, top = 860, 250, 56, 28, 22
    plot_w, plot_h = w - left - 10, h - bottom - top
    peak = nice(max((o + b for o, b in rates), default=0) or 1)
    bar_w = plot_w / len(rates)
    out = [
        f'<div class="chart"><svg id="throughput-chart" viewBox="0 0 {w} {h}" role="img" '
        'aria-label="items finished per second over time" xmlns="http://www.w3.org/2000/svg">'
        '<text x="4" y="12" font-size="11" fill="#656d76">items/s</text>'
    ]
    for frac in (0, 0.5, 1):
        y = top + plot_h * (1 - frac)
        out.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{w - 10}" y2="{y:.1f}" stroke="#e6e8eb"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" '
            f'fill="#656d76">{escape(figures(peak * frac))}</text>'
        )
    for i, (o, b) in enumerate(rates):
        x = left + i * bar_w
        for value, base, colour in ((o, 0.0, "#2da44e"), (b, o, "#cf222e")):
            if value <= 0:
                continue
            bh = plot_h * value / peak
            y = top + plot_h * (1 - base / peak) - bh
            out.append(
                f'<rect x="{x + 0.5:.1f}" y="{y:.1f}" width="{max(bar_w - 1, 0.5):.1f}" '
                f'height="{bh:.1f}" fill="{colour}"><title>{figures(i * width)}–'
                f"{figures((i + 1) * width)} s: {figures(value)} items/s</title></rect>"
            )
    end = len(rates) * width
    for frac, anchor in ((0, "start"), (0.5, "middle"), (1, "end")):
        out.append(
            f'<text x="{left + plot_w * frac:.1f}" y="{h - 10}" text-anchor="{anchor}" '
            f'font-size="11" fill="#656d76">{escape(figures(end * frac))} s</text>'
        )
    out.append(
        f'<line x1="{left}" y1="{top + plot_h}" x2="{w - 10}" y2="{top + plot_h}" '
        'stroke="#8c959f"/></svg></div>'
    )
    return "".join(out)
