"""Integration tests of dataset outputs (``output_format="parquet"`` / ``"csv"``).

Every job runs on the module's LocalCluster (the ``client`` fixture) except the two command-line
tests.  The scoring script returns a DataFrame with one row per input row (two rows per input
file, ``write_inputs``), labelled from a list given in ``settings.environment_variables``; the
tests read the dataset back with pandas / pyarrow and check that every row is there exactly once,
with its values, in mini-batch order when not partitioned; that ``rows_per_file`` cuts files at
mini-batch boundaries; that file names are deterministic (a rerun with overwrite gives the same
names, never duplicates); that partition values which look like paths stay inside the output
folder and read back decoded; and that a wrong ``partition_on`` is a clear usage error.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.dataset as ds
import pytest
from conftest import run_cli, write_deployment, write_inputs
from helpers import show, summary_of

import daskscore
from daskscore import ConfigError, UsageError

N_FILES = 10
MINI_BATCH_SIZE = 2
ROWS_PER_MINI_BATCH = 2 * MINI_BATCH_SIZE  # write_inputs: two rows per file
COLUMNS = ["n", "j", "x", "label"]
ANIMALS = ["cat", "dog", "owl"]
#: partition values that are paths: each must stay one folder inside the output
HOSTILE = ["../../etc", "..", "/abs", "a/b", "x\\y"]

SCRIPT = """
    import json
    import os

    import pandas as pd

    LABELS = json.loads(os.environ["LABELS"])

    def init():
        pass

    def run(mini_batch):
        rows = []
        for path in mini_batch:
            n = int(os.path.basename(path)[1:5])
            for j, x in enumerate(pd.read_csv(path)["x"]):
                rows.append({"n": n, "j": j, "x": float(x), "label": LABELS[n % len(LABELS)]})
        return pd.DataFrame(rows, columns=["n", "j", "x", "label"])
