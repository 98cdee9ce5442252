"""A tabular input changed after the job listed it: its mini-batches fail with an InputError
naming the file and saying it changed, never rows cut short, lost, read twice or renumbered;
a file swapped for a named pipe or a device fails the same way and does not hang the read."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import write_deployment

import daskscore
from daskscore.errors import InputError
from daskscore.io.payloads import make_payload
from daskscore.io.splitreader import SplitReader
from daskscore.io.splittable import SplitTable
from daskscore.io.tabular import plan_cuts, plan_splits, read_split

CHANGED = "changed since the job listed its inputs"


def _csv(path: Path, rows: int = 20) -> Path:
    path.write_text("id,val\n" + "".join(f"r{i},1000\n" for i in range(rows)))
    return path


def _parquet(path: Path, rows: int, group: int, prefix: str = "b") -> Path:
    frame = pd.DataFrame({"id": [f"{prefix}{i}" for i in range(rows)], "val": range(rows)})
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=group)
    return path


def _read_all(splits: list[Any]) -> None:
    reader = SplitReader(splits)
    try:
        for position in range(len(splits)):
            reader.read(position)
    finally:
        reader.close()


def test_a_csv_line_grown_after_planning_fails_its_splits_naming_the_file(tmp_path: Path) -> None:
    path = _csv(tmp_path / "b.csv")
    splits = plan_splits([str(path)], ("rows", 5))
    size = path.stat().st_size
    path.write_text(path.read_text().replace("r17,1000\n", "r17,100000\n"))  # 2 bytes longer
    why = rf"'{path}' {CHANGED} \(it was {size} bytes, it is {size + 2} bytes now\)"
    for split in splits:  # alone, and as a task's reader parses a run of them
        with pytest.raises(InputError, match=why):
            read_split(split)
    with pytest.raises(InputError, match=CHANGED):
        _read_all(splits)


def test_a_csv_edited_in_place_to_the_same_size_is_changed_too(tmp_path: Path) -> None:
    path = _csv(tmp_path / "b.csv")
    (split,) = plan_splits([str(path)], ("rows", 50))
    path.write_text(path.read_text().replace("r3,1000", "r3,9999"))
    os.utime(path, ns=(0, os.stat(path).st_mtime_ns + 10**9))  # (a coarse clock: a later time)
    with pytest.raises(InputError, match="same size but was modified"):
        read_split(split)


def test_a_csv_range_that_ends_no_line_is_refused_without_a_stamp(tmp_path: Path) -> None:
    path = _csv(tmp_path / "b.csv")
    split = plan_splits([str(path)], ("rows", 5))[2]
    unstamped = type(split)(split.path, "csv", split.start, split.stop, split.first_row, 5)
    path.write_text(path.read_text().replace("r14,1000\n", "r14,100000\n"))
    with pytest.raises(InputError, match="ends no line now"):
        read_split(unstamped)


@pytest.mark.parametrize(
    ("rows", "group"), [(45, 15), (30, 15), (20, 10)], ids=["replaced", "fewer-groups", "shrunk"]
)
def test_a_parquet_file_written_again_fails_its_splits(
    tmp_path: Path, rows: int, group: int
) -> None:
    path = _parquet(tmp_path / "b.parquet", 30, 10)
    splits = plan_splits([str(path)], ("rows", 5))
    _parquet(path, rows, group, prefix="B")
    for split in splits:
        with pytest.raises(InputError, match=rf"'{path}' {CHANGED}"):
            read_split(split)
        with pytest.raises(InputError, match=CHANGED):
            _read_all([split])


def test_a_parquet_split_checks_its_row_groups_against_the_plan(tmp_path: Path) -> None:
    """Where no stamp was planned (a split made by hand), the row groups still are checked."""
    path = _parquet(tmp_path / "b.parquet", 30, 10)
    split = plan_splits([str(path)], ("rows", 5))[2]
    unstamped = type(split)(split.path, "parquet", split.start, split.stop, split.first_row, 10)
    _parquet(path, 20, 15)
    with pytest.raises(InputError, match=r"row groups 2-2 held 10 rows, now 0 of 2 group"):
        read_split(unstamped)


@pytest.mark.parametrize("kind", ["fifo", "devzero"])
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_file_swapped_for_a_pipe_or_a_device_fails_and_does_not_hang(
    tmp_path: Path, kind: str, suffix: str
) -> None:
    path = tmp_path / f"b{suffix}"
    _csv(path) if suffix == ".csv" else _parquet(path, 30, 10)
    splits = plan_splits([str(path)], ("rows", 5))
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
        what = "a named pipe"
    else:
        path.symlink_to("/dev/zero")
        what = "a device"
    with pytest.raises(InputError, match=rf"{CHANGED} \(it is {what} now\)"):
        read_split(splits[0])
    with pytest.raises(InputError, match=CHANGED):
        _read_all(splits)


def test_a_task_payload_carries_the_planned_stamp(tmp_path: Path) -> None:
    path = _csv(tmp_path / "b.csv")
    table = SplitTable.from_cuts(plan_cuts([str(path)], ("rows", 5)))
    st = os.stat(path)
    import zlib

    tail = zlib.crc32(path.read_bytes()[-4096:])  # (a CSV file's: rows appended are told)
    assert {s.stamp for s in table} == {(st.st_size, st.st_mtime_ns, tail)}
    payload = make_payload(list(range(len(table))), lambda mb: 0, table)
    assert [split for _, _, split in payload.items] == list(table)
    assert SplitTable(list(table)) == list(table)


SCRIPT = """
    import os
    from pathlib import Path

    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    def init():
        # another program changes b.* after the job listed its inputs, before any is read
        folder = Path(os.environ["INPUTS"])
        csv = folder / "b.csv"
        if csv.exists() and b"b17,1000\\n" in csv.read_bytes():
            csv.write_bytes(csv.read_bytes().replace(b"b17,1000\\n", b"b17,100000\\n"))
        parquet = folder / "b.parquet"
        if parquet.exists() and pq.ParquetFile(parquet).metadata.num_rows == 30:
            frame = pd.DataFrame({"id": [f"B{i}" for i in range(45)], "val": range(45)})
            table = pa.Table.from_pandas(frame, preserve_index=False)
            tmp = folder / f"b.{os.getpid()}.tmp"  # (each worker's init() does it at once)
            pq.write_table(table, tmp, row_group_size=15)
            os.replace(tmp, parquet)

    def run(mini_batch):
        return pd.DataFrame({"id": mini_batch["id"], "val": mini_batch["val"]})
