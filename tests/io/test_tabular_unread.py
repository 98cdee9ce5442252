"""Tabular jobs over CSV files whose rows are not counted up front, and CSV parse errors.

A CSV file that cannot be cut (a line with an odd number of ``"``: a quoted line break, or a
quote never closed) is one mini-batch whose rows are not counted until it is read; its
non-blank lines stand for them.  When reading it fails, the job must count it as failed items
(its lines, at least 1) wherever failures count: the verdict, the summary's failures,
``failed_items.csv``, the replay hint and ``error_threshold``; a later try that reads it counts
its real rows.  A parse error names the file and the line in the file (not in the
mini-batch's slice of it), and so does a byte that is not UTF-8.

The jobs run on the module's LocalCluster (the ``client`` fixture), one through the
``daskscore`` command; ``run()`` returns each row's ``id``, so the predictions show every row
once, in order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from helpers import cli, make_job, processed_of, show, summary_of

import daskscore
from daskscore.errors import InputError
from daskscore.io.payloads import make_payload
from daskscore.io.splittable import SplitTable
from daskscore.io.tabular import plan_splits, read_split

SCRIPT = """
import os

import pandas as pd

def init():
    pass

def run(frame):
    if os.environ.get("DIE_ON") and (frame["id"] == os.environ["DIE_ON"]).any():
        os._exit(3)
    if os.environ.get("RAISE_ON") and (frame["id"] == os.environ["RAISE_ON"]).any():
        raise ValueError("poison row")
    return pd.DataFrame({"id": frame["id"]})
"""

GOOD = [f"g{i}" for i in range(10)]  # good.csv: cut into mini-batches of 4 rows
#: bad.csv: 25 rows on 25 lines; line 16 (row q14) opens a quote that is never closed
BAD_LINES = ["id,x", *[f"q{i},{i}" for i in range(25)]]
BAD_LINES[15] = 'q14,"unterminated'
UNCLOSED = "EOF inside string starting at line 16"
#: the same file mended: row q14's field holds a quoted line break (26 lines, 25 rows)
MENDED_LINES = [*BAD_LINES[:15], 'q14,"two\nlines"', *BAD_LINES[16:]]


def write_table(folder: Path, bad: list[str] = BAD_LINES) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "bad.csv").write_text("\n".join(bad) + "\n")
    pd.DataFrame({"id": GOOD, "x": range(10)}).to_csv(folder / "good.csv", index=False)
    return folder


def job(tmp_path: Path, **settings: Any) -> tuple[Path, Path, Path]:
    dep, _, out = make_job(
        tmp_path, SCRIPT, n_files=0, settings={"mini_batch_size": "4 rows", **settings}
    )
    return dep, write_table(tmp_path / "table"), out


def predicted(out: Path) -> list[str]:
    return (out / "predictions.csv").read_text().split()


# --------------------------------------------------------------------------- planning, reading


def test_an_uncut_file_keeps_its_lines_for_its_unknown_rows(tmp_path: Path) -> None:
    folder = write_table(tmp_path / "t")
    splits = plan_splits([str(folder / "bad.csv"), str(folder / "good.csv")], ("rows", 4))
    assert [(s.n_rows, s.lines) for s in splits] == [(None, 25), (4, None), (4, None), (2, None)]
    table = SplitTable(iter(splits))
    assert list(table) == splits, "the lines survive the compact table"
    assert [table.planned(i) for i in range(len(table))] == [25, 4, 4, 2]
    assert table.planned_total() == 35 and table.uncounted() == (1, 25)
    (_, _, back), *_ = make_payload([0, 1], lambda mb: 0, table).items
    assert back == splits[0], "and the payload a task carries"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        # a file cut into mini-batches: the line in the file, not in the slice
        ("id,x\n" + "".join(f"r{i},{i}\n" for i in range(20)).replace("r12,12", "r12,12,X"), 14),
        # blank lines and CRLF line ends are lines too
        (
            "\r\nid,x\r\n\r\n"
            + "".join(f"r{i},{i}\r\n" for i in range(20)).replace("r7,7", "r7,,"),
            11,
        ),
        # a quoted line break before the ragged row is two lines in the file
        ('id,x\nq0,"a\nb"\nq1,1\nq2,2,X\nq3,3\n', 5),
    ],
    ids=["cut", "blank-crlf", "quoted-break"],
)
def test_a_parse_error_names_the_file_and_its_line(tmp_path: Path, text: str, where: int) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(text.encode())
    bad = [s for s in plan_splits([str(path)], ("rows", 5)) if not _reads(s)]
    assert len(bad) == 1
    with pytest.raises(InputError) as info:
        read_split(bad[0])
    assert str(info.value) == (
        f"input file '{path}' cannot be read as CSV: Expected 2 fields in line {where}, saw 3"
    )


@pytest.mark.parametrize(
    ("text", "where"),
    [
        # the first row of the second mini-batch (rows 5..9): line 7 of the file
        ("id,x\n" + "".join(f"r{i},{i}\n" for i in range(20)).replace("r5,5", "r5,5,X"), 7),
        # blank lines and CRLF line ends are lines too: the third mini-batch's first row
        (
            "\r\nid,x\r\n\r\n"
            + "".join(f"r{i},{i}\r\n" for i in range(20)).replace("r10,10", "r10,10,X"),
            14,
        ),
    ],
    ids=["cut", "blank-crlf"],
)
def test_a_first_row_with_more_fields_than_the_header_names_its_line(
    tmp_path: Path, text: str, where: int
) -> None:
    """pandas takes the extra field of a split's first row for an index column, without an
    error of its own: the refusal named the file but no line, where every other parse error
    names the file's line."""
    path = tmp_path / "data.csv"
    path.write_bytes(text.encode())
    bad = [s for s in plan_splits([str(path)], ("rows", 5)) if not _reads(s)]
    assert len(bad) == 1
    with pytest.raises(InputError) as info:
        read_split(bad[0])
    assert str(info.value).startswith(
        f"input file '{path}' cannot be read as CSV: line {where} has more fields than its "
        "header has names (2)"
    ), info.value


