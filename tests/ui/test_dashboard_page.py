"""The daskscore page of the Dask dashboard: what it is made of (fast tests), and a real job on a
LocalCluster with a dashboard, watched in headless Chromium (Debian's ``chromium``, driven by
Playwright) while it runs, its counts checked against ``job_summary.json`` at the end.

Without ``/usr/bin/chromium`` (or Playwright) the browser test is skipped on a developer's
machine and fails in CI (``$CI`` set), where ``.ci/run`` installs Chromium.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import write_deployment, write_inputs
from helpers import summary_of
from PIL import Image, ImageStat

import daskscore
from daskscore.cluster.local import ClusterHandle, local_cluster
from daskscore.config.loader import load_deployment
from daskscore.engine import resultview
from daskscore.engine.runner import JobOptions, execute
from daskscore.ui import dashboard
from daskscore.ui.taskkeys import parse_key, task_key

#: 24 files in 12 mini-batches of 2, 0.25 s each on 2 workers: about 3 s; f0005's fails.
SLEEPY_SCRIPT = """
    import os
    import time

    def init():
        pass

    def run(mini_batch):
        time.sleep(0.25)
        if any(p.endswith("f0005.csv") for p in mini_batch):
            raise ValueError("f0005 cannot be scored")
        return [os.path.basename(p) for p in mini_batch]
