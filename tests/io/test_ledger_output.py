"""Unit tests of daskscore.io.ledger (part files and ledgers) and daskscore.io.outputdir
(claiming the output folder, assembling predictions.csv, processed_mini-batches.csv)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daskscore import OutputError
from daskscore.io.ledger import (
    LedgerWriter,
    ledger_path,
    make_staging,
    part_path,
    read_ledger,
)
from daskscore.io.outputdir import (
    SUMMARY_FILE,
    _coalesce,
    assemble_append_row,
    claim_output,
    remove_stale,
)
from daskscore.io.setaside import assembled_here, set_aside
from daskscore.io.triescsv import ATTEMPT_COLUMNS, write_attempts
from daskscore.protocol import MiniBatchRecord


@pytest.fixture
def staging(tmp_path: Path) -> Path:
    path = tmp_path / "out" / ".daskscore"
    make_staging(path)
    return path


def record(mb: int, start: int, length: int, **extra: object) -> MiniBatchRecord:
    return MiniBatchRecord(
        mini_batch=mb, try_no=1, start_offset=start, bytes=length, final=True, **extra
    )


# --------------------------------------------------------------------------- ledger


def test_make_staging_creates_parts_and_ledger(staging: Path) -> None:
    assert (staging / "parts").is_dir()
    assert (staging / "ledger").is_dir()
    assert part_path(staging, "a1") == staging / "parts" / "a1.part"
    assert ledger_path(staging, "a1") == staging / "ledger" / "a1.log"


def test_committed_records_round_trip(staging: Path) -> None:
    writer = LedgerWriter(staging, "a1")
    try:
        assert writer.offset == 0
        writer.started(0, 1, "worker-0", 1700000000.0)
        writer.finished(0)
        writer.started(1, 1, "worker-0", 1700000001.0)
        writer.finished(1)
        writer.commit(b"r0\nr1a\nr1b\n", [record(0, 0, 3), record(1, 3, 8, status="RUN_DONE")])
        assert writer.offset == 11
        writer.started(2, 2, "worker-0", 1700000002.0)
        writer.finished(2)
        writer.commit(b"", [record(2, 11, 0)])  # a mini-batch that returned no rows
        assert writer.offset == 11
    finally:
        writer.close()
    assert part_path(staging, "a1").read_bytes() == b"r0\nr1a\nr1b\n"
    state = read_ledger(staging, "a1")
    assert state.exists
    assert state.running is None
    assert not state.timed_out
    assert [r.mini_batch for r in state.committed] == [0, 1, 2]
    assert state.committed[1] == record(1, 3, 8, status="RUN_DONE")


def test_a_reopened_writer_appends_after_the_existing_bytes(staging: Path) -> None:
    first = LedgerWriter(staging, "a1")
    first.commit(b"abc\n", [record(0, 0, 4)])
    first.close()
    second = LedgerWriter(staging, "a1")
    assert second.offset == 4
    second.commit(b"de\n", [record(1, 4, 3)])
    second.close()
    assert part_path(staging, "a1").read_bytes() == b"abc\nde\n"
    assert [r.mini_batch for r in read_ledger(staging, "a1").committed] == [0, 1]


def test_the_running_mini_batch_after_a_start_without_finish(staging: Path) -> None:
    writer = LedgerWriter(staging, "a1")
    writer.started(0, 1, "w", 1.0)
    writer.finished(0)
    writer.commit(b"x\n", [record(0, 0, 2)])
    writer.started(5, 3, "w", 2.0)  # the process dies inside this run()
    writer.close()
    state = read_ledger(staging, "a1")
    assert state.running == (5, 3)
    assert not state.timed_out
    assert [r.mini_batch for r in state.committed] == [0]


def test_finished_but_uncommitted_is_not_running(staging: Path) -> None:
    writer = LedgerWriter(staging, "a1")
    writer.started(0, 1, "w", 1.0)
    writer.finished(0)  # run() returned; died before its rows were committed
    writer.close()
    state = read_ledger(staging, "a1")
    assert state.running is None
    assert state.committed == []


def failed_try(mb: int, try_no: int, **extra: Any) -> MiniBatchRecord:
    extra.setdefault("error", "E: boom")
    return MiniBatchRecord(mini_batch=mb, try_no=try_no, worker="w", total=2, failed=2, **extra)


def test_failed_tries_of_uncommitted_mini_batches_are_read_back(staging: Path) -> None:
    """A try that failed is noted at once: the process died in the retry of mini-batch 4,
    whose first try is known only from that note."""
    writer = LedgerWriter(staging, "a1")
    writer.started(4, 1, "w", 1.0)
    writer.finished(4)
    writer.tried(failed_try(4, 1, peak_rss_mb=12.5))
    writer.started(4, 2, "w", 2.0)  # the process dies inside this run()
    writer.close()
    state = read_ledger(staging, "a1")
    assert state.tried == [failed_try(4, 1, peak_rss_mb=12.5)]
    assert state.running == (4, 2)
    assert state.committed == []


def test_failed_tries_of_committed_mini_batches_come_from_the_commit(staging: Path) -> None:
    writer = LedgerWriter(staging, "a1")
    writer.tried(failed_try(0, 1))
    done = record(0, 0, 2, status="RUN_DONE")
    done.try_no = 2
    writer.commit(b"x\n", [failed_try(0, 1), done])
    writer.tried(failed_try(1, 1, items=(0, 1)))  # a part's try: its items come back too
    writer.tried(failed_try(2, 3, final=True))
    writer.started(3, 1, "w", 2.0)
    writer.close()
    with open(ledger_path(staging, "a1"), "ab") as fh:
        fh.write(b'E {"mini_batch":3,"try":1,"err')  # died mid-write
    state = read_ledger(staging, "a1")
    assert [(r.mini_batch, r.try_no) for r in state.committed] == [(0, 1), (0, 2)]
    assert state.tried == [failed_try(1, 1, items=(0, 1)), failed_try(2, 3, final=True)]
    assert state.running == (3, 1)


def test_a_commit_leaves_a_noted_tries_error_text_in_its_e_line(staging: Path) -> None:
    """A failed try's error text is written once (its E line), not again in its commit: a
    systematic failure's ledgers are half the size.  Reading the ledger puts it back."""
    text = "Traceback (most recent call last):\nValueError: " + "x" * 5000
    writer = LedgerWriter(staging, "a1")
    writer.tried(failed_try(0, 1, error=text))
    final = failed_try(0, 2, error=text, final=True)
    writer.tried(final)
    changed = failed_try(1, 1, error="noted")
    writer.tried(changed)
    changed.error = "noted, then more said at its commit"
    writer.commit(b"", [failed_try(0, 1, error=text), final, changed])
    writer.close()
    raw = ledger_path(staging, "a1").read_text()
    assert raw.count("x" * 5000) == 2  # (the two E lines only)
    state = read_ledger(staging, "a1")
    assert [(r.mini_batch, r.try_no, r.error) for r in state.committed] == [
        (0, 1, text), (0, 2, text), (1, 1, "noted, then more said at its commit"),
    ]  # fmt: skip
    assert state.committed[1] == final and state.tried == []