def test_an_unclosed_quote_names_the_line_it_opens_on(tmp_path: Path) -> None:
    folder = write_table(tmp_path / "t")
    (split,) = plan_splits([str(folder / "bad.csv")], ("rows", 4))
    with pytest.raises(InputError, match=r"bad\.csv' cannot be read as CSV: EOF inside string "
                       r"starting at line 16$"):  # fmt: skip
        read_split(split)


@pytest.mark.parametrize(
    ("head", "line"), [(b"id,x\n", 8), (b"\xef\xbb\xbfid,x\r\n\r\n", 9), (b"id,caf\xe9\n", 1)]
)
def test_a_byte_that_is_not_utf8_is_named_by_its_line_and_offset_in_the_file(
    tmp_path: Path, head: bytes, line: int
) -> None:
    """pandas' error named the byte's position in a buffer of its own (``'utf-8' codec can't
    decode byte 0xe9 in position 3``), in no line of the file."""
    path = tmp_path / "latin.csv"
    end = b"\r\n" if b"\r" in head else b"\n"
    rows = [b"r%d,%d" % (i, i) + end for i in range(12)]
    rows[6] = rows[6].replace(b"r6,6", b"r6,caf\xe9")  # (line 8 after "id,x", 9 after a blank)
    path.write_bytes(head + b"".join(rows))
    offset = (head + b"".join(rows)).index(b"\xe9")
    bad = [s for s in plan_splits([str(path)], ("rows", 4)) if not _reads(s)]
    assert len(bad) == (3 if line == 1 else 1)
    with pytest.raises(InputError) as info:
        read_split(bad[-1])
    assert str(info.value).startswith(
        f"input file '{path}' cannot be read as CSV: it is not UTF-8 (tabular mode reads CSV "
        f"files as UTF-8, with or without a byte-order mark): line {line} (byte offset {offset} "
        "of the file) holds 0xe9 ("
    )
    assert "iconv -f latin1 -t utf-8 latin.csv" in str(info.value)


