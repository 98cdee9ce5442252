"""Unit tests of daskscore.engine.outcomes (and the summary made from it): the tries of every
mini-batch, the one final try of each, crashes, the error threshold and resumed jobs.

Pure state: no cluster, no worker, nothing written but the summary's own inputs.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import pickle
import tracemalloc
from dataclasses import replace
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daskscore.config import Deployment, RetrySettings, Settings
from daskscore.engine import columns, tryrows
from daskscore.engine.finish import JobRecord, failure_message, report_tries, summarize
from daskscore.engine.outcomes import Outcomes, crash_error
from daskscore.io import outputdir, rowstore, triescsv
from daskscore.protocol import MiniBatchRecord, Status, TaskResult

TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "score.py", line 12, in run\n'
    "    raise ValueError(name)\n"
    "ValueError: bad file f0003.csv"
)


def make_settings(max_retries: int = 3, error_threshold: int = -1, timeout: float = 30.0):
    return Settings(
        retry_settings=RetrySettings(max_retries=max_retries, timeout=timeout),
        error_threshold=error_threshold,
    )


def files(*sizes: int) -> list[list[str]]:
    """Mini-batches of ``sizes`` files each, by id."""
    return [[f"in/mb{mb}/f{i}.csv" for i in range(n)] for mb, n in enumerate(sizes)]


def done(mb: int, try_no: int = 1, total: int = 2, succeeded: int | None = None):
    """A try whose run() returned (``succeeded`` < ``total``: fewer results than items)."""
    ok = total if succeeded is None else succeeded
    return MiniBatchRecord(
        mini_batch=mb,
        try_no=try_no,
        total=total,
        succeeded=ok,
        failed=total - ok,
        rows=ok,
        status=Status.RUN_DONE,
        error="" if ok == total else f"run() returned {ok} results for {total} files",
        final=True,
    )


def raised(mb: int, try_no: int, total: int = 2, final: bool = False, error: str = TRACEBACK):
    """A try whose run() raised; ``final`` when it was the last try allowed."""
    return MiniBatchRecord(
        mini_batch=mb,
        try_no=try_no,
        total=total,
        failed=total,
        status=Status.RUN_EXCEPTION,
        error=error,
        final=final,
    )


def tries_of(outcomes: Outcomes, mb: int) -> list[tuple[int, str]]:
    return [(r.try_no, r.status.value) for r in outcomes.attempts if r.mini_batch == mb]


# --------------------------------------------------------------------------- folding records


def test_a_final_try_settles_its_mini_batch() -> None:
    outcomes = Outcomes(files(2, 2, 3), make_settings())
    finished = outcomes.record(
        "r01a000001", [done(0), raised(1, 1), raised(1, 2), done(1, 3, total=2)]
    )
    assert finished == {0, 1}
    assert outcomes.is_final(0) and outcomes.is_final(1) and not outcomes.is_final(2)
    assert not outcomes.is_failed(0) and not outcomes.is_failed(1)
    # the driver names the attempt that holds the rows; the worker does not know it
    assert outcomes.final[0].attempt == outcomes.final[1].attempt == "r01a000001"
    assert outcomes.final[1].try_no == 3
    assert tries_of(outcomes, 1) == [(1, "RUN_EXCEPTION"), (2, "RUN_EXCEPTION"), (3, "RUN_DONE")]
    assert outcomes.tries_used(1) == 3 and outcomes.tries_used(2) == 0
    assert outcomes.succeeded_items() == 4 and outcomes.items_done() == 4
    assert outcomes.failed_items == 0
    assert [r.mini_batch for r in outcomes.done_finals()] == [0, 1]


def test_tries_that_are_not_final_leave_the_mini_batch_open() -> None:
    outcomes = Outcomes(files(2), make_settings())
    assert outcomes.record("r01a000001", [raised(0, 1), raised(0, 2)]) == set()
    assert not outcomes.is_final(0)
    assert outcomes.tries_used(0) == 2
    assert outcomes.failed_items == 0  # only final tries count
    assert len(outcomes.attempts) == 2


def test_records_of_a_settled_mini_batch_are_ignored() -> None:
    """A second attempt of a mini-batch (a task Dask ran twice, a salvaged ledger) is neither
    counted nor written twice: its rows would be duplicated in the output."""
    outcomes = Outcomes(files(2, 2), make_settings())
    outcomes.record("r01a000001", [done(0)])
    before = list(outcomes.attempts)
    finished = outcomes.record("r01a000002", [raised(0, 1), raised(0, 2, final=True), done(1)])
    assert finished == {1}
    assert outcomes.final[0].attempt == "r01a000001" and outcomes.final[0].done
    assert outcomes.attempts[: len(before)] == before
    assert [r.mini_batch for r in outcomes.attempts[len(before) :]] == [1]
    assert outcomes.failed_items == 0
    assert outcomes.tries_used(0) == 1
    assert len(outcomes.done_finals()) == 2


def test_retries_are_recorded_with_their_try_numbers() -> None:
    outcomes = Outcomes(files(3), make_settings(max_retries=3))
    records = [raised(0, 1, total=3), raised(0, 2, total=3), raised(0, 3, total=3)]
    records.append(raised(0, 4, total=3, final=True))
    assert outcomes.record("r01a000001", records) == {0}
    assert [t for t, _ in tries_of(outcomes, 0)] == [1, 2, 3, 4]
    assert outcomes.is_failed(0)
    assert outcomes.final[0].status is Status.RUN_EXCEPTION
    assert outcomes.failed_items == 3 and outcomes.failed_mini_batches() == 1
    assert outcomes.done_finals() == []


def test_a_partial_return_counts_its_missing_items_as_failed() -> None:
    outcomes = Outcomes(files(5, 2), make_settings(error_threshold=1))
    outcomes.record("r01a000001", [done(0, total=5, succeeded=3), done(1)])
    assert not outcomes.is_failed(0)  # run() returned: its rows are kept
    assert outcomes.failed_mini_batches() == 0
    assert outcomes.failed_items == 2
    assert outcomes.succeeded_items() == 5
    assert outcomes.threshold_exceeded()  # 2 failed items > 1 allowed
    assert [r.mini_batch for r in outcomes.done_finals()] == [0, 1]


# --------------------------------------------------------------------------- crashes


def test_a_crash_is_charged_as_process_died_until_max_retries() -> None:
    outcomes = Outcomes(files(4), make_settings(max_retries=2))
    assert outcomes.charge_crash(0, 1, timed_out=False, worker="tcp://w1", start=1000.0) is False
    assert outcomes.charge_crash(0, 2, timed_out=False) is False
    assert not outcomes.is_final(0)
    assert outcomes.tries_used(0) == 2
    assert outcomes.charge_crash(0, 3, timed_out=False) is True  # 3 > max_retries
    assert outcomes.is_failed(0)
    final = outcomes.final[0]
    assert final.final and final.status is Status.PROCESS_DIED and final.try_no == 3
    assert final.total == final.failed == 4 and final.succeeded == 0
    assert "worker process died" in final.error
    assert tries_of(outcomes, 0) == [(1, "PROCESS_DIED"), (2, "PROCESS_DIED"), (3, "PROCESS_DIED")]
    first = outcomes.attempts[0]
    assert first.worker == "tcp://w1" and first.start == 1000.0
    assert outcomes.failed_items == 4


def test_a_timed_out_run_is_charged_as_run_timeout() -> None:
    outcomes = Outcomes(files(2), make_settings(max_retries=0, timeout=12))
    assert outcomes.charge_crash(0, 1, timed_out=True) is True  # no retries allowed
    final = outcomes.final[0]
    assert final.status is Status.RUN_TIMEOUT
    assert "retry_settings.timeout (12 s)" in final.error
    assert outcomes.failed_items == 2


def test_a_crash_can_be_made_final_before_its_retries_are_used() -> None:
    outcomes = Outcomes(files(3, 1), make_settings(max_retries=3))
    assert outcomes.charge_crash(0, 1, timed_out=False, final=True) is True
    assert outcomes.is_failed(0) and outcomes.final[0].try_no == 1
    assert outcomes.failed_items == 3
    # a record that comes later for it is ignored
    assert outcomes.record("r01a000009", [done(0, 2, total=3)]) == set()
    assert outcomes.is_failed(0) and outcomes.failed_items == 3


def test_a_crash_then_a_success_keeps_both_tries() -> None:
    outcomes = Outcomes(files(2), make_settings())
    outcomes.charge_crash(0, 1, timed_out=False)
    outcomes.record("r01a000002", [done(0, 2)])
    assert tries_of(outcomes, 0) == [(1, "PROCESS_DIED"), (2, "RUN_DONE")]
    assert outcomes.final[0].done and outcomes.failed_items == 0


# --------------------------------------------------------------------------- error threshold


@pytest.mark.parametrize(
    ("threshold", "failed_items", "exceeded"),
    [
        (-1, 0, False),
        (-1, 1000, False),  # -1: never
        (0, 0, False),
        (0, 1, True),  # 0: the first failed item
        (5, 5, False),
        (5, 6, True),
    ],
)
def test_the_error_threshold_counts_failed_items(
    threshold: int, failed_items: int, exceeded: bool
) -> None:
    outcomes = Outcomes(files(max(failed_items, 1)), make_settings(error_threshold=threshold))
    if failed_items:
        outcomes.record("r01a000001", [raised(0, 1, total=failed_items, final=True)])
    assert outcomes.failed_items == failed_items
    assert outcomes.threshold_exceeded() is exceeded


def test_the_error_threshold_counts_items_not_mini_batches() -> None:
    outcomes = Outcomes(files(4, 1, 1), make_settings(error_threshold=3))
    outcomes.record("r01a000001", [raised(0, 1, total=4, final=True)])
    assert outcomes.failed_mini_batches() == 1
    assert outcomes.threshold_exceeded()  # one mini-batch, but 4 failed items > 3
    other = Outcomes(files(4, 1, 1), make_settings(error_threshold=3))
    other.record("r01a000001", [raised(1, 1, total=1, final=True), raised(2, 1, 1, True)])
    assert other.failed_mini_batches() == 2
    assert not other.threshold_exceeded()  # two mini-batches, 2 failed items <= 3


def test_crashes_count_towards_the_error_threshold() -> None:
    outcomes = Outcomes(files(3), make_settings(max_retries=0, error_threshold=2))
    outcomes.charge_crash(0, 1, timed_out=False)
    assert outcomes.failed_items == 3 and outcomes.threshold_exceeded()


# --------------------------------------------------------------------------- resume


def test_restore_keeps_succeeded_mini_batches_and_gives_failed_ones_a_fresh_budget() -> None:
    outcomes = Outcomes(files(2, 2, 2), make_settings(max_retries=1))
    # run 1 committed: mb 0 done; mb 1 failed its 2 tries; mb 2 nothing
    outcomes.restore("r01a000001", [done(0), raised(1, 1), raised(1, 2, final=True)])
    assert outcomes.resumed == 1
    assert outcomes.is_final(0) and outcomes.final[0].attempt == "r01a000001"
    assert not outcomes.is_final(1)  # retried in this run
    assert outcomes.failed_items == 0
    assert outcomes.tries_used(1) == 0  # this run's budget is whole

    # this run: mb 1 fails once more, then succeeds; its tries are numbered after run 1's
    assert outcomes.record("r02a000001", [raised(1, 1), done(1, 2), done(2)]) == {1, 2}
    assert tries_of(outcomes, 1) == [
        (1, "RUN_EXCEPTION"),
        (2, "RUN_EXCEPTION"),
        (3, "RUN_EXCEPTION"),
        (4, "RUN_DONE"),
    ]
    assert outcomes.final[1].try_no == 4 and outcomes.final[1].attempt == "r02a000001"
    assert outcomes.tries_used(1) == 2  # what the worker is told: this run's tries
    assert tries_of(outcomes, 2) == [(1, "RUN_DONE")]
    # a succeeded mini-batch of run 1 is not run again: a record of it is ignored
    assert outcomes.record("r02a000002", [raised(0, 1, final=True)]) == set()
    assert outcomes.final[0].done and outcomes.failed_items == 0


def test_restore_numbers_tries_after_every_earlier_run() -> None:
    outcomes = Outcomes(files(2), make_settings(max_retries=1))
    # ledgers in run order; a run's tries may be spread over several attempts
    outcomes.restore("r01a000001", [raised(0, 1), raised(0, 2, final=True)])
    outcomes.restore("r02a000003", [raised(0, 1)])
    outcomes.restore("r02a000004", [raised(0, 2, final=True)])
    outcomes.charge_crash(0, 1, timed_out=False)  # run 3: a crash, then a success
    outcomes.record("r03a000002", [done(0, 2)])
    assert [t for t, _ in tries_of(outcomes, 0)] == [1, 2, 3, 4, 5, 6]
    assert tries_of(outcomes, 0)[-2:] == [(5, "PROCESS_DIED"), (6, "RUN_DONE")]
    assert outcomes.final[0].try_no == 6 and outcomes.resumed == 0


def test_a_mini_batch_that_succeeded_in_a_later_run_is_restored_final() -> None:
    outcomes = Outcomes(files(2), make_settings(max_retries=0))
    outcomes.restore("r01a000001", [raised(0, 1, final=True)])
    outcomes.restore("r02a000001", [done(0, 1)])
    assert outcomes.is_final(0) and outcomes.final[0].try_no == 2
    assert outcomes.final[0].attempt == "r02a000001"
    assert outcomes.resumed == 1 and outcomes.failed_items == 0


@settings(max_examples=150, deadline=None, database=None)
@given(
    runs=st.lists(st.lists(st.integers(1, 4), min_size=1, max_size=3), min_size=1, max_size=4),
    last_succeeded=st.booleans(),
    now=st.integers(1, 4),
)
def test_resumed_tries_are_numbered_without_gaps(
    runs: list[list[int]], last_succeeded: bool, now: int
) -> None:
    """Whatever earlier runs committed (each run's tries spread over attempts), this run's
    tries follow them: a mini-batch's history is tries 1, 2, 3, ... with no gap or repeat."""
    outcomes = Outcomes(files(2), make_settings(max_retries=10))
    total = 0
    for run, attempts in enumerate(runs, start=1):
        try_no = 0
        for seq, count in enumerate(attempts, start=1):
            records = [raised(0, try_no + k) for k in range(1, count + 1)]
            try_no += count
            last = run == len(runs) and seq == len(attempts)
            if last and last_succeeded:
                records[-1] = done(0, try_no)
            outcomes.restore(f"r{run:02d}a{seq:06d}", records)
        total += try_no
    assert outcomes.is_final(0) is last_succeeded
    assert outcomes.resumed == int(last_succeeded)
    outcomes.record(
        f"r{len(runs) + 1:02d}a000001",
        [raised(0, k) for k in range(1, now)] + [done(0, now)],
    )
    expected = total if last_succeeded else total + now
    assert [t for t, _ in tries_of(outcomes, 0)] == list(range(1, expected + 1))
    assert outcomes.final[0].try_no == (total if last_succeeded else total + now)


# --------------------------------------------------------------------------- any order


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[int, list[tuple[str, list[MiniBatchRecord]]]]:
    """Task attempts' records, in an arbitrary arrival order: each mini-batch ran in one or
    more attempts, each run ending in a final try (done, partial or failed)."""
    n = draw(st.integers(1, 8))
    attempts: dict[str, list[MiniBatchRecord]] = {}
    n_attempts = draw(st.integers(1, 5))
    names = [f"r01a{seq:06d}" for seq in range(1, n_attempts + 1)]
    for mb in range(n):
        total = draw(st.integers(1, 5))
        for name in draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True)):
            retries = draw(st.integers(0, 2))
            records = [raised(mb, t, total=total) for t in range(1, retries + 1)]
            end = draw(st.sampled_from(["done", "partial", "failed"]))
            if end == "failed":
                records.append(raised(mb, retries + 1, total=total, final=True))
            else:
                ok = total if end == "done" else draw(st.integers(0, total - 1))
                records.append(done(mb, retries + 1, total=total, succeeded=ok))
            attempts.setdefault(name, []).extend(records)
    order = draw(st.permutations(sorted(attempts)))
    return n, [(name, attempts[name]) for name in order]


