"""The daskscore page of the Dask dashboard: the jobs on a scheduler and their counts.

:func:`install_page` runs on the scheduler (through ``client.run_on_scheduler``) and adds two
routes to the scheduler's own HTTP server, beside Dask's dashboard: ``/daskscore``, a page
that refreshes itself every two seconds, and ``/daskscore/status.json``, what it shows.

A driver publishes its job's counts as scheduler events on the topic :data:`TOPIC`
(``Scheduler.log_event``: no daskscore code runs on the scheduler for that), at most once per
:data:`PUBLISH_PERIOD_S` and without waiting for the answer, so the dispatch loop never
blocks on it; the final counts, those of ``job_summary.json``, are sent and waited for.  The
page shows the newest event of every job; the scheduler keeps the last
``distributed.admin.low-level-log-length`` events (1000) of the topic.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from tornado import web

from daskscore import _compat

logger = logging.getLogger("daskscore")

#: The scheduler event topic that drivers publish their jobs' counts on.
TOPIC = "daskscore-jobs"
#: The page's path on the scheduler's HTTP server (after Dask's own prefix, if any).
PAGE_PATH = "/daskscore"
#: Seconds between two publications of a running job's counts.
PUBLISH_PERIOD_S = 1.0
#: Seconds the final publication of a job may take before it is given up.
FINAL_TIMEOUT_S = 5.0
#: The page fetches nothing but its own status.json, and runs nothing but its inline script.
CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src data:"
)


def page_link(dashboard_link: str) -> str:
    """The daskscore page's link, from the Dask dashboard's (``http://host:8787/status``).

    Parameters
    ----------
    dashboard_link : str
        ``client.dashboard_link``; behind a proxy it may carry a path before ``/status``.

    Returns
    -------
    str
        The same base followed by :data:`PAGE_PATH`.
    """
    base = dashboard_link.split("?", 1)[0].rstrip("/")
    if base.endswith("/status"):
        return base[: -len("/status")] + PAGE_PATH
    parts = urlsplit(base)
    return f"{parts.scheme}://{parts.netloc}{PAGE_PATH}"


def install(client: Any) -> bool:
    """Install the page on the client's scheduler; False when that cannot be done.

    The scheduler must be able to import daskscore (an embedded cluster's always can).
    """
    try:
        client.run_on_scheduler(install_page)
    except Exception:  # noqa: BLE001 - no daskscore there: no page, the job runs all the same
        logger.debug("the daskscore page could not be installed", exc_info=True)
        return False
    return True


def install_page(dask_scheduler: Any) -> bool:
    """Add the page's routes to the scheduler's HTTP server (run on the scheduler).

    Parameters
    ----------
    dask_scheduler : distributed.Scheduler
        Given by ``client.run_on_scheduler``.

    Returns
    -------
    bool
        True when the routes were added; False when they were there already.
    """
    app = dask_scheduler.http_application
    if getattr(app, "_daskscore_page", False):
        return False
    # Dask's own prefix of its routes (--dashboard-prefix), read off its health route
    path = _compat.http_route_prefix(app, "/health") + PAGE_PATH
    kwargs = {"scheduler": dask_scheduler}
    app.add_handlers(
        r".*",
        [(path + "/?", PageHandler, kwargs), (path + "/status.json", StatusHandler, kwargs)],
    )
    app._daskscore_page = True
    return True


def jobs(scheduler: Any) -> list[dict[str, Any]]:
    """The newest counts of every job on ``scheduler``, the latest started first.

    Each job's record is its newest event (the highest ``seq``, whatever the order the events
    arrived in), with ``updated`` (the event's time) and ``age_s`` (seconds since) added.
    """
    latest: dict[str, dict[str, Any]] = {}
    for stamp, msg in scheduler.get_events(TOPIC):
        if not isinstance(msg, dict) or not isinstance(msg.get("job_id"), str):
            continue
        held = latest.get(msg["job_id"])
        if held is None or msg.get("seq", 0) >= held.get("seq", 0):
            latest[msg["job_id"]] = {**msg, "updated": stamp}
    now = time.time()
    rows = [{**r, "age_s": round(max(0.0, now - r["updated"]), 1)} for r in latest.values()]
    return sorted(rows, key=lambda r: r.get("started", 0), reverse=True)


class _Handler(web.RequestHandler):
    def initialize(self, scheduler: Any) -> None:
        self.scheduler = scheduler

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")


class PageHandler(_Handler):
    """``/daskscore``: the page; a script in it fetches ``status.json`` every 2 s."""

    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Content-Security-Policy", CSP)
        self.write(PAGE)


class StatusHandler(_Handler):
    """``/daskscore/status.json``: ``{"jobs": [...], "time": <epoch seconds>}``."""

    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps({"jobs": jobs(self.scheduler), "time": time.time()}))


def publish(client: Any, job_id: str, counts: dict[str, Any], *, wait: bool = False) -> None:
    """Publish a job's counts on the scheduler, as an event on :data:`TOPIC`.

    Parameters
    ----------
    client : distributed.Client
        The job's client.
    job_id : str
        The job.
    counts : dict
        Numbers and strings only (events travel as msgpack).
    wait : bool, default False
        Wait (up to :data:`FINAL_TIMEOUT_S`) until the scheduler has it; otherwise the event
        is sent from the client's event loop and this returns at once.
    """
    msg = {**counts, "job_id": job_id}
    try:
        if wait:
            client.sync(_send, client, msg, callback_timeout=FINAL_TIMEOUT_S)
        else:
            client.loop.add_callback(_send, client, msg)
    except Exception:  # noqa: BLE001 - the page is a convenience; the job goes on without it
        logger.debug("publishing the counts of job %s failed", job_id, exc_info=True)


async def _send(client: Any, msg: dict[str, Any]) -> None:
    try:
        await client.scheduler.log_event(topic=TOPIC, msg=msg)
    except Exception:  # noqa: BLE001
        logger.debug("publishing job counts failed", exc_info=True)


def summary_counts(summary: dict[str, Any]) -> dict[str, Any]:
    """The page's counts of a finished job, from its ``job_summary.json``."""
    done = summary["succeeded_items"] + summary["failed_items"]
    duration = float(summary["duration_s"])
    return {
        "status": summary["status"],
        "mini_batches_done": summary["total_mini_batches"] - summary["not_run_mini_batches"],
        "mini_batches_total": summary["total_mini_batches"],
        "failed_mini_batches": summary["failed_mini_batches"],
        "items_done": done,
        "items_total": summary["total_items"],
        "failed_items": summary["failed_items"],
        "items_per_s": done / duration if duration > 0 else 0.0,
        "elapsed_s": duration,
        "eta_s": None,
    }


class JobBoard:
    """A job's row on the daskscore page; with ``client=None`` every method does nothing.

    Used as a context manager around the job: a job left by an exception before
    :meth:`finish` shows as ``Failed`` (``Interrupted`` for Ctrl-C).
    """

    def __init__(
        self, client: Any, job_id: str, deployment: str | None, link: str | None = None
    ) -> None:
        self.client = client
        self.job_id = job_id
        #: the page's link, when it is installed
        self.link = link
        self._base = {"deployment": deployment, "started": time.time()}
        self._counts: dict[str, Any] = {}
        self._seq = 0
        self._last = -float("inf")
        self._finished = False

    def tick(self, counts: Callable[[], dict[str, Any]]) -> None:
        """Publish ``counts()`` as the running job's, unless that was done under a second ago."""
        now = time.monotonic()
        if self.client is None or now - self._last < PUBLISH_PERIOD_S:
            return
        self._last = now
        self._counts = counts()
        self._publish({**self._counts, "status": "Running"}, wait=False)

    def finish(self, summary: dict[str, Any]) -> None:
        """Publish the final counts, those of ``job_summary.json``, and wait until they are in."""
        self._finished = True
        if self.client is not None:
            self._publish(summary_counts(summary), wait=True)

    def _publish(self, counts: dict[str, Any], wait: bool) -> None:
        self._seq += 1
        publish(self.client, self.job_id, {**self._base, **counts, "seq": self._seq}, wait=wait)

    def __enter__(self) -> JobBoard:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.client is None or self._finished or exc_type is None:
            return
        status = "Interrupted" if issubclass(exc_type, KeyboardInterrupt) else "Failed"
        self._publish({**self._counts, "status": status}, wait=True)


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>daskscore jobs</title>
<link rel="icon" href="data:,">
<style>
body { font: 14px/1.5 system-ui, sans-serif; margin: 24px; color: #1f2328; }
h1 { font-size: 20px; margin: 0 0 4px; } .note { color: #656d76; margin: 0 0 16px; }
table { border-collapse: collapse; } th, td { padding: 6px 12px; text-align: right; }
th { border-bottom: 2px solid #d0d7de; white-space: nowrap; }
td { border-bottom: 1px solid #eaeef2; font-variant-numeric: tabular-nums; }
th:nth-child(-n+3), td:nth-child(-n+3) { text-align: left; }
td[data-field=job-id] { font-family: ui-monospace, monospace; }
td[data-field=deployment] { max-width: 360px; overflow: hidden; text-overflow: ellipsis; }
.status { color: #fff; border-radius: 10px; padding: 1px 8px; background: #6e7781; }
.running .status { background: #0969da; } .completed .status { background: #1a7f37; }
.failed .status { background: #cf222e; } .bad { color: #cf222e; font-weight: 600; }
</style></head><body>
<h1>daskscore jobs on this scheduler</h1>
<p class="note"><span id="note">loading&hellip;</span> &middot;
<a id="dask" href="status">Dask dashboard</a> &middot; <a id="json" href="">status.json</a></p>
<noscript><p>This page needs JavaScript; the counts are in status.json.</p></noscript>
<table><thead><tr><th>job</th><th>deployment</th><th>status</th><th>mini-batches</th>
<th>failed mini-batches</th><th>items</th><th>failed items</th><th>items/s</th>
<th>elapsed</th><th>last update</th></tr></thead><tbody id="rows"></tbody></table>
<p id="empty" class="note" hidden>No daskscore job has run on this scheduler yet.</p>
<script>
"use strict";
const base = location.pathname.replace(/\\/+$/, "");
const url = base + "/status.json";
document.getElementById("json").href = url;
document.getElementById("dask").href = base.replace(/daskscore$/, "status");
const num = (n) => Number(n || 0).toLocaleString("en-US");
const two = (n) => String(Math.floor(n)).padStart(2, "0");
function secs(s) {
  s = Math.max(0, Math.floor(s || 0));
  if (s >= 3600) return Math.floor(s / 3600) + "h" + two(s % 3600 / 60) + "m";
  if (s >= 60) return Math.floor(s / 60) + "m" + two(s % 60) + "s";
  return s + "s";
}
function cell(tr, field, text, bad) {
  const td = document.createElement("td");
  td.dataset.field = field;
  td.textContent = text;
  if (bad) td.className = "bad";
  tr.appendChild(td);
  return td;
}
function row(j) {
  const tr = document.createElement("tr");
  tr.dataset.jobId = j.job_id;
  tr.className = String(j.status).toLowerCase();
  cell(tr, "job-id", j.job_id);
  cell(tr, "deployment", j.deployment || "").title = j.deployment || "";
  const status = document.createElement("span");
  status.className = "status";
  status.textContent = j.status;
  cell(tr, "status", "").appendChild(status);
  cell(tr, "mini-batches", num(j.mini_batches_done) + "/" + num(j.mini_batches_total));
  cell(tr, "failed-mini-batches", num(j.failed_mini_batches), j.failed_mini_batches > 0);
  cell(tr, "items", num(j.items_done) + "/" + num(j.items_total));
  cell(tr, "failed-items", num(j.failed_items), j.failed_items > 0);
  const rate = Number(j.items_per_s || 0);
  cell(tr, "items-per-s", rate < 10 ? rate.toFixed(1) : num(Math.round(rate)));
  cell(tr, "elapsed", secs(j.elapsed_s));
  cell(tr, "last-update", j.age_s < 2 ? "just now" : secs(j.age_s) + " ago");
  return tr;
}
async function refresh() {
  const note = document.getElementById("note");
  try {
    const response = await fetch(url, {cache: "no-store"});
    const data = await response.json();
    document.getElementById("rows").replaceChildren(...data.jobs.map(row));
    document.getElementById("empty").hidden = data.jobs.length > 0;
    note.textContent = "updated " + new Date().toLocaleTimeString();
  } catch (err) {
    note.textContent = "the scheduler does not answer (" + err + ")";
  }
}
refresh();
setInterval(refresh, 2000);
</script></body></html>
"""