"""


# ----------------------------------------------------------------------------- fast tests


@pytest.mark.parametrize(
    ("dashboard_link", "page"),
    [
        ("http://127.0.0.1:8787/status", "http://127.0.0.1:8787/daskscore"),
        ("http://127.0.0.1:41234/status/", "http://127.0.0.1:41234/daskscore"),
        ("https://hub/u/me/proxy/8787/status", "https://hub/u/me/proxy/8787/daskscore"),
        ("http://10.0.0.5:8787/dask/status?token=x", "http://10.0.0.5:8787/dask/daskscore"),
        ("http://10.0.0.5:8787/", "http://10.0.0.5:8787/daskscore"),
    ],
)  # fmt: skip
def test_page_link(dashboard_link: str, page: str) -> None:
    assert dashboard.page_link(dashboard_link) == page


class FakeTask:
    def __init__(self, key: str) -> None:
        self.key = key


class FakeWorker:
    def __init__(self, name: str, keys: list[str], executing: dict[str, float]) -> None:
        self.name = name
        self.processing = {FakeTask(k) for k in keys}
        self.executing = {t: executing[t.key] for t in self.processing if t.key in executing}


class FakeScheduler:
    def __init__(
        self, events: list[tuple[float, Any]], workers: dict[str, FakeWorker] | None = None
    ) -> None:
        self.events = events
        self.workers = workers or {}

    def get_events(self, topic: str) -> tuple[tuple[float, Any], ...]:
        assert topic == dashboard.TOPIC
        return tuple(self.events)


def test_jobs_are_the_newest_event_of_each_job() -> None:
    now = time.time()
    events = [
        (now - 9, {"job_id": "a", "seq": 1, "status": "Running", "started": 100.0}),
        (now - 8, {"job_id": "b", "seq": 1, "status": "Running", "started": 200.0}),
        (now - 7, {"job_id": "a", "seq": 3, "status": "Completed", "started": 100.0}),
        (now - 6, {"job_id": "a", "seq": 2, "status": "Running", "started": 100.0}),  # late
        (now - 5, "not a job's counts"),
        (now - 4, {"no": "job id"}),
    ]
    rows = dashboard.jobs(FakeScheduler(events))
    assert [(r["job_id"], r["status"]) for r in rows] == [("b", "Running"), ("a", "Completed")]
    assert rows[1]["updated"] == now - 7
    assert 6.5 <= rows[1]["age_s"] <= 8
    assert dashboard.jobs(FakeScheduler([])) == []


def test_a_running_job_shows_each_worker_busy_or_idle_with_its_mini_batches() -> None:
    mine = task_key([120, 121, 149], "r01a000007-job1")
    other_job = task_key([0, 3], "r01a000001-job2")
    workers = {
        "tcp://a": FakeWorker("w-a", [mine, "some-other-task-1"], {mine: 12.34}),
        "tcp://b": FakeWorker("w-b", [other_job], {}),
        "tcp://c": FakeWorker("w-c", [], {}),
    }
    events = [(time.time(), {"job_id": "job1", "seq": 1, "status": "Running"})]
    (job,) = dashboard.jobs(FakeScheduler(events, workers))
    assert job["workers"] == [
        {"worker": "w-a", "busy": True, "mini_batches": [120, 149],
         "attempt": "r01a000007-job1", "running_s": 12.3},
        {"worker": "w-b", "busy": False},  # (busy, but with another job's task)
        {"worker": "w-c", "busy": False},
    ]  # fmt: skip
    # a finished job has no workers
    done = [(time.time(), {"job_id": "job1", "seq": 2, "status": "Completed"})]
    assert "workers" not in dashboard.jobs(FakeScheduler(done, workers))[0]


@pytest.mark.parametrize(
    "summary",
    [
        {"status": "Completed", "failed_items": 0, "succeeded_items": 4, "total_items": 4},
        {"status": "Completed", "failed_items": 1, "succeeded_items": 3, "total_items": 4},
        {"status": "Completed", "failed_items": 4, "succeeded_items": 0, "total_items": 4},
        {"status": "Failed", "failed_items": 2, "succeeded_items": 0, "total_items": 4},
        {"status": "Failed", "failed_items": 0, "succeeded_items": 0, "total_items": 4,
         "init_error": "Traceback ..."},
        {"status": "Interrupted", "failed_items": 0, "succeeded_items": 2, "total_items": 4},
    ],
)  # fmt: skip
def test_the_page_verdict_is_the_reports(summary: dict[str, Any]) -> None:
    assert dashboard.verdict(summary) == resultview.verdict(summary)


def test_final_counts_come_from_the_summary() -> None:
    summary = {
        "status": "Completed",
        "succeeded_items": 22,
        "failed_items": 2,
        "total_items": 24,
        "total_mini_batches": 12,
        "not_run_mini_batches": 0,
        "failed_mini_batches": 1,
        "partial_mini_batches": 1,
        "duration_s": 3.0,
    }
    assert dashboard.summary_counts(summary) == {
        "status": "Completed",
        "mini_batches_done": 12,
        "mini_batches_total": 12,
        "failed_mini_batches": 1,
        "partial_mini_batches": 1,
        "items_done": 24,
        "items_total": 24,
        "succeeded_items": 22,
        "failed_items": 2,
        "items_per_s": 8.0,
        "elapsed_s": 3.0,
        "eta_s": None,
    }


class FakeLoop:
    def __init__(self, sent: list[tuple[str, dict[str, Any]]]) -> None:
        self.sent = sent

    def add_callback(self, func: Any, client: Any, msg: dict[str, Any]) -> None:
        self.sent.append(("later", msg))


class FakeClient:
    """Records what :func:`dashboard.publish` sends, and how (at once or waited for)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.loop = FakeLoop(self.sent)

    def sync(self, func: Any, client: Any, msg: dict[str, Any], callback_timeout: float) -> None:
        assert callback_timeout == dashboard.FINAL_TIMEOUT_S
        self.sent.append(("waited", msg))


def test_a_board_publishes_at_most_once_a_second_then_the_final_counts() -> None:
    client = FakeClient()
    calls: list[int] = []

    def counts() -> dict[str, Any]:
        calls.append(1)
        return {"items_done": len(calls)}

    with dashboard.JobBoard(client, "job1", "deploy.yml") as board:
        board.tick(counts)
        board.tick(counts)  # under a second later: nothing, and counts() is not even called
        board.finish({**_SUMMARY, "status": "Failed"})
    assert calls == [1, 1]  # (and once more at the end: the failures settled since)
    (how1, first), (how2, last) = client.sent
    assert (how1, first["status"], first["items_done"], first["seq"]) == ("later", "Running", 1, 1)
    assert (how2, last["status"], last["items_done"], last["seq"]) == ("waited", "Failed", 24, 2)
    assert first["job_id"] == last["job_id"] == "job1"
    assert first["deployment"] == "deploy.yml" and first["started"] == last["started"]
    assert (first["verdict"], last["verdict"], last["tone"]) == ("Running", "Failed", "bad")
    assert first["history"] == [[0.0, 1]] and last["history"] == [[0.0, 1], [0.0, 2]]