@settings(max_examples=200, deadline=None, database=None)
@given(case=deliveries())
def test_each_mini_batch_has_one_final_try_whatever_the_arrival_order(
    case: tuple[int, list[tuple[str, list[MiniBatchRecord]]]],
) -> None:
    n, arrivals = case
    outcomes = Outcomes(files(*[5] * n), make_settings(max_retries=2))
    settled: list[int] = []
    for attempt, records in arrivals:
        settled.extend(outcomes.record(attempt, records))
    assert sorted(settled) == list(range(n))  # each settles once
    assert sorted(outcomes.final) == list(range(n))
    for mb in range(n):
        finals = [r for r in outcomes.attempts if r.mini_batch == mb and r.final]
        assert len(finals) == 1
        # the first attempt to arrive with the mini-batch is the one whose tries count
        first = next(a for a, recs in arrivals if any(r.mini_batch == mb for r in recs))
        assert outcomes.final[mb].attempt == first
        expected = [r for a, recs in arrivals if a == first for r in recs if r.mini_batch == mb]
        assert [r for r in outcomes.attempts if r.mini_batch == mb] == expected
    assert outcomes.failed_items == sum(r.failed for r in outcomes.final.values())
    assert outcomes.failed_mini_batches() == sum(1 for r in outcomes.final.values() if not r.done)


