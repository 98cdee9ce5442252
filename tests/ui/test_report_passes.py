"""``report.html`` of a resumed job or a ``--retry-failed`` pass: the counts at its top are the
whole job's and its duration this run's, so its charts of time (busy time, throughput,
workers, timeline) are drawn from this run's tries and say so; an item succeeds once in the
throughput chart, in the try that counts for it, never more often than the job has items."""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import write_deployment, write_inputs
from helpers import summary_of
from test_report import T0, attempt, summary

import daskscore
from daskscore.ui import report

#: The script: leaves out of its result the file named in $FLAGS/drop, while it exists.
SCRIPT = """
import os

def init():
    pass

def run(mini_batch):
    names = [os.path.basename(p) for p in mini_batch]
    drop = os.path.join(os.environ["FLAGS"], "drop")
    gone = open(drop).read().strip() if os.path.exists(drop) else None
    return [n for n in names if n != gone]
"""


def _green(page: str) -> int:
    """The items the throughput chart counts as succeeded."""
    found = re.search(r"([\d,]+) succeeded \(green\)", page)
    assert found, page
    return int(found[1].replace(",", ""))


@pytest.mark.slow
def test_a_retry_pass_charts_its_own_tries(client: Any, tmp_path: Path) -> None:
    """A job whose mini-batch 2 returned one result short, then its ``--retry-failed`` pass:
    the pass's report charts the one try it ran, over its own time.  Before, its throughput
    counted every pass's successes (34 of a 30-item job: the short try's 4 and the retry's 5)
    and its busy time every pass's tries."""
    flags = tmp_path / "flags"
    flags.mkdir()
    (flags / "drop").write_text("f0012.csv")
    dep = write_deployment(
        tmp_path / "deploy",
        SCRIPT,
        settings={"mini_batch_size": 5, "environment_variables": {"FLAGS": str(flags)}},
    )
    inputs = write_inputs(tmp_path / "in", 30)
    out = tmp_path / "out"
    first = daskscore.run(dep, inputs, out, client=client)
    assert first.summary["partial_mini_batches"] == 1
    (flags / "drop").unlink()  # the fix
    daskscore.run(dep, inputs, out, client=client, retry_failed=True)
    s = summary_of(out)
    assert s["retried_in_this_pass"] == [2] and s["succeeded_items"] == s["total_items"] == 30

    page = (out / "report.html").read_text(encoding="utf-8")
    assert _green(page) == 5  # (mini-batch 2's second try)
    with open(out / "logs" / "sys" / "job_report" / "processed_mini-batches.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["mini_batch_id"], r["try"]) for r in rows if r["mini_batch_id"] == "2"] == [
        ("2", "1"),
        ("2", "2"),
    ]
    retry = next(r for r in rows if (r["mini_batch_id"], r["try"]) == ("2", "2"))
    busy = float(re.search(r'data-busy="([\d.]+)"', page)[1])  # type: ignore[index]
    assert busy == pytest.approx(float(retry["elapsed_s"]), abs=1e-3)
    workers = re.findall(r"<tr><td>([^<]+)</td><td class='n'>(\d+)</td>", page)
    assert sum(int(n) for _, n in workers) == 1  # (mini-batches per worker: this run's)
    assert 'id="this-run"' in page and "this run's 1 tries" in page
    assert "of this run's tries:" in page


def test_an_item_succeeds_once_in_the_throughput_whatever_ran_again(tmp_path: Path) -> None:
    """Drawn from every try (a summary that says nothing of the run), a try run again later —
    a short return retried, a part run again whole — counts its successes in red, not green:
    the chart never counts more successes than the job has items."""
    tries = [
        attempt(0, start=T0, total=10, succeeded=8, failed=2),  # short, then retried
        attempt(0, **{"try": 2}, start=T0 + 5, total=10, succeeded=10),
        attempt(1, start=T0 + 1, total=10, succeeded=0, failed=10, status="RUN_EXCEPTION"),
        attempt(1, start=T0 + 2, total=5, succeeded=5, items="0-5"),  # a part, then whole
        attempt(1, start=T0 + 2, total=5, succeeded=0, failed=5, items="5-10"),
        attempt(1, **{"try": 2}, start=T0 + 6, total=10, succeeded=10),
        attempt(2, start=T0 + 3, total=10, succeeded=10),
    ]
    page = report.write_report(tmp_path, summary(total_items=30), tries).read_text("utf-8")
    assert _green(page) == 30
    assert "30 in tries that failed or were run again" in page
    assert 'id="this-run"' not in page  # (a job run once: every try is its run's)
