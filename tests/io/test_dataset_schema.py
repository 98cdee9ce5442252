"""Dataset outputs whose columns' dtypes differ between mini-batches are written with one schema.

``run()`` returns a column as ints in some mini-batches and floats in others (and one column
holds only nulls in a mini-batch); a tabular input's dtypes are inferred for each mini-batch on
its own (a column of ints in one, of text in another, empty in a third).  Whatever the
partitioning (``rows_per_file``, ``partition_on``, both; Parquet and CSV), the job completes and
the dataset reads back whole, every row exactly once, each column with one dtype: the one
``pandas.concat`` gives the mini-batches' columns together.  A column that Parquet cannot hold
as one type fails the job with a one-paragraph reason naming it, its types and a mini-batch of
each, the summary and logs written and no dataset folder; a job stopped before its dataset was
whole leaves none either, and ``--resume`` writes it.  Every job runs on the module's
LocalCluster (the ``client`` fixture).
"""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path
from typing import Any

import dask
import pandas as pd
import pyarrow.dataset as ds
import pytest
from conftest import write_deployment, write_inputs
from helpers import summary_of

import daskscore
from daskscore import OutputError, OutputFailed
from daskscore.io import datasets, outputdir
from daskscore.io.writers import DatasetSink
from daskscore.protocol import MiniBatchRecord, Status

N_FILES = 10
MINI_BATCH_SIZE = 2  # five mini-batches of two files, two rows each

# mini-batch m = n // 2 (n: the file's number):
#   k: n % 2, an int in even mini-batches, a float in odd ones (a partition column too)
#   y: an int in mini-batches 0 and 1, a float from mini-batch 2 on
#   z: nothing but nulls in mini-batch 0 (Arrow's null type), ints after
SCRIPT = """
    import os

    import pandas as pd

    def init():
        pass

    def run(mini_batch):
        rows = []
        for path in mini_batch:
            n = int(os.path.basename(path)[1:5])
            m = n // 2
            for j in (0, 1):
                rows.append({
                    "n": n,
                    "j": j,
                    "k": n % 2 if m % 2 == 0 else float(n % 2),
                    "y": 10 * n + j if m < 2 else 10 * n + j + 0.25,
                    "z": None if m == 0 else n,
                    "label": f"L{n % 3}",
                })
        return pd.DataFrame(rows)
"""

#: the dtype each column is written with in every file, as pandas reads it back from Parquet
#: (z: int64 with nulls)
UNIFIED = {"n": "int64", "j": "int64", "k": "float64", "y": "float64", "z": "Int64"}


def unified(fmt: str) -> dict[str, str]:
    """:data:`UNIFIED` as pandas reads a ``fmt`` file back (CSV: ints with gaps as float64)."""
    return {**UNIFIED, "z": "float64"} if fmt == "csv" else UNIFIED


def expected(fmt: str = "parquet") -> pd.DataFrame:
    rows = []
    for n in range(N_FILES):
        m = n // 2
        for j in (0, 1):
            y = 10 * n + j + (0.25 if m >= 2 else 0.0)
            z = None if m == 0 else n
            rows.append({"n": n, "j": j, "k": float(n % 2), "y": y, "z": z, "label": f"L{n % 3}"})
    return pd.DataFrame(rows).astype(unified(fmt))


def files_of(dest: Path) -> list[str]:
    return sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())


def read_back(dest: Path, fmt: str, hive: bool) -> pd.DataFrame:
    """The whole dataset, sorted: Parquet through pyarrow (one schema for all its files); CSV,
    which holds no types, file by file with pandas (a column empty in one file is inferred as
    Arrow's null type there), the partition values from the folder names."""
    if fmt == "parquet":
        partitioning = ds.HivePartitioning.discover(segment_encoding="uri") if hive else None
        table = ds.dataset(str(dest), format=fmt, partitioning=partitioning).to_table()
        frame = table.to_pandas()
    else:
        frames = []
        for name in files_of(dest):
            part = pd.read_csv(dest / name)
            for folder in name.split("/")[:-1]:
                column, value = folder.split("=", 1)
                part[column] = urllib.parse.unquote(value)
            frames.append(part)
        frame = pd.concat(frames, ignore_index=True)
    return frame.sort_values(["n", "j"]).reset_index(drop=True)


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    return write_inputs(tmp_path / "in", N_FILES)