# --------------------------------------------------------------------------- the summary


def job_record(tmp_path: Path, settings_: Settings) -> JobRecord:
    deployment = Deployment(
        code=tmp_path / "code", scoring_script=tmp_path / "code" / "score.py", settings=settings_
    )
    return JobRecord("job-1", deployment, str(tmp_path / "in"), tmp_path / "out")


def test_the_summary_counts_items_and_mini_batches(tmp_path: Path) -> None:
    config = make_settings(max_retries=1)
    # 0 done, 1 raised on both tries, 2 partial, 3 crashed twice, 4 not run, 5 resumed,
    # 6 crashed then succeeded
    outcomes = Outcomes(files(2, 3, 4, 1, 5, 2, 2), config)
    outcomes.restore("r01a000001", [done(5)])
    outcomes.record("r02a000001", [done(0), raised(1, 1, 3), raised(1, 2, 3, final=True)])
    outcomes.record("r02a000002", [done(2, total=4, succeeded=1)])
    outcomes.charge_crash(3, 1, timed_out=False)
    outcomes.charge_crash(3, 2, timed_out=False)
    outcomes.charge_crash(6, 1, timed_out=True)
    outcomes.record("r02a000004", [done(6, 2)])

    s = summarize(job_record(tmp_path, config), outcomes, None)
    assert s["status"] == "Completed" and s["reason"] is None
    assert s["total_items"] == 19
    assert s["succeeded_items"] == 2 + 1 + 2 + 2
    assert s["failed_items"] == 3 + 3 + 1
    assert s["not_run_items"] == 5
    assert s["total_mini_batches"] == 7
    assert s["failed_mini_batches"] == 2  # 1 and 3
    assert s["partial_mini_batches"] == 1  # 2
    assert s["not_run_mini_batches"] == 1  # 4
    assert s["retried_mini_batches"] == 3  # 1, 3 and 6
    assert s["resumed_mini_batches"] == 1  # 5
    assert s["rows_written"] == 2 + 1 + 2 + 2
    failures = s["failures"]
    assert [f["mini_batch_id"] for f in failures] == [1, 2, 3]
    assert failures[0]["status"] == "RUN_EXCEPTION" and failures[0]["tries"] == 2
    assert failures[0]["files"] == files(2, 3)[1] and failures[0]["error"] == TRACEBACK
    assert failures[2]["status"] == "PROCESS_DIED" and failures[2]["failed"] == 1

    message = failure_message(s)
    assert message.startswith("Job Completed with failures: 7 of 19 items failed")
    # (files by their path under the input root; these lie outside it, so shown whole)
    shown = "in/mb1/f0.csv, in/mb1/f1.csv, in/mb1/f2.csv"
    assert f"mini-batch 1 (RUN_EXCEPTION, 2 tries, 3 failed): {shown}" in message
    assert "mini-batch 3 (PROCESS_DIED, 2 tries, 1 failed)" in message
    first = message.split("First error (mini-batch 1):\n", 1)[1]
    assert first.startswith("  Traceback (most recent call last):\n")
    assert "\n  ValueError: bad file f0003.csv\n" in first


