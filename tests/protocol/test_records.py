"""A task's clean first tries in columns (:class:`daskscore.protocol.CleanTries`): which
records go into them, and that they come back as the same records after the trip."""

from __future__ import annotations

import pickle
from dataclasses import replace

import pytest

from daskscore.protocol import CleanTries, MiniBatchRecord, Status, TaskResult

CLEAN = MiniBatchRecord(
    mini_batch=3, try_no=1, worker="w-1", start=1.75e9, total=10, succeeded=10, rows=12,
    status=Status.RUN_DONE, final=True, run_s=0.25, elapsed_s=0.5, start_offset=100,
    bytes=250, peak_rss_mb=93.4,
)  # fmt: skip


def trip(records: list[MiniBatchRecord], worker: str = "w-1") -> TaskResult:
    result = TaskResult("r01a000001-j", worker, records=list(records))
    result.pack()
    return pickle.loads(pickle.dumps(result))


def test_clean_first_tries_travel_as_columns_and_come_back_whole() -> None:
    records = [
        replace(CLEAN, mini_batch=i, start=None if i == 5 else CLEAN.start + i,
                part=f"p{i % 2}.parquet" if i > 5 else None)
        for i in range(3, 9)
    ]  # fmt: skip
    result = trip(records)
    assert result.records == [] and result.clean is not None and len(result.clean) == 6
    assert result.clean.records() == records
    assert result.all_records() == records
    assert result.clean.part_names == ["p0.parquet", "p1.parquet"]  # each name once


@pytest.mark.parametrize(
    "change",
    [
        {"try_no": 2},  # a retry
        {"final": False},
        {"status": Status.RUN_EXCEPTION},
        {"succeeded": 9, "failed": 1},  # failed items
        {"succeeded": 9},  # fewer results than items
        {"error": "run() returned 9 results for 10 files"},
        {"worker": "w-2"},  # not the task's worker
        {"attempt": "r01a000002-j"},
        {"items": (0, 5)},  # a part of a split mini-batch
        {"bytes": 1 << 64},  # too big for its column
    ],
)
def test_anything_but_a_clean_first_try_stays_a_record(change: dict) -> None:
    odd = replace(CLEAN, mini_batch=4, **change)
    records = [CLEAN, odd, replace(CLEAN, mini_batch=5)]
    result = trip(records)
    assert result.records == [odd]
    assert result.clean is not None and result.clean.records() == [records[0], records[2]]
    assert result.all_records() == records  # by mini-batch, as they ran


def test_a_task_without_clean_tries_sends_no_columns() -> None:
    failed = replace(CLEAN, status=Status.RUN_EXCEPTION, succeeded=0, failed=10, rows=0)
    result = trip([failed])
    assert result.clean is None and result.records == [failed]
    assert CleanTries.split("w-1", [])[0] is None


def test_the_columns_travel_in_fewer_bytes_than_the_records() -> None:
    records = [
        replace(CLEAN, mini_batch=i, start=CLEAN.start + i / 7, run_s=i / 3000, elapsed_s=i / 2000,
                start_offset=250 * i, peak_rss_mb=90 + i / 10)
        for i in range(2000)
    ]  # fmt: skip
    packed = TaskResult("a", "w-1", records=list(records))
    packed.pack()
    assert len(pickle.dumps(packed)) < len(pickle.dumps(TaskResult("a", "w-1", records))) * 0.8
    assert pickle.loads(pickle.dumps(packed)).all_records() == records


def test_error_line_is_the_exception_of_a_traceback_in_one_line() -> None:
    from daskscore.protocol import error_line

    traceback = (
        "Traceback (most recent call last):\n"
        '  File "/code/score.py", line 9, in run\n'
        "    model.load_state_dict(state)\n"
        "    ~~~~~~~~~~~~~~~~~~~~~^^^^^^^\n"
        "RuntimeError: Error(s) in loading state_dict for Net:\n"
        "\tsize mismatch for fc.weight: copying a param with shape [10, 4]\n"
    )
    assert error_line(traceback) == (
        "RuntimeError: Error(s) in loading state_dict for Net: size mismatch for fc.weight: "
        "copying a param with shape [10, 4]"
    )
    chained = traceback + (
        "\nThe above exception was the direct cause of the following exception:\n\n"
        "Traceback (most recent call last):\n"
        '  File "/code/score.py", line 12, in run\n'
        "    raise ValueError('cannot load') from exc\n"
        "ValueError: cannot load\n"
    )
    assert error_line(chained) == "ValueError: cannot load"
    timeout = (
        "Stack of run() when it was stopped (most recent call last; every thread's: ...):\n"
        '  File "/code/score.py", line 3, in run\n'
        "    time.sleep(100)\n"
        "run() exceeded retry_settings.timeout (3 s) in run (score.py, line 3)"
    )
    assert (
        error_line(timeout)
        == "run() exceeded retry_settings.timeout (3 s) in run (score.py, line 3)"
    )
    assert error_line("ColumnError: column 'x' of run()'s DataFrame ...") == (
        "ColumnError: column 'x' of run()'s DataFrame ..."
    )
    assert error_line("", empty="?") == "?"
    assert error_line("x" * 300, limit=10) == "x" * 9 + "…"
