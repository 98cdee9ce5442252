"""``--isolate-failures``: a mini-batch that fails every try is split, and its parts retried down
to single items, so that only the items that fail on their own are counted failed (issue 18,
item 4).

The books are checked first without a cluster (:class:`Outcomes` folding a split's tries as the
dispatcher hands them over); then whole jobs with real worker processes: a file that ends its
process (``os._exit``), one that raises and one that hangs past the timeout, with and without
the flag; and a tabular job, whose parts are row ranges, written as append_row and as a
Parquet dataset.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from helpers import cli, make_job, processed_of, show, summary_of

import daskscore
from daskscore.config.settings import RetrySettings, Settings
from daskscore.engine.failed_items import failed_item_rows
from daskscore.engine.outcomes import Outcomes
from daskscore.io import triescsv
from daskscore.protocol import MiniBatchRecord, Status

# --------------------------------------------------------------------------- the books


def _try(mb: int, try_no: int, status: Status, n: int, **kw: Any) -> MiniBatchRecord:
    ok = n if status is Status.RUN_DONE else 0
    return MiniBatchRecord(
        mini_batch=mb, try_no=try_no, worker="w", start=1000.0 + try_no, total=n,
        succeeded=ok, failed=n - ok, rows=ok, status=status, **kw,
    )  # fmt: skip


def _books(isolate: bool) -> Outcomes:
    settings = Settings(retry_settings=RetrySettings(max_retries=1))
    work = [["in/a0", "in/a1", "in/a2", "in/a3"], ["in/b0", "in/b1"]]
    return Outcomes(work, settings, isolate=isolate)


def _whole_failure(outcomes: Outcomes) -> set[int]:
    """Mini-batch 0 raises on both its tries; mini-batch 1 is clean."""
    return outcomes.record(
        "r01a000001",
        [
            _try(0, 1, Status.RUN_EXCEPTION, 4, error="ValueError: a3"),
            _try(0, 2, Status.RUN_EXCEPTION, 4, error="ValueError: a3", final=True),
            _try(1, 1, Status.RUN_DONE, 2, final=True),
        ],
    )


def test_a_split_mini_batch_counts_only_the_item_that_failed_on_its_own() -> None:
    outcomes = _books(isolate=True)
    assert _whole_failure(outcomes) == {1}, "mini-batch 0 is split, not settled"
    assert outcomes.splitting(0) and not outcomes.is_final(0)
    assert outcomes.take_parts() == [(0, 0, 2), (0, 2, 4)], "halves, in order"
    assert outcomes.split.part((0, 0, 2), outcomes.work[0]).work == ["in/a0", "in/a1"]
    assert outcomes.split.budget(0, 2) == 0 and outcomes.split.budget(3, 4) == 1

    # the first half returns (its rows staged by attempt a2); the second kills its process
    half = _try(0, 1, Status.RUN_DONE, 2, items=(0, 2), final=True, start_offset=0, bytes=10)
    assert outcomes.record("r01a000002", [half]) == set()
    assert outcomes.charge_crash(0, 1, False, items=(2, 4)) is False
    assert outcomes.take_parts() == [(0, 2, 3), (0, 3, 4)], "the failing half, cut again"
    # item 2 returns; item 3 dies on each of its tries (its own, whole, retry budget)
    one = _try(0, 1, Status.RUN_DONE, 1, items=(2, 3), final=True, start_offset=0, bytes=5)
    assert outcomes.record("r01a000004", [one]) == set()
    assert outcomes.charge_crash(0, 1, False, items=(3, 4), error="out of memory") is False
    assert outcomes.split.tries_used(0, 3, 4) == 1
    assert outcomes.split.is_open(0, 3, 4)
    assert outcomes.charge_crash(0, 2, False, items=(3, 4), error="out of memory") is True

    final = outcomes.final[0]
    assert (final.total, final.succeeded, final.failed, final.rows) == (4, 3, 1, 3)
    assert final.status is Status.PROCESS_DIED and final.error == "out of memory"
    assert outcomes.failed_items == 1
    assert outcomes.failed_mini_batches() == 0 and outcomes.partial_mini_batches() == 1
    # the rows: the parts that returned, in item order, then mini-batch 1
    pieces = [(r.mini_batch, r.items, r.attempt) for r in outcomes.done_finals()]
    assert pieces == [(0, (0, 2), "r01a000002"), (0, (2, 3), "r01a000004"), (1, None, "r01a000001")]
    assert len(outcomes.done_finals()) == 3
    # failed_items.csv: the one item, with its own status and tries
    assert list(failed_item_rows(outcomes)) == [(0, "in/a3", "PROCESS_DIED", 2, "out of memory")]
    # processed_mini-batches.csv: the whole tries, then halves, then single items
    rows = [(r[0], r[1], r[9], r[11]) for r in outcomes.attempt_rows()]
    assert rows == [
        (0, 1, "RUN_EXCEPTION", ""),
        (0, 2, "RUN_EXCEPTION", ""),
        (0, 1, "RUN_DONE", "0-1"),
        (0, 1, "PROCESS_DIED", "2-3"),
        (0, 1, "RUN_DONE", "2"),
        (0, 1, "PROCESS_DIED", "3"),
        (0, 2, "PROCESS_DIED", "3"),
        (1, 1, "RUN_DONE", ""),
    ]


def test_without_isolation_the_whole_mini_batch_fails() -> None:
    outcomes = _books(isolate=False)
    assert _whole_failure(outcomes) == {0, 1}
    assert outcomes.failed_items == 4 and outcomes.failed_mini_batches() == 1
    assert outcomes.take_parts() == []


def test_a_split_mini_batch_whose_every_item_fails_is_failed_and_writes_nothing() -> None:
    outcomes = _books(isolate=True)
    outcomes.record("r01a000001", [_try(1, 1, Status.RUN_EXCEPTION, 2, final=True)])
    assert outcomes.take_parts() == [(1, 0, 1), (1, 1, 2)]
    for item, attempt in ((0, "r01a000002"), (1, "r01a000003")):
        tries = [_try(1, t, Status.RUN_EXCEPTION, 1, items=(item, item + 1)) for t in (1, 2)]
        tries[-1].final = True
        outcomes.record(attempt, tries)
    assert outcomes.is_failed(1)
    assert outcomes.failed_items == 2 and outcomes.failed_mini_batches() == 1
    assert [r.mini_batch for r in outcomes.done_finals()] == []


def test_a_stale_or_duplicate_part_try_is_not_counted_twice() -> None:
    outcomes = _books(isolate=True)
    _whole_failure(outcomes)
    outcomes.take_parts()
    half = _try(0, 1, Status.RUN_DONE, 2, items=(0, 2), final=True)
    outcomes.record("r01a000002", [half])
    before = outcomes.attempt_count()
    outcomes.record("r01a000009", [half])  # (the same part, recovered from a ledger again)
    outcomes.record("r01a000010", [_try(0, 3, Status.RUN_DONE, 4, final=True)])  # a stale whole
    assert outcomes.attempt_count() == before and not outcomes.is_final(0)


# --------------------------------------------------------------------------- whole jobs

#: One file of each way to fail, in mini-batches of 4: mini-batch 1 ends its process on
#: f0005, mini-batch 2 raises on f0010, mini-batch 3 hangs on f0014; mini-batch 0 is clean.
SCRIPT = """\
import os
import time
from pathlib import Path