def test_the_summary_of_an_exceeded_threshold_says_so(tmp_path: Path) -> None:
    config = make_settings(max_retries=0, error_threshold=2)
    outcomes = Outcomes(files(3, 3), config)
    outcomes.record("r01a000001", [raised(0, 1, total=3, final=True)])
    s = summarize(job_record(tmp_path, config), outcomes, None)
    assert s["status"] == "Failed"
    assert "error_threshold exceeded: 3 items failed, more than the 2 allowed" in s["reason"]
    assert s["not_run_items"] == 3 and s["not_run_mini_batches"] == 1
    message = failure_message(s)
    assert message.startswith(f"Job Failed: {s['reason']}.")
    assert "First error (mini-batch 0):" in message and "ValueError: bad file" in message


def test_the_failure_text_says_how_many_failed_with_the_first_error(tmp_path: Path) -> None:
    """A systematic failure is said at once: how many failed mini-batches ended with the
    first one's error (the same text; the third here differs)."""
    config = make_settings(max_retries=0)
    outcomes = Outcomes(files(1, 1, 1, 1), config)
    other = TRACEBACK.replace("f0003.csv", "f0009.csv")
    outcomes.record("r01a1", [raised(0, 1, 1, final=True), raised(1, 1, 1, final=True)])
    outcomes.record("r01a2", [raised(2, 1, 1, final=True, error=other), done(3, total=1)])
    message = failure_message(summarize(job_record(tmp_path, config), outcomes, None))
    assert "First error (mini-batch 0; the same in 2 of the 3 failed mini-batches):" in message
    outcomes = Outcomes(files(1, 1), config)
    outcomes.record(
        "r01a1", [raised(0, 1, 1, final=True), raised(1, 1, 1, final=True, error=other)]
    )
    message = failure_message(summarize(job_record(tmp_path, config), outcomes, None))
    assert "First error (mini-batch 0):" in message  # (no other like it: nothing more said)


