"""``report.html`` as a person sees it: a real job with one failing mini-batch, its report opened
in headless Chromium (Debian's ``chromium``, driven by Playwright), a screenshot, and the DOM.

Without ``/usr/bin/chromium`` (or Playwright) the test is skipped on a developer's machine and
fails in CI (``$CI`` set), where ``.ci/run`` installs Chromium.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
from conftest import write_deployment, write_inputs
from helpers import summary_of
from PIL import Image, ImageStat

import daskscore
from daskscore.ui.report import write_report

FAILING_SCRIPT = """
    import os
    import time

    def init():
        pass

    def run(mini_batch):
        time.sleep(0.05)
        if any(p.endswith("f0013.csv") for p in mini_batch):
            raise ValueError("cannot read <f0013> & friends")
        return [os.path.basename(p) for p in mini_batch]
"""

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def report_of_a_real_job(client: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of a real job: 30 files in 6 mini-batches, mini-batch 2 fails twice."""
    root = tmp_path_factory.mktemp("job")
    dep = write_deployment(
        root / "deploy",
        FAILING_SCRIPT,
        settings={"mini_batch_size": 5, "retry_settings": {"max_retries": 1}},
    )
    out = root / "out"
    result = daskscore.run(dep, write_inputs(root / "in", 30), out, client=client)
    assert (result.status, result.failed_items) == ("Completed", 5)
    summary = summary_of(out)
    csv_path = out / "logs" / "sys" / "job_report" / "processed_mini-batches.csv"
    with open(csv_path, encoding="utf-8", newline="") as fh:
        attempts = list(csv.DictReader(fh))
    return write_report(out, summary, attempts)


def test_report_renders_in_chromium(chromium: Any, report_of_a_real_job: Path, tmp_path: Path):
    page = chromium.new_page(viewport={"width": 1200, "height": 900})
    requests: list[str] = []
    errors: list[str] = []
    page.on("request", lambda req: requests.append(req.url))
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    url = report_of_a_real_job.resolve().as_uri()
    page.goto(url)
    page.wait_for_load_state("load")

    # the verdict and the counts
    badge = page.locator("#status .badge")
    assert badge.is_visible()
    assert badge.inner_text() == "Completed with failures"
    colour = badge.evaluate("el => getComputedStyle(el).backgroundColor")
    assert colour == "rgb(191, 135, 0)"  # amber: completed, some items failed
    counts = {
        name: page.locator(f'#counts [data-count="{name}"] b')
        for name in ("items", "succeeded", "failed", "failed-mini-batches")
    }
    assert all(loc.is_visible() for loc in counts.values())
    assert {k: loc.inner_text() for k, loc in counts.items()} == {
        "items": "30",
        "succeeded": "25",
        "failed": "5",
        "failed-mini-batches": "1",
    }

    # no card says 0; the phases, the settings and the failures grouped by error are shown
    shown = page.locator("#counts .card b").all_inner_texts()
    assert shown and "0" not in shown
    phases = page.locator("#phases-chart [data-phase]")
    assert [phases.nth(i).get_attribute("data-phase") for i in range(phases.count())] == [
        "start_cluster", "init", "score", "assemble",
    ]  # fmt: skip
    box = page.locator("#phases-chart").bounding_box()
    assert box is not None and box["width"] > 300
    assert page.locator("#overhead").is_visible()
    assert page.locator('#settings [data-setting="mini_batch_size"]').inner_text() == "5"
    assert page.locator('#settings [data-setting="max_retries"]').inner_text() == "1"
    assert page.locator('#settings [data-version="dask"]').is_visible()
    group = page.locator("#failure-groups tr.failure-group")
    assert group.count() == 1
    assert "ValueError: cannot read <f0013> & friends" in group.inner_text()
    assert page.locator('#logs a[href="logs/job_error.txt"]').is_visible()

    # the failure entry: visible, its traceback collapsed until clicked, shown as text
    row = page.locator("tr.failure[data-mini-batch='2']")
    assert row.is_visible()
    assert "RUN_EXCEPTION" in row.inner_text()
    trace = row.locator("pre")
    assert not trace.is_visible()
    row.locator("td:last-child summary").click()
    assert trace.is_visible()
    assert "ValueError: cannot read <f0013> & friends" in trace.inner_text()
    assert page.evaluate("document.querySelectorAll('script, f0013').length") == 0

    # the charts rendered: the SVGs and their bars have a size on the page
    for chart in ("#throughput-chart", "#workers-chart"):
        box = page.locator(chart).bounding_box()
        assert box is not None and box["width"] > 300 and box["height"] > 40, (chart, box)
        bar = page.locator(f"{chart} rect").first.bounding_box()
        assert bar is not None and bar["width"] > 0 and bar["height"] > 0, (chart, bar)
    assert page.locator("#workers-chart rect").count() == 2

    # a screenshot that is not blank, with the chart colours in it
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    with Image.open(shot) as img:
        rgb = img.convert("RGB")
        assert ImageStat.Stat(rgb.convert("L")).var[0] > 200
        colours = {c for _, c in rgb.getcolors(maxcolors=1 << 20) or []}
    assert (45, 164, 78) in colours  # succeeded items' bars
    assert (9, 105, 218) in colours  # workers' bars

    # self-contained: nothing but the file itself was requested, nothing failed
    assert requests == [url]  # (the log links are not followed)
    assert errors == []
    page.close()
