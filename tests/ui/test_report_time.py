"""``report.html`` explains time and how the job ran: the phase waterfall, the overhead around
``run()``, a per-worker timeline, failures grouped by error, the settings and versions, links
to the logs; count cards of zero are hidden.  One test reads the summary of a real job."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import write_deployment, write_inputs
from helpers import summary_of
from test_report import assert_self_contained, attempt, failure, summary

import daskscore
from daskscore.ui import report

PHASES = {"start_cluster": 5.4, "init": 0.35, "score": 14.0, "assemble": 0.13}
SETTINGS = {
    "mini_batch_size": 10,
    "max_retries": 3,
    "timeout": 60,
    "workers": 2,
    "error_threshold": -1,
    "output_format": "csv",
}
VERSIONS = {"daskscore": "0.1.0", "dask": "2024.1.0", "python": "3.11.9"}


def test_phases_overhead_and_timeline_are_drawn(tmp_path: Path) -> None:
    s = summary(phases=PHASES, duration_s=19.9)
    tries = [attempt(mb, elapsed_s=1.0, run_s=0.7) for mb in range(4)]
    page = report.write_report(tmp_path, s, tries).read_text(encoding="utf-8")
    assert_self_contained(page)
    phases = re.findall(r'<g data-phase="(\w+)">', page)
    assert phases == ["start_cluster", "init", "score", "assemble"]
    assert "5.4 s (27%)" in page  # start_cluster: 5.4 of 19.9 s
    assert 'data-busy="4.000" data-run="2.800"' in page and "30% overhead" in page
    assert 'id="timeline-chart"' in page
    assert page.count('<path class="tries"') == 2  # two workers, nothing failed


def test_settings_versions_warnings_and_log_links(tmp_path: Path) -> None:
    s = summary(
        settings=SETTINGS,
        versions=VERSIONS,
        warnings=["unknown key settings.mini_batch_sise (did you mean mini_batch_size?)"],
        failed_items=10,
        failures=[failure(1, "ValueError: bad")],
        failed_items_file="/data/out/failed_items.csv",
    )
    page = report.write_report(tmp_path, s, [attempt(0)]).read_text(encoding="utf-8")
    shown = dict(re.findall(r'<dd data-setting="(\w+)">([^<]*)</dd>', page))
    assert shown == {k: str(v) for k, v in SETTINGS.items()}
    assert dict(re.findall(r'<dd data-version="(\w+)">([^<]*)</dd>', page)) == VERSIONS
    assert 'id="warnings"' in page and "mini_batch_sise" in page
    links = re.findall(r'<a href="([^"]+)">', page)
    assert "logs/job_error.txt" in links and "failed_items.csv" in links
    assert "logs/sys/job_report/processed_mini-batches.csv" in links


def test_failures_are_grouped_by_the_last_line_of_their_error(tmp_path: Path) -> None:
    tb = "Traceback (most recent call last):\n  File 'score.py', line {}\n{}"
    failures = [failure(mb, tb.format(mb, "ValueError: bad row")) for mb in (1, 4, 7)]
    failures.append(failure(9, tb.format(9, "KeyError: 'x'")))
    s = summary(failed_items=40, failures=failures)
    page = report.write_report(tmp_path, s, [attempt(0)]).read_text(encoding="utf-8")
    groups = re.findall(
        r"<tr class='failure-group'><td><code>([^<]+)</code></td><td class='n'>(\d+)</td>"
        r"<td class='n'>(\d+)</td><td>([^<]+)</td>",
        page,
    )
    assert groups == [
        ("ValueError: bad row", "3", "30", "1, 4, 7"),
        ("KeyError: &#x27;x&#x27;", "1", "10", "9"),
    ]
    assert "4 mini-batches with failed items." in page


def test_cards_of_zero_are_hidden(tmp_path: Path) -> None:
    s = summary(
        partial_mini_batches=0, retried_mini_batches=0, resumed_mini_batches=2, not_run_items=0
    )
    page = report.write_report(tmp_path, s, [attempt(0)]).read_text(encoding="utf-8")
    cards = dict(re.findall(r'data-count="([\w-]+)"><b>([^<]*)</b>', page))
    assert cards == {
        "items": "40",
        "succeeded": "40",
        "mini-batches": "4",
        "resumed": "2",
        "duration": "4.2 s",
    }
    assert ">0<" not in page.split('id="counts"')[1].split("</div>\n")[0]


def test_a_real_jobs_summary_has_what_the_report_shows(tmp_path: Path, client) -> None:
    dep = write_deployment(
        tmp_path / "deploy",
        "def init():\n    pass\n\ndef run(mini_batch):\n    return list(mini_batch)\n",
        settings={"mini_batch_size": 3, "retry_settings": {"max_retries": 1, "timeout": 30}},
    )
    out = tmp_path / "out"
    daskscore.run(dep, write_inputs(tmp_path / "in", 6), out, client=client)
    s = summary_of(out)
    assert s["settings"]["mini_batch_size"] == 3
    assert s["settings"]["max_retries"] == 1 and s["settings"]["timeout"] == 30
    assert s["settings"]["workers"] >= 1 and s["settings"]["output_format"]
    assert set(s["versions"]) == {"daskscore", "dask", "python"}
    assert {"start_cluster", "init", "score", "assemble"} <= set(s["phases"])
    page = (out / "report.html").read_text(encoding="utf-8")
    for phase in ("start_cluster", "init", "score", "assemble"):
        assert f'data-phase="{phase}"' in page
    assert 'data-setting="mini_batch_size">3<' in page
