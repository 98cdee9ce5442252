"""The daskscore page of the Dask dashboard: the jobs on a scheduler and their counts.

:func:`install_page` runs on the scheduler (through ``client.run_on_scheduler``) and adds two
routes to the scheduler's own HTTP server, beside Dask's dashboard: ``/daskscore``, a page
that refreshes itself every two seconds, and ``/daskscore/status.json``, what it shows.

A driver publishes its job's counts as scheduler events on the topic :data:`TOPIC`
(``Scheduler.log_event``: no daskscore code runs on the scheduler for that), at most once per
:data:`PUBLISH_PERIOD_S` and without waiting for the answer, so the dispatch loop never
blocks on it (its failures only when they changed: the page shows a job's newest); the
final counts, those of ``job_summary.json``, are sent and waited for.  The
page shows the newest event of every job; the scheduler keeps the last
``distributed.admin.low-level-log-length`` events (1000) of the topic.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from tornado import web

from daskscore import _compat
from daskscore.ui.dashpage import PAGE
from daskscore.ui.taskkeys import parse_key

logger = logging.getLogger("daskscore")

#: The scheduler event topic that drivers publish their jobs' counts on.
TOPIC = "daskscore-jobs"
#: The page's path on the scheduler's HTTP server (after Dask's own prefix, if any).
PAGE_PATH = "/daskscore"
#: Seconds between two publications of a running job's counts.
PUBLISH_PERIOD_S = 1.0
#: Seconds after which a running job's failures are published again though unchanged (the
#: scheduler keeps its last 1000 events: an old one may be gone).
RESEND_S = 30.0
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
    failures: dict[str, tuple[int, Any]] = {}  # (job -> the newest failures sent, and seq)
    for stamp, msg in scheduler.get_events(TOPIC):
        if not isinstance(msg, dict) or not isinstance(msg.get("job_id"), str):
            continue
        job, seq = msg["job_id"], msg.get("seq", 0)
        if "failures" in msg and seq >= failures.get(job, (-1, None))[0]:
            failures[job] = (seq, msg["failures"])
        held = latest.get(job)
        if held is None or seq >= held.get("seq", 0):
            latest[job] = {**msg, "updated": stamp}
    for job, (_, shown) in failures.items():  # (a job's failures are sent when they change)
        latest[job].setdefault("failures", shown)
    now = time.time()
    rows = [{**r, "age_s": round(max(0.0, now - r["updated"]), 1)} for r in latest.values()]
    for r in rows:
        if r.get("status") == "Running":
            r["workers"] = workers_of(scheduler, r["job_id"])
    return sorted(rows, key=lambda r: r.get("started", 0), reverse=True)


def workers_of(scheduler: Any, job_id: str) -> list[dict[str, Any]]:
    """Every worker of the scheduler, busy with a task of job ``job_id`` or idle: its name, the
    task's mini-batches (read off its key, see :mod:`daskscore.ui.taskkeys`) and how long the
    worker has been executing it (as its last heartbeat said; None before one).

    A worker holds the task it runs and the one queued behind it (``processing`` holds both):
    the task named is the one it executes, as its last heartbeat said (``executing``); before
    that heartbeat, the job's oldest task there, which it runs first."""
    rows = []
    for address, ws in list(scheduler.workers.items()):
        executing = dict(getattr(ws, "executing", None) or {})
        row: dict[str, Any] = {"worker": str(ws.name if ws.name is not None else address)}
        held = []  # (not executing, attempt, task, its key parsed): the job's tasks there
        for ts in list(ws.processing):
            parsed = parse_key(ts.key)
            if parsed is not None and parsed[2].endswith("-" + job_id):
                held.append((ts not in executing, parsed[2], ts, parsed))
        if held:  # (attempts are numbered in the order they were sent: r01a000007-...)
            _, attempt, ts, (first, last, _) = min(held, key=lambda h: (h[0], h[1]))
            seconds = executing.get(ts)
            row.update(
                mini_batches=[first, last],
                attempt=attempt,
                running_s=None if seconds is None else round(float(seconds), 1),
            )
        row["busy"] = "mini_batches" in row
        rows.append(row)
    return sorted(rows, key=lambda r: r["worker"])


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
        "partial_mini_batches": summary.get("partial_mini_batches", 0),
        "items_done": done,
        "items_total": summary["total_items"],
        "succeeded_items": summary["succeeded_items"],
        "failed_items": summary["failed_items"],
        "items_per_s": done / duration if duration > 0 else 0.0,
        "elapsed_s": duration,
        "eta_s": None,
    }