@pytest.mark.parametrize(
    "layout",
    [{"rows_per_file": 4}, {"partition_on": "k"}, {"partition_on": "label", "rows_per_file": 8}],
    ids=["rows_per_file", "partition_on", "both"],
)
@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_dtypes_that_differ_between_mini_batches_are_written_as_one(
    client: Any, tmp_path: Path, inputs: Path, fmt: str, layout: dict[str, Any]
) -> None:
    dep = write_deployment(tmp_path / "deploy", SCRIPT, settings={"mini_batch_size": 2})
    out = tmp_path / "out"
    result = daskscore.run(dep, inputs, out, client=client, output_format=fmt, **layout)
    assert result.status == "Completed" and result.rows_written == 2 * N_FILES
    dest = out / "predictions"
    names = files_of(dest)
    if "partition_on" not in layout:  # one file per mini-batch
        assert names == [f"part-{i:05d}.{fmt}" for i in range(5)], names
        for name in names:  # each file alone: the same dtypes
            alone = pd.read_parquet(dest / name) if fmt == "parquet" else pd.read_csv(dest / name)
            want = unified(fmt)
            if fmt == "csv" and alone["z"].notna().all():  # (a CSV file's ints: written whole)
                want = {**want, "z": "int64"}
            assert {c: str(alone[c].dtype) for c in UNIFIED} == want, name
    if layout.get("partition_on") == "k":  # ints and floats: one folder per value
        assert {name.split("/")[0] for name in names} == {"k=0.0", "k=1.0"}, names
    got = read_back(dest, fmt, hive="partition_on" in layout)
    want = expected(fmt)
    got["k"] = got["k"].astype("float64")  # (a partition column comes back from its folder)
    pd.testing.assert_frame_equal(got[list(want.columns)], want, check_dtype=False)
    assert {c: str(got[c].dtype) for c in UNIFIED} == unified(fmt)
    log = (out / "logs" / "sys" / "daskscore.txt").read_text()
    assert "dataset column 'y' is int64 in mini-batch 0, double in mini-batch 2" in log, log
    assert not (out / outputdir.STAGING_DIR).exists()


# --------------------------------------------------------------------------- tabular input

TABULAR = """
    def init():
        pass

    def run(df):
        return df[["id", "x", "z"]]
"""


def tabular_input(root: Path) -> Path:
    """30 rows, three mini-batches of 10: ``x`` ints, then ints and text; ``z`` empty in the
    first, then floats."""
    root.mkdir(parents=True)
    x = [str(i) for i in range(25)] + [f"n/a{i}" for i in range(25, 30)]
    z = [""] * 15 + ["1.5"] * 15
    lines = ["id,x,z"] + [f"r{i},{x[i]},{z[i]}" for i in range(30)]
    (root / "m.csv").write_text("\n".join(lines) + "\n")
    return root


def tabular_job(root: Path) -> Path:
    return write_deployment(root / "deploy", TABULAR, settings={"mini_batch_size": "10 rows"})


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_a_tabular_input_s_mini_batches_inferred_apart_make_one_dataset(
    client: Any, tmp_path: Path, fmt: str
) -> None:
    data = tabular_input(tmp_path / "in")
    out = tmp_path / "out"
    result = daskscore.run(
        tabular_job(tmp_path), data, out, client=client, output_format=fmt, rows_per_file=10
    )
    assert result.status == "Completed" and result.rows_written == 30
    dest = out / "predictions"
    assert files_of(dest) == [f"part-{i:05d}.{fmt}" for i in range(3)]
    if fmt == "parquet":
        got = pd.read_parquet(dest)
        assert str(got["z"].dtype) == "float64" and pd.api.types.is_string_dtype(got["x"])
    else:  # (CSV holds no types: read x as the text it was written as)
        got = pd.concat(
            [pd.read_csv(dest / n, dtype={"x": str}) for n in files_of(dest)], ignore_index=True
        )
        assert str(got["z"].dtype) == "float64"
    assert got["id"].tolist() == [f"r{i}" for i in range(30)], "every row once, in order"
    assert got["x"].tolist() == [str(i) for i in range(25)] + [f"n/a{i}" for i in range(25, 30)]
    assert got["z"].isna().sum() == 15 and set(got["z"].dropna()) == {1.5}
    log = (out / "logs" / "sys" / "daskscore.txt").read_text()
    # (Arrow's name for pandas' text: large_string, or string with older Dask)
    found = re.search(
        r"dataset column 'x' is int64 in mini-batch 0, (large_)?string in mini-batch 2", log
    )
    assert found, log


# --------------------------------------------------------------------------- what fails