def test_timed_out_after_t(staging: Path) -> None:
    writer = LedgerWriter(staging, "a1")
    writer.started(2, 1, "w", 1.0)
    writer.timed_out(2)
    writer.close()
    state = read_ledger(staging, "a1")
    assert state.running == (2, 1)
    assert state.timed_out


def test_a_timeout_of_an_earlier_mini_batch_does_not_mark_the_running_one(staging: Path) -> None:
    writer = LedgerWriter(staging, "a1")
    writer.started(2, 1, "w", 1.0)
    writer.timed_out(2)
    writer.started(3, 1, "w", 2.0)
    writer.close()
    state = read_ledger(staging, "a1")
    assert state.running == (3, 1)
    assert not state.timed_out


def test_a_torn_last_line_is_ignored(staging: Path) -> None:
    writer = LedgerWriter(staging, "a1")
    writer.started(0, 1, "w", 1.0)
    writer.finished(0)
    writer.commit(b"x\n", [record(0, 0, 2)])
    writer.started(1, 1, "w", 2.0)
    writer.finished(1)
    writer.close()
    with open(ledger_path(staging, "a1"), "ab") as fh:
        fh.write(b'C [{"mini_batch":1,"try":1,"start_of')  # died mid-write
    state = read_ledger(staging, "a1")
    assert [r.mini_batch for r in state.committed] == [0]
    assert state.running is None


