"""The notebook form of a job's progress: a small HTML bar and the counts, updated in place
(plain HTML with inline styles: no widget extension, nothing fetched), and what a plain-text
front end shows instead.
"""

from __future__ import annotations

from html import escape
from typing import Any

from daskscore.ui.barline import fmt_rate, fmt_s, running_text

__all__ = ["ENDINGS", "ProgressView", "render_html"]


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


#: How a job's display ends (:meth:`Progress.close`): the word shown, and its colour (the
#: bar's too; "done" is green, or amber where mini-batches failed, as report.html's verdict).
ENDINGS = {"done": None, "interrupted": "#bf8700", "failed": "#cf222e"}


def render_html(
    snapshot: dict[str, Any],
    link: str | None = None,
    finished: bool = False,
    ending: str = "done",
    reason: str | None = None,
    state: str = "running",
) -> str:
    """The notebook display of a :meth:`Progress.snapshot`: a small bar and the counts.

    Parameters
    ----------
    snapshot : dict
        Counts as :meth:`Progress.snapshot` returns them.
    link : str, optional
        The job's page on the Dask dashboard, shown as a link.
    finished : bool, default False
        The job is over: no ETA, and the bar says how it ended.
    ending : {"done", "interrupted", "failed"}, default "done"
        How it ended (with ``finished``): every mini-batch settled; stopped by Ctrl-C, a
        kernel interrupt or a signal; or failed (``init()`` raised, ``error_threshold``
        exceeded, no worker left, the output not written...).
    reason : str, optional
        What failed (with ``finished``): shown under the counts, in the ending's colour.
    state : str, default "running"
        The word shown while not ``finished``: "writing the output" once every mini-batch has
        settled (:meth:`Progress.settled`), with no ETA.

    Returns
    -------
    str
        An HTML fragment with inline styles only (no script, nothing fetched).
    """
    s = snapshot
    total, items = s["items_total"], s["items_done"]
    frac = items / total if total else 1.0
    failed, partial = s["failed_mini_batches"], s.get("partial_mini_batches", 0)
    colour = "#bf8700" if failed or partial else "#2da44e"
    tone, busy = "", not finished and state == "running"
    if finished:
        state, ended = ending, ENDINGS.get(ending)
        colour = ended or colour
        tone = f' style="color:{ended};font-weight:600"' if ended else ""
    parts = [
        f'<span data-field="mini-batches">{s["mini_batches_done"]}/{s["mini_batches_total"]}'
        "</span> mini-batches",
        f'<span data-field="items">{items:,}/{total:,}</span> items',
        f'<span data-field="rate">{fmt_rate(s["items_per_s"])}</span> items/s',
        f"elapsed {fmt_s(s['elapsed_s'])}",
    ]
    if partial:  # (run() returned fewer results than items: as report.html counts them)
        parts.insert(
            1, f'<span data-field="partial" style="color:#bf8700">{partial} partial</span>'
        )
    if failed:
        parts.insert(1, f'<span data-field="failed" style="color:#cf222e">{failed} failed</span>')
    if s.get("alert") and busy:
        parts.insert(1, f'<b data-field="alert" style="color:#bf8700">{escape(s["alert"])}</b>')
    if s["eta_s"] is not None and busy:
        parts.append(f'ETA <span data-field="eta">{fmt_s(s["eta_s"])}</span>')
    if s.get("running") and busy:
        parts.append(f'<span data-field="running">{escape(running_text(s["running"]))}</span>')
    if link:
        parts.append(f'<a href="{escape(link)}" target="_blank">daskscore page</a>')
    why = ""
    if finished and reason:
        colour_of = ENDINGS.get(ending) or "inherit"
        why = f'<div data-field="reason" style="color:{colour_of}">{escape(reason)}</div>'
    return (
        '<div class="daskscore-progress" style="font:13px/1.6 sans-serif">'
        '<div style="display:flex;align-items:center;gap:8px">'
        f'<div role="progressbar" aria-valuenow="{frac * 100:.0f}" style="width:240px;'
        'height:10px;background:#e5e7eb;border-radius:5px;overflow:hidden">'
        f'<div style="width:{frac * 100:.1f}%;height:100%;background:{colour}"></div></div>'
        f"<b>{frac:.0%}</b> <span data-field='state'{tone}>{escape(state)}</span></div>"
        f"<div>{' &middot; '.join(parts)}</div>{why}</div>"
    )