def test_a_column_parquet_cannot_hold_as_one_type_fails_the_job_clearly(
    client: Any, tmp_path: Path
) -> None:
    """With Dask's conversion of object columns to text turned off, ints and text in one column
    cannot be written: the job fails naming the column, its types and a mini-batch of each; its
    summary and logs are written, and no dataset folder.  ``--resume`` is refused (the job is
    finished); ``--overwrite`` runs it again."""
    data = tabular_input(tmp_path / "in")
    dep = tabular_job(tmp_path)
    out = tmp_path / "out"
    with dask.config.set({"dataframe.convert-string": False}), pytest.raises(OutputFailed) as info:
        daskscore.run(dep, data, out, client=client, output_format="parquet", rows_per_file=10)
    message = str(info.value)
    for words in ("column 'x'", "int64 in mini-batch 0", "string in mini-batch 2"):
        assert words in message, message
    summary = summary_of(out)
    assert summary["status"] == "Failed" and "column 'x'" in summary["reason"], summary
    assert summary["predictions"] is None and summary["rows_written"] == 0, summary
    assert "column 'x'" in (out / "logs" / "job_error.txt").read_text()
    assert "column 'x'" in (out / "logs" / "job_result.txt").read_text()
    left = sorted(p.name for p in out.iterdir())
    assert left == ["job_summary.json", "logs", "report.html"], left

    with pytest.raises(OutputError, match="finished job"):
        daskscore.run(
            dep, data, out, client=client, output_format="parquet", rows_per_file=10, resume=True
        )

    again = daskscore.run(
        dep, data, out, client=client, output_format="parquet", rows_per_file=10, overwrite=True
    )
    assert again.status == "Completed"
    assert pd.read_parquet(out / "predictions")["id"].tolist() == [f"r{i}" for i in range(30)]


def test_a_job_stopped_before_its_dataset_is_whole_leaves_none_and_resume_writes_it(
    client: Any, tmp_path: Path, inputs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dep = write_deployment(tmp_path / "deploy", SCRIPT, settings={"mini_batch_size": 2})
    out = tmp_path / "out"
    write = datasets.write_dataset

    def written_then_stopped(*args: Any, **kwargs: Any) -> Any:
        write(*args, **kwargs)  # every file written, not yet under its name
        raise KeyboardInterrupt

    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(datasets, "write_dataset", written_then_stopped)
        daskscore.run(dep, inputs, out, client=client, output_format="parquet", rows_per_file=4)
    assert not (out / "predictions").exists(), "no half-written dataset"
    assert summary_of(out)["status"] == outputdir.INTERRUPTED

    result = daskscore.run(
        dep, inputs, out, client=client, output_format="parquet", rows_per_file=4, resume=True
    )
    assert result.status == "Completed"
    dest = out / "predictions"
    assert files_of(dest) == [f"part-{i:05d}.parquet" for i in range(5)]
    got = read_back(dest, "parquet", hive=False)
    pd.testing.assert_frame_equal(got[list(expected().columns)], expected(), check_dtype=False)


# --------------------------------------------------------------------------- staged parts


class _Ledger:
    def __init__(self) -> None:
        self.committed: list[MiniBatchRecord] = []

    def commit(self, data: bytes, records: list[MiniBatchRecord]) -> None:
        self.committed.extend(records)


def test_a_flush_stages_frames_of_other_dtypes_in_parts_of_their_own(tmp_path: Path) -> None:
    """Mini-batches of one task flushed together: ints and text in one column would make a
    column Parquet cannot hold, so each run of frames of one kind is a part of its own."""
    (tmp_path / "parts").mkdir()
    sink = DatasetSink(_Ledger(), str(tmp_path), "r01a000001")  # type: ignore[arg-type]
    kinds = [[1, 2], [3, 4], ["a", "b"], [5, 6]]
    for mb, values in enumerate(kinds):
        rec = MiniBatchRecord(mb, 1, status=Status.RUN_DONE, final=True, rows=2)
        sink.add([rec], pd.DataFrame({"v": values}))
    done = sink.flush()
    parts = [rec.part for rec in done]
    assert parts[0] == parts[1] != parts[2] != parts[3] != parts[0], parts
    for rec, values in zip(done, kinds, strict=True):
        staged = pd.read_parquet(tmp_path / "parts" / str(rec.part))
        mine = staged[staged[datasets.MB_COLUMN] == rec.mini_batch]["v"].tolist()
        assert mine == values