def test_the_summary_of_a_failed_init_shows_its_traceback(tmp_path: Path) -> None:
    config = make_settings()
    outcomes = Outcomes(files(2, 2), config)
    outcomes.init_error = "Traceback (most recent call last):\nImportError: no module named x"
    s = summarize(job_record(tmp_path, config), outcomes, None)
    assert s["status"] == "Failed" and "init()" in s["reason"]
    assert s["not_run_items"] == 4 and s["failures"] == []
    message = failure_message(s)
    assert "First error (init()):\n  Traceback" in message
    assert "  ImportError: no module named x" in message


# --------------------------------------------------------------------------- compact books
#
# Outcomes keeps a clean first try (run() returned every result) in columns, and only the
# other mini-batches' tries as records.  The reference below is the plain model it replaced —
# every try a record, one final record per mini-batch — and the summary, the failures, the
# rows of processed_mini-batches.csv and the finals must be the same whatever the job.


class Reference:
    """Every try as a MiniBatchRecord: the model of what Outcomes must answer."""

    def __init__(self, work: list[list[str]], settings_: Settings) -> None:
        self.work, self.settings = work, settings_
        self.attempts: list[MiniBatchRecord] = []
        self.final: dict[int, MiniBatchRecord] = {}
        self.tries: dict[int, int] = {}
        self.offset: dict[int, int] = {}
        self.earlier: dict[int, dict[str, int]] = {}
        self.resumed = 0

    def record(self, attempt: str, records: list[MiniBatchRecord]) -> set[int]:
        finished = set()
        for rec in records:
            mb = rec.mini_batch
            if mb in self.final:
                continue
            self.tries[mb] = max(self.tries.get(mb, 0), rec.try_no)
            rec = self.numbered(rec)
            self.attempts.append(rec)
            if rec.final:
                self.final[mb] = replace(rec, attempt=attempt)
                finished.add(mb)
        return finished

    def restore(self, attempt: str, records: list[MiniBatchRecord]) -> None:
        run = attempt.split("a", 1)[0]
        for rec in records:
            mb = rec.mini_batch
            if mb in self.final:
                continue
            runs = self.earlier.setdefault(mb, {})
            before = sum(n for r, n in runs.items() if r < run)
            rec = replace(rec, try_no=rec.try_no + before)
            runs[run] = max(runs.get(run, 0), rec.try_no - before)
            self.offset[mb] = sum(runs.values())
            self.attempts.append(rec)
            if rec.final and rec.done:
                self.final[mb] = replace(rec, attempt=attempt)
        self.resumed = len(self.final)

    def numbered(self, rec: MiniBatchRecord) -> MiniBatchRecord:
        offset = self.offset.get(rec.mini_batch, 0)
        return replace(rec, try_no=rec.try_no + offset) if offset else rec

    def charge_crash(self, mb: int, try_no: int, timed_out: bool, start: float) -> bool:
        total = len(self.work[mb])
        status = Status.RUN_TIMEOUT if timed_out else Status.PROCESS_DIED
        error = crash_error(timed_out, self.settings.retry_settings.timeout)
        rec = MiniBatchRecord(mb, try_no, "w", start, total, 0, total, status=status, error=error)
        self.attempts.append(self.numbered(rec))
        self.tries[mb] = max(self.tries.get(mb, 0), try_no)
        if try_no > self.settings.retry_settings.max_retries:
            self.final[mb] = replace(self.numbered(rec), final=True)
            return True
        return False

    def summary(self) -> dict[str, Any]:
        finals = self.final.values()
        failed = sum(r.failed for r in finals)
        total = sum(
            self.final[mb].total if mb in self.final else len(w) for mb, w in enumerate(self.work)
        )
        succeeded = sum(r.succeeded for r in finals)
        return {
            "total_items": total,
            "succeeded_items": succeeded,
            "failed_items": failed,
            "not_run_items": total - succeeded - failed,
            "rows_written": sum(r.rows for r in finals if r.done),
            "failed_mini_batches": sum(1 for r in finals if not r.done),
            "partial_mini_batches": sum(1 for r in finals if r.done and r.failed),
            "not_run_mini_batches": len(self.work) - len(self.final),
            "retried_mini_batches": len({r.mini_batch for r in self.attempts if r.try_no > 1}),
            "resumed_mini_batches": self.resumed,
            "failures": [
                {
                    "mini_batch_id": mb,
                    "status": self.final[mb].status.value,
                    "tries": max(  # (every run's)
                        self.offset.get(mb, 0) + self.tries.get(mb, 0), self.final[mb].try_no
                    ),
                    "succeeded": self.final[mb].succeeded,
                    "failed": self.final[mb].failed,
                    "rows_unknown": False,  # (files: counted)
                    "files": list(self.work[mb]),
                    "error": self.final[mb].error,
                }
                for mb in sorted(self.final)
                if self.final[mb].failed
            ],
        }

    def csv_text(self, path: Path) -> str:
        """processed_mini-batches.csv as the csv module writes it (the format's reference)."""
        ordered = sorted(self.attempts, key=lambda r: (r.mini_batch, r.try_no))
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(triescsv.ATTEMPT_COLUMNS)
            for r in ordered:
                start = r.start
                iso = (
                    dt.datetime.fromtimestamp(start, tz=dt.timezone.utc).isoformat(
                        timespec="milliseconds"
                    )
                    if start
                    else ""
                )
                lines = [line for line in (r.error or "").strip().splitlines() if line.strip()]
                writer.writerow(
                    [
                        r.mini_batch,
                        r.try_no,
                        r.worker,
                        iso,
                        r.total,
                        r.succeeded,
                        r.failed,
                        f"{r.elapsed_s:.4f}",
                        f"{r.run_s:.4f}",
                        r.status.value,
                        lines[-1].strip() if lines else "",
                        "",  # items: whole mini-batches here
                        f"{r.peak_rss_mb:.1f}" if r.peak_rss_mb else "",
                    ]  # fmt: skip
                )
        return path.read_text(encoding="utf-8")


