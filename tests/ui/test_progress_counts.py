"""The counts of a real ``daskscore run``'s bar on a pseudo-terminal where work is lost or cut
short: a worker that dies with mini-batches ended but not yet committed (they run again) never
takes the count back, and a job stopped early (``error_threshold``, Ctrl-C) ends its bar at the
counts of its ``job_summary.json``, with no ETA."""

from __future__ import annotations

import re
from itertools import pairwise
from pathlib import Path

import pytest
from helpers import make_job, processed_of, summary_of
from ptyrun import PtyRun

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

#: Mini-batches 0-3 end at once, inside their task's first second: the worker commits them
#: with a later one, so they are counted live, uncommitted, while mini-batch 4 runs (1.5 s)
#: and, on its first try, kills its process.  From then on each mini-batch takes 0.3 s.
DIES_ONCE = """
    import os
    import time

    DIED = os.path.join(os.environ["STATE"], "died")

    def run(mini_batch):
        names = [os.path.basename(p) for p in mini_batch]
        if "f0004.csv" in names:
            time.sleep(1.5)
            if not os.path.exists(DIED):
                open(DIED, "w").close()
                os._exit(3)
        elif os.path.exists(DIED):
            time.sleep(0.3)
        return names
"""


def _args(dep: Path, inputs: Path, out: Path, workers: int) -> list[str]:
    return ["run", str(dep), "--input", str(inputs), "--output", str(out),
            "--workers", str(workers), "--no-dashboard"]  # fmt: skip


def _counts(bar: str) -> tuple[int, int]:
    """The mini-batches and items a bar counts done."""
    found = re.search(r" (\d+)/\d+ mini-batch(?:es)?\b.* \| ([\d,]+)/[\d,]+ items", bar)
    assert found is not None, bar
    return int(found[1]), int(found[2].replace(",", ""))


def test_the_count_never_goes_back_when_a_worker_dies(tmp_path: Path) -> None:
    """One worker; its first task holds mini-batches 0-5 and dies in 4: 0-3, counted as they
    ended, run again.  The bar read ``4/24``, then ``0/24``, ``1/24``..."""
    (tmp_path / "state").mkdir()
    dep, inputs, out = make_job(
        tmp_path, DIES_ONCE, n_files=24, settings={"mini_batch_size": 1},
        env={"STATE": str(tmp_path / "state")},
    )  # fmt: skip
    run = PtyRun(_args(dep, inputs, out, 1), 120)
    assert run.finish() == 0, run.text
    tries = processed_of(out)
    assert "PROCESS_DIED" in set(tries[tries["mini_batch_id"] == 4]["status"]), tries
    counts = [_counts(bar) for bar in run.bars()]
    assert counts, run.text
    went_back = [(a, b) for a, b in pairwise(counts) if b[0] < a[0] or b[1] < a[1]]
    assert not went_back, (went_back, run.bars())
    s = summary_of(out)
    assert counts[-1] == (s["total_mini_batches"], s["succeeded_items"]) == (24, 24)


#: Two workers; the first two tasks hold mini-batches 0-4 and 5-9.  5-8 end at once (inside
#: their task's first second: not committed) and 9 runs on; once it does, 4 fails after 1.5 s
#: (5-8 counted live meanwhile) and, error_threshold 0, the job stops with 5-8 uncommitted.
CUT_SHORT = """
    import os
    import time

    RUNNING = os.path.join(os.environ["STATE"], "running")

    def run(mini_batch):
        names = [os.path.basename(p) for p in mini_batch]
        if "f0009.csv" in names:
            open(RUNNING, "w").close()
            time.sleep(8)  # still running when the job stops
        if "f0004.csv" in names:
            end = time.monotonic() + 60
            while not os.path.exists(RUNNING) and time.monotonic() < end:
                time.sleep(0.05)
            time.sleep(1.5)
            raise ValueError("f0004.csv cannot be scored")
        return names
"""

#: One worker, whose first task holds mini-batches 0-5: 0-3 end at once (not committed yet)
#: and 4 runs until the test stops the job.
HELD = """
    import os
    import time

    def run(mini_batch):
        names = [os.path.basename(p) for p in mini_batch]
        if "f0004.csv" in names:
            end = time.monotonic() + 60
            while not os.path.exists(os.environ["RELEASE"]) and time.monotonic() < end:
                time.sleep(0.05)
        return names
"""


def _summary_counts(out: Path) -> tuple[int, int]:
    s = summary_of(out)
    return s["total_mini_batches"] - s["not_run_mini_batches"], s["succeeded_items"] + s[
        "failed_items"
    ]


def test_a_job_stopped_by_its_error_threshold_ends_its_bar_at_the_summarys_counts(
    tmp_path: Path,
) -> None:
    """The last line read ``13/40 mini-batches, 1 failed | 13/40 items | ... | ETA 2s`` where
    the summary counted 9: with the live counts of the task it stopped (5-8), uncommitted."""
    (tmp_path / "state").mkdir()
    dep, inputs, out = make_job(
        tmp_path, CUT_SHORT, n_files=40,
        settings={"mini_batch_size": 1, "error_threshold": 0,
                  "retry_settings": {"max_retries": 0, "timeout": 60}},
        env={"STATE": str(tmp_path / "state")},
    )  # fmt: skip
    run = PtyRun(_args(dep, inputs, out, 2), 120)
    assert run.finish() == 1, run.text
    s = summary_of(out)
    assert s["status"] == "Failed" and s["failed_mini_batches"] == 1, s
    last = run.bars()[-1]
    assert _counts(last) == _summary_counts(out), (last, s)
    assert " 1 failed" in last and "ETA" not in last and "waiting on" not in last, last


def test_ctrl_c_ends_the_bar_at_the_summarys_counts(tmp_path: Path) -> None:
    """The bar read ``10/20 | 20/40 items`` after Ctrl-C, with an ETA, where the summary
    counted 18 items: the live counts of the mini-batches in flight, not committed."""
    release = tmp_path / "release"
    dep, inputs, out = make_job(
        tmp_path, HELD, n_files=24, settings={"mini_batch_size": 1},
        env={"RELEASE": str(release)},
    )  # fmt: skip
    run = PtyRun(_args(dep, inputs, out, 1), 120)
    try:
        assert run.wait_for(lambda text: " 4/24 mini-batches" in text, 120), run.text
        run.type(b"\x03")
        assert run.finish() == 130, run.text
    finally:
        release.touch()
    s = summary_of(out)
    assert s["status"] == "Interrupted", s
    last = run.bars()[-1]
    assert _counts(last) == _summary_counts(out), (last, s)
    assert "ETA" not in last and "waiting on" not in last, last
