"""Unit tests of ``daskscore.ui.report.write_report``: the page is self-contained, escapes what the
job wrote, copes with a job where nothing ran and with very big jobs, and reads the books'
records and the rows of ``processed_mini-batches.csv`` alike; one test reports a real job."""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import write_deployment, write_inputs
from helpers import summary_of

import daskscore
from daskscore.ui import report

T0 = 1_700_000_000.0


def attempt(mb: int, **kw: Any) -> dict[str, Any]:
    rec = {
        "mini_batch": mb,
        "try": 1,
        "worker": f"worker-{mb % 2}",
        "start": T0 + mb,
        "total": 10,
        "succeeded": 10,
        "failed": 0,
        "elapsed_s": 0.5,
        "run_s": 0.4,
        "status": "RUN_DONE",
        "error": "",
    }
    return {**rec, **kw}


def summary(**kw: Any) -> dict[str, Any]:
    base = {
        "status": "Completed",
        "reason": None,
        "job_id": "abc123",
        "input": "/data/in",
        "output": "/data/out",
        "total_items": 40,
        "succeeded_items": 40,
        "failed_items": 0,
        "total_mini_batches": 4,
        "failed_mini_batches": 0,
        "duration_s": 4.2,
        "error_threshold": -1,
        "failures": [],
        "init_error": None,
    }
    return {**base, **kw}


def failure(mb: int, error: str, files: list[str] | None = None) -> dict[str, Any]:
    return {
        "mini_batch_id": mb,
        "status": "RUN_EXCEPTION",
        "tries": 4,
        "succeeded": 0,
        "failed": 10,
        "files": files if files is not None else [f"/data/in/{mb}.png"],
        "error": error,
    }


def assert_self_contained(page: str) -> None:
    assert "<script" not in page.lower()
    assert not re.search(r"""\bsrc\s*=|url\(|@import|<link|<iframe""", page, re.I)
    # links only to the job's own files, relative to the report (the logs)
    for target in re.findall(r"""\bhref\s*=\s*["']([^"']*)""", page, re.I):
        assert "//" not in target and ":" not in target and not target.startswith("/"), target
    external = set(re.findall(r"https?://[^\s\"'<]+", page)) - {"http://www.w3.org/2000/svg"}
    assert external == set()


def test_a_completed_job_shows_status_counts_charts_and_workers(tmp_path: Path) -> None:
    path = report.write_report(tmp_path, summary(), [attempt(mb) for mb in range(4)])
    assert path == tmp_path / "report.html"
    page = path.read_text(encoding="utf-8")
    assert_self_contained(page)
    assert 'class="badge ok" data-status="Completed">Completed<' in page
    assert 'data-count="items"><b>40</b>' in page
    assert 'id="throughput-chart"' in page and 'id="workers-chart"' in page
    assert "No mini-batch failed." in page
    workers = re.findall(r"<tr><td>(worker-\d)</td><td class='n'>(\d+)</td>", page)
    assert workers == [("worker-0", "2"), ("worker-1", "2")]
    assert not list(tmp_path.glob("*.partial"))


def test_errors_paths_and_names_from_the_job_are_escaped(tmp_path: Path) -> None:
    evil = "<script>alert('x')</script>"
    s = summary(
        status="Failed",
        job_id=evil,
        reason=f"error_threshold exceeded {evil}",
        input=f"/data/{evil}",
        failed_items=10,
        failures=[failure(2, f"Traceback:\nValueError: {evil} & more", [f"/in/{evil}.png"])],
    )
    tries = [attempt(0, worker=evil), attempt(2, failed=10, succeeded=0, error=evil)]
    page = report.write_report(tmp_path, s, tries).read_text(encoding="utf-8")
    assert_self_contained(page)
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "ValueError: &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in page
    assert 'class="badge bad"' in page
    assert "<details>" in page and "class='failure' data-mini-batch='2'" in page


