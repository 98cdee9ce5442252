"""The parts of ``report.html`` that say where a job's time went and how it ran: the phase
waterfall, the overhead around ``run()``, the per-worker timeline, failures grouped by
error, the settings and versions, and links to the logs.

The summary's ``settings`` and ``versions`` are made here too (:func:`job_settings`,
:func:`versions`): what the report shows is decided next to the report.
"""

from __future__ import annotations

import platform
from html import escape
from pathlib import Path
from typing import Any

from daskscore.ui.termtext import shown

#: The phases of a job, in order, as ``job_summary.json`` ``phases`` names them.
PHASES = ("start_cluster", "init", "score", "assemble")
_PHASE_COLOURS = {"start_cluster": "#8250df", "init": "#bf8700", "score": "#2da44e"}
#: Workers drawn in the timeline, at most (the first ones, in name order).
TIMELINE_WORKERS = 40
#: Tries drawn in the timeline, at most (the longest ones beyond this are kept).
TIMELINE_TRIES = 5000
#: Mini-batches named per error group.
GROUP_NAMED = 10
#: The logs linked from the report: (relative path, what it holds).
LOGS = (
    ("job_summary.json", "the summary: counts, phases, settings, every failure"),
    ("logs/job_result.txt", "the verdict, as Azure writes it"),
    ("logs/job_error.txt", "the errors"),
    ("logs/sys/daskscore.txt", "daskscore's and Dask's own log"),
    ("logs/sys/job_report/processed_mini-batches.csv", "one row per try of a mini-batch"),
    ("logs/user/error/", "the scoring script's tracebacks"),
)


def job_settings(
    settings: Any, workers: int | None = None, output_format: str | None = None
) -> dict[str, Any]:
    """The settings a job ran with (``job_summary.json`` ``settings``)."""
    retry = settings.retry_settings
    return {
        "mini_batch_size": settings.mini_batch_size,
        "max_retries": retry.max_retries,
        "timeout": retry.timeout,
        "workers": workers,
        "error_threshold": settings.error_threshold,
        "output_format": output_format,
    }


def versions() -> dict[str, str]:
    """daskscore's, Dask's and Python's versions (``job_summary.json`` ``versions``)."""
    from importlib import metadata

    import dask

    try:
        mine = metadata.version("daskscore")
    except metadata.PackageNotFoundError:  # (run from a source tree that is not installed)
        mine = "unknown"
    return {"daskscore": mine, "dask": dask.__version__, "python": platform.python_version()}


def shown_path(path: str, root: Any) -> str:
    """A failed file as the user knows it: relative to the input root when it lies under it
    (base names alone are ambiguous when folders repeat names), else as it is; a line break
    in its name written out (``\\n``), so that the failure's line stays one line, and so are
    its control and format characters (``\\x1b``, a right-to-left override ``\\u202e``:
    :func:`~daskscore.ui.termtext.shown`), on a terminal and in ``report.html`` alike."""
    if root:
        base = str(root).rstrip("/\\")
        for sep in ("/", "\\"):
            if path.startswith(base + sep):
                path = path[len(base) + 1 :]
                break
    return shown(path.replace("\n", "\\n"))


def uploaded(summary: dict[str, Any], url: str) -> dict[str, Any]:
    """The summary of a job whose output is uploaded to ``url``, as the files uploaded with it
    say it: its paths under ``url`` (its local assembly folder goes once uploaded), and no
    replay command (a replay reads the job from a local folder: :func:`replay_elsewhere`)."""
    s, base = dict(summary), url.rstrip("/")
    s["output"] = url
    for key in ("failed_items_file", "predictions"):
        if s.get(key):
            s[key] = f"{base}/{Path(str(s[key])).name}"
    s["replay"] = None
    return s


def replay_elsewhere(summary: dict[str, Any]) -> str:
    """How to replay the first failed mini-batch of a job whose output is a URL: download the
    output folder, then replay it ("" for a local output, or when nothing failed)."""
    failures, output = summary.get("failures") or [], str(summary.get("output") or "")
    if summary.get("replay") or not failures or "://" not in output:
        return ""
    return (
        f"download {output} into a local folder, then `daskscore replay FOLDER --mini-batch "
        f"{failures[0]['mini_batch_id']}` (a replay reads the job from a local folder)"
    )


#: How run() that returned fewer results than items says so (the try's error, a partial's)
_SHORT = "run() returned "


