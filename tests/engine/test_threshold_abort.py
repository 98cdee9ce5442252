"""A job that exceeds ``error_threshold`` stops at once: its verdict does not wait for the
``run()`` calls still in flight on other workers (they end on their own)."""

from __future__ import annotations

from pathlib import Path

from helpers import cli, make_job, show, summary_of

SCRIPT = """
import os, time

def init():
    pass

def run(mini_batch):
    names = [os.path.basename(p) for p in mini_batch]
    marks = os.environ["MARKS"]
    if "f0000.csv" in names:  # a slow call, blocked until the test lets it go
        open(os.path.join(marks, "started"), "w").close()
        for _ in range(450):  # (45 s at most)
            if os.path.exists(os.path.join(marks, "go")):
                break
            time.sleep(0.1)
        open(os.path.join(marks, "ended"), "w").close()
    if "f0005.csv" in names:
        while not os.path.exists(os.path.join(marks, "started")):
            time.sleep(0.01)
        raise ValueError("poison")
    return names
"""


def test_the_verdict_does_not_wait_for_a_run_still_in_flight(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    dep, inputs, out = make_job(
        tmp_path,
        SCRIPT,
        n_files=12,
        settings={
            "mini_batch_size": 1,
            "error_threshold": 0,
            "retry_settings": {"max_retries": 0, "timeout": 300},  # (never the slow call's end)
        },
        env={"MARKS": str(marks)},
    )
    try:
        proc = cli(dep, inputs, out)
        ended_before_the_verdict = (marks / "ended").exists()
    finally:
        (marks / "go").touch()  # (lets the slow call end, whatever happened)

    assert proc.returncode == 1, show(proc)
    assert (marks / "started").exists(), "the slow call ran"
    assert not ended_before_the_verdict, "the job waited for the slow run() to end"
    s = summary_of(out)
    assert s["status"] == "Failed" and "error_threshold" in s["reason"], s["reason"]
    assert s["failed_items"] == 1