"""


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_job_whose_input_changes_fails_those_mini_batches_and_scores_no_other_row(
    client: Any, tmp_path: Path, suffix: str
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    _csv(folder / "a.csv")
    if suffix == ".csv":
        (folder / "b.csv").write_text("id,val\n" + "".join(f"b{i},1000\n" for i in range(20)))
    else:
        _parquet(folder / "b.parquet", 30, 10)
    settings = {
        "mini_batch_size": "5 rows",
        "environment_variables": {"INPUTS": str(folder)},
        "retry_settings": {"max_retries": 0},
        "error_threshold": -1,
    }
    dep = write_deployment(tmp_path / "deploy", SCRIPT, settings=settings)
    result = daskscore.run(dep, folder, tmp_path / "out", client=client)

    b_rows = 20 if suffix == ".csv" else 30
    assert result.total_items == 20 + b_rows
    assert result.succeeded_items == 20 and result.failed_items == b_rows
    failures = result.summary["failures"]
    assert failures and all(f"b{suffix}' {CHANGED}" in f["error"] for f in failures), failures
    got = pd.read_csv(tmp_path / "out" / "predictions.csv", sep=" ", header=None)
    assert got[0].tolist() == [f"r{i}" for i in range(20)]  # a.csv's rows alone, whole
    assert set(got[1]) == {1000}


def test_rows_appended_to_a_csv_after_planning_are_left_and_the_planned_ones_read(
    tmp_path: Path,
) -> None:
    """A file appended to (a log that grows while the job runs): its planned rows are read as
    they were, the new ones are not scored; an edit of the planned rows besides is refused."""
    path = _csv(tmp_path / "b.csv")
    splits = plan_splits([str(path)], ("rows", 5))
    expected = [read_split(split)["id"].tolist() for split in splits]
    with open(path, "a") as fh:
        fh.write("".join(f"r{i},1000\n" for i in range(20, 30)))
    assert [read_split(split)["id"].tolist() for split in splits] == expected
    _read_all(splits)
    assert sum(len(ids) for ids in expected) == 20
    path.write_text(path.read_text().replace("r3,1000\n", "r3,100000\n"))  # and edited
    with pytest.raises(InputError, match=CHANGED):
        read_split(splits[-1])
    with pytest.raises(InputError, match=CHANGED):
        _read_all(splits)
