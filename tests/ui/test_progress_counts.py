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