def test_a_job_names_the_line_of_a_byte_that_is_not_utf8(tmp_path: Path, client: Any) -> None:
    dep, _, out = make_job(tmp_path, SCRIPT, n_files=0, settings={"mini_batch_size": "4 rows"})
    table = tmp_path / "table"
    table.mkdir()
    lines = ["id,x", *[f"c{i},{i}" for i in range(12)]]
    lines[6] = "c5,caf\xe9"  # row 5, in the mini-batch of rows 4-7; line 7 of the file
    data = ("\n".join(lines) + "\n").encode("latin-1")
    (table / "latin.csv").write_bytes(data)
    result = daskscore.run(dep, table, out, client=client, max_retries=0)
    assert (result.total_items, result.failed_items, result.succeeded_items) == (12, 4, 8)
    (failure,) = result.failures
    assert "cannot be read as CSV: it is not UTF-8" in failure["error"]
    offset = data.index(b"\xe9")
    assert f"line 7 (byte offset {offset} of the file) holds 0xe9" in failure["error"]
    assert predicted(out) == ["c0", "c1", "c2", "c3", "c8", "c9", "c10", "c11"]


def test_a_job_over_a_utf16_csv_is_refused_before_it_runs(tmp_path: Path, client: Any) -> None:
    """It ran, counting a phantom row (``301 rows`` for 300), and failed every mini-batch."""
    dep, _, out = make_job(tmp_path, SCRIPT, n_files=0, settings={"mini_batch_size": "1KB"})
    table = write_table(tmp_path / "table")
    text = "id,x\n" + "".join(f"u{i},{i}\n" for i in range(300))
    (table / "wide.csv").write_bytes(text.encode("utf-16"))
    with pytest.raises(InputError, match=r"wide\.csv' is UTF-16 \(its byte-order mark"):
        daskscore.run(dep, table, out, client=client)
    assert not (out / "predictions.csv").exists()


def _reads(split: Any) -> bool:
    try:
        read_split(split)
    except InputError:
        return False
    return True


# --------------------------------------------------------------------------- jobs


def test_an_unreadable_uncut_file_counts_its_lines_as_failed(tmp_path: Path, client: Any) -> None:
    dep, table, out = job(tmp_path)
    result = daskscore.run(dep, table, out, client=client, max_retries=1)

    bad = table / "bad.csv"
    assert result.status == "Completed", "error_threshold -1 allows failed items"
    assert (result.total_items, result.succeeded_items, result.failed_items) == (35, 10, 25)
    assert result.failed_mini_batches == 1 and result.rows_written == 10
    (failure,) = result.failures
    assert failure["mini_batch_id"] == 0 and failure["rows_unknown"] is True
    assert (failure["failed"], failure["tries"], failure["files"]) == (25, 2, [f"{bad} (all rows)"])
    error = f"InputError: input file '{bad}' cannot be read as CSV: {UNCLOSED}"
    assert failure["error"] == error, "the input's error alone, not pandas' traceback"
    failed = result.failed_items_frame()
    assert failed.to_dict("records") == [
        {"mini_batch": 0, "file": f"{bad} (rows unknown: 25 lines)", "status": "RUN_EXCEPTION",
         "tries": 2, "error": error}
    ]  # fmt: skip
    assert result.summary["replay"].endswith("--mini-batch 0")
    message = (out / "logs" / "job_error.txt").read_text()
    assert (
        "mini-batch 0 (RUN_EXCEPTION, 2 tries, 25 failed, rows unknown: lines counted)" in message
    )
    assert "line 16" in message and "Traceback" not in message
    tries = processed_of(out)
    assert (
        tries.loc[tries["mini_batch_id"] == 0, ["total", "failed"]].values.tolist()
        == [[25, 25]] * 2
    )
    assert predicted(out) == GOOD, "the good file's rows once, in order"


