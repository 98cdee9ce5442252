"""``report.html``: one self-contained page about a finished job.

Verdict and counts, throughput over time (:mod:`daskscore.ui.throughput`, which also picks
the tries of a resumed job's or a retry pass's own run for its charts of time), per-worker
timings, the slowest mini-batches (:mod:`daskscore.ui.slowest`) and failures, with inline CSS
and SVG charts drawn here: no script, font or image from elsewhere, so the file can be mailed as it
is.  Every text that comes from the job is escaped.  Its size is bounded whatever the job's:
charts aggregate (time buckets, the busiest workers), and the first :data:`MAX_FAILURES`
failures are listed with their tracebacks cut to :data:`MAX_ERROR_CHARS`.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterable
from html import escape
from pathlib import Path
from typing import Any

from daskscore.protocol import error_line, failed_at_import
from daskscore.ui import explain
from daskscore.ui.numbers import count as _int
from daskscore.ui.numbers import duration as _duration
from daskscore.ui.numbers import nice as _nice
from daskscore.ui.numbers import num as _num
from daskscore.ui.slowest import slowest_section
from daskscore.ui.throughput import MAX_BUCKETS as MAX_BUCKETS
from daskscore.ui.throughput import mark_counted, run_note, this_run, throughput_section

#: The report's file name, in the job's output folder.
REPORT_FILE = "report.html"
#: Failed mini-batches listed with their files and traceback; the rest are counted.
MAX_FAILURES = 100
#: Characters of one traceback in the report (its head and its tail are kept).
MAX_ERROR_CHARS = 6000
#: Files listed per failed mini-batch.
MAX_FILES = 20
#: Workers shown one by one; the others are summed into one row.
MAX_WORKERS = 40
_CARDS = [
    ("items", "total_items"), ("succeeded", "succeeded_items"), ("failed", "failed_items"),
    ("not run", "not_run_items"), ("rows written", "rows_written"),
    ("mini-batches", "total_mini_batches"), ("failed mini-batches", "failed_mini_batches"),
    ("partial", "partial_mini_batches"), ("retried", "retried_mini_batches"),
    ("resumed", "resumed_mini_batches"), ("not run mini-batches", "not_run_mini_batches"),
]  # fmt: skip
_ALWAYS = ("items", "succeeded", "mini-batches")
_SUMS = [("items", "total"), ("failed", "failed"), ("busy", "elapsed_s"), ("run", "run_s")]
_FACTS = ["started", "deployment", "input", "output", "predictions", "output_action"]

_CSS = """body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2328;
margin:0 auto;max-width:1000px;padding:16px 24px;background:#fff}
h1{font-size:22px;margin:8px 0}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.badge{display:inline-block;padding:2px 12px;border-radius:12px;color:#fff;font-weight:600}
.ok{background:#1a7f37}.warn{background:#bf8700}.bad{background:#cf222e}
.reason{margin:6px 0;font-weight:500}.muted{color:#656d76}
.cards{display:flex;flex-wrap:wrap;gap:8px;margin:10px 0}
.card{border:1px solid #d0d7de;border-radius:6px;padding:6px 12px;min-width:96px}
.card b{display:block;font-size:20px}.card span{color:#656d76;font-size:12px}
table{border-collapse:collapse;width:100%;margin:6px 0}th{white-space:nowrap}
th,td{border-bottom:1px solid #e6e8eb;padding:4px 8px;text-align:left;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:8px 0}dt{color:#656d76}
pre{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:8px;overflow:auto;
white-space:pre-wrap;word-break:break-word;font-size:12px;max-height:420px}
details>summary{cursor:pointer}svg{display:block;width:100%;height:auto}.chart{max-width:900px}
code{font-size:12px}dd{margin:0;word-break:break-all}
"""


def write_report(
    out_dir: Path,
    summary: dict[str, Any],
    attempts: Iterable[dict[str, Any]],
    since: float | None = None,
) -> Path:
    """Write ``<out_dir>/report.html`` for a job and return its path.

    Parameters
    ----------
    out_dir : Path
        The job's output folder.
    summary : dict
        The job's summary, as in ``job_summary.json``; missing keys are shown as unknown.
    attempts : iterable of dict
        One record per try of a mini-batch, as the job's books keep them (``mini_batch``,
        ``try``, ``worker``, ``start`` in epoch seconds, ``total``, ``succeeded``,
        ``failed``, ``elapsed_s``, ``run_s``, ``status``, ``error``, and a part's
        ``items``).  The rows of
        ``logs/sys/job_report/processed_mini-batches.csv`` read with :class:`csv.DictReader`
        work too: ``mini_batch_id`` and ISO-8601 ``start`` times are understood, and numbers
        may be strings.  Empty when no mini-batch ran (``init()`` failed).
    since : float, optional
        When this run of the job started (``time.time()``); default: the summary's
        ``started`` (to the second).  The charts of time of a resumed job or a retry pass are
        drawn from the tries that started since (:mod:`daskscore.ui.throughput`).

    Returns
    -------
    Path
        The report file.
    """
    tries = [_normalise(a) for a in attempts]
    mark_counted(tries)
    now = this_run(summary, tries, since)  # (a resumed job's or a retry pass's charts: this run's)
    title = f"daskscore job {summary.get('job_id') or ''}".strip()
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>\n"
        + _summary_section(summary)
        + run_note(len(now), len(tries) - len(now))
        + explain.time_section(summary, now)
        + throughput_section(now, len(tries) - len(now))
        + _workers_section(now)
        + explain.timeline_section(now)
        + slowest_section(tries, summary)
        + _failures_section(summary)
        + explain.settings_section(summary)
        + explain.logs_section(summary)
        + '<p class="muted">Written by daskscore.</p>\n</body></html>\n'
    )
    path = Path(out_dir) / REPORT_FILE
    tmp = path.with_name(REPORT_FILE + ".partial")
    tmp.write_text(page, encoding="utf-8", errors="backslashreplace")  # non-UTF-8 names
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------- the records
def _normalise(rec: dict[str, Any]) -> dict[str, Any]:
    out = {
        key: _num(rec.get(key)) for key in ("total", "succeeded", "failed", "elapsed_s", "run_s")
    }
    out["mini_batch"] = rec.get("mini_batch", rec.get("mini_batch_id"))
    out["worker"] = str(rec.get("worker") or "(unknown)")
    out["try"], out["status"] = rec.get("try"), rec.get("status")
    out["error"] = _last_line(rec.get("error")) if rec.get("error") else ""
    out["items"] = str(rec.get("items") or "")  # (a part's: ``0-4``)
    out["start"] = _epoch(rec.get("start"))
    return out


def _epoch(value: Any) -> float | None:
    number = _num(value)
    if not number and isinstance(value, str) and value:
        try:
            number = dt.datetime.fromisoformat(value).timestamp()
        except ValueError:
            return None
    return number or None


# ---------------------------------------------------------------------- the summary
def _summary_section(s: dict[str, Any]) -> str:
    status = str(s.get("status") or "Unknown")
    css, label = ("ok", status) if status == "Completed" else ("bad", status)
    css = "warn" if status == "Interrupted" else css
    if status == "Completed" and _num(s.get("failed_items")):
        css, label = "warn", "Completed with failures"
    nothing = _num(s.get("total_items")) and not _num(s.get("succeeded_items"))
    if nothing and not s.get("init_error"):  # red, whatever Azure's status says
        css, label = "bad", f"{status}, but no item succeeded"
    parts = [
        f"<h1>daskscore job <code>{escape(str(s.get('job_id') or '?'))}</code></h1>",
        f'<p id="status"><span class="badge {css}" data-status="{escape(status)}">'
        f"{escape(label)}</span></p>",
    ]
    if s.get("reason"):
        parts.append(f'<p class="reason">{escape(str(s["reason"]))}</p>')
    if nothing and s.get("replay"):
        parts.append(
            f'<p class="reason" id="no-success">Not one of {_int(s.get("total_items"))} items '
            "succeeded. Debug the first failed mini-batch in a terminal: "
            f"<code>{escape(str(s['replay']))} --pdb</code></p>"
        )
    if s.get("warnings"):
        shown = "".join(f"<li>{escape(str(w))}</li>" for w in s["warnings"])
        parts.append(f'<div id="warnings"><b>Warnings</b><ul>{shown}</ul></div>')
    # (a count of zero is no news: hidden, but the items, mini-batches and duration stay)
    cards = [(n, s.get(k)) for n, k in _CARDS if n in _ALWAYS or s.get(k) not in (0, None)]
    cards.append(("duration", _duration(s.get("duration_s"))))
    parts.append('<div class="cards" id="counts">')
    for name, value in cards:
        shown = value if isinstance(value, str) else _int(value)
        key = escape(name.replace(" ", "-"))
        parts.append(
            f'<div class="card" data-count="{key}"><b>{escape(shown)}</b>'
            f"<span>{escape(name)}</span></div>"
        )
    parts.append("</div>")
    threshold = s.get("error_threshold")
    rows = [(key.replace("_", " "), s.get(key)) for key in _FACTS]
    wrote = (s.get("settings") or {}).get("output_format")  # (--output-format: what was written)
    if wrote and wrote != s.get("output_action"):
        rows[_FACTS.index("output_action")] = ("output format", wrote)
    rows.append(("error threshold", "none (-1)" if threshold == -1 else threshold))
    facts = (
        f"<dt>{escape(k)}</dt><dd>{escape(str(v) if v or v == 0 else '—')}</dd>" for k, v in rows
    )
    parts.append(f"<dl>{''.join(facts)}</dl>")
    if s.get("init_error"):
        parts.append(
            f'<h2 id="init-error">{escape(_init_title(s["init_error"]))}</h2>'
            "<details open><summary>"
            f"{escape(_last_line(s['init_error']))}</summary>"
            f"<pre>{escape(_cut(str(s['init_error'])))}</pre></details>"
        )
    return "\n".join(parts) + "\n"


def _init_title(init_error: str) -> str:
    return (
        "Importing the scoring script failed" if failed_at_import(init_error) else "init() failed"
    )


# ---------------------------------------------------------------------- workers
def _workers_section(tries: list[dict[str, Any]]) -> str:
    head = '<h2>Workers</h2><div id="workers">'
    if not tries:
        return head + '<p class="muted">No mini-batch ran.</p></div>\n'
    groups: dict[str, list[dict[str, Any]]] = {}
    for t in tries:
        groups.setdefault(t["worker"], []).append(t)
    rows = [_worker_row(k, groups[k]) for k in sorted(groups, key=_natural)]
    if len(rows) > MAX_WORKERS:  # the busiest one by one, the others summed
        rows.sort(key=lambda r: -r["busy"])
        rest = [t for r in rows[MAX_WORKERS - 1 :] for t in groups[r["name"]]]
        others = f"{len(rows) - MAX_WORKERS + 1} other workers"
        rows = rows[: MAX_WORKERS - 1] + [_worker_row(others, rest)]
    table = [
        '<table id="workers-table"><tr><th>worker</th><th class="n">mini-batches</th>'
        '<th class="n">tries</th><th class="n">items</th><th class="n">failed items</th>'
        '<th class="n">busy</th><th class="n">mean run()</th></tr>'
    ]
    for r in rows:
        table.append(
            f"<tr><td>{escape(r['name'])}</td><td class='n'>{_int(r['batches'])}</td>"
            f"<td class='n'>{_int(r['tries'])}</td><td class='n'>{_int(r['items'])}</td>"
            f"<td class='n'>{_int(r['failed'])}</td><td class='n'>{_duration(r['busy'])}</td>"
            f"<td class='n'>{_duration(r['run'] / max(r['tries'], 1))}</td></tr>"
        )
    table.append("</table>")
    note = (
        '<p class="muted">Busy: the time of every try on the worker, mini-batch '
        "bookkeeping included; mean run(): the scoring script's own time per try.</p>"
    )
    shown = rows[: MAX_WORKERS - 1] if len(groups) > MAX_WORKERS else rows  # the chart: no sum
    return head + _worker_chart(shown, len(groups)) + note + "".join(table) + "</div>\n"


def _worker_row(name: str, tries: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": name,
        "tries": len(tries),
        "batches": len({t["mini_batch"] for t in tries}),
        **{k: sum(t[f] for t in tries) for k, f in _SUMS},
    }


def _worker_chart(rows: list[dict[str, Any]], workers: int) -> str:
    w, left, bar_h, top = 860, 170, 22, 8
    h = top + bar_h * len(rows) + 24
    peak = _nice(max(r["busy"] for r in rows) or 1)
    plot_w = w - left - 70
    out = [
        f'<div class="chart"><svg id="workers-chart" viewBox="0 0 {w} {h}" role="img" '
        'aria-label="busy seconds per worker" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, r in enumerate(rows):
        y = top + i * bar_h
        bw = max(plot_w * r["busy"] / peak, 1)
        name = r["name"] if len(r["name"]) <= 26 else "…" + r["name"][-25:]
        out.append(
            f'<text x="{left - 8}" y="{y + 15}" text-anchor="end" font-size="12" '
            f'fill="#1f2328">{escape(name)}</text>'
            f'<rect x="{left}" y="{y + 3}" width="{bw:.1f}" height="{bar_h - 6}" '
            f'fill="#0969da"><title>{escape(r["name"])}: {_duration(r["busy"])} busy</title></rect>'
            f'<text x="{left + bw + 6:.1f}" y="{y + 15}" font-size="11" '
            f'fill="#656d76">{_duration(r["busy"])}</text>'
        )
    y = top + bar_h * len(rows) + 16
    cut = f"; the busiest {len(rows)} of {workers} workers" if workers > len(rows) else ""
    out.append(
        f'<text x="{left}" y="{y}" font-size="11" fill="#656d76">busy time (scale: 0 to '
        f"{escape(_duration(peak))}{cut})</text></svg></div>"
    )
    return "".join(out)


# ---------------------------------------------------------------------- failures
def _failures_section(s: dict[str, Any]) -> str:
    failures = list(s.get("failures") or [])
    head = '<h2>Failures</h2><div id="failures">'
    if not failures:
        return head + '<p class="muted">No mini-batch failed.</p></div>\n'
    replay = s.get("replay")
    elsewhere = explain.replay_elsewhere(s)  # (an output URL: downloaded first)
    how = (
        f" Run the first of them again in a terminal, under a debugger: "
        f"<code>{escape(replay)} --pdb</code>."
        if replay
        else elsewhere and f" Run the first of them again: {escape(elsewhere)}."
    )
    listed = (
        " Every failed item: <code>failed_items.csv</code>." if s.get("failed_items_file") else ""
    )
    out = [
        head,
        f"<p>{_plural(len(failures), 'mini-batch', 'mini-batches')} with failed items."
        f"{listed}{how}</p>",
        explain.error_groups(failures, _last_line),
        '<table><tr><th class="n">mini-batch</th><th>status</th><th class="n">tries</th>'
        '<th class="n">failed items</th><th>files</th><th>error</th></tr>',
    ]
    for f in failures[:MAX_FAILURES]:
        files = [str(p) for p in f.get("files") or []]
        shown = "".join(
            f"<li>{escape(explain.shown_path(p, None))}</li>" for p in files[:MAX_FILES]
        )
        if len(files) > MAX_FILES:
            shown += f"<li>… and {_int(len(files) - MAX_FILES)} more</li>"
        first = ", ".join(explain.shown_path(p, s.get("input")) for p in files[:2])
        more = f" +{len(files) - 2}" if len(files) > 2 else ""
        error = str(f.get("error") or "")
        out.append(
            f"<tr class='failure' data-mini-batch='{escape(str(f.get('mini_batch_id')))}'>"
            f"<td class='n'>{escape(str(f.get('mini_batch_id')))}</td>"
            f"<td>{escape(explain.failure_status(f))}</td>"
            f"<td class='n'>{_int(f.get('tries'))}</td>"
            f"<td class='n'>{_int(f.get('failed'))} of "
            f"{_int(_num(f.get('failed')) + _num(f.get('succeeded')))}</td>"
            f"<td><details><summary>{escape(first + more or '—')}</summary><ul>{shown}</ul>"
            f"</details></td><td><details><summary>{escape(_last_line(error))}</summary>"
            f"<pre>{escape(_cut(error))}</pre></details></td></tr>"
        )
    out.append("</table>")
    if len(failures) > MAX_FAILURES:
        out.append(
            f'<p class="muted">… and {_int(len(failures) - MAX_FAILURES)} more failed '
            "mini-batches: see job_summary.json.</p>"
        )
    return "\n".join(out) + "</div>\n"


# ---------------------------------------------------------------------- formatting
def _cut(text: str) -> str:
    if len(text) <= MAX_ERROR_CHARS:
        return text
    head, tail = MAX_ERROR_CHARS // 4, MAX_ERROR_CHARS * 3 // 4
    cut = f"[... {len(text) - head - tail:,} characters cut; see job_summary.json ...]"
    return f"{text[:head]}\n{cut}\n{text[-tail:]}"


def _last_line(text: Any) -> str:
    return error_line(text, limit=160, empty="(no error text)")


def _plural(n: int, one: str, many: str) -> str:
    return f"{n:,} {one if n == 1 else many}"


def _natural(name: str) -> list[Any]:
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", name)]