Verdict = Callable[[dict[str, Any]], tuple[str, str]]


def verdict(summary: dict[str, Any]) -> tuple[str, str]:
    """A finished job's verdict and tone (``ok``, ``warn``, ``bad``), as ``report.html`` words
    it; the engine hands :class:`JobBoard` its own (``resultview.verdict``), this is for a
    board without one (a test's)."""
    status = str(summary.get("status") or "Unknown")
    label, tone = status, "ok" if status == "Completed" else "bad"
    if status == "Completed" and summary.get("failed_items"):
        label, tone = "Completed with failures", "warn"
    if summary.get("total_items") and not summary.get("succeeded_items"):
        if not summary.get("init_error"):
            label, tone = f"{status}, but no item succeeded", "bad"
    return label, tone


#: Points of a job's throughput kept for its sparkline (one a publication: about 2 minutes).
HISTORY = 120


class JobBoard:
    """A job's row on the daskscore page; with ``client=None`` every method does nothing.

    Used as a context manager around the job: a job left by an exception before
    :meth:`finish` shows as ``Failed`` (``Interrupted`` for Ctrl-C).

    ``about``: the job's name and paths (``name``, ``input``, ``output``, ``logs``,
    ``report``), published with every count; ``verdict``: the report's verdict of a summary.
    """

    def __init__(
        self,
        client: Any,
        job_id: str,
        deployment: str | None,
        link: str | None = None,
        *,
        about: dict[str, Any] | None = None,
        verdict: Verdict | None = None,
    ) -> None:
        self.client = client
        self.job_id = job_id
        #: the page's link, when it is installed
        self.link = link
        self._base = {**(about or {}), "deployment": deployment, "started": time.time()}
        self._verdict = verdict or globals()["verdict"]
        self._counts: dict[str, Any] = {}
        self._counts_fn: Callable[[], dict[str, Any]] | None = None
        self._history: deque[list[float]] = deque(maxlen=HISTORY)
        self._seq = 0
        self._last = -float("inf")
        self._finished = False
        self._failures: Any = None  # (the failures last published, and when)
        self._failures_at = -float("inf")

    def tick(self, counts: Callable[[], dict[str, Any]]) -> None:
        """Publish ``counts()`` as the running job's, unless that was done under a second ago."""
        now = time.monotonic()
        if self.client is None or now - self._last < PUBLISH_PERIOD_S:
            return
        self._last = now
        self._counts_fn = counts
        self._counts = self._sample(counts())
        sent = dict(self._counts)
        if sent.get("failures") == self._failures and now - self._failures_at < RESEND_S:
            sent.pop("failures", None)  # (unchanged: the page keeps the last it was sent)
        else:
            self._failures, self._failures_at = sent.get("failures"), now
        self._publish({**sent, "status": "Running", "verdict": "Running"}, wait=False)

    def _sample(self, counts: dict[str, Any]) -> dict[str, Any]:
        """``counts`` with the throughput history: ``[elapsed s, items done]`` points."""
        point = [round(float(counts.get("elapsed_s") or 0), 2), counts.get("items_done", 0)]
        if not self._history or self._history[-1] != point:
            self._history.append(point)
        return {**counts, "history": list(self._history)}

    def finish(self, summary: dict[str, Any]) -> None:
        """Publish the final counts, those of ``job_summary.json``, with the report's verdict
        and the failures, and wait until they are in."""
        self._finished = True
        if self.client is None:
            return
        last = self._counts
        if self._counts_fn is not None:  # the failures settled since the last tick
            try:
                last = self._sample(self._counts_fn())
            except Exception:  # noqa: BLE001 - the page is a convenience
                logger.debug("the final failures of job %s are not shown", self.job_id)
        label, tone = self._verdict(summary)
        final = {**summary_counts(summary), "verdict": label, "tone": tone}
        extra = {k: last[k] for k in ("failures", "history") if k in last}
        self._publish({**extra, **final}, wait=True)

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
        self._publish({**self._counts, "status": status, "verdict": status, "tone": "bad"}, True)