def test_a_ragged_row_in_a_cut_file_is_named_by_its_line_in_the_file(
    tmp_path: Path, client: Any
) -> None:
    dep, _, out = make_job(tmp_path, SCRIPT, n_files=0, settings={"mini_batch_size": "4 rows"})
    table = tmp_path / "table"
    table.mkdir()
    lines = ["id,x", *[f"c{i},{i}" for i in range(12)]]
    lines[6] = "c5,5,extra"  # row 5, in the mini-batch of rows 4-7; line 7 of the file
    (table / "cut.csv").write_text("\n".join(lines) + "\n")
    result = daskscore.run(dep, table, out, client=client, max_retries=0)
    assert (result.total_items, result.failed_items, result.succeeded_items) == (12, 4, 8)
    (failure,) = result.failures
    cut = table / "cut.csv"
    assert failure["error"] == (
        f"InputError: input file '{cut}' cannot be read as CSV: Expected 2 fields in line 7, saw 3"
    )
    assert failure["rows_unknown"] is False
    assert result.failed_items_frame()["file"].tolist() == [f"{cut} (rows 4-7)"]
    assert predicted(out) == ["c0", "c1", "c2", "c3", "c8", "c9", "c10", "c11"]


def test_error_threshold_counts_an_unreadable_uncut_file(tmp_path: Path, client: Any) -> None:
    dep, table, out = job(tmp_path, error_threshold=0)
    with pytest.raises(daskscore.ErrorThresholdExceeded) as info:
        daskscore.run(dep, table, out, client=client, max_retries=0)
    s = info.value.result.summary
    assert s["status"] == "Failed" and s["failed_items"] == 25
    assert "25 items failed, more than the 0 allowed" in s["reason"]
    assert "bad.csv' cannot be read as CSV" in info.value.user_traceback


def test_a_retry_that_reads_the_mended_file_counts_its_real_rows(
    tmp_path: Path, client: Any
) -> None:
    dep, table, out = job(tmp_path)
    first = daskscore.run(dep, table, out, client=client, max_retries=0)
    assert (first.failed_items, first.failed_mini_batches) == (25, 1)

    (table / "bad.csv").write_text("\n".join(MENDED_LINES) + "\n")  # 26 lines, 25 rows
    result = daskscore.run(dep, table, out, client=client, retry_failed=True, max_retries=0)
    assert result.status == "Completed" and result.retried_in_this_pass == [0]
    assert (result.total_items, result.succeeded_items, result.failed_items) == (35, 35, 0)
    assert result.failures == [] and result.failed_items_path is None
    assert predicted(out) == [*[f"q{i}" for i in range(25)], *GOOD], "each row once, in order"


def test_a_retry_refuses_rows_appended_to_a_file_not_cut_whose_mini_batch_it_keeps(
    tmp_path: Path, client: Any
) -> None:
    """A retry keeps the mini-batches that succeeded: one of a file not cut held the rows it
    read then, and rows appended since were missing from the retried output (its id still
    means the whole file, so its splits compared the same).  Refused, naming it; put back as it
    was, the retry runs.  (A file not cut whose mini-batch is run again may change: the test
    above.)"""
    dep, _, out = make_job(
        tmp_path, SCRIPT, n_files=0, settings={"mini_batch_size": "4 rows"}, env={"RAISE_ON": "g5"}
    )
    table = write_table(tmp_path / "table", MENDED_LINES)
    first = daskscore.run(dep, table, out, client=client, max_retries=0)
    assert [f["mini_batch_id"] for f in first.failures] == [2], first.failures
    bad, good = table / "bad.csv", table / "good.csv"
    original = bad.read_bytes()
    with open(bad, "a") as fh:
        fh.write("q25,25\n")
    with pytest.raises(daskscore.OutputError) as info:
        daskscore.run(dep, table, out, client=client, retry_failed=True, max_retries=0)
    message = str(info.value)
    assert message.startswith(f"cannot retry the failed mini-batches of the job in '{out}'")
    assert str(bad) in message and str(good) not in message, message

    bad.write_bytes(original)  # (the same lines, a newer time)
    result = daskscore.run(dep, table, out, client=client, retry_failed=True, max_retries=0)
    assert result.retried_in_this_pass == [2]
    assert predicted(out)[:25] == [f"q{i}" for i in range(25)]