def run(mini_batch):
    rows = []
    for path in mini_batch:
        name = Path(path).name
        if name == "f0005.csv":
            os._exit(3)
        if name == "f0010.csv":
            raise ValueError(f"bad file {name}")
        if name == "f0014.csv":
            time.sleep(120)
        rows.append(f"{name} scored")
    return rows
"""
POISON = {5: "PROCESS_DIED", 10: "RUN_EXCEPTION", 14: "RUN_TIMEOUT"}
SETTINGS = {"mini_batch_size": 4, "retry_settings": {"max_retries": 1, "timeout": 3}}


def _fault_job(tmp_path: Path) -> tuple[Path, Path, Path]:
    return make_job(tmp_path, SCRIPT, n_files=16, settings=SETTINGS)


def _tries(out: Path) -> list[dict[str, str]]:
    path = out / "logs" / "sys" / "job_report" / "processed_mini-batches.csv"
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_isolate_failures_costs_one_failed_item_per_poison_file(tmp_path: Path) -> None:
    dep, inputs, out = _fault_job(tmp_path)
    proc = cli(dep, inputs, out, "--isolate-failures", timeout=400)
    assert proc.returncode == 0, show(proc)
    s = summary_of(out)
    assert (s["failed_items"], s["succeeded_items"], s["total_items"]) == (3, 13, 16), show(proc)
    assert s["split_mini_batches"] == 3 and s["failed_mini_batches"] == 0
    by_mb = {f["mini_batch_id"]: f for f in s["failures"]}
    assert sorted(by_mb) == [1, 2, 3]
    for i, status in POISON.items():
        failure = by_mb[i // 4]
        assert failure["status"] == status and failure["failed"] == 1
        assert [Path(f).name for f in failure["files"]] == [f"f{i:04d}.csv"]
    # every other row once, in input order
    good = [i for i in range(16) if i not in POISON]
    lines = (out / "predictions.csv").read_text().splitlines()
    assert lines == [f"f{i:04d}.csv scored" for i in good]
    # failed_items.csv: the three files alone
    with open(out / "failed_items.csv", newline="") as fh:
        items = [(r["mini_batch"], Path(r["file"]).name, r["status"]) for r in csv.DictReader(fh)]
    assert items == [(str(i // 4), f"f{i:04d}.csv", st) for i, st in POISON.items()]
    # processed_mini-batches.csv: Azure's columns first, then items and peak RSS; the split
    # tries are rows of their mini-batch, each naming its items
    tries = _tries(out)
    assert list(tries[0])[: len(triescsv.ATTEMPT_COLUMNS) - 2] == triescsv.ATTEMPT_COLUMNS[:-2]
    assert list(tries[0])[-2:] == ["items", "peak_rss_mb"]
    clean = [t for t in tries if t["mini_batch_id"] == "0"]
    assert [(t["try"], t["status"], t["items"]) for t in clean] == [("1", "RUN_DONE", "")]
    for i, status in POISON.items():
        mine = [t for t in tries if t["mini_batch_id"] == str(i // 4)]
        whole = [t["status"] for t in mine if not t["items"]]
        assert whole == [status, status], "the whole mini-batch failed both its tries first"
        alone = [t["status"] for t in mine if t["items"] == str(i % 4)]
        assert alone == [status, status], "then the item alone, with the whole retry budget"
        assert any(t["items"] == "0-1" for t in mine) and any(t["items"] == "2-3" for t in mine)


def test_a_retry_numbers_each_parts_tries_after_the_earlier_passes(tmp_path: Path) -> None:
    """--retry-failed --isolate-failures of a mini-batch that still fails: its parts' tries
    were numbered from 1 again, giving two rows of one (mini-batch, items, try) in
    processed_mini-batches.csv, and the failed item 2 tries where it had 4; the summary gave
    the whole mini-batch's tries of this pass only (2 of 4)."""
    script = """
    import os

    def run(mini_batch):
        if any(p.endswith("f0002.csv") for p in mini_batch):
            raise ValueError("poison")
        return [os.path.basename(p) for p in mini_batch]
    """
    settings = {"mini_batch_size": 4, "retry_settings": {"max_retries": 1}}
    dep, inputs, out = make_job(tmp_path, script, n_files=4, settings=settings)
    for extra in ((), ("--retry-failed",)):
        proc = cli(dep, inputs, out, "--isolate-failures", *extra)
        assert proc.returncode == 0, show(proc)
    tries = _tries(out)
    keys = [(t["mini_batch_id"], t["items"], t["try"]) for t in tries]
    assert len(keys) == len(set(keys)), keys
    whole = [int(t["try"]) for t in tries if not t["items"]]
    alone = [int(t["try"]) for t in tries if t["items"] == "2"]
    halves = [int(t["try"]) for t in tries if t["items"] == "2-3"]
    assert whole == [1, 2, 3, 4] and alone == [1, 2, 3, 4] and halves == [1, 2], tries
    with open(out / "failed_items.csv", newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    assert (Path(row["file"]).name, row["tries"]) == ("f0002.csv", "4")
    (failure,) = summary_of(out)["failures"]
    assert failure["tries"] == 4, failure


def test_without_the_flag_the_same_job_fails_whole_mini_batches(tmp_path: Path) -> None:
    dep, inputs, out = _fault_job(tmp_path)
    proc = cli(dep, inputs, out, timeout=300)
    assert proc.returncode == 0, show(proc)
    s = summary_of(out)
    assert (s["failed_items"], s["failed_mini_batches"], s["split_mini_batches"]) == (12, 3, 0)
    lines = (out / "predictions.csv").read_text().splitlines()
    assert lines == [f"f{i:04d}.csv scored" for i in range(4)]
    assert not any(t["items"] for t in _tries(out))


TABULAR = """\
import pandas as pd


def run(frame):
    if (frame["x"] == 13).any():
        raise ValueError("row 13 is poison")
    return pd.DataFrame({"x": frame["x"], "double": frame["x"] * 2})
"""


@pytest.mark.parametrize("fmt", ["append_row", "parquet"])
def test_a_tabular_mini_batch_is_split_by_rows(tmp_path: Path, client: Any, fmt: str) -> None:
    dep, _, out = make_job(tmp_path, TABULAR, n_files=0, settings={"mini_batch_size": "10 rows"})
    data = tmp_path / "table"
    data.mkdir()
    pd.DataFrame({"x": range(40)}).to_csv(data / "data.csv", index=False)
    result = daskscore.run(
        dep, data, out, client=client, isolate_failures=True, output_format=fmt, max_retries=0
    )
    assert (result.failed_items, result.succeeded_items) == (1, 39)
    if fmt == "parquet":
        got = pd.read_parquet(result.predictions)["x"].tolist()
    else:
        lines = Path(result.predictions).read_text().splitlines()
        got = [int(re.split(r"[ ,]", line)[0]) for line in lines]
    assert got == [x for x in range(40) if x != 13], "every other row once, in order"
    failed = result.failed_items_frame()
    assert failed["file"].tolist() == [f"{data / 'data.csv'} (rows 13-13)"]
    assert failed["status"].tolist() == ["RUN_EXCEPTION"]
    tries = processed_of(out)
    split = tries[tries["mini_batch_id"] == 1]
    want = ["", "0-4", "5-9", "0-1", "2-4", "2", "3-4", "3", "4"]  # halves, quarters, ...
    assert split["items"].fillna("").astype(str).tolist() == want


RAISES = """\
from pathlib import Path


def run(mini_batch):
    for path in mini_batch:
        if Path(path).name == "f0006.csv":
            raise ValueError("bad file f0006.csv")
    return [f"{Path(p).name} scored" for p in mini_batch]
"""


def test_a_shipped_job_isolates_its_failures_too(tmp_path: Path, client: Any) -> None:
    # the parts' rows come home in the tasks' replies, and are assembled in order
    dep, inputs, out = make_job(tmp_path, RAISES, n_files=12, settings={"mini_batch_size": 4})
    result = daskscore.run(
        dep, inputs, out, client=client, shared_filesystem=False, isolate_failures=True,
        max_retries=0,
    )  # fmt: skip
    assert (result.failed_items, result.succeeded_items) == (1, 11)
    lines = Path(result.predictions).read_text().splitlines()
    assert lines == [f"f{i:04d}.csv scored" for i in range(12) if i != 6]
    assert [Path(f).name for f in result.failed_items_frame()["file"]] == ["f0006.csv"]


def test_the_report_names_the_items_of_a_parts_try(tmp_path: Path) -> None:
    """The report's tables of tries name each try's items, as processed_mini-batches.csv does:
    the whole mini-batch's try and a part's (same mini-batch, same try number, same status)
    looked alike before."""
    script = """
    import os

    def run(mini_batch):
        if any(p.endswith("f0002.csv") for p in mini_batch):
            os._exit(3)
        return [os.path.basename(p) for p in mini_batch]
    """
    settings = {"mini_batch_size": 4, "retry_settings": {"max_retries": 0}}
    dep, inputs, out = make_job(tmp_path, script, n_files=4, settings=settings)
    proc = cli(dep, inputs, out, "--isolate-failures")
    assert proc.returncode == 0, show(proc)
    died = sorted(
        (t["items"] or "all", t["try"]) for t in _tries(out) if t["status"] == "PROCESS_DIED"
    )
    assert died == [("2", "1"), ("2-3", "1"), ("all", "1")], died
    page = (out / "report.html").read_text(encoding="utf-8")
    table = re.search(r'<table id="stopped-table">(.*?)</table>', page)
    assert table, page
    assert '<th class="n">items</th>' in table[1]
    rows = re.findall(
        r"<tr data-mini-batch='0'><td class='n'>0</td><td class='n'>([^<]*)</td>"
        r"<td class='n'>(\d+)</td>",
        table[1],
    )
    assert sorted(rows) == died, table[1]