def failure_status(failure: dict[str, Any]) -> str:
    """A failed mini-batch's status (a ``failures`` entry of ``job_summary.json``) as the
    terminal and ``report.html`` say it: a partial one, whose run() returned (``RUN_DONE``,
    Azure's status, which the summary keeps) with fewer results than items or naming its
    failed items, says so: ``partial: returned 1 result for 2 files``."""
    status = str(failure.get("status") or "")
    if status != "RUN_DONE":
        return status
    error = str(failure.get("error") or "")
    if error.startswith(_SHORT):
        return "partial: " + error.splitlines()[0][len("run() ") :]
    failed, succeeded = failure.get("failed") or 0, failure.get("succeeded") or 0
    return f"partial: {failed} of {failed + succeeded} items failed"


def _secs(value: Any) -> str:
    try:
        s = float(value)
    except (TypeError, ValueError):
        return "?"
    if s < 1:
        return f"{s * 1000:.3g} ms" if s else "0 s"
    if s >= 3600:
        return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"
    return f"{int(s // 60)} min {int(s % 60)} s" if s >= 60 else f"{s:.3g} s"


# ---------------------------------------------------------------------- where time went
def time_section(summary: dict[str, Any], tries: list[dict[str, Any]]) -> str:
    """The phase waterfall and the overhead around ``run()``."""
    return (
        '<h2>Where the time went</h2><div id="time">'
        + _waterfall(summary)
        + _overhead(tries)
        + "</div>\n"
    )


def _waterfall(s: dict[str, Any]) -> str:
    phases = {k: float(v) for k, v in (s.get("phases") or {}).items() if _is_num(v)}
    if not phases:
        return '<p class="muted">No phase was timed.</p>'
    order = [p for p in PHASES if p in phases] + [p for p in phases if p not in PHASES]
    total = max(float(s.get("duration_s") or 0), sum(phases.values()), 1e-9)
    w, left, bar_h, top = 860, 120, 24, 6
    plot_w = w - left - 90
    h = top + bar_h * len(order) + 22
    out = [
        f'<div class="chart"><svg id="phases-chart" viewBox="0 0 {w} {h}" role="img" '
        'aria-label="the phases of the job, one after another" '
        'xmlns="http://www.w3.org/2000/svg">'
    ]
    at = 0.0
    for i, name in enumerate(order):
        sec = phases[name]
        x, bw, y = left + plot_w * at / total, max(plot_w * sec / total, 1), top + i * bar_h
        colour = _PHASE_COLOURS.get(name, "#0969da")
        out.append(
            f'<g data-phase="{escape(name)}"><text x="{left - 8}" y="{y + 16}" '
            f'text-anchor="end" font-size="12" fill="#1f2328">{escape(name)}</text>'
            f'<rect x="{x:.1f}" y="{y + 4}" width="{bw:.1f}" height="{bar_h - 8}" '
            f'fill="{colour}"><title>{escape(name)}: {_secs(sec)}</title></rect>'
            f'<text x="{x + bw + 6:.1f}" y="{y + 16}" font-size="11" fill="#656d76">'
            f"{_secs(sec)} ({sec / total:.0%})</text></g>"
        )
        at += sec
    out.append(
        f'<text x="{left}" y="{h - 6}" font-size="11" fill="#656d76">0 to '
        f"{escape(_secs(total))} of wall-clock time</text></svg></div>"
    )
    return "".join(out)


def _overhead(tries: list[dict[str, Any]]) -> str:
    busy = sum(t["elapsed_s"] for t in tries)
    run = sum(t["run_s"] for t in tries)
    if busy <= 0:
        return ""
    over = max(busy - run, 0.0)
    share = f"{over / busy:.0%}" if over >= busy / 10 else f"{over / busy:.1%}"
    return (
        f'<p id="overhead" data-busy="{busy:.3f}" data-run="{run:.3f}">Workers were busy '
        f"{_secs(busy)} in all, {_secs(run)} of it in the scoring script's <code>run()</code>: "
        f"<b>{share} overhead</b> ({_secs(over)}: reading the inputs, staging the "
        "results, bookkeeping).</p>"
    )