def test_control_and_bidi_characters_of_a_name_are_shown_written_out(tmp_path: Path) -> None:
    """A file name's right-to-left override would reorder the page's text, its ESC be
    invisible: both are shown as Python writes them, in the list of files and its summary."""
    name = "/data/in/zz\u202eexe.txt\x1b[31m"
    s = summary(failed_items=10, failures=[failure(1, "ValueError: bad", [name])])
    page = report.write_report(tmp_path, s, [attempt(0)]).read_text(encoding="utf-8")
    assert "\u202e" not in page and "\x1b" not in page
    assert "<li>/data/in/zz\\u202eexe.txt\\x1b[31m</li>" in page
    assert "<summary>zz\\u202eexe.txt\\x1b[31m</summary>" in page


def test_a_partial_mini_batch_is_said_as_such(tmp_path: Path) -> None:
    """``RUN_DONE`` (Azure's status, kept in job_summary.json) among the failures is a partial
    mini-batch: said so, with what run() returned, or how many items it named failed."""
    short = {**failure(1, "run() returned 1 result for 2 files"), "status": "RUN_DONE"}
    named = {**failure(2, "/data/in/2.png: unreadable"), "status": "RUN_DONE", "succeeded": 9}
    s = summary(failed_items=11, failures=[short, named])
    page = report.write_report(tmp_path, s, [attempt(0)]).read_text(encoding="utf-8")
    assert "<td>partial: returned 1 result for 2 files</td>" in page
    assert "<td>partial: 10 of 19 items failed</td>" in page
    assert "RUN_DONE" not in page.split('id="failures"', 1)[1]


def test_completed_with_failures_is_amber(tmp_path: Path) -> None:
    s = summary(failed_items=10, failures=[failure(1, "ValueError: bad")])
    page = report.write_report(tmp_path, s, [attempt(0)]).read_text(encoding="utf-8")
    assert 'class="badge warn" data-status="Completed">Completed with failures<' in page


def test_no_attempts_when_init_failed(tmp_path: Path) -> None:
    s = summary(
        status="Failed",
        reason="init() of the scoring script raised on a worker; nothing was scored",
        succeeded_items=0,
        duration_s=None,
        init_error='Traceback (most recent call last):\n  File "score.py"\nOSError: no <model>',
    )
    page = report.write_report(tmp_path, s, []).read_text(encoding="utf-8")
    assert_self_contained(page)
    assert page.count("No mini-batch ran.") == 2
    assert 'id="init-error"' in page and "OSError: no &lt;model&gt;" in page
    assert 'data-count="duration"><b>?</b>' in page
    assert "<svg" not in page


def test_an_empty_summary_and_odd_records_do_not_break_it(tmp_path: Path) -> None:
    odd = [{"mini_batch": 0}, {"start": None, "elapsed_s": "nan", "worker": None}]
    page = report.write_report(tmp_path, {}, odd).read_text(encoding="utf-8")
    assert "Unknown" in page and "(unknown)" in page


def test_throughput_buckets_count_the_items_that_finished_in_them(tmp_path: Path) -> None:
    # 9.3 s from the first start to the last end: 0.2 s buckets (0.1 s would make > 60)
    tries = [
        attempt(0, start=T0, elapsed_s=0.5, total=100, succeeded=100),
        attempt(1, start=T0 + 9, elapsed_s=0.3, total=50, succeeded=40, failed=10),
    ]
    page = report.write_report(tmp_path, summary(), tries).read_text(encoding="utf-8")
    assert "in 0.2 s buckets" in page
    titles = re.findall(r"<title>([\d.]+)–([\d.]+) s: ([\d.]+) items/s</title>", page)
    assert titles == [("0.4", "0.6", "500"), ("9.2", "9.4", "200"), ("9.2", "9.4", "50")]