def test_a_torn_start_line_is_ignored(staging: Path) -> None:
    writer = LedgerWriter(staging, "a1")
    writer.started(0, 1, "w", 1.0)
    writer.finished(0)
    writer.close()
    with open(ledger_path(staging, "a1"), "ab") as fh:
        fh.write(b"S 1")
    assert read_ledger(staging, "a1").running is None


def test_a_missing_ledger(staging: Path) -> None:
    state = read_ledger(staging, "never-started")
    assert not state.exists
    assert state.committed == []
    assert state.running is None
    assert not state.timed_out


# --------------------------------------------------------------------------- assemble_append_row


def write_part(staging: Path, attempt: str, data: bytes) -> None:
    part_path(staging, attempt).write_bytes(data)


def test_assemble_concatenates_ranges_in_the_given_order(staging: Path, tmp_path: Path) -> None:
    write_part(staging, "a", b"A0\nA1\nA2\n")
    write_part(staging, "b", b"B0\nB1\n")
    dest = tmp_path / "out" / "predictions.csv"
    pieces = [("b", 3, 3), ("a", 0, 3), ("a", 3, 3), ("b", 0, 3), ("a", 6, 3), ("a", 0, 0)]
    written = assemble_append_row(staging, pieces, dest)
    assert dest.read_bytes() == b"B1\nA0\nA1\nB0\nA2\n"
    assert written == 15
    assert not list(dest.parent.glob("*.partial"))


def test_assemble_replaces_an_existing_file(staging: Path, tmp_path: Path) -> None:
    write_part(staging, "a", b"new\n")
    dest = tmp_path / "out" / "predictions.csv"
    dest.write_bytes(b"old rows\n" * 10)
    assemble_append_row(staging, iter([("a", 0, 4)]), dest)
    assert dest.read_bytes() == b"new\n"