@pytest.mark.parametrize(
    ("exc", "status"), [(KeyboardInterrupt, "Interrupted"), (OSError, "Failed")]
)
def test_a_job_left_by_an_exception_says_so(exc: type[BaseException], status: str) -> None:
    client = FakeClient()
    with pytest.raises(exc), dashboard.JobBoard(client, "job1", None) as board:
        board.tick(lambda: {"items_done": 3})
        raise exc
    assert [(how, msg["status"], msg["items_done"]) for how, msg in client.sent] == [
        ("later", "Running", 3),
        ("waited", status, 3),
    ]


def test_a_board_without_a_dashboard_does_nothing() -> None:
    with dashboard.JobBoard(None, "job1", None) as board:
        board.tick(lambda: pytest.fail("no counts are made without a page"))
        board.finish(_SUMMARY)


_SUMMARY = {
    "status": "Completed",
    "succeeded_items": 24,
    "failed_items": 0,
    "total_items": 24,
    "total_mini_batches": 12,
    "not_run_mini_batches": 0,
    "failed_mini_batches": 0,
    "duration_s": 3.0,
}


# ----------------------------------------------------------------------------- in Chromium


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterHandle]:
    """A LocalCluster of two workers with a dashboard (on 127.0.0.1)."""
    with local_cluster(2, dashboard=True) as handle:
        assert handle.dashboard_link is not None
        yield handle


def _status(url: str) -> dict[str, Any] | None:
    """status.json, or None while the page is not installed yet."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - our test server
            assert response.headers["Content-Type"] == "application/json"
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def _run_in_thread(job: Any) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = job()
        except BaseException as exc:  # noqa: BLE001 - re-raised by the test
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def _watch_status(url: str, thread: threading.Thread) -> list[dict[str, Any]]:
    """status.json's job rows, read every 0.2 s while the job runs."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + 120
    while thread.is_alive() and time.monotonic() < deadline:
        status = _status(url)
        if status is not None:
            seen.extend(status["jobs"])
        time.sleep(0.2)
    return seen


#: f0000 and f0001 are scored at once; every other file waits for the gate file to exist.
GATED_SCRIPT = """
    import os
    import time

    GATE = {gate!r}

    def init():
        pass

    def run(mini_batch):
        if not any(p.endswith(("f0000.csv", "f0001.csv")) for p in mini_batch):
            deadline = time.time() + 120
            while not os.path.exists(GATE) and time.time() < deadline:
                time.sleep(0.05)
        return [os.path.basename(p) for p in mini_batch]
"""

#: Nothing succeeds.
FAILING_SCRIPT = """
    def init():
        pass

    def run(mini_batch):
        raise RuntimeError("this model scores nothing")
"""

BLUE, GREEN, AMBER, RED = (
    "rgb(9, 105, 218)",
    "rgb(26, 127, 55)",
    "rgb(154, 103, 0)",
    "rgb(207, 34, 46)",
)


def _open(chromium: Any, page_url: str) -> tuple[Any, list[str], list[str]]:
    """A page on the daskscore page, recording the requests it makes and its errors."""
    page = chromium.new_page(viewport={"width": 1300, "height": 700})
    requests: list[str] = []
    errors: list[str] = []
    page.on("request", lambda req: requests.append(req.url))
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.goto(page_url)
    return page, requests, errors


def _section(page: Any, inputs: Path) -> Any:
    """The job's section, found by its input folder (the page names jobs by input and output)."""
    where = page.locator("[data-field=where]", has_text=f"input {inputs} ")
    return page.locator("section.job", has=where)


def _background(locator: Any) -> str:
    return locator.evaluate("el => getComputedStyle(el).backgroundColor")


