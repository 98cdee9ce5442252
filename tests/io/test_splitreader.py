"""SplitReader: a task's tabular splits read in order, consecutive CSV splits parsed once, each
split's DataFrame exactly what ``read_split`` gives (rows, index, columns, dtypes, values)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from daskscore.errors import InputError
from daskscore.io import splitreader, tabular
from daskscore.io.splitreader import SplitReader, low_memory_rows
from daskscore.io.tabular import Split, plan_splits, read_split


def _mixed_csv(path: Path, n: int = 600, seed: int = 0) -> Path:
    """Columns that pandas types split by split: ints with a few missing, floats with missing,
    text with missing and NA spellings, booleans with a missing one, dates (text to pandas),
    a column all empty, one nearly empty, quoted text with commas."""
    rng = np.random.default_rng(seed)
    ints = rng.integers(-5, 1000, n).astype(object)
    ints[rng.random(n) < 0.02] = ""
    floats = np.round(rng.normal(size=n), 3).astype(object)
    floats[rng.random(n) < 0.02] = "NA"
    bools = rng.choice(["True", "False"], n).astype(object)
    bools[n // 3] = ""
    sparse = np.array([""] * n, dtype=object)
    sparse[:: n // 4] = "z"
    frame = pd.DataFrame(
        {
            "i": ints,
            "f": floats,
            "t": rng.choice(["foo", "bar", "", "baz qux", "N/A", "a,b"], n),
            "b": bools,
            "d": [f"2020-01-{1 + i % 28:02d}" for i in range(n)],
            "e": [""] * n,
            "s": sparse,
        }
    )
    frame.to_csv(path, index=False)
    return path


def _read_all(splits: list[Split]) -> tuple[list[object], SplitReader]:
    reader = SplitReader(splits)
    out: list[object] = []
    for pos in range(len(splits)):
        try:
            out.append(reader.read(pos))
        except Exception as exc:  # noqa: BLE001 - compared with read_split's
            out.append(exc)
    reader.close()
    return out, reader


def _assert_as_read_split(splits: list[Split], got: list[object]) -> None:
    for split, frame in zip(splits, got, strict=True):
        try:
            want = read_split(split)
        except Exception as exc:  # noqa: BLE001
            assert type(frame) is type(exc) and str(frame) == str(exc), split
            continue
        assert isinstance(frame, pd.DataFrame), (split, frame)
        pd.testing.assert_frame_equal(frame, want, check_exact=True)
        assert frame.index.equals(pd.RangeIndex(split.first_row, split.first_row + len(want)))


@pytest.mark.parametrize("size", [("rows", 1), ("rows", 7), ("rows", 60), ("bytes", 900)])
def test_every_split_is_what_read_split_gives(tmp_path: Path, size: tuple[str, int]) -> None:
    path = _mixed_csv(tmp_path / "mixed.csv")
    splits = plan_splits([str(path)], size)
    got, reader = _read_all(splits)
    _assert_as_read_split(splits, got)
    assert str(path) not in reader._pandas_only  # parsed by pyarrow, not split by split


def test_per_split_typing_is_kept(tmp_path: Path) -> None:
    """pandas types each split alone: an int column is float64 only where a value is missing;
    a column empty in a split is float64 there; booleans with a missing value are objects."""
    path = tmp_path / "t.csv"
    path.write_text("a,b,c\n1,True,x\n2,True,y\n,True,\n4,,\n5,False,\n6,False,\n")
    splits = plan_splits([str(path)], ("rows", 2))
    got, _ = _read_all(splits)
    _assert_as_read_split(splits, got)
    dtypes = [(str(f["a"].dtype), str(f["b"].dtype), str(f["c"].dtype)) for f in got]
    assert dtypes[0][0] == "int64" and dtypes[1][0] == "float64"
    assert dtypes[0][1] == "bool" and dtypes[1][1] == "object"
    assert dtypes[2][2] == "float64"


def test_odd_files_fall_back_to_read_split(tmp_path: Path) -> None:
    """What pyarrow reads otherwise than pandas is read split by split, the same as ever."""

    def odd(i: int) -> str:
        return " inf" if i == 30 else str(i * 1.5)  # pandas: text; pyarrow: a float

    def spaces(i: int) -> str:
        return "  \n" if i % 7 == 0 else ""  # pandas: blank; pyarrow: a row

    files = {
        "hex.csv": "a,b\n" + "".join(f"{i},0x{i:x}\n" for i in range(80)),
        "ragged.csv": "a,b\n" + "".join(f"{i},{i}\n" for i in range(40)) + "1,2,3\n9,9\n",
        "dup.csv": "a,a\n" + "".join(f"{i},{i}\n" for i in range(50)),
        "index.csv": "a\n" + "".join(f"{i},{i}\n" for i in range(50)),  # pandas: an index
        "plus.csv": "a,b\n" + "".join(f"+{i},{odd(i)}\n" for i in range(60)),
        "wide.csv": "a,b\n" + "".join(f"{i + 2**63},{i}.0\n" for i in range(50)),
        "blank.csv": "\na,b\n" + "".join(f"{i},{i}\n{spaces(i)}" for i in range(50)),
        "mixed.csv": "a\n" + "".join(f"{i}\n" for i in range(50)) + "x\n",  # text in 1 split
        "crlf.csv": "a,b\r\n" + "".join(f"{i},t{i}\r\n" for i in range(50)),
        "bom.csv": "\ufeffa,b\n" + "".join(f"{i},t{i}\n" for i in range(50)),
    }  # fmt: skip
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    paths = [str(tmp_path / name) for name in sorted(files)]
    splits = plan_splits(paths, ("rows", 9))
    got, _ = _read_all(splits)
    _assert_as_read_split(splits, got)


def test_a_missing_file_fails_each_split_as_read_split_does(tmp_path: Path) -> None:
    path = _mixed_csv(tmp_path / "gone.csv", n=40)
    splits = plan_splits([str(path)], ("rows", 10))
    path.unlink()
    got, _ = _read_all(splits)
    assert all(isinstance(g, InputError) and "is gone" in str(g) for g in got), got


def test_runs_are_bounded_and_never_cross_files(tmp_path: Path, monkeypatch) -> None:
    a = _mixed_csv(tmp_path / "a.csv", n=300)
    b = _mixed_csv(tmp_path / "b.csv", n=300, seed=1)
    splits = plan_splits([str(a), str(b)], ("rows", 10))
    monkeypatch.setattr(splitreader, "RUN_BYTES", 2000)
    runs = splitreader._plan_runs(list(splits))
    assert sorted(p for run in runs for p in run) == list(range(len(splits)))
    for run in runs:
        members = [splits[p] for p in run]
        assert len({s.path for s in members}) == 1
        assert sum(s.stop - s.start for s in members) <= 2000 or len(run) == 1
        assert all(x.stop == y.start for x, y in zip(members, members[1:], strict=False))
    got, _ = _read_all(splits)
    _assert_as_read_split(splits, got)


def test_splits_not_in_order_or_not_consecutive_are_read_alone(tmp_path: Path) -> None:
    path = _mixed_csv(tmp_path / "m.csv", n=100)
    splits = plan_splits([str(path)], ("rows", 10))
    task = [splits[3], splits[1], None, splits[5], splits[6]]
    runs = splitreader._plan_runs(task)
    assert runs == [[0], [1], [3, 4]]
    reader = SplitReader(task)
    for pos, split in enumerate(task):
        if split is not None:
            pd.testing.assert_frame_equal(reader.read(pos), read_split(split), check_exact=True)
    with pytest.raises(ValueError, match="not a tabular split"):
        reader.read(2)


def test_parquet_splits_share_one_open_file(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "p.parquet"
    frame = pd.DataFrame({"v": np.arange(100.0), "k": [f"k{i % 7}" for i in range(100)]})
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=10)
    splits = plan_splits([str(path)], ("rows", 20))
    opened = []
    real = pq.ParquetFile

    def counting(*args, **kwargs):
        opened.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(pq, "ParquetFile", counting)
    got, _ = _read_all(splits)
    assert len(opened) == 1
    monkeypatch.setattr(pq, "ParquetFile", real)
    _assert_as_read_split(splits, got)


def test_frames_can_be_changed_without_touching_the_next(tmp_path: Path) -> None:
    path = tmp_path / "n.csv"
    path.write_text("a,b\n" + "".join(f"{i},{i * 0.5}\n" for i in range(40)))
    splits = plan_splits([str(path)], ("rows", 10))
    reader = SplitReader(splits)
    first = reader.read(0)
    first.iloc[:, :] = -1  # run() may change its DataFrame in place
    first["c"] = 1
    second = reader.read(1)
    pd.testing.assert_frame_equal(second, read_split(splits[1]), check_exact=True)
    second.loc[:, "b"] *= 3  # in place, in the other ways scripts do
    second.update(second * 2)
    second.insert(0, "z", 0)
    del second["a"]
    for position in (2, 3):
        got = reader.read(position)
        pd.testing.assert_frame_equal(got, read_split(splits[position]), check_exact=True)


def test_low_memory_rows_matches_pandas_blocks() -> None:
    assert low_memory_rows(1) == 1 << 19
    assert low_memory_rows(3) == 262144
    assert low_memory_rows(10) == 65536


def test_with_row_index_and_open_parquet_file_keep_read_split(tmp_path: Path) -> None:
    path = tmp_path / "q.parquet"
    pq.write_table(pa.table({"x": list(range(30))}), path, row_group_size=10)
    (split,) = [s for s in plan_splits([str(path)], ("rows", 10)) if s.first_row == 10]
    with pq.ParquetFile(path) as pf:
        shared = tabular.read_split(split, parquet_file=pf)
    pd.testing.assert_frame_equal(shared, read_split(split))
    assert shared.index[0] == 10


@pytest.mark.parametrize(
    "index",
    [
        None,
        pd.Index([5, 6, 7], name="id"),
        pd.Index(["p", "q", "r"]),
        pd.RangeIndex(0, 3, name="k"),
        pd.RangeIndex(10, 13),
        pd.MultiIndex.from_arrays([[1, 2, 3], ["a", "b", "c"]]),
    ],
    ids=["none", "named", "unnamed-text", "named-range", "range-from-10", "multi"],
)
def test_columns_of_a_file_are_those_of_its_mini_batches(tmp_path: Path, index: Any) -> None:
    """columns_of (what a job's plan checks carried columns against) reads a file's header
    line or schema alone and gives the columns read_split gives its mini-batches, a Parquet
    file's stored index included."""
    frame = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    frame.to_csv(tmp_path / "t.csv", index=index is not None)
    if index is not None:
        frame.index = index
    frame.to_parquet(tmp_path / "t.parquet", row_group_size=2)
    for name in ("t.csv", "t.parquet"):
        splits = plan_splits([str(tmp_path / name)], ("rows", 2))
        assert len(splits) == 2
        want = read_split(splits[1]).columns
        assert splitreader.columns_of(splits[0]).equals(want), (name, list(want))
        assert len(want) >= 2
