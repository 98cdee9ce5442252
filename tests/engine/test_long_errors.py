"""A script's error of hundreds of kilobytes (pandas' KeyError listing every column, the repr
of a large array) is kept whole once, in the worker's ``logs/user/error/`` file, and cut in
its middle everywhere else: before, each of the summary, ``failed_items.csv``,
``processed_mini-batches.csv`` and the staged ledgers held it whole, and the dashboard page
republished up to 50 of them every second as scheduler events the scheduler keeps (1000):
the driver grew by about 15 MB a second."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from helpers import cli, make_job, summary_of
from test_outcomes import files, make_settings, raised

from daskscore.engine import jobview
from daskscore.engine.outcomes import Outcomes
from daskscore.protocol import MAX_RECORD_ERROR
from daskscore.ui import dashboard

N_COLUMNS = 20_000
SCRIPT = f"""
import os

def init():
    pass

def run(mini_batch):
    if any(os.path.basename(p) == "f0001.csv" for p in mini_batch):
        raise KeyError("columns not found: " + ", ".join(f"col_{{i}}" for i in range({N_COLUMNS})))
    return [os.path.basename(p) for p in mini_batch]
"""
START, END = "KeyError: 'columns not found: col_0, col_1", f"col_{N_COLUMNS - 1}'"


def test_a_huge_error_is_whole_in_the_error_log_and_cut_elsewhere(tmp_path: Path) -> None:
    dep, inputs, out = make_job(
        tmp_path,
        SCRIPT,
        n_files=4,
        settings={"mini_batch_size": 2, "retry_settings": {"max_retries": 0}},
    )
    proc = cli(dep, inputs, out, "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    summary = summary_of(out)
    (failure,) = summary["failures"]
    error = failure["error"]
    assert len(error) < MAX_RECORD_ERROR + 200
    assert START in error and error.rstrip().endswith(END) and "characters cut" in error
    (log,) = (out / "logs" / "user" / "error").glob("*.txt")
    whole = log.read_text(encoding="utf-8")
    assert all(f"col_{i}," in whole for i in range(0, N_COLUMNS - 1, 997))  # (every column)
    with open(out / "failed_items.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 and all(len(r["error"]) < MAX_RECORD_ERROR for r in rows)
    assert rows[0]["error"].startswith(START)
    tries = out / "logs" / "sys" / "job_report" / "processed_mini-batches.csv"
    assert len(tries.read_text(encoding="utf-8")) < 2 * MAX_RECORD_ERROR
    assert len(json.dumps(summary)) < 4 * MAX_RECORD_ERROR
    assert (out / "predictions.csv").read_text().split() == ["f0002.csv", "f0003.csv"]


def test_the_pages_failures_are_bounded() -> None:
    """Each row's error line is cut; only the newest have their traceback."""
    n = jobview.MAX_FAILURES + 5
    work = files(*[2] * n)
    outcomes = Outcomes(work, make_settings(max_retries=0))
    long = (
        'Traceback (most recent call last):\n  File "s.py", line 3, in run\nKeyError: \''
        + "x" * 50_000
        + "'"
    )
    outcomes.record("a1", [raised(mb, 1, final=True, error=long) for mb in range(n)])
    rows = jobview.failures(outcomes, work)
    assert len(rows) == jobview.MAX_FAILURES
    assert [r[0] for r in rows] == list(range(5, n))
    assert all(
        len(r[4]) <= jobview.MAX_ERROR_LINE and r[4].startswith("KeyError: 'xxx") for r in rows
    )
    with_tb = [r[0] for r in rows if r[5]]
    assert with_tb == list(range(n - jobview.MAX_TRACEBACKS, n))
    assert all(len(r[5]) <= jobview.MAX_TRACEBACK for r in rows)


class _Client:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.loop = self

    def add_callback(self, func: Any, client: Any, msg: dict[str, Any]) -> None:
        self.sent.append(msg)


class _Scheduler:
    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events, self.workers = events, {}

    def get_events(self, topic: str) -> tuple[tuple[float, Any], ...]:
        return tuple((1.0 + i, msg) for i, msg in enumerate(self.events))


def test_unchanged_failures_are_not_published_again(monkeypatch: Any) -> None:
    """A board publishes a running job's failures when they change; the page shows the last
    sent with the newest counts."""
    monkeypatch.setattr(dashboard, "PUBLISH_PERIOD_S", 0.0)
    client = _Client()
    failures = [[3, "f.csv", "RUN_EXCEPTION", 1, "KeyError: 'x'", "Traceback ..."]]
    board = dashboard.JobBoard(client, "job1", None)
    for done in (1, 2, 3):
        board.tick(lambda done=done: {"items_done": done, "failures": failures})
    assert ["failures" in msg for msg in client.sent] == [True, False, False]
    (job,) = dashboard.jobs(_Scheduler(client.sent))
    assert job["items_done"] == 3 and job["failures"] == failures
    failures = [*failures, [5, "g.csv", "RUN_EXCEPTION", 1, "ValueError", "Traceback ..."]]
    board.tick(lambda: {"items_done": 4, "failures": failures})
    assert client.sent[-1]["failures"] == failures
    assert dashboard.jobs(_Scheduler(client.sent))[0]["failures"] == failures