def test_isolation_does_not_split_a_file_it_cannot_read(tmp_path: Path, client: Any) -> None:
    dep, table, out = job(tmp_path)
    result = daskscore.run(dep, table, out, client=client, isolate_failures=True, max_retries=0)
    assert result.summary["split_mini_batches"] == 0, "every part would read the same file"
    assert (result.failed_items, result.failures[0]["rows_unknown"]) == (25, True)
    assert len(processed_of(out).query("mini_batch_id == 0")) == 1


def test_isolation_splits_an_uncut_file_it_read_by_its_real_rows(
    tmp_path: Path, client: Any
) -> None:
    dep, _, out = make_job(
        tmp_path, SCRIPT, n_files=0, settings={"mini_batch_size": "4 rows"}, env={"RAISE_ON": "q3"}
    )
    table = write_table(tmp_path / "table", MENDED_LINES)
    result = daskscore.run(dep, table, out, client=client, isolate_failures=True, max_retries=0)
    assert (result.total_items, result.failed_items, result.succeeded_items) == (35, 1, 34)
    (failure,) = result.failures
    assert failure["rows_unknown"] is False and result.summary["split_mini_batches"] == 1
    failed = result.failed_items_frame()
    assert failed["file"].tolist() == [f"{table / 'bad.csv'} (rows 3-3)"]
    assert predicted(out) == [f"q{i}" for i in range(25) if i != 3] + GOOD


def test_a_process_death_on_an_uncut_file_counts_its_lines(tmp_path: Path, client: Any) -> None:
    """The rows were read in the dead process only: the books still count the file's lines."""
    dep, _, out = make_job(
        tmp_path, SCRIPT, n_files=0, settings={"mini_batch_size": "4 rows"}, env={"DIE_ON": "q3"}
    )
    table = write_table(tmp_path / "table", MENDED_LINES)
    result = daskscore.run(dep, table, out, client=client, max_retries=0)
    (failure,) = result.failures
    assert (failure["status"], failure["failed"], failure["rows_unknown"]) == (
        "PROCESS_DIED",
        26,
        True,
    )
    assert (result.total_items, result.failed_items, result.succeeded_items) == (36, 26, 10)
    assert predicted(out) == GOOD


def test_the_command_says_the_rows_are_unknown_and_fails_at_the_threshold(
    tmp_path: Path,
) -> None:
    dep, table, out = job(tmp_path)
    (table / "good.csv").unlink()
    proc = cli(dep, table, out)
    assert proc.returncode == 0, show(proc)  # (Azure's: Completed unless error_threshold)
    assert "Scoring 1 file (1 file of 25 lines, rows unknown until read)" in proc.stderr, show(proc)
    assert "Job Completed, but no item succeeded: 0 of 25 items succeeded, 25 failed" in proc.stderr
    assert "EOF inside string starting at line 16" in proc.stderr
    assert f"daskscore replay {out} --mini-batch 0 --pdb" in proc.stderr
    assert summary_of(out)["failed_items_file"] == str(out / "failed_items.csv")

    again = cli(dep, table, tmp_path / "out2", "--set", "settings.error_threshold=0")
    assert again.returncode == 1, show(again)
    assert "error_threshold exceeded: 25 items failed" in again.stderr, show(again)


def test_score_counts_an_unreadable_uncut_file(tmp_path: Path, client: Any) -> None:
    """``daskscore.score()``: the file's lines count against ``error_threshold`` too."""
    meta = pd.DataFrame({"id": pd.Series([], dtype=object)})
    dep, table, _ = job(tmp_path, error_threshold=10)
    dropped = daskscore.score(dep, table, meta=meta, client=client, on_error="drop")
    strict = daskscore.score(dep, table, meta=meta, client=client)
    try:
        assert dropped.compute()["id"].tolist() == GOOD
        report = dropped.attrs["daskscore"].report()
        assert report["failed_items"] == 25 and report["failures"][0]["failed"] == 25
        with pytest.raises(daskscore.ErrorThresholdExceeded, match=r"bad\.csv"):
            strict.compute()
    finally:
        dropped.attrs["daskscore"].close()
        strict.attrs["daskscore"].close()