def test_thousands_of_mini_batches_keep_the_file_small(tmp_path: Path) -> None:
    n = 10_000
    tries = [
        attempt(
            mb,
            worker=f"tcp://127.0.0.1:{40_000 + mb % 300}",
            start=T0 + mb * 0.37,
            succeeded=0 if mb % 3 == 0 else 10,
            failed=10 if mb % 3 == 0 else 0,
            error="x" * 2000,
        )
        for mb in range(n)
    ]
    tb = "Traceback (most recent call last):\n" + '  File "score.py", line 1\n' * 3000
    files = [f"/data/in/{i:06d}_{'long' * 20}.png" for i in range(200)]
    s = summary(
        status="Failed",
        total_items=10 * n,
        failed_items=10 * len(range(0, n, 3)),
        failures=[failure(mb, tb + "ValueError: boom", files) for mb in range(0, n, 3)],
    )
    page = report.write_report(tmp_path, s, tries).read_text(encoding="utf-8")
    assert len(page.encode("utf-8")) < 2_000_000
    assert page.count("<rect") <= 2 * report.MAX_BUCKETS + report.MAX_WORKERS
    assert page.count("class='failure'") == report.MAX_FAILURES
    assert f"… and {len(s['failures']) - report.MAX_FAILURES:,} more failed" in page
    assert f"{300 - report.MAX_WORKERS + 1} other workers" in page
    assert "characters cut" in page and "ValueError: boom" in page


def _per_worker(page: str) -> list[tuple[str, ...]]:
    return re.findall(r"<tr><td>([^<]+)</td>((?:<td class='n'>[^<]*</td>)+)</tr>", page)


@pytest.mark.slow
def test_a_real_job_from_its_summary_and_csv(client: Any, tmp_path: Path) -> None:
    dep = write_deployment(
        tmp_path / "deploy",
        """
        import os

        def init():
            pass

        def run(mini_batch):
            if any(p.endswith("f0013.csv") for p in mini_batch):
                raise ValueError("cannot read <f0013> & friends")
            return [os.path.basename(p) for p in mini_batch]
        """,
        settings={"mini_batch_size": 5, "retry_settings": {"max_retries": 1}},
    )
    inputs = write_inputs(tmp_path / "in", 30)
    out = tmp_path / "out"
    result = daskscore.run(dep, inputs, out, client=client)
    assert result.failed_items == 5
    s = summary_of(out)
    csv_path = out / "logs" / "sys" / "job_report" / "processed_mini-batches.csv"
    with open(csv_path, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    page = report.write_report(out, s, rows).read_text(encoding="utf-8")
    assert_self_contained(page)
    assert "Completed with failures" in page
    assert "class='failure' data-mini-batch='2'" in page
    assert "ValueError: cannot read &lt;f0013&gt; &amp; friends" in page
    assert "25 succeeded (green), 10 in tries that failed" in page
    workers = _per_worker(page)
    assert sum(int(re.findall(r">(\d+)<", cells)[1]) for _, cells in workers) == len(rows)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("output_format", "fact"),
    [("parquet", ("output format", "parquet")), (None, ("output action", "append_row"))],
)
def test_the_header_names_what_the_job_wrote(
    client: Any, tmp_path: Path, output_format: str | None, fact: tuple[str, str]
) -> None:
    """A dataset job's header says its output format, as its settings do, not the
    deployment's output_action it did not write."""
    dep = write_deployment(tmp_path / "deploy", "def run(mini_batch):\n    return mini_batch\n")
    out = tmp_path / "out"
    daskscore.run(dep, write_inputs(tmp_path / "in", 4), out, client=client,
                  output_format=output_format)  # fmt: skip
    page = (out / "report.html").read_text(encoding="utf-8")
    header = page.split('id="counts"', 1)[1].split("</dl>", 1)[0]
    facts = dict(re.findall(r"<dt>([^<]*)</dt><dd>([^<]*)</dd>", header))
    assert facts[fact[0]] == fact[1], facts
    assert ("output action" in facts) == (output_format is None), facts
    assert summary_of(out)["settings"]["output_format"] == (output_format or "append_row")
