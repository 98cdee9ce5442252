"""A finished job in a notebook: ``JobResult``'s short ``repr``, its ``_repr_html_`` (verdict,
counts, report link, first failure with its replay command, everything escaped),
``result.mini_batches`` (the per-try CSV, typed) and ``result.plot_timeline()``.

The real jobs run through :func:`daskscore.run` on one worker process."""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from helpers import make_job, summary_of

import daskscore
from daskscore.engine.finish import JobResult
from daskscore.engine.resultview import PROCESSED, result_html

# mini-batches of 2 over f0000..f0009; mini-batch 1 raises with markup in its message
SCRIPT = """
    import os

    def run(mini_batch):
        names = [os.path.basename(p) for p in mini_batch]
        if "f0002.csv" in names:
            raise ValueError("<b>bad</b> & 'input' " + names[0])
        return names
"""


def _job(root: Path, script: str, **settings: Any) -> JobResult:
    dep, inputs, out = make_job(
        root, script, n_files=10, settings={"mini_batch_size": 2, **settings}
    )
    return daskscore.run(dep, inputs, out, workers=1, progress=False, dashboard=False)


@pytest.fixture(scope="module")
def failed_job(tmp_path_factory: pytest.TempPathFactory) -> JobResult:
    root = tmp_path_factory.mktemp("failing")
    return _job(root, SCRIPT, retry_settings={"max_retries": 1, "timeout": 30})


@pytest.fixture(scope="module")
def clean_job(tmp_path_factory: pytest.TempPathFactory) -> JobResult:
    root = tmp_path_factory.mktemp("clean")
    return _job(root, "def run(mini_batch):\n    return list(mini_batch)\n")


def _text(html: str) -> str:
    return re.sub(r"<[^>]+>", "", html)


@pytest.mark.slow
def test_completed_job_html_and_repr(clean_job: JobResult) -> None:
    html = clean_job._repr_html_()
    assert 'data-verdict="Completed"' in html
    assert "10</b> of 10 items succeeded" in html
    assert "5 mini-batches" in _text(html)
    assert "failed" not in _text(html)  # zero counts are left out
    assert "First failure" not in html
    # the report is linked, where it is
    href = re.search(r'<a data-field="report" href="([^"]+)"', html)
    assert href is not None and href.group(1).endswith("report.html")
    assert (Path(clean_job.output) / "report.html").is_file()
    # a short repr; the summary stays the dict of job_summary.json
    text = repr(clean_job)
    assert "\n" not in text and len(text) < 300
    assert text.startswith("JobResult(Completed: 10 of 10 items succeeded; 5 mini-batches;")
    assert clean_job.summary == summary_of(Path(clean_job.output))


@pytest.mark.slow
def test_failed_job_html_names_the_first_failure_escaped(failed_job: JobResult) -> None:
    s = failed_job.summary
    assert s["failed_items"] == 2 and s["status"] == "Completed"
    html = failed_job._repr_html_()
    assert 'data-verdict="Completed with failures"' in html
    assert "<b>2</b> failed" in html
    # the first failure: its mini-batch, tries, files, the user's traceback, escaped
    first = re.search(r'<details data-field="first-failure">(.*?)</details>', html, re.S)
    assert first is not None
    body = first.group(1)
    assert "mini-batch 1 (RUN_EXCEPTION, 2 tries, 2 items failed)" in body
    assert "f0002.csv" in body and "f0003.csv" in body
    assert "&lt;b&gt;bad&lt;/b&gt; &amp; &#x27;input&#x27; f0002.csv" in body
    assert "<b>bad</b>" not in html
    assert 'raise ValueError("' in _text(body).replace("&quot;", '"')  # the script's frame
    # how to run it again here, and where every failed item is
    assert f"{s['replay']} --pdb" in _text(html).replace("&#x27;", "'")
    assert "daskscore replay" in s["replay"] and "--mini-batch 1" in s["replay"]
    assert s["failed_items_file"] in html
    assert repr(failed_job).startswith(
        "JobResult(Completed with failures: 8 of 10 items succeeded, 2 failed;"
    )


