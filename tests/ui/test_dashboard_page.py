"""The daskscore page of the Dask dashboard: what it is made of (fast tests), and a real job on a
LocalCluster with a dashboard, watched in headless Chromium (Debian's ``chromium``, driven by
Playwright) while it runs, its counts checked against ``job_summary.json`` at the end.

Without ``/usr/bin/chromium`` (or Playwright) the browser test is skipped on a developer's
machine and fails in CI (``$CI`` set), where ``.ci/run`` installs Chromium.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import write_deployment, write_inputs
from helpers import summary_of
from PIL import Image, ImageStat

import daskscore
from daskscore.cluster.local import ClusterHandle, local_cluster
from daskscore.config.loader import load_deployment
from daskscore.engine.runner import JobOptions, execute
from daskscore.ui import dashboard

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


class FakeScheduler:
    def __init__(self, events: list[tuple[float, Any]]) -> None:
        self.events = events

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


def test_final_counts_come_from_the_summary() -> None:
    summary = {
        "status": "Completed",
        "succeeded_items": 22,
        "failed_items": 2,
        "total_items": 24,
        "total_mini_batches": 12,
        "not_run_mini_batches": 0,
        "failed_mini_batches": 1,
        "duration_s": 3.0,
    }
    assert dashboard.summary_counts(summary) == {
        "status": "Completed",
        "mini_batches_done": 12,
        "mini_batches_total": 12,
        "failed_mini_batches": 1,
        "items_done": 24,
        "items_total": 24,
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
    assert calls == [1]
    (how1, first), (how2, last) = client.sent
    assert (how1, first["status"], first["items_done"], first["seq"]) == ("later", "Running", 1, 1)
    assert (how2, last["status"], last["items_done"], last["seq"]) == ("waited", "Failed", 24, 2)
    assert first["job_id"] == last["job_id"] == "job1"
    assert first["deployment"] == "deploy.yml" and first["started"] == last["started"]


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


@pytest.mark.slow
def test_the_page_shows_a_running_job_then_its_summary(
    chromium: Any, cluster: ClusterHandle, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    page_url = dashboard.page_link(cluster.dashboard_link or "")
    status_url = page_url + "/status.json"
    dep = write_deployment(
        tmp_path / "deploy",
        SLEEPY_SCRIPT,
        settings={"mini_batch_size": 2, "retry_settings": {"max_retries": 0}},
    )
    out = tmp_path / "out"
    thread, outcome = _run_in_thread(
        lambda: daskscore.run(dep, write_inputs(tmp_path / "in", 24), out, client=cluster.client)
    )
    seen = _watch_status(status_url, thread)
    thread.join(timeout=120)
    if "error" in outcome:
        raise outcome["error"]
    summary = summary_of(out)
    assert (summary["status"], summary["total_items"], summary["failed_items"]) == (
        "Completed",
        24,
        2,
    )

    # while it ran, status.json said so, with counts that grew
    mine = [j for j in seen if j["job_id"] == summary["job_id"]]
    running = [j for j in mine if j["status"] == "Running"]
    assert running, seen
    assert running[0]["items_total"] == 24 and running[0]["mini_batches_total"] == 12
    assert min(j["items_done"] for j in running) < 24

    page = chromium.new_page(viewport={"width": 1400, "height": 500})
    requests: list[str] = []
    errors: list[str] = []
    page.on("request", lambda req: requests.append(req.url))
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.goto(page_url)
    row = page.locator(f"#rows tr[data-job-id='{summary['job_id']}']")
    expect(row).to_be_visible(timeout=15_000)

    # the counts shown are job_summary.json's
    shown = {
        field: row.locator(f"td[data-field='{field}']").inner_text()
        for field in (
            "job-id",
            "deployment",
            "status",
            "mini-batches",
            "failed-mini-batches",
            "items",
            "failed-items",
        )
    }
    done = summary["succeeded_items"] + summary["failed_items"]
    assert shown == {
        "job-id": summary["job_id"],
        "deployment": summary["deployment"],
        "status": "Completed",
        "mini-batches": f"{summary['total_mini_batches']}/{summary['total_mini_batches']}",
        "failed-mini-batches": str(summary["failed_mini_batches"]),
        "items": f"{done}/{summary['total_items']}",
        "failed-items": str(summary["failed_items"]),
    }
    assert shown["failed-mini-batches"] == "1"
    assert row.locator("td[data-field='failed-items']").get_attribute("class") == "bad"
    badge = row.locator(".status")
    assert badge.evaluate("el => getComputedStyle(el).backgroundColor") == "rgb(26, 127, 55)"

    # a screenshot that is not blank, with the green of the Completed badge in it
    shot = tmp_path / "daskscore-page.png"
    page.screenshot(path=str(shot), full_page=True)
    with Image.open(shot) as img:
        rgb = img.convert("RGB")
        assert ImageStat.Stat(rgb.convert("L")).var[0] > 100
        colours = {c for _, c in rgb.getcolors(maxcolors=1 << 20) or []}
    assert (26, 127, 55) in colours

    # the page refreshes itself from its status.json, and fetches nothing else
    page.wait_for_timeout(2500)
    assert {url for url in requests if not url.startswith("data:")} == {page_url, status_url}
    assert requests.count(status_url) >= 2
    assert errors == []
    page.close()

    # status.json: the same counts, those of the summary
    jobs = _status(status_url)["jobs"]  # type: ignore[index]
    (job,) = [j for j in jobs if j["job_id"] == summary["job_id"]]
    assert {k: job[k] for k in ("job_id", "deployment", "status", "elapsed_s")} == {
        "job_id": summary["job_id"],
        "deployment": summary["deployment"],
        "status": "Completed",
        "elapsed_s": summary["duration_s"],
    }
    assert (job["items_done"], job["items_total"], job["failed_items"]) == (done, 24, 2)
    assert (job["mini_batches_done"], job["failed_mini_batches"]) == (12, 1)


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
