"""The report's "Slowest mini-batches" section: what a job waited on.

A job "stuck at 95 %" waits on a few long mini-batches.  The report names them after the fact:
the :data:`TOP` slowest tries, the tries whose process was ended while they ran (a timeout, a
crash), and, for a job cut short (``error_threshold`` exceeded), the slow ``run()`` calls still
in flight when it stopped (``running_at_end`` in the summary).  A part's try of a split
mini-batch (``--isolate-failures``) names its items.  Every text from the job is escaped.
"""

from __future__ import annotations

from html import escape
from typing import Any

from daskscore.protocol import error_line

#: The slowest tries listed.
TOP = 5
#: Tries ended with their process listed at most.
MAX_STOPPED = 20
#: How a try ended when its process was ended while it ran.
STOPPED = ("RUN_TIMEOUT", "PROCESS_DIED")


def slowest_section(tries: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    """The section's HTML, from the report's tries (``mini_batch``, ``try``, ``worker``,
    ``elapsed_s``, ``run_s``, ``status``, ``error``, and a part's ``items``) and the
    summary."""
    head = '<h2>Slowest mini-batches</h2><div id="slowest">'
    if not tries:
        return ""  # (the sections above say that no mini-batch ran)
    top = sorted(tries, key=lambda t: -t["elapsed_s"])[:TOP]
    out = [
        head,
        f'<p class="muted">The {len(top)} slowest tries (all tries: '
        "<code>logs/sys/job_report/processed_mini-batches.csv</code>).</p>",
        _table("slowest-table", top),
    ]
    stopped = [t for t in tries if t.get("status") in STOPPED]
    if stopped:
        stopped.sort(key=lambda t: (t["mini_batch"], t.get("try") or 0))
        out.append(
            f"<p>{len(stopped)} tr{'ies were' if len(stopped) > 1 else 'y was'} running when "
            "its process was ended (a timeout: where it was is in its error):</p>"
        )
        out.append(_table("stopped-table", stopped[:MAX_STOPPED]))
    running = list(summary.get("running_at_end") or [])
    if running:
        rows = "".join(
            f"<tr class='running'><td class='n'>{escape(str(r.get('mini_batch')))}</td>"
            f"<td class='n'>{escape(str(r.get('try')))}</td>"
            f"<td class='n'>{_secs(r.get('running_s'))}</td></tr>"
            for r in running
        )
        out.append(
            "<p>Still running when the job stopped:</p><table id='running-table'><tr>"
            '<th class="n">mini-batch</th><th class="n">try</th><th class="n">running for</th>'
            f"</tr>{rows}</table>"
        )
    return "\n".join(out) + "</div>\n"


def _table(name: str, tries: list[dict[str, Any]]) -> str:
    """The tries as rows; with an ``items`` column when one is a part's (--isolate-failures:
    the whole mini-batch's try and a part's would otherwise look alike)."""
    parts = any(t.get("items") for t in tries)
    rows = [
        f'<table id="{name}"><tr><th class="n">mini-batch</th>'
        + ('<th class="n">items</th>' if parts else "")
        + '<th class="n">try</th><th>worker</th><th>status</th><th class="n">took</th>'
        '<th class="n">run()</th><th>error</th></tr>'
    ]
    for t in tries:
        items = f"<td class='n'>{escape(str(t.get('items') or 'all'))}</td>" if parts else ""
        rows.append(
            f"<tr data-mini-batch='{escape(str(t['mini_batch']))}'>"
            f"<td class='n'>{escape(str(t['mini_batch']))}</td>{items}"
            f"<td class='n'>{escape(str(t.get('try') or ''))}</td>"
            f"<td>{escape(str(t['worker']))}</td><td>{escape(str(t.get('status') or ''))}</td>"
            f"<td class='n'>{_secs(t['elapsed_s'])}</td><td class='n'>{_secs(t['run_s'])}</td>"
            f"<td>{escape(_last_line(t.get('error')))}</td></tr>"
        )
    rows.append("</table>")
    return "".join(rows)


def _secs(value: Any) -> str:
    try:
        s = float(value)
    except (TypeError, ValueError):
        return "?"
    if s >= 60:
        return f"{int(s // 60)} min {int(s % 60)} s"
    return f"{s:.3g} s" if s >= 0.001 else "0 s"


def _last_line(text: Any) -> str:
    return error_line(text, limit=200)