def test_html_of_a_job_whose_init_failed_and_of_hostile_values() -> None:
    summary = {
        "status": "Failed",
        "reason": "init() of the scoring script raised on a worker; nothing was scored",
        "job_id": "<img src=x onerror=alert(1)>",
        "output": "/tmp/<out>",
        "total_items": 4,
        "succeeded_items": 0,
        "failed_items": 0,
        "not_run_items": 4,
        "total_mini_batches": 2,
        "failures": [],
        "init_error": 'Traceback (most recent call last):\n  File "score.py"\n'
        "KeyError: '<MODEL>'",
        "duration_s": 1.25,
    }
    html = result_html(summary, "/tmp/<out>")
    assert 'data-verdict="Failed"' in html
    assert "<img" not in html and "&lt;img src=x" in html
    assert "/tmp/&lt;out&gt;" in html and "<out>" not in html
    assert '<details data-field="init-error" open>' in html
    assert "KeyError: &#x27;&lt;MODEL&gt;&#x27;" in html
    assert "<b>4</b> not run" in html
    assert "report.html" not in html  # no such file there: no dead link
    text = repr(JobResult("Failed", Path("/tmp/x"), None, summary))
    assert text.startswith("JobResult(Failed: 0 of 4 items succeeded; 2 mini-batches; 1.2 s")


def test_no_item_succeeded_is_said_as_the_report_says_it() -> None:
    summary = {"status": "Completed", "total_items": 3, "succeeded_items": 0, "failed_items": 3}
    assert 'data-verdict="Completed, but no item succeeded"' in result_html(summary, "/x")


@pytest.mark.slow
def test_mini_batches_frame_is_the_per_try_csv_typed(failed_job: JobResult) -> None:
    frame = failed_job.mini_batches
    with open(Path(failed_job.output) / PROCESSED, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(frame) == len(rows) == 6  # 5 mini-batches, one of them tried twice
    assert list(frame["mini_batch_id"]) == [int(r["mini_batch_id"]) for r in rows]
    for name in ("mini_batch_id", "try", "total", "succeeded", "failed"):
        assert pd.api.types.is_integer_dtype(frame[name]), name
    for name in ("elapsed_s", "run_s", "peak_rss_mb"):
        assert pd.api.types.is_float_dtype(frame[name]), name
    assert isinstance(frame["start"].dtype, pd.DatetimeTZDtype)
    assert str(frame["start"].dt.tz) == "UTC"
    assert (frame["end"] >= frame["start"]).all()
    assert pd.api.types.is_string_dtype(frame["worker"])
    assert pd.api.types.is_string_dtype(frame["status"])
    failed = frame[frame["status"] != "RUN_DONE"]
    assert list(failed["mini_batch_id"]) == [1, 1] and list(failed["try"]) == [1, 2]
    assert failed["error"].str.contains("ValueError").all()
    assert frame["succeeded"].sum() == failed_job.succeeded_items
    first = pd.Timestamp(rows[0]["start"])
    assert frame["start"].iloc[0] == first


def test_mini_batches_of_a_folder_with_no_job(tmp_path: Path) -> None:
    result = JobResult("Completed", tmp_path, None, {})
    with pytest.raises(FileNotFoundError, match="processed_mini-batches.csv"):
        _ = result.mini_batches


@pytest.mark.slow
def test_plot_timeline_draws_one_lane_per_worker(failed_job: JobResult) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ax = failed_job.plot_timeline()
    try:
        assert isinstance(ax, matplotlib.axes.Axes)
        assert len(ax.get_yticklabels()) == 1  # one worker process
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert "RUN_DONE (4)" in labels and "RUN_EXCEPTION (2)" in labels
        assert "6 tries of 5 mini-batches on 1 workers" == ax.get_title()
    finally:
        plt.close("all")


def test_plot_timeline_without_matplotlib_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    from daskscore.engine.resultview import plot_timeline

    with pytest.raises(ImportError, match=r"pip install matplotlib"):
        plot_timeline(pd.DataFrame({"start": []}))
