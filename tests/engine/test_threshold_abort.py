"""A job that exceeds ``error_threshold`` stops at once: its verdict does not wait for the
``run()`` calls still in flight on other workers (they end on their own)."""

from __future__ import annotations

from pathlib import Path

from helpers import cli, make_job, processed_of, show, summary_of

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


LATE_SCRIPT = """
import os, time

def init():
    pass

def run(mini_batch):
    names = [os.path.basename(p) for p in mini_batch]
    marks, out = os.environ["MARKS"], os.environ["OUT"]
    if "f0000.csv" in names and not os.path.exists(os.path.join(marks, "fixed")):
        open(os.path.join(marks, "started"), "w").close()
        for _ in range(600):  # ends once the job's books are written (60 s at most)
            if os.path.exists(os.path.join(out, ".daskscore-kept")):
                break
            time.sleep(0.1)
    if "f0005.csv" in names and not os.path.exists(os.path.join(marks, "fixed")):
        while not os.path.exists(os.path.join(marks, "started")):
            time.sleep(0.01)
        raise ValueError("poison")
    return names
"""


def test_a_mini_batch_that_ends_after_the_abort_is_not_done_behind_the_books(
    tmp_path: Path,
) -> None:
    """A ``run()`` in flight when error_threshold stops the job ends after the job's books
    were written: what its task committed then went into the kept ledger, read as done by
    ``--retry-failed``, while the summary, ``processed_mini-batches.csv`` and predictions
    said it was not run. The ledger of a task given up ends before it (an ``X`` line): the
    pass's books and its ledgers agree, and the retry runs that mini-batch, once."""
    from daskscore.io.ledger import read_ledger
    from daskscore.io.outputdir import KEPT_DIR

    marks = tmp_path / "marks"
    marks.mkdir()
    out = tmp_path / "out"
    dep, inputs, _ = make_job(
        tmp_path,
        LATE_SCRIPT,
        n_files=12,
        settings={
            "mini_batch_size": 1,
            "error_threshold": 0,
            "retry_settings": {"max_retries": 0, "timeout": 300},
        },
        env={"MARKS": str(marks), "OUT": str(out)},
    )
    proc = cli(dep, inputs, out)
    assert proc.returncode == 1, show(proc)
    assert (marks / "started").exists(), "the slow call ran"
    kept = out / KEPT_DIR
    done_in_ledgers = {
        rec.mini_batch
        for ledger in (kept / "ledger").glob("*.log")
        for rec in read_ledger(kept, ledger.stem).committed
    }
    done_in_books = set(processed_of(out)["mini_batch_id"])
    assert done_in_ledgers == done_in_books, (done_in_ledgers, done_in_books)
    assert 0 not in done_in_books
    rows = (out / "predictions.csv").read_text().split()
    assert "f0000.csv" not in rows and len(rows) == summary_of(out)["succeeded_items"]

    (marks / "fixed").touch()
    proc = cli(dep, inputs, out, "--retry-failed")
    assert proc.returncode == 0, show(proc)
    rows = (out / "predictions.csv").read_text().split()
    assert sorted(rows) == [f"f{i:04d}.csv" for i in range(12)], rows  # each once