"""


# --------------------------------------------------------------------------- helpers


def deploy(root: Path, labels: list[str]) -> Path:
    return write_deployment(
        root / "deploy",
        SCRIPT,
        settings={
            "mini_batch_size": MINI_BATCH_SIZE,
            "environment_variables": {"LABELS": json.dumps(labels)},
        },
    )


def expected(labels: list[str]) -> pd.DataFrame:
    """What the job must write, in mini-batch order."""
    rows = [
        {"n": n, "j": j, "x": n + 0.5 * j, "label": labels[n % len(labels)]}
        for n in range(N_FILES)
        for j in (0, 1)
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


def files_of(dest: Path) -> list[str]:
    return sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())


def read_file(path: Path, fmt: str) -> pd.DataFrame:
    return pd.read_parquet(path) if fmt == "parquet" else pd.read_csv(path)


def read_parts(dest: Path, fmt: str) -> pd.DataFrame:
    """An unpartitioned dataset, its files in name order."""
    frames = [read_file(dest / name, fmt) for name in files_of(dest)]
    return pd.concat(frames, ignore_index=True)


def read_hive(dest: Path, fmt: str) -> pd.DataFrame:
    """A hive-partitioned dataset through pyarrow (partition values URI-decoded), sorted."""
    partitioning = ds.HivePartitioning.discover(segment_encoding="uri")
    table = ds.dataset(str(dest), format=fmt, partitioning=partitioning).to_table()
    frame = table.to_pandas()
    return frame[COLUMNS].sort_values(["n", "j"]).reset_index(drop=True)


def same_rows(got: pd.DataFrame, want: pd.DataFrame) -> None:
    got = got[COLUMNS].reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    assert str(got["n"].dtype) == "int64" and str(got["x"].dtype) == "float64", got.dtypes
    assert len(got) == len(want), "every row exactly once"


def job(client: Any, dep: Path, inputs: Path, out: Path, **kwargs: Any) -> Any:
    return daskscore.run(dep, inputs, out, client=client, **kwargs)


def tree(root: Path, skip: Path) -> set[str]:
    """Every path under ``root`` except those under ``skip``."""
    found = set()
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here == skip or skip in here.parents:
            dirnames[:] = []
            continue
        found.update(str(here / name) for name in dirnames + filenames)
    found.discard(str(skip))
    return found


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    return write_inputs(tmp_path / "in", N_FILES)


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("partition_on", [None, "label"], ids=["flat", "partitioned"])
@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_round_trip_and_rerun_gives_the_same_files(
    client: Any, tmp_path: Path, inputs: Path, fmt: str, partition_on: str | None
) -> None:
    dep = deploy(tmp_path, ANIMALS)
    out = tmp_path / "out"
    want = expected(ANIMALS)
    ext = "parquet" if fmt == "parquet" else "csv"

    first = job(client, dep, inputs, out, output_format=fmt, partition_on=partition_on)
    dest = out / "predictions"
    assert first.status == "Completed"
    assert Path(first.predictions) == dest and dest.is_dir()
    assert first.rows_written == len(want)
    names = files_of(dest)
    if partition_on is None:
        # default rows_per_file: one file, rows in mini-batch order (then returned order)
        assert names == [f"part-00000.{ext}"]
        same_rows(read_parts(dest, fmt), want)
    else:
        assert names == [f"label={a}/part-00000.{ext}" for a in ANIMALS]
        for animal in ANIMALS:
            part = read_file(dest / f"label={animal}" / f"part-00000.{ext}", fmt)
            assert "label" not in part.columns, "the partition column lives in the folder name"
            mine = want[want["label"] == animal].drop(columns="label")
            pd.testing.assert_frame_equal(
                part.reset_index(drop=True), mine.reset_index(drop=True), check_dtype=False
            )  # in mini-batch order inside its folder
        same_rows(read_hive(dest, fmt), want)

    second = job(
        client, dep, inputs, out, output_format=fmt, partition_on=partition_on, overwrite=True
    )
    assert second.status == "Completed"
    assert files_of(dest) == names, "a rerun writes the same file names"
    again = read_parts(dest, fmt) if partition_on is None else read_hive(dest, fmt)
    same_rows(again, want)  # overwritten, never appended to


# --------------------------------------------------------------------------- rows_per_file


@pytest.mark.parametrize(
    ("fmt", "rows_per_file", "groups"),
    [
        ("parquet", 1, [[0], [1], [2], [3], [4]]),  # a mini-batch is never split
        ("parquet", 8, [[0, 1], [2, 3], [4]]),
        ("parquet", 10, [[0, 1], [2, 3], [4]]),  # "about": whole mini-batches, at most 10
        ("parquet", 20, [[0, 1, 2, 3, 4]]),
        ("csv", 8, [[0, 1], [2, 3], [4]]),
    ],
)
def test_rows_per_file_cuts_files_at_mini_batch_boundaries(
    client: Any, tmp_path: Path, inputs: Path, fmt: str, rows_per_file: int, groups: list[list[int]]
) -> None:
    dep = deploy(tmp_path, ANIMALS)
    out = tmp_path / "out"
    result = job(client, dep, inputs, out, output_format=fmt, rows_per_file=rows_per_file)
    dest = out / "predictions"
    names = files_of(dest)
    assert names == [f"part-{i:05d}.{fmt}" for i in range(len(groups))]
    want = expected(ANIMALS)
    for name, mini_batches in zip(names, groups, strict=True):
        part = read_file(dest / name, fmt)
        held = sorted(set(part["n"] // MINI_BATCH_SIZE))
        assert held == mini_batches, f"{name} holds mini-batches {held}"
        assert len(part) == ROWS_PER_MINI_BATCH * len(mini_batches), "whole mini-batches"
    same_rows(read_parts(dest, fmt), want)
    assert result.rows_written == len(want)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_rows_per_file_with_partition_on_never_clobbers_a_file(
    client: Any, tmp_path: Path, inputs: Path, fmt: str
) -> None:
    dep = deploy(tmp_path, ANIMALS)
    out = tmp_path / "out"
    job(client, dep, inputs, out, output_format=fmt, partition_on="label", rows_per_file=8)
    dest = out / "predictions"
    # output partition g holds mini-batches 2g and 2g+1, i.e. files n with n // 4 == g
    want_names = sorted({f"label={ANIMALS[n % 3]}/part-{n // 4:05d}.{fmt}" for n in range(N_FILES)})
    assert files_of(dest) == want_names
    same_rows(read_hive(dest, fmt), expected(ANIMALS))


# --------------------------------------------------------------------------- path-like values


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_partition_values_that_are_paths_stay_inside_the_output(
    client: Any, tmp_path: Path, inputs: Path, fmt: str
) -> None:
    dep = deploy(tmp_path, HOSTILE)
    out = tmp_path / "deep" / "er" / "out"
    out.parent.mkdir(parents=True)
    before = tree(tmp_path, skip=out)
    abs_existed = Path("/abs").exists()

    result = job(client, dep, inputs, out, output_format=fmt, partition_on="label")
    assert result.status == "Completed"

    dest = (out / "predictions").resolve()
    written = [p for p in out.rglob("*") if p.is_file()]
    assert written
    for path in written:
        assert path.resolve().is_relative_to(out.resolve()), f"{path} escapes {out}"
    data_files = [p for p in dest.rglob("*") if p.is_file()]
    for path in data_files:
        rel = path.resolve().relative_to(dest)
        assert len(rel.parts) == 2, f"{rel}: each value must be ONE folder under the dataset"
    folders = sorted(p.name for p in dest.iterdir())
    assert len(folders) == len(HOSTILE), folders
    for folder in folders:
        assert folder.startswith("label=") and "\\" not in folder, folder
    decoded = sorted(urllib.parse.unquote(f.removeprefix("label=")) for f in folders)
    assert decoded == sorted(HOSTILE), "one percent-encoded folder per value"
    assert tree(tmp_path, skip=out) == before, "nothing created beside the output folder"
    assert Path("/abs").exists() == abs_existed

    got = read_hive(dest, fmt)
    assert sorted(set(got["label"])) == sorted(HOSTILE), "values read back decoded"
    same_rows(got, expected(HOSTILE))


# --------------------------------------------------------------------------- usage errors


def test_partition_on_a_missing_column_names_it(client: Any, tmp_path: Path, inputs: Path) -> None:
    dep = deploy(tmp_path, ANIMALS)
    with pytest.raises(UsageError) as info:
        job(client, dep, inputs, tmp_path / "out", output_format="parquet", partition_on="nope")
    message = str(info.value)
    assert "nope" in message and "partition_on" in message, message
    assert "label" in message, "the message lists the columns run() returned"


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_partition_on_every_column_is_refused_and_fewer_run_in_the_same_folder(
    client: Any, tmp_path: Path, inputs: Path, fmt: str
) -> None:
    """A dataset whose columns all became folders would hold no data: Dask refused it with an
    internal error at the end of the job."""
    dep = deploy(tmp_path, ANIMALS)
    out = tmp_path / "out"
    every = ["n", "j", "x", "label"]
    with pytest.raises(UsageError, match="names every column run") as info:
        job(client, dep, inputs, out, output_format=fmt, partition_on=every)
    assert "n, j, x, label" in str(info.value)
    job(client, dep, inputs, out, output_format=fmt, partition_on="label")
    same_rows(read_hive(out / "predictions", fmt), expected(ANIMALS))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"output_format": "append_row", "partition_on": "label"},
        {"partition_on": "label"},  # the deployment's output_action: append_row
        {"output_format": "summary_only", "partition_on": ["label"]},
        {"output_format": "append_row", "rows_per_file": 10},
    ],
    ids=["append_row", "default-append_row", "summary_only", "rows_per_file"],
)
def test_partition_on_needs_a_dataset_format(
    client: Any, tmp_path: Path, inputs: Path, kwargs: dict[str, Any]
) -> None:
    dep = deploy(tmp_path, ANIMALS)
    out = tmp_path / "out"
    with pytest.raises(UsageError, match="parquet or csv"):
        job(client, dep, inputs, out, **kwargs)
    assert not (out / "job_summary.json").exists(), "refused before anything ran"


def test_a_dataset_folder_may_not_take_the_name_of_the_job_s_logs(
    client: Any, tmp_path: Path, inputs: Path
) -> None:
    """A dataset is a folder named after output_file_name's stem: ``logs.csv`` would write the
    dataset into the logs folder (an append_row file of that name is fine)."""
    dep = deploy(tmp_path, ANIMALS)
    out = tmp_path / "out"
    with pytest.raises(ConfigError) as info:
        daskscore.run(
            dep,
            inputs,
            out,
            client=client,
            output_format="parquet",
            set={"settings.output_file_name": "logs.csv"},
        )
    message = str(info.value)
    assert "'logs.csv'" in message and "logs folder" in message, message
    assert not (out / "job_summary.json").exists(), "refused before anything ran"


# --------------------------------------------------------------------------- command line


def test_cli_parquet_partitioned_on_label_end_to_end(tmp_path: Path, inputs: Path) -> None:
    dep = deploy(tmp_path, ANIMALS)
    out = tmp_path / "out"
    proc = run_cli(
        "run",
        str(dep),
        "--input",
        str(inputs),
        "--output",
        str(out),
        "--output-format",
        "parquet",
        "--partition-on",
        "label",
        "--workers",
        "1",
        "--no-progress",
        "--no-dashboard",
    )
    assert proc.returncode == 0, show(proc)
    dest = out / "predictions"
    assert str(dest) in proc.stderr, show(proc)
    assert files_of(dest) == [f"label={a}/part-00000.parquet" for a in ANIMALS]
    same_rows(read_hive(dest, "parquet"), expected(ANIMALS))
    summary = summary_of(out)
    assert summary["status"] == "Completed" and summary["rows_written"] == 2 * N_FILES


def test_cli_partition_on_a_missing_column_exits_2_without_traceback(
    tmp_path: Path, inputs: Path
) -> None:
    dep = deploy(tmp_path, ANIMALS)
    proc = run_cli(
        "run",
        str(dep),
        "--input",
        str(inputs),
        "--output",
        str(tmp_path / "out"),
        "--output-format",
        "csv",
        "--partition-on",
        "nope",
        "--workers",
        "1",
        "--no-progress",
        "--no-dashboard",
    )
    assert proc.returncode == 2, show(proc)
    assert "Traceback" not in proc.stderr, show(proc)
    assert "nope" in proc.stderr and "partition_on" in proc.stderr, show(proc)