def test_assemble_nothing_gives_an_empty_file(staging: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "predictions.csv"
    assert assemble_append_row(staging, [], dest) == 0
    assert dest.read_bytes() == b""


def test_a_resumed_job_removes_its_own_assembled_file_and_keeps_the_script_s(
    staging: Path, tmp_path: Path
) -> None:
    """An interrupted job's predictions are assembled again; a file of their name the script
    wrote (the interrupted run never assembled) is not the job's to remove: it is set aside."""
    out = tmp_path / "out"
    write_part(staging, "a", b"row\n")
    assemble_append_row(staging, [("a", 0, 4)], out / "predictions.csv")
    assert assembled_here(staging, out / "predictions.csv")
    assert set_aside(out / "predictions.csv", staging, "append_row file") is None
    remove_stale(out, "predictions.csv")
    assert not (out / "predictions.csv").exists()
    (out / "predictions.csv").write_text("side f0\n")  # the script's, since
    remove_stale(out, "predictions.csv")
    assert (out / "predictions.csv").read_text() == "side f0\n"
    warning = set_aside(out / "predictions.csv", staging, "append_row file")
    assert warning and "'predictions.from-script.csv'" in warning
    assert (out / "predictions.from-script.csv").read_text() == "side f0\n"
    (out / "predictions.csv").write_text("side f1\n")  # a name taken: the next one free
    assert "'predictions.from-script-2.csv'" in set_aside(out / "predictions.csv", staging, "x")
    assert not (out / "predictions.csv").exists()


def test_the_job_s_file_the_script_appended_to_is_set_aside_whole(
    staging: Path, tmp_path: Path
) -> None:
    """--retry-failed: the previous pass's predictions, written to by the script since."""
    out = tmp_path / "out"
    write_part(staging, "a", b"row\n")
    assemble_append_row(staging, [("a", 0, 4)], out / "predictions.csv")
    with open(out / "predictions.csv", "a") as fh:
        fh.write("side f0\n")
    assert set_aside(out / "predictions.csv", staging, "append_row file")
    assert (out / "predictions.from-script.csv").read_text() == "row\nside f0\n"


def test_the_job_s_own_output_in_a_copied_folder_is_still_its_own(
    staging: Path, tmp_path: Path
) -> None:
    """An output folder copied elsewhere (``cp -a``: same contents and times, new inodes), then
    ``--retry-failed`` there: the job's predictions file, or its dataset folder, was taken for
    the script's by its inode and set aside as ``predictions.from-script.csv``."""
    import shutil

    from daskscore.io.inplace import mark_assembled

    out = tmp_path / "out"
    write_part(staging, "a", b"row\n")
    assemble_append_row(staging, [("a", 0, 4)], out / "predictions.csv")
    dataset = out / "scores"
    (dataset / "year=2024").mkdir(parents=True)
    (dataset / "year=2024" / "part-00000.csv").write_text("a,b\n1,2\n")
    for n, (name, what) in enumerate(
        [("predictions.csv", "append_row file"), ("scores", "csv dataset folder")]
    ):
        if name == "scores":  # (a job notes its one output: the folder, this time)
            mark_assembled(staging, dataset, name)
        copy = tmp_path / f"copy{n}"
        shutil.copytree(out, copy, copy_function=shutil.copy2)  # (times kept, not inodes)
        kept = copy / ".daskscore"
        assert (copy / name).stat().st_ino != (out / name).stat().st_ino
        assert assembled_here(kept, copy / name), name
        assert set_aside(copy / name, kept, what) is None
        # what the script changed since is the script's
        if name == "scores":
            (copy / name / "mine.txt").write_text("side\n")
        else:
            with open(copy / name, "a") as fh:
                fh.write("side f0\n")
        assert not assembled_here(kept, copy / name), name


def test_assemble_a_short_part_file_fails_without_a_partial_output(
    staging: Path, tmp_path: Path
) -> None:
    write_part(staging, "a", b"A0\n")
    dest = tmp_path / "out" / "predictions.csv"
    with pytest.raises(OSError, match="shorter"):
        assemble_append_row(staging, [("a", 0, 3), ("a", 3, 10)], dest)
    assert not dest.exists()
    assert not list(dest.parent.glob("*.partial"))


def test_coalesce_merges_contiguous_ranges_of_one_part() -> None:
    pieces = [
        ("a", 0, 3),
        ("a", 3, 4),
        ("a", 7, 0),
        ("a", 7, 2),
        ("b", 9, 1),
        ("a", 9, 1),
        ("a", 20, 5),
    ]
    assert list(_coalesce(pieces)) == [("a", 0, 9), ("b", 9, 1), ("a", 9, 1), ("a", 20, 5)]


# --------------------------------------------------------------------------- claim_output


def test_claim_a_new_output_folder(tmp_path: Path) -> None:
    out = tmp_path / "new" / "out"
    claim_output(out, "predictions.csv", overwrite=False)
    for sub in ("logs/user/error", "logs/user/stdout", "logs/sys/job_report"):
        assert (out / sub).is_dir()


def test_claim_keeps_unrelated_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    claim_output(out, "predictions.csv", overwrite=False)
    assert (out / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("held", ["predictions.csv", SUMMARY_FILE, "failed_items.csv"])
def test_claim_refuses_a_folder_holding_a_job(tmp_path: Path, held: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / held).write_text("old")
    with pytest.raises(OutputError, match="--overwrite") as info:
        claim_output(out, "predictions.csv", overwrite=False)
    assert held in str(info.value)
    assert (out / held).read_text() == "old"  # nothing touched


def test_claim_refuses_a_custom_output_file_name(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "scores.txt").write_text("old")
    with pytest.raises(OutputError, match="scores.txt"):
        claim_output(out, "scores.txt", overwrite=False)


def test_claim_with_overwrite_removes_the_old_job(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / ".daskscore" / "parts").mkdir(parents=True)
    (out / ".daskscore" / "parts" / "a.part").write_bytes(b"x")
    (out / "logs" / "user" / "error").mkdir(parents=True)
    (out / "logs" / "user" / "error" / "w0.txt").write_text("old traceback")
    (out / "predictions.csv").write_text("old")
    (out / SUMMARY_FILE).write_text("{}")
    (out / "mine.parquet").write_bytes(b"custom output")
    claim_output(out, "predictions.csv", overwrite=True)
    assert not (out / "predictions.csv").exists()
    assert not (out / SUMMARY_FILE).exists()
    assert not (out / ".daskscore").exists()
    assert not (out / "logs" / "user" / "error" / "w0.txt").exists()
    assert (out / "logs" / "user" / "error").is_dir()
    assert (out / "mine.parquet").exists()


def test_claim_with_overwrite_removes_only_daskscore_s_logs(tmp_path: Path) -> None:
    """``logs/`` was removed whole, a file of the user's there with it: only daskscore's
    files go (and the folders they leave empty, made again)."""
    out = tmp_path / "out"
    own = [
        "job_result.txt",
        "job_error.txt",
        "job_progress_overview.txt",
        "sys/daskscore.txt",
        "sys/job_recipe.json",
        "sys/job_report/processed_mini-batches.csv",
        "user/error/w0.txt",
        "user/stdout/w0.txt",
    ]
    mine = ["app.log", "sys/notes.txt", "archive/old.txt"]
    for rel in own + mine:
        (out / "logs" / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / "logs" / rel).write_text(f"was {rel}")
    (out / SUMMARY_FILE).write_text("{}")
    claim_output(out, "predictions.csv", overwrite=True)
    assert [rel for rel in own if (out / "logs" / rel).exists()] == []
    assert {rel: (out / "logs" / rel).read_text() for rel in mine} == {
        rel: f"was {rel}" for rel in mine
    }
    assert (out / "logs" / "user" / "error").is_dir()


@pytest.mark.parametrize("new_name", ["scores.csv", None], ids=["renamed", "summary_only"])
@pytest.mark.parametrize("dataset", [False, True], ids=["file", "dataset"])
def test_claim_with_overwrite_removes_the_old_job_s_outputs_by_any_name(
    tmp_path: Path, new_name: str | None, dataset: bool
) -> None:
    """The earlier job's predictions (named in its summary) and report go too, whatever the new
    job writes: else they stay beside the new job's summary, stale."""
    out = tmp_path / "out"
    out.mkdir()
    old = out / ("predictions" if dataset else "predictions.csv")
    if dataset:
        (old / "part-00000.parquet").parent.mkdir()
        (old / "part-00000.parquet").write_bytes(b"old rows")
    else:
        old.write_text("old rows")
    (out / "report.html").write_text("old report")
    (out / SUMMARY_FILE).write_text(json.dumps({"status": "Completed", "predictions": str(old)}))
    elsewhere = tmp_path / "elsewhere.csv"  # (a summary naming a file outside: never touched)
    elsewhere.write_text("not the job's")
    (out / "notes.txt").write_text("mine")

    claim_output(out, new_name, overwrite=True)

    assert not old.exists() and not (out / "report.html").exists()
    assert (out / "notes.txt").read_text() == "mine"
    (out / SUMMARY_FILE).write_text(json.dumps({"predictions": str(elsewhere)}))
    claim_output(out, new_name, overwrite=True)
    assert elsewhere.read_text() == "not the job's"


def test_claim_refuses_a_regular_file(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    out.write_text("data")
    for overwrite in (False, True):
        with pytest.raises(OutputError, match="is a file"):
            claim_output(out, "predictions.csv", overwrite=overwrite)
    assert out.read_text() == "data"


def test_claim_in_summary_only_mode_ignores_a_predictions_file(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "predictions.csv").write_text("from another tool")
    claim_output(out, None, overwrite=False)
    assert (out / "predictions.csv").read_text() == "from another tool"


# --------------------------------------------------------------------------- write_attempts


def test_write_attempts(tmp_path: Path) -> None:
    path = tmp_path / "processed_mini-batches.csv"
    write_attempts(
        path,
        [
            {
                "mini_batch": 0,
                "try": 1,
                "worker": "w0",
                "total": 10,
                "succeeded": 10,
                "failed": 0,
                "elapsed_s": 1.23456,
                "run_s": 1.2,
                "status": "RUN_DONE",
            },
            {
                "mini_batch": 1,
                "try": 2,
                "start": 1_700_000_000.5,
                "total": 10,
                "succeeded": 0,
                "failed": 10,
                "status": "RUN_EXCEPTION",
                "error": "Traceback (most recent call last):\n  ...\nValueError: bad, file\n\n",
            },
        ],
    )
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ATTEMPT_COLUMNS
    assert len(rows) == 3
    first = dict(zip(ATTEMPT_COLUMNS, rows[1], strict=True))
    assert first["elapsed_s"] == "1.2346"
    assert first["start"] == ""  # unknown
    assert first["worker"] == "w0"
    assert first["status"] == "RUN_DONE"
    second = dict(zip(ATTEMPT_COLUMNS, rows[2], strict=True))
    assert second["try"] == "2"
    assert second["worker"] == ""
    assert second["start"] == "2023-11-14T22:13:20.500+00:00"
    assert second["error"] == "ValueError: bad, file"  # the last line of the traceback


@settings(max_examples=500, deadline=None, database=None)
@given(ts=st.floats(min_value=1.0, max_value=4e9, allow_nan=False))
def test_report_times_are_datetimes_isoformat(ts: float) -> None:
    """processed_mini-batches.csv's start times: what ``datetime.isoformat`` writes, to the
    millisecond (the report's own formatter caches each second's text)."""
    import datetime as dt

    from daskscore.io.triescsv import _iso

    expected = dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc).isoformat(timespec="milliseconds")
    assert _iso(ts) == expected


# the clean tries' rows, made a column at a time (triescsv.clean_lines): the same bytes as the
# rows formatted one by one; values at and near the ties of their rounding, signs and ends
_EDGES = [0.0, -0.0, 0.00005, 0.00015, 2.5e-5, 0.99995, 9.99995, 1.00005, 0.05, 0.25, 0.35,
          -1e-5, -3.25, 1e-300, 123456.78905, 99999.99995, 1e6, 1e12, math.inf, -math.inf,
          math.nan]  # fmt: skip


def _rows_both_ways(
    tmp_path: Path, columns: dict[str, list[Any]], names: list[Any]
) -> tuple[bytes, bytes]:
    import numpy as np

    from daskscore.io.triescsv import clean_lines, write_attempt_rows

    n = len(columns["ids"])
    arrays = {k: np.asarray(v) for k, v in columns.items()}
    lines = clean_lines(
        arrays["ids"], arrays["workers"], names, arrays["starts"], arrays["totals"],
        arrays["elapsed"], arrays["runs"], arrays["peaks"],
    )  # fmt: skip
    assert lines.count == n
    write_attempt_rows(tmp_path / "columns.csv", [lines])
    rows = [
        (mb, 1, names[w], None if s != s else s, t, t, 0, e, r, "RUN_DONE", "", "", p)
        for mb, w, s, t, e, r, p in zip(
            columns["ids"], columns["workers"], columns["starts"], columns["totals"],
            columns["elapsed"], columns["runs"], columns["peaks"], strict=True,
        )
    ]  # fmt: skip
    write_attempt_rows(tmp_path / "rows.csv", rows)
    return (tmp_path / "columns.csv").read_bytes(), (tmp_path / "rows.csv").read_bytes()


def test_clean_rows_made_in_columns_are_the_rows_made_one_by_one(tmp_path: Path) -> None:
    # the numbers' edges, in rows of one start; then the starts' edges, in rows of plain numbers
    starts = [math.nan, 0.0, 1_700_000_000.5, 1_700_000_000.9999996, 1_700_000_000.0004995,
              1_700_000_000.9995, 86_399.9999999, 1.0, 4e9, -1.5, -30_610_224_000.0,
              -30_610_224_000.5, 253_402_300_798.9]  # fmt: skip
    numbers, n = len(_EDGES), len(_EDGES) + len(starts)
    plain = [0.123] * len(starts)
    columns = {
        "ids": [7 * i for i in range(n)],
        "workers": [i % 4 for i in range(n)],
        "starts": [1_700_000_000.25] * numbers + starts,
        "totals": [i * 10**8 for i in range(n)],
        "elapsed": _EDGES + plain,
        "runs": _EDGES[::-1] + plain,
        "peaks": _EDGES[3:] + _EDGES[:3] + plain,
    }
    names = ["tcp://127.0.0.1:4001", 'a "quoted", name', "ünïcode", None]
    made, expected = _rows_both_ways(tmp_path, columns, names)
    assert made == expected
    lines = made.decode("utf-8").split("\r\n")
    assert lines[1].startswith("0,1,tcp://127.0.0.1:4001,2023-11-14T22:13:20.250+00:00,0,0,0,")
    assert ',1,"a ""quoted"", name",' in lines[2]
    assert ",999-12-31T23:59:59.500+00:00," in lines[1 + numbers + 11]  # as C's strftime


@settings(max_examples=200, deadline=None, database=None)
@given(
    rows=st.lists(
        st.tuples(
            st.integers(0, 2**31 - 1),
            st.integers(0, 2),
            st.one_of(st.just(math.nan), st.floats(1.0, 4e9)),
            st.integers(0, 2**40),
            st.one_of(
                st.sampled_from(_EDGES), st.floats(0, 1e6), st.decimals(0, 10, places=5).map(float)
            ),
            st.one_of(st.floats(0, 3600), st.decimals(0, 100, places=5).map(float)),
            st.one_of(st.just(0.0), st.floats(0, 1e5), st.decimals(0, 1000, places=2).map(float)),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_clean_rows_in_columns_match_python_formatting(
    tmp_path_factory: pytest.TempPathFactory, rows: list[tuple[Any, ...]]
) -> None:
    keys = ["ids", "workers", "starts", "totals", "elapsed", "runs", "peaks"]
    columns = {k: list(v) for k, v in zip(keys, zip(*rows, strict=True), strict=True)}
    made, expected = _rows_both_ways(tmp_path_factory.mktemp("rows"), columns, ["w0", "w,1", None])
    assert made == expected


def test_clean_rows_are_made_without_importing_pandas() -> None:
    """The driver of a CSV job never needs pandas (0.6 s to import): formatting its tries'
    rows must not pull it in through pyarrow."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from daskscore.io.triescsv import clean_lines\n"
        "n = 5\n"
        "lines = clean_lines(np.arange(n), np.zeros(n, int), ['w'], np.full(n, 1.7e9),"
        " np.ones(n, int), np.full(n, 0.00005), np.full(n, -0.0), np.zeros(n))\n"
        "assert lines.count == n, lines\n"
        "print('pandas' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_tries_with_long_errors_are_written_without_holding_thousands(tmp_path: Path) -> None:
    """Rows were written 4096 at a time whatever their length: a job whose tries each failed
    with a 16,000-character error held 4096 of them, twice (the rows, then joined), about
    130 MB, in the driver as it wrote ``processed_mini-batches.csv``."""
    import tracemalloc

    from daskscore.io.triescsv import write_attempt_rows

    error = "KeyError: " + "c" * 16_000
    rows = [(mb, 1, "w", 1.7e9, 10, 0, 10, 0.1, 0.1, "RUN_EXCEPTION", error) for mb in range(3000)]
    tracemalloc.start()
    try:
        assert write_attempt_rows(tmp_path / "tries.csv", iter(rows)) == 3000
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, peak  # (the 3,000 errors: 48 MB)
    with open(tmp_path / "tries.csv", newline="", encoding="utf-8") as fh:
        written = list(csv.DictReader(fh))
    assert len(written) == 3000 and all(r["error"] == error for r in written)