def _screenshot(page: Any, path: Path, colour: tuple[int, int, int]) -> None:
    """A screenshot saved at ``path``: not blank, with ``colour`` (a verdict's) in it."""
    page.screenshot(path=str(path), full_page=True)
    with Image.open(path) as img:
        rgb = img.convert("RGB")
        assert ImageStat.Stat(rgb.convert("L")).var[0] > 100
        colours = {c for _, c in rgb.getcolors(maxcolors=1 << 20) or []}
    assert colour in colours, path


@pytest.mark.slow
def test_a_running_job_shows_its_bar_workers_and_what_it_waits_on(
    chromium: Any, cluster: ClusterHandle, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    page_url = dashboard.page_link(cluster.dashboard_link or "")
    gate = tmp_path / "gate"
    dep = write_deployment(
        tmp_path / "deploy",
        GATED_SCRIPT.format(gate=str(gate)),
        settings={"mini_batch_size": 2, "retry_settings": {"max_retries": 0}},
    )
    inputs, out = write_inputs(tmp_path / "in", 8), tmp_path / "out"
    thread, outcome = _run_in_thread(lambda: daskscore.run(dep, inputs, out, client=cluster.client))
    try:
        deadline = time.monotonic() + 60  # (the job installs the page as it starts)
        while _status(page_url + "/status.json") is None and time.monotonic() < deadline:
            time.sleep(0.2)
        page, requests, errors = _open(chromium, page_url)
        job = _section(page, inputs)
        verdict = job.locator("[data-field=verdict]")
        expect(verdict).to_have_text("Running", timeout=60_000)
        assert _background(verdict) == BLUE
        assert f"output {out}" in job.locator("[data-field=where]").inner_text()
        assert job.locator("[data-field=name]").inner_text() == "test-deployment"
        # a bar short of the end, an ETA, a throughput sparkline
        bar = job.locator("[role=progressbar][data-field=bar]")
        assert int(bar.get_attribute("aria-valuenow") or "100") < 100
        expect(job.locator("[data-field=counts]")).to_contain_text("ETA")
        expect(job.locator("svg[data-field=sparkline]")).to_be_visible()
        # each worker busy or idle; a busy one with the mini-batches of its task
        busy = job.locator("table[data-field=workers] tbody tr", has=page.locator("td.busy"))
        expect(busy.first).to_be_visible(timeout=30_000)
        expect(busy.first.locator("td").nth(2)).to_have_text(re.compile(r"^\d+\u2013\d+$"))
        # the run() calls held at the gate are named: what the job is waiting on
        expect(job.locator("[data-field=slow]")).to_contain_text("mini-batch", timeout=30_000)
        _screenshot(page, tmp_path / "running-job.png", (9, 105, 218))
    finally:
        gate.touch()
        thread.join(timeout=120)
    if "error" in outcome:
        raise outcome["error"]
    summary = summary_of(out)
    assert (summary["status"], summary["failed_items"]) == ("Completed", 0)
    expect(verdict).to_have_text("Completed", timeout=15_000)
    assert _background(verdict) == GREEN
    assert bar.get_attribute("aria-valuenow") == "100"
    assert job.locator("table[data-field=workers]").count() == 0  # (a finished job has none)
    assert job.locator("table[data-field=failures]").count() == 0
    status_url = page_url + "/status.json"
    assert {u for u in requests if not u.startswith("data:")} == {page_url, status_url}
    assert errors == []
    page.close()


#: Each mini-batch says it started, then waits for the test to let it go.
STEPPED_SCRIPT = """
    import os
    import time

    STEPS = {steps!r}

    def run(mini_batch):
        name = os.path.basename(mini_batch[0])
        open(os.path.join(STEPS, "started-" + name), "w").close()
        deadline = time.time() + 60
        while not os.path.exists(os.path.join(STEPS, "go-" + name)) and time.time() < deadline:
            time.sleep(0.02)
        return [name]
"""


def _executing(dask_scheduler: Any) -> list[str]:
    """The keys the scheduler's workers execute, as their last heartbeats said."""
    return [ts.key for ws in dask_scheduler.workers.values() for ts in ws.executing]


def _wait(condition: Any, what: str, thread: threading.Thread, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and thread.is_alive():
        found = condition()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"not seen: {what}")


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_worker_is_shown_with_the_mini_batch_it_runs_not_the_task_queued_behind(
    chromium: Any, tmp_path: Path
) -> None:
    """One worker, one mini-batch a task at the end and two tasks on the worker (the one it
    runs, the one queued behind): its row named either, by chance (``busy 3-5`` with no
    "running for", while mini-batch 0 ran).  Each mini-batch is let go once the page has had
    the time to show it."""
    from playwright.sync_api import expect

    steps = tmp_path / "steps"
    steps.mkdir()
    dep = write_deployment(
        tmp_path / "deploy", STEPPED_SCRIPT.format(steps=str(steps)),
        settings={"mini_batch_size": 1, "retry_settings": {"timeout": 120}},
    )  # fmt: skip
    inputs, out = write_inputs(tmp_path / "in", 16), tmp_path / "out"
    with local_cluster(1, dashboard=True) as handle:
        client, page_url = handle.client, dashboard.page_link(handle.dashboard_link or "")
        job = lambda: daskscore.run(dep, inputs, out, client=client, progress=False)  # noqa: E731
        thread, outcome = _run_in_thread(job)
        try:
            for mb in range(16):
                name = f"f{mb:04d}.csv"
                _wait((steps / f"started-{name}").exists, f"{name} started", thread)

                def running(mb: int = mb) -> bool:  # (the worker's heartbeat says so)
                    keys = [parse_key(k) for k in client.run_on_scheduler(_executing)]
                    return any(k is not None and k[0] <= mb <= k[1] for k in keys)

                _wait(running, f"the scheduler sees mini-batch {mb} run", thread)
                status = _status(page_url + "/status.json") or {"jobs": []}
                (row,) = [j for j in status["jobs"] if j.get("output") == str(out)]
                (worker,) = row["workers"]
                first, last = worker["mini_batches"]
                assert worker["busy"] and first <= mb <= last, (mb, worker)
                assert worker["running_s"] is not None, (mb, worker)
                if mb == 0:  # the page, in a browser: the row of the running mini-batch
                    page, _, errors = _open(chromium, page_url)
                    cells = _section(page, inputs).locator("table[data-field=workers] td")
                    expect(cells.nth(2)).to_have_text(f"{first}\u2013{last}", timeout=30_000)
                    expect(cells.nth(3)).to_have_text(re.compile(r"^\S+$"))
                    assert errors == []
                    page.close()
                (steps / f"go-{name}").touch()
        finally:
            for mb in range(16):
                (steps / f"go-f{mb:04d}.csv").touch()
            thread.join(timeout=120)
    if "error" in outcome:
        raise outcome["error"]
    assert summary_of(out)["succeeded_items"] == 16


@pytest.mark.slow
def test_a_job_with_failures_shows_the_reports_verdict_and_its_failures(
    chromium: Any, cluster: ClusterHandle, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    page_url = dashboard.page_link(cluster.dashboard_link or "")
    dep = write_deployment(
        tmp_path / "deploy",
        SLEEPY_SCRIPT,
        settings={"mini_batch_size": 2, "retry_settings": {"max_retries": 1}},
    )
    inputs, out = write_inputs(tmp_path / "in", 24), tmp_path / "out"
    daskscore.run(dep, inputs, out, client=cluster.client)
    summary = summary_of(out)
    assert (summary["status"], summary["failed_items"], summary["failed_mini_batches"]) == (
        "Completed",
        2,
        1,
    )
    page, requests, errors = _open(chromium, page_url)
    job = _section(page, inputs)
    verdict = job.locator("[data-field=verdict]")
    # the report's verdict, not a green "Completed"
    expect(verdict).to_have_text("Completed with failures", timeout=15_000)
    assert _background(verdict) == AMBER
    assert job.get_attribute("data-job-id") == summary["job_id"]
    assert job.locator("[data-field=bar]").get_attribute("aria-valuenow") == "100"
    assert job.locator("[data-field=failed-items]").inner_text() == (
        "2 failed items in 1 mini-batch"
    )
    # the failures table: the mini-batch, its files, status, tries, error, traceback
    (row,) = job.locator("table[data-field=failures] tbody tr").all()
    cells = row.locator("td").all_inner_texts()
    listed = pd.read_csv(out / "failed_items.csv")  # (the job's own list of its failures)
    assert cells[0] == str(int(listed["mini_batch"].iloc[0]))
    assert cells[2] == str(listed["status"].iloc[0])
    assert str(inputs / "f0005.csv") in cells[1] and str(inputs / "f0004.csv") in cells[1]
    assert cells[3] == "2"  # tries: the first and its one retry
    assert "f0005 cannot be scored" in cells[4]
    details = row.locator("details")
    assert details.get_attribute("open") is None
    details.locator("summary").click()
    trace = details.locator("pre")
    expect(trace).to_be_visible()
    assert "ValueError: f0005 cannot be scored" in trace.inner_text()
    page.wait_for_timeout(2500)  # a refresh later, the traceback is still open
    assert requests.count(page_url + "/status.json") >= 2
    expect(trace).to_be_visible()
    # the report and the logs: file:// links with their paths as text
    for field, path in (("report", out / "report.html"), ("logs", out / "logs")):
        link = job.locator(f"[data-field={field}]")
        assert link.locator("code").inner_text() == str(path)
        assert link.locator("a").get_attribute("href") == path.as_uri()
        assert path.exists()
    _screenshot(page, tmp_path / "failed-job.png", (154, 103, 0))
    assert errors == []
    page.close()


#: Mini-batch 2 raises; mini-batch 3 returns one result too few (a partial mini-batch).
PARTIAL_SCRIPT = """
    import os

    def run(mini_batch):
        names = [os.path.basename(p) for p in mini_batch]
        if "f0004.csv" in names:
            raise ValueError("cannot score f0004.csv")
        return names[:-1] if "f0006.csv" in names else names
"""


@pytest.mark.slow
def test_partial_mini_batches_are_counted_as_the_report_counts_them(
    chromium: Any, cluster: ClusterHandle, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    page_url = dashboard.page_link(cluster.dashboard_link or "")
    dep = write_deployment(
        tmp_path / "deploy",
        PARTIAL_SCRIPT,
        settings={"mini_batch_size": 2, "retry_settings": {"max_retries": 0}},
    )
    inputs, out = write_inputs(tmp_path / "in", 10), tmp_path / "out"
    daskscore.run(dep, inputs, out, client=cluster.client)
    summary = summary_of(out)
    assert (summary["failed_items"], summary["failed_mini_batches"]) == (3, 1)
    assert summary["partial_mini_batches"] == 1
    (row,) = [j for j in _status(page_url + "/status.json")["jobs"] if j["input"] == str(inputs)]
    assert (row["failed_mini_batches"], row["partial_mini_batches"]) == (1, 1)
    assert len(row["failures"]) == 2
    page, _, errors = _open(chromium, page_url)
    job = _section(page, inputs)
    expect(job.locator("[data-field=verdict]")).to_have_text("Completed with failures")
    assert job.locator("[data-field=failed-items]").inner_text() == (
        "3 failed items in 2 mini-batches (1 failed, 1 partial)"
    )
    assert job.locator("table[data-field=failures] tbody tr").count() == 2
    statuses = sorted(f[2] for f in row["failures"])  # (said as the report says them)
    assert statuses == ["RUN_EXCEPTION", "partial: returned 1 result for 2 files"], statuses
    assert errors == []
    page.close()


@pytest.mark.slow
def test_two_jobs_are_told_apart_by_input_and_output(
    chromium: Any, cluster: ClusterHandle, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    page_url = dashboard.page_link(cluster.dashboard_link or "")
    good = write_deployment(tmp_path / "good", SLEEPY_SCRIPT, settings={"mini_batch_size": 2})
    bad = write_deployment(
        tmp_path / "bad",
        FAILING_SCRIPT,
        settings={"mini_batch_size": 2, "retry_settings": {"max_retries": 0}},
    )
    in1, out1 = write_inputs(tmp_path / "in1", 4), tmp_path / "out1"
    in2, out2 = write_inputs(tmp_path / "in2", 4), tmp_path / "out2"
    daskscore.run(good, in1, out1, client=cluster.client)
    daskscore.run(bad, in2, out2, client=cluster.client)
    first, second = summary_of(out1), summary_of(out2)
    assert (second["succeeded_items"], second["failed_items"]) == (0, 4)

    page, _, errors = _open(chromium, page_url)
    jobs = page.locator("section.job")
    expect(jobs.first).to_be_visible(timeout=15_000)
    ids = [j.get_attribute("data-job-id") for j in jobs.all()]
    assert ids.index(second["job_id"]) < ids.index(first["job_id"])  # the newest first
    one, two = _section(page, in1), _section(page, in2)
    assert one.get_attribute("data-job-id") == first["job_id"]
    assert two.get_attribute("data-job-id") == second["job_id"]
    assert f"output {out1}" in one.inner_text() and f"output {out2}" in two.inner_text()
    expect(one.locator("[data-field=verdict]")).to_have_text("Completed")
    # nothing succeeded: the report's words, in red
    bad_verdict = two.locator("[data-field=verdict]")
    expect(bad_verdict).to_have_text(dashboard.verdict(second)[0])
    assert "no item succeeded" in bad_verdict.inner_text()
    assert _background(bad_verdict) == RED
    assert two.locator("table[data-field=failures] tbody tr").count() == 2
    _screenshot(page, tmp_path / "two-jobs.png", (207, 34, 46))
    assert errors == []
    page.close()


@pytest.mark.slow
def test_a_second_job_is_listed_first_and_its_link_printed(
    cluster: ClusterHandle, tmp_path: Path
) -> None:
    page_url = dashboard.page_link(cluster.dashboard_link or "")
    before = _status(page_url + "/status.json")
    dep = write_deployment(tmp_path / "deploy", SLEEPY_SCRIPT, settings={"mini_batch_size": 2})
    messages: list[str] = []
    options = JobOptions(client=cluster.client, progress=False, notify=messages.append)
    result = execute(
        load_deployment(dep), write_inputs(tmp_path / "in", 4), tmp_path / "out", options
    )
    assert f"Dask dashboard: {cluster.dashboard_link}" in messages
    assert f"daskscore page: {page_url}" in messages
    # installing again added no second pair of routes: the page is there once, as before
    assert cluster.client.run_on_scheduler(dashboard.install_page) is False
    jobs = _status(page_url + "/status.json")["jobs"]  # type: ignore[index]
    assert jobs[0]["job_id"] == result.job_id and jobs[0]["status"] == "Completed"
    assert jobs[0]["items_done"] == 4
    assert len(jobs) == len(before["jobs"] if before else []) + 1


def test_a_job_refused_for_its_resources_leaves_no_trace(
    cluster: ClusterHandle, tmp_path: Path
) -> None:
    """--resources that no worker of the cluster offers: refused (exit 2) before the output
    folder is claimed and before the job is announced, so neither holds a job that never ran
    (it left a job log that did not say why, and a "Failed" row whose report was never
    written)."""
    page_url = dashboard.page_link(cluster.dashboard_link or "")
    dep = write_deployment(tmp_path / "deploy", SLEEPY_SCRIPT)
    out = tmp_path / "out"
    options = JobOptions(client=cluster.client, progress=False, resources={"GPU": 1})
    with pytest.raises(daskscore.UsageError, match="resources GPU=1: no worker of the cluster"):
        execute(load_deployment(dep), write_inputs(tmp_path / "in", 2), out, options)
    assert not out.exists() or not any(out.rglob("*")), sorted(out.rglob("*"))
    jobs = (_status(page_url + "/status.json") or {"jobs": []})["jobs"]
    assert [j for j in jobs if j.get("output") == str(out)] == [], jobs
