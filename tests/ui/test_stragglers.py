""" "Stuck at 95 %": the progress line and the report name the mini-batches a job waits on.

The workers announce a ``run()`` call that has run a while (``daskscore.worker.inflight``); the
progress line names the ones still running near the end of a job (at most ``NAME_LEFT`` left)
or when one has run ``SLOW_FACTOR`` times the median; the report lists the slowest tries and
those running when their process was ended.  The parts, then a real ``daskscore run``.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import run_cli
from helpers import cli_args, make_job, show, summary_of

from daskscore.ui import progress as progress_mod
from daskscore.ui import report
from daskscore.ui.progress import Progress


def _progress(total: int, done: int) -> Progress:
    p = Progress(total, total * 2, enabled=False)
    p.add_done(done, done * 2)
    return p


def test_the_last_running_mini_batches_are_named_longest_first() -> None:
    p = _progress(10, 8)
    now = time.time()
    p.set_running("a1", [8, 1, now - 125])
    p.set_running("a2", [9, 2, now - 3])
    assert [mb for mb, _ in p.stragglers(now)] == [8, 9]
    line = p.line()
    assert "waiting on mini-batch 8 (running 2m05s), 9 (3s)" in line, line
    assert 'data-field="running"' in progress_mod.render_html(p.snapshot())
    p.set_running("a1", None)  # its call ended
    assert [mb for mb, _ in p.stragglers(now)] == [9]
    p.set_running("a2", None)
    assert p.stragglers(now) == [] and "waiting" not in p.line()


def test_far_from_the_end_only_a_mini_batch_far_slower_than_the_median_is_named() -> None:
    p = _progress(100, 10)
    now = time.time()
    p.set_running("a1", [40, 1, now - 4])
    p.set_running("a2", [41, 1, now - 60])
    assert p.stragglers(now) == []  # no finished mini-batch to compare with yet
    p.observe([2.0] * 9 + [3.0])  # median 2 s: over 5 x 2 s is named
    assert [mb for mb, _ in p.stragglers(now)] == [41]


def _try(mb: int, elapsed: float, status: str = "RUN_DONE", error: str = "") -> dict:
    return {
        "mini_batch": mb, "try": 1, "worker": "worker-0", "start": 1.7e9 + mb, "total": 2,
        "succeeded": 2 if status == "RUN_DONE" else 0, "failed": 0 if status == "RUN_DONE" else 2,
        "elapsed_s": elapsed, "run_s": elapsed, "status": status, "error": error,
    }  # fmt: skip


def test_the_report_lists_the_slowest_tries_and_those_stopped_while_running(
    tmp_path: Path,
) -> None:
    tries = [_try(mb, 0.1 * mb) for mb in range(10)]
    tries.append(_try(10, 30.0, "RUN_TIMEOUT", "stack...\nrun() timed out after 30 s in stuck"))
    summary = {
        "status": "Failed",
        "job_id": "j",
        "running_at_end": [{"mini_batch": 12, "try": 1, "start": 1.7e9, "running_s": 42.0}],
    }
    page = report.write_report(tmp_path, summary, tries).read_text(encoding="utf-8")
    section = page.split('<div id="slowest">', 1)[1].split("</div>", 1)[0]
    slowest = section.split('id="slowest-table"', 1)[1].split("</table>", 1)[0]
    assert slowest.count("<tr data-mini-batch=") == 5
    order = [int(r.split("'", 2)[1]) for r in slowest.split("<tr data-mini-batch=")[1:]]
    assert order == [10, 9, 8, 7, 6]
    stopped = section.split('id="stopped-table"', 1)[1].split("</table>", 1)[0]
    assert "RUN_TIMEOUT" in stopped and "run() timed out after 30 s in stuck" in stopped
    running = section.split("id='running-table'", 1)[1]
    assert "<td class='n'>12</td>" in running and "42 s" in running


SLOW = """
    import os
    import time

    def run(mini_batch):
        if any(p.endswith("f0002.csv") for p in mini_batch):
            time.sleep(float(os.environ["SLEEP"]))
        return [os.path.basename(p) for p in mini_batch]
"""


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_job_waiting_on_one_mini_batch_names_it_in_its_progress_lines(
    tmp_path: Path,
) -> None:
    # progress lines come every LINE_PERIOD_S (10 s) off a terminal: sleep past one of them
    sleep = progress_mod.LINE_PERIOD_S + 4
    dep, inputs, out = make_job(
        tmp_path,
        SLOW,
        n_files=6,
        settings={"mini_batch_size": 2, "retry_settings": {"timeout": 60}},
        env={"SLEEP": str(sleep)},
    )
    args = [a for a in cli_args(dep, inputs, out) if a != "--no-progress"]
    proc = run_cli(*args, timeout=200)
    assert proc.returncode == 0, show(proc)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("progress:")]
    waiting = [line for line in lines if "waiting on mini-batch 1 (running " in line]
    assert waiting, show(proc)
    page = (out / "report.html").read_text(encoding="utf-8")
    slowest = page.split('id="slowest-table"', 1)[1].split("</table>", 1)[0]
    assert slowest.split("<tr data-mini-batch=", 2)[1].startswith("'1'"), slowest


CUT_SHORT = """
    import os
    import time

    def run(mini_batch):
        names = [os.path.basename(p) for p in mini_batch]
        if "f0000.csv" in names:
            time.sleep(8)  # still running when the job stops
        if "f0001.csv" in names:
            time.sleep(3)
            raise ValueError("bad f0001.csv")  # error_threshold 0: the job stops
        return names
"""


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_job_cut_short_names_the_slow_mini_batch_it_left_running(tmp_path: Path) -> None:
    dep, inputs, out = make_job(
        tmp_path,
        CUT_SHORT,
        n_files=4,
        settings={
            "mini_batch_size": 1,
            "error_threshold": 0,
            "retry_settings": {"max_retries": 0, "timeout": 60},
        },
    )
    proc = run_cli(*cli_args(dep, inputs, out), timeout=200)
    assert proc.returncode == 1, show(proc)
    summary = summary_of(out)
    assert summary["status"] == "Failed"
    (running,) = summary["running_at_end"]
    assert running["mini_batch"] == 0 and running["try"] == 1 and running["running_s"] >= 2
    page = (out / "report.html").read_text(encoding="utf-8")
    table = page.split("id='running-table'", 1)[1].split("</table>", 1)[0]
    assert "<td class='n'>0</td>" in table