WORKERS = ["tcp://127.0.0.1:4001", "tcp://10.0.0.2:4002", 'odd,"worker"', ""]


@st.composite
def jobs(draw: st.DrawFn) -> tuple[list[list[str]], list[tuple[Any, ...]]]:
    """A job's mini-batches and what happens to them, in an arrival order: most first tries
    return every result; some are partial, raise and are retried, fail, or crash."""
    n = draw(st.integers(1, 40))
    sizes = draw(st.lists(st.integers(1, 6), min_size=n, max_size=n))
    work = [[f"in/f{mb}-{i}.csv" for i in range(k)] for mb, k in enumerate(sizes)]
    events: list[tuple[Any, ...]] = []
    settled = set()  # by an earlier run: the dispatcher never charges a crash to them
    for mb in draw(st.lists(st.integers(0, n - 1), unique=True, max_size=n // 3)):
        # an earlier run's ledger: succeeded (at once or retried), or failed (run again now)
        end = draw(st.sampled_from(["done", "retried", "failed"]))
        records = {
            "done": [done(mb, 1, sizes[mb])],
            "retried": [raised(mb, 1, sizes[mb]), done(mb, 2, sizes[mb])],
            "failed": [raised(mb, 1, sizes[mb], final=True)],
        }[end]
        if end != "failed":
            settled.add(mb)
        events.append(("restore", "r01a000001", records))
    seq = 0
    order = draw(st.permutations(list(range(n))))
    for mb in order:
        fates = ["clean"] * 6 + ["partial", "retried", "failed"] + ["crash"] * (mb not in settled)
        fate = draw(st.sampled_from(fates))
        seq += 1
        attempt = f"r02a{seq:06d}"
        total = sizes[mb]
        start = draw(st.one_of(st.none(), st.floats(1.6e9, 1.8e9)))
        rec = MiniBatchRecord(
            mini_batch=mb,
            try_no=1,
            worker=draw(st.sampled_from(WORKERS)),
            start=start,
            total=total,
            succeeded=total,
            rows=draw(st.integers(0, 3 * total)),
            status=Status.RUN_DONE,
            final=True,
            run_s=draw(st.floats(0, 5)),
            elapsed_s=draw(st.floats(0, 5)),
            start_offset=draw(st.integers(0, 10**6)),
            bytes=draw(st.integers(0, 10**4)),
            part=draw(st.sampled_from([None, f"{attempt}-00001.parquet"])),
        )
        if fate == "clean":
            events.append(("record", attempt, [rec]))
        elif fate == "partial":
            ok = draw(st.integers(0, total - 1)) if total > 1 else 0
            events.append(("record", attempt, [done(mb, 1, total, succeeded=ok)]))
        elif fate == "retried":
            events.append(("record", attempt, [raised(mb, 1, total), replace(rec, try_no=2)]))
        elif fate == "failed":
            events.append(("record", attempt, [raised(mb, t, total, t == 4) for t in (1, 2, 3, 4)]))
        else:
            events.append(("crash", mb, 1, draw(st.booleans()), 1000.0))
            events.append(("record", attempt, [replace(rec, try_no=2)]))
        if draw(st.integers(0, 9)) == 0:  # a duplicate attempt of it: ignored
            events.append(("record", f"r02a{seq + 500:06d}", [replace(rec, rows=99)]))
    return work, events


def _apply(books: Any, events: list[tuple[Any, ...]]) -> list[set[int]]:
    settled = []
    for event in events:
        if event[0] == "restore":
            books.restore(event[1], event[2])
        elif event[0] == "record" and isinstance(books, Outcomes) and len(settled) % 2:
            # as a task's reply brings them: the clean first tries in columns, pickled
            result = TaskResult(event[1], event[2][0].worker, records=list(event[2]))
            result.pack()
            result = pickle.loads(pickle.dumps(result))
            finished = books.record(event[1], result.records)
            if result.clean is not None:
                kept, _, more = books.record_clean(event[1], result.clean)
                finished |= more | set(kept.tolist())
            settled.append(finished)
        elif event[0] == "record":
            settled.append(books.record(event[1], event[2]))
        else:
            _, mb, try_no, timed_out, start = event
            if isinstance(books, Reference):
                books.charge_crash(mb, try_no, timed_out, start)
            else:
                books.charge_crash(mb, try_no, timed_out, worker="w", start=start)
    return settled


@pytest.mark.parametrize("where", ["memory", "file"])
@settings(max_examples=60, deadline=None, database=None)
@given(case=jobs())
def test_the_compact_books_answer_as_a_record_per_try_would(
    tmp_path_factory: pytest.TempPathFactory, case: tuple[list[list[str]], list[Any]], where: str
) -> None:
    with contextlib.ExitStack() as stack:
        work, events = case
        config = make_settings(max_retries=3)
        with mock.patch.object(rowstore, "IN_MEMORY_BYTES", 0 if where == "file" else 1 << 24):
            outcomes, reference = Outcomes(work, config), Reference(work, config)
        assert outcomes.clean.store.on_disk == (where == "file")
        with mock.patch("time.time", return_value=1000.0):  # a crash's elapsed time
            assert _apply(outcomes, events) == _apply(reference, events)
        if where == "file":  # the end's walks over the books, a few mini-batches at a time
            stack.enter_context(mock.patch.object(tryrows, "CHUNK", 3))
            stack.enter_context(mock.patch.object(columns, "_RANGES_AT_ONCE", 2))
        root = tmp_path_factory.mktemp("books")
        summary = summarize(job_record(root, config), outcomes, None)
        expected = reference.summary()
        assert {k: summary[k] for k in expected} == expected
        assert outcomes.failed_items == expected["failed_items"]
        # finals, tries and their order, the output writer's finals
        assert dict(outcomes.final) == reference.final
        assert sorted(outcomes.final) == sorted(reference.final)
        for mb in range(len(work)):
            assert outcomes.tries_used(mb) == reference.tries.get(mb, 0)
            assert outcomes.is_final(mb) == (mb in reference.final)
        by_try = sorted(reference.attempts, key=lambda r: (r.mini_batch, r.try_no))
        assert outcomes.attempts == by_try
        assert outcomes.attempt_count() == len(by_try)
        assert outcomes.done_finals() == [reference.final[mb] for mb in sorted(reference.final)
                                          if reference.final[mb].done]  # fmt: skip
        # the output's byte ranges, made from the columns, as the records say
        ranges = [(r.attempt, r.start_offset, r.bytes) for r in outcomes.done_finals()]
        made = outcomes.done_finals().byte_ranges()
        assert list(outputdir._coalesce(made)) == list(outputdir._coalesce(ranges))
        # processed_mini-batches.csv, byte for byte
        ours = root / "ours.csv"
        triescsv.write_attempt_rows(ours, outcomes.attempt_rows())
        assert ours.read_text(encoding="utf-8") == reference.csv_text(root / "ref.csv")
        # ... and with the clean rows formatted from the columns, as a job writes it
        assert triescsv.write_attempt_rows(ours, outcomes.attempt_lines()) == len(by_try)
        assert ours.read_text(encoding="utf-8") == reference.csv_text(root / "ref.csv")
        # report.html's input: every try here (a small job), as dicts
        tries = list(report_tries(outcomes))
        assert [(t["mini_batch"], t["try"]) for t in tries] == [
            (r.mini_batch, r.try_no) for r in by_try
        ]
        # ... and a bigger job's: the tries of every k-th mini-batch with tries
        tried = sorted({r.mini_batch for r in by_try})
        every = -(-len(tried) // 4) if len(by_try) > 4 else 1
        sample = [(r.mini_batch, r.try_no) for r in by_try if r.mini_batch in tried[::every]]
        tries = list(report_tries(outcomes, limit=4))
        assert [(t["mini_batch"], t["try"]) for t in tries] == sample


@pytest.mark.parametrize("where", ["memory", "file"])
def test_clean_first_tries_keep_no_record(tmp_path: Path, where: str) -> None:
    """20,000 mini-batches, a few failing: only those keep records, and the books take a few
    dozen bytes per mini-batch in memory; a byte and a bit with their rows in a file."""
    n = 20_000
    work = [["f"] * 10] * n
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    with mock.patch.object(rowstore, "IN_MEMORY_BYTES", 0 if where == "file" else 1 << 24):
        outcomes = Outcomes(work, make_settings(max_retries=1))
    for first in range(0, n, 1000):
        records = []
        for mb in range(first, first + 1000):
            if mb % 5000 == 7:
                records += [raised(mb, 1, 10), raised(mb, 2, 10, final=True)]
            else:
                rec = done(mb, 1, 10)
                rec.worker, rec.start, rec.bytes, rec.start_offset = "tcp://w:1", 1.7e9, 80, mb
                records.append(rec)
        outcomes.record(f"r01a{first:06d}", records)
        del records
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    # bytes per mini-batch (a record per try: ~2 KB); the file's pages are not the process's
    assert used / n < (80 if where == "memory" else 4), used / n
    assert outcomes.clean.store.on_disk == (where == "file")
    assert sorted(outcomes._hist) == [7, 5007, 10007, 15007]
    assert outcomes.failed_mini_batches() == 4 and outcomes.failed_items == 40
    assert outcomes.succeeded_items() == (n - 4) * 10
    assert outcomes.attempt_count() == n + 4
    final = outcomes.final[1234]
    assert (final.attempt, final.start_offset, final.bytes, final.worker) == (
        "r01a001000",
        1234,
        80,
        "tcp://w:1",
    )
    assert [f["mini_batch_id"] for f in summarize(job_record(tmp_path, make_settings()),
                                                  outcomes, None)["failures"]] == [
        7, 5007, 10007, 15007
    ]  # fmt: skip


def test_a_value_the_columns_cannot_hold_keeps_its_record() -> None:
    outcomes = Outcomes(files(2, 2), make_settings())
    big = done(0)
    big.bytes = 1 << 40  # a mini-batch's output of a TB
    outcomes.record("r01a000001", [big, done(1)])
    assert sorted(outcomes._hist) == [0]
    assert outcomes.final[0].bytes == 1 << 40 and outcomes.final[0].attempt == "r01a000001"
    assert [r.mini_batch for r in outcomes.done_finals()] == [0, 1]


def test_a_crash_charged_to_a_clean_mini_batch_keeps_both_tries() -> None:
    """Never done by the dispatcher (a settled mini-batch is not charged), but the books stay
    consistent: the clean try is kept whole, then the crash settles it again."""
    outcomes = Outcomes(files(2), make_settings(max_retries=0))
    outcomes.record("r01a000001", [done(0)])
    assert outcomes.charge_crash(0, 2, timed_out=False) is True
    assert tries_of(outcomes, 0) == [(1, "RUN_DONE"), (2, "PROCESS_DIED")]
    assert outcomes.is_failed(0) and outcomes.failed_items == 2
    assert outcomes.succeeded_items() == 0 and len(outcomes.final) == 1


@settings(max_examples=300, deadline=None, database=None)
@given(text=st.text(alphabet=st.sampled_from('ab ,"\r\n\t\x0bé'), max_size=12))
def test_csv_fields_are_quoted_as_the_csv_module_quotes_them(text: str) -> None:
    buf = io.StringIO()
    csv.writer(buf).writerow([text, 1, None])
    assert buf.getvalue() == f"{triescsv._field(text)},1,{triescsv._field(None)}\r\n"


def test_byte_ranges_join_one_part_file_only_where_its_bytes_follow_on() -> None:
    """The output's byte ranges made from the columns: consecutive mini-batches of one
    attempt whose bytes follow on are one range; another attempt's file, a gap, or a
    mini-batch kept whole starts a new one."""
    outcomes = Outcomes([["f"]] * 6, make_settings())

    def task(attempt: str, *tries: tuple[int, int, int]) -> None:
        records = [
            MiniBatchRecord(mb, 1, "w", total=1, succeeded=1, rows=1, status=Status.RUN_DONE,
                            final=True, start_offset=off, bytes=size)
            for mb, off, size in tries
        ]  # fmt: skip
        result = TaskResult(attempt, "w", records=records)
        result.pack()
        assert result.clean is not None and not result.records
        outcomes.record_clean(attempt, result.clean)

    task("a1", (0, 0, 10), (1, 10, 5))
    task("a2", (2, 15, 5), (3, 20, 0), (4, 30, 5))  # follows a1's offsets, in another file
    short = MiniBatchRecord(5, 1, "w", total=1, rows=1, status=Status.RUN_DONE, final=True)
    outcomes.record("a3", [replace(short, bytes=3)])  # (no result: kept whole)
    assert list(outcomes.done_finals().byte_ranges()) == [
        ("a1", 0, 15), ("a2", 15, 5), ("a2", 30, 5), ("a3", 0, 3)
    ]  # fmt: skip


def test_rows_read_from_the_file_while_one_is_written_are_not_kept() -> None:
    """A window of rows read back from the books' file is kept for the next look-ups, unless
    a row was written while it was read (another thread's): that write is then seen."""
    with mock.patch.object(rowstore, "IN_MEMORY_BYTES", 0):
        outcomes = Outcomes(files(*[1] * 1000), make_settings())
    clean = outcomes.clean
    assert clean.store.on_disk
    outcomes.record("r01a000001", [done(3, total=1)])
    read = clean.store.span

    def read_while_written(lo: int, hi: int) -> Any:
        rows = read(lo, hi)
        clean.store.span = read  # type: ignore[method-assign]  # (once)
        outcomes.record("r01a000002", [done(5, total=1)])  # lands while the window is read
        return rows

    clean.store.span = read_while_written  # type: ignore[method-assign]
    assert outcomes.final[3].attempt == "r01a000001"
    assert outcomes.final[5].attempt == "r01a000002" and outcomes.final[5].total == 1


def test_a_systematic_failure_holds_its_error_text_once() -> None:
    """Every mini-batch failing with the same long traceback (a model that rejects every
    input): the books hold the text once, not once per try, however the tries arrived (each
    task's reply unpickles its own copies)."""
    n, text = 2_000, TRACEBACK + "\n" + "x" * 10_000
    outcomes = Outcomes(files(*[1] * n), make_settings(max_retries=1))
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for first in range(0, n, 100):
        records = []
        for mb in range(first, first + 100):
            for try_no in (1, 2):  # (a fresh copy per try, as from another task's reply)
                copy = "".join([text[:10], text[10:]])
                records.append(raised(mb, try_no, 1, final=try_no == 2, error=copy))
        outcomes.record(f"r01a{first:06d}", pickle.loads(pickle.dumps(records)))
        del records
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert outcomes.failed_mini_batches() == n
    errors = {id(r.error) for r in outcomes.attempts}
    errors |= {id(outcomes.final[mb].error) for mb in range(n)}
    assert len(errors) == 1 and outcomes.final[17].error == text
    assert used / n < 5_000, used / n  # (a copy per try: over 20 KB a mini-batch)