def _is_num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# ---------------------------------------------------------------------- per-worker timeline
def timeline_section(tries: list[dict[str, Any]]) -> str:
    """Each worker's tries on one time axis: when it ran what, and its idle gaps."""
    timed = [t for t in tries if t["start"] is not None]
    if not timed:
        return ""
    if len(timed) > TIMELINE_TRIES:
        timed = sorted(timed, key=lambda t: -t["elapsed_s"])[:TIMELINE_TRIES]
    t0 = min(t["start"] for t in timed)
    span = max(max(t["start"] + t["elapsed_s"] for t in timed) - t0, 1e-9)
    workers = sorted({t["worker"] for t in timed})[:TIMELINE_WORKERS]
    row = {name: i for i, name in enumerate(workers)}
    w, left, bar_h, top = 860, 170, 18, 6
    plot_w = w - left - 10
    h = top + bar_h * len(workers) + 22
    out = [
        '<h2>Timeline</h2><div id="timeline"><div class="chart"><svg id="timeline-chart" '
        f'viewBox="0 0 {w} {h}" role="img" aria-label="tries per worker over time" '
        'xmlns="http://www.w3.org/2000/svg">'
    ]
    for name, i in row.items():
        label = name if len(name) <= 26 else "…" + name[-25:]
        out.append(
            f'<text x="{left - 8}" y="{top + i * bar_h + 13}" text-anchor="end" '
            f'font-size="11" fill="#1f2328">{escape(label)}</text>'
        )
    # one path per worker and colour (a job of thousands of tries stays a small file)
    paths: dict[tuple[str, str], list[str]] = {}
    for t in timed:
        if t["worker"] not in row:
            continue
        x = left + plot_w * (t["start"] - t0) / span
        bw = max(plot_w * t["elapsed_s"] / span, 0.8)
        y = top + row[t["worker"]] * bar_h + 3
        colour = "#cf222e" if t["failed"] else "#2da44e"
        paths.setdefault((t["worker"], colour), []).append(
            f"M{x:.1f} {y}h{bw:.1f}v{bar_h - 6}h{-bw:.1f}z"
        )
    for (name, colour), parts in paths.items():
        out.append(
            f'<path class="tries" d="{"".join(parts)}" fill="{colour}">'
            f"<title>{escape(name)}: {len(parts):,} tries</title></path>"
        )
    out.append(
        f'<text x="{left}" y="{h - 6}" font-size="11" fill="#656d76">0 to {escape(_secs(span))}'
        " from the first try; green: a try whose items succeeded, red: one with failed items"
        "</text></svg></div></div>\n"
    )
    return "".join(out)


# ---------------------------------------------------------------------- failures by error
def error_groups(failures: list[dict[str, Any]], last_line: Any) -> str:
    """The failed mini-batches grouped by their error's last line (its type and message)."""
    if not failures:
        return ""
    groups: dict[str, list[dict[str, Any]]] = {}
    for f in failures:
        groups.setdefault(last_line(f.get("error")), []).append(f)
    out = [
        '<table id="failure-groups"><tr><th>error</th><th class="n">mini-batches</th>'
        '<th class="n">failed items</th><th>which</th></tr>'
    ]
    for error, group in sorted(groups.items(), key=lambda g: -len(g[1])):
        ids = [str(f.get("mini_batch_id")) for f in group[:GROUP_NAMED]]
        more = f" … +{len(group) - GROUP_NAMED}" if len(group) > GROUP_NAMED else ""
        failed = sum(int(f.get("failed") or 0) for f in group)
        out.append(
            f"<tr class='failure-group'><td><code>{escape(error)}</code></td>"
            f"<td class='n'>{len(group):,}</td><td class='n'>{failed:,}</td>"
            f"<td>{escape(', '.join(ids) + more)}</td></tr>"
        )
    out.append("</table>")
    return "".join(out)


# ---------------------------------------------------------------------- settings and logs
def settings_section(s: dict[str, Any]) -> str:
    """The settings and versions the job ran with, and its configuration warnings."""
    rows = [("setting", k, k, v) for k, v in (s.get("settings") or {}).items()]
    rows += [("version", k, f"{k} version", v) for k, v in (s.get("versions") or {}).items()]
    if not rows:
        return ""
    shown = "".join(
        f'<dt>{escape(label.replace("_", " "))}</dt><dd data-{kind}="{escape(k)}">'
        f"{escape('—' if v is None else str(v))}</dd>"
        for kind, k, label, v in rows
    )
    return f'<h2>Settings</h2><dl id="settings">{shown}</dl>\n'


def logs_section(s: dict[str, Any]) -> str:
    """Links to the job's logs, relative to the report (it sits in the output folder)."""
    links = list(LOGS)
    if s.get("failed_items_file"):
        links.insert(1, ("failed_items.csv", "every failed item, one per line"))
    items = "".join(
        f'<li><a href="{escape(path)}">{escape(path)}</a> <span class="muted">{escape(what)}'
        "</span></li>"
        for path, what in links
    )
    return f'<h2>Logs</h2><ul id="logs">{items}</ul>\n'
