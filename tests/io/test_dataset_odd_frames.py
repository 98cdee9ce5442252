"""Results a dataset output could not hold, or held wrongly, and inputs tabular mode met in
real folders.

* ``run()`` returning MultiIndex columns (a ``groupby().agg([...])``): each mini-batch fails
  with a ``ColumnError`` saying how to flatten them, and the job ends with its summary (it
  ended with an internal error from Arrow, and no summary);
* a text value ending in a lone carriage return (text split on ``\\n`` from CRLF lines): the
  CSV dataset reads back with the value whole (it was written unquoted, and readers took the
  ``\\r`` for the end of a line);
* the index of the DataFrame ``run()`` returns: kept as column(s) where it holds data (a named
  index, a MultiIndex), in Parquet and CSV datasets, behind the carried input columns (it was
  dropped); a name a column has too fails each mini-batch with a ``ColumnError`` naming it;
  an unnamed RangeIndex (0..n-1, a tabular mini-batch's row numbers) is no column;
* a Spark output folder (``_SUCCESS`` beside the Parquet files, an uncommitted attempt under
  ``_temporary/``) is read in tabular mode as pyarrow reads it, the marker and the attempt left
  out with a line in the job log; another file that is not tabular is refused, saying that the
  byte-size mini_batch_size turned tabular mode on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.csv as pacsv
import pytest
from conftest import write_deployment, write_inputs
from helpers import cli, show

import daskscore
from daskscore.errors import InputError

N_FILES = 6  # three mini-batches of two files

MULTI = """
    import os

    import pandas as pd

    def run(mini_batch):
        frame = pd.DataFrame({"f": [os.path.basename(p) for p in mini_batch], "x": 1.0})
        return frame.groupby("f").agg({"x": ["mean", "max"]}).reset_index()
"""

CARRIAGE = """
    import os

    def run(mini_batch):
        import pandas as pd

        names = [os.path.basename(p) for p in mini_batch]
        return pd.DataFrame({"f": names, "text": [n + "\\r" for n in names], "n": 1})
"""


def test_multiindex_columns_fail_each_mini_batch_with_a_way_to_flatten_them(
    client: Any, tmp_path: Path
) -> None:
    dep = write_deployment(tmp_path / "deploy", MULTI, settings={"mini_batch_size": 2})
    out = tmp_path / "out"

    daskscore.run(
        dep, write_inputs(tmp_path / "in", N_FILES), out, client=client, output_format="parquet"
    )  # (error_threshold -1: the job ends, its failures counted)

    summary = json.loads((out / "job_summary.json").read_text())
    assert summary["failed_items"] == N_FILES
    error = (out / "logs" / "job_error.txt").read_text()
    assert "ColumnError" in error and "MultiIndex" in error, error
    assert "df.columns = ['_'.join(map(str, c)) for c in df.columns]" in error
    assert "ArrowInvalid" not in error


def test_a_csv_dataset_keeps_text_ending_in_a_carriage_return(client: Any, tmp_path: Path) -> None:
    dep = write_deployment(tmp_path / "deploy", CARRIAGE, settings={"mini_batch_size": 2})
    out = tmp_path / "out"

    result = daskscore.run(
        dep, write_inputs(tmp_path / "in", N_FILES), out, client=client, output_format="csv"
    )

    assert result.status == "Completed"
    parts = sorted((out / "predictions").glob("*.csv"))
    frame = pd.concat([pd.read_csv(p) for p in parts]).sort_values("f")
    names = [f"f{i:04d}.csv" for i in range(N_FILES)]
    assert frame["f"].tolist() == names
    assert frame["text"].tolist() == [n + "\r" for n in names]
    assert frame["n"].tolist() == [1] * N_FILES  # (numbers stay numbers)
    table = pacsv.read_csv(parts[0])
    assert table.num_rows == len(pd.read_csv(parts[0]))
    assert all(v.endswith("\r") for v in table.column("text").to_pylist())


PASS_THROUGH = """
    def run(df):
        return df[["x"]] * 2
"""


def _spark_folder(folder: Path) -> None:
    folder.mkdir()
    for i in range(2):
        pd.DataFrame({"x": range(i * 5, i * 5 + 5)}).to_parquet(
            folder / f"part-0000{i}-abc.snappy.parquet"
        )
    (folder / "_SUCCESS").write_bytes(b"")


def test_a_spark_output_folder_is_read_without_its_success_marker(
    client: Any, tmp_path: Path
) -> None:
    dep = write_deployment(tmp_path / "deploy", PASS_THROUGH, settings={"mini_batch_size": "1MB"})
    _spark_folder(tmp_path / "in")
    out = tmp_path / "out"

    result = daskscore.run(dep, tmp_path / "in", out, client=client, output_format="parquet")

    assert result.status == "Completed"
    frame = pd.read_parquet(out / "predictions")
    assert sorted(frame["x"]) == [2 * i for i in range(10)]
    log = (out / "logs" / "sys" / "daskscore.txt").read_text()
    assert "tabular mode skipped 1 file(s) whose name starts with '_'" in log
    assert "_SUCCESS" in log


def test_a_spark_attempt_under_temporary_is_left_out_as_pyarrow_leaves_it(
    tmp_path: Path,
) -> None:
    """An uncommitted task attempt under ``_temporary/`` (a file in a folder whose name starts
    with ``_``, below the input folder) is not scored: it was, and every row came twice where
    ``pandas.read_parquet`` reads each once; the start line counts the files read only (the
    skipped ``_SUCCESS`` and attempt were counted).  A ``_`` inside a folder's name, and in
    the input folder's own path, leave nothing out."""
    dep = write_deployment(tmp_path / "deploy", PASS_THROUGH, settings={"mini_batch_size": "1MB"})
    root = tmp_path / "_staging" / "in"
    root.parent.mkdir()
    _spark_folder(root)
    attempt = root / "_temporary" / "0" / "task_1"
    attempt.mkdir(parents=True)
    pd.DataFrame({"x": range(100, 105)}).to_parquet(attempt / "part-00000-abc.snappy.parquet")
    (root / "year_2024").mkdir()
    pd.DataFrame({"x": [50]}).to_parquet(root / "year_2024" / "part-00002.parquet")
    out = tmp_path / "out"

    proc = cli(dep, root, out, "--output-format", "parquet")

    assert proc.returncode == 0, show(proc)
    want = sorted(pd.read_parquet(root)["x"] * 2)
    assert sorted(pd.read_parquet(out / "predictions")["x"]) == want == [*range(0, 20, 2), 100]
    assert "Scoring 3 files (11 rows) in " in proc.stderr, show(proc)
    log = (out / "logs" / "sys" / "daskscore.txt").read_text()
    assert "tabular mode skipped 1 file(s) in folders whose name starts with '_'" in log
    assert "_temporary/0/task_1/part-00000-abc.snappy.parquet" in log


@pytest.mark.parametrize("name", ["_part-0001.csv", ".hidden.parquet"])
def test_a_file_given_as_the_input_is_read_whatever_its_name(
    client: Any, tmp_path: Path, name: str
) -> None:
    """The ``_``/``.`` rule is for a folder's files (as pyarrow lists them): a file named as
    the input was refused ("the input holds no tabular file"), though pyarrow and pandas read
    a file named to them."""
    dep = write_deployment(tmp_path / "deploy", PASS_THROUGH, settings={"mini_batch_size": "1MB"})
    frame = pd.DataFrame({"x": range(4)})
    path = tmp_path / name
    if name.endswith(".csv"):
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path)
    out = tmp_path / "out"

    result = daskscore.run(dep, path, out, client=client, output_format="parquet")

    assert result.status == "Completed" and result.succeeded_items == 4
    assert sorted(pd.read_parquet(out / "predictions")["x"]) == [0, 2, 4, 6]


def test_a_file_tabular_mode_cannot_read_is_refused_saying_what_turned_it_on(
    client: Any, tmp_path: Path
) -> None:
    dep = write_deployment(tmp_path / "deploy", PASS_THROUGH, settings={"mini_batch_size": "1MB"})
    _spark_folder(tmp_path / "in")
    (tmp_path / "in" / "notes.txt").write_text("written by hand\n")

    with pytest.raises(InputError) as info:
        daskscore.run(dep, tmp_path / "in", tmp_path / "out", client=client)

    message = str(info.value)
    assert "notes.txt' is not a tabular file" in message
    assert "settings.mini_batch_size is '1MB'" in message
    assert not (tmp_path / "out" / "predictions.csv").exists()


INDEXED = """
    import os

    import pandas as pd

    def run(mini_batch):
        names = [os.path.basename(p) for p in mini_batch]
        frame = pd.DataFrame({"f": names, "n": range(len(names)), "x": 0.5})
        kind = os.environ["INDEX"]
        if kind == "named":
            return frame.set_index("f")
        if kind == "multi":  # (its second level unnamed)
            return frame.set_index(["f", "n"]).rename_axis(["f", None])
        if kind == "clash":
            return frame.set_index("f").rename_axis("x")
        return frame  # the default RangeIndex
"""


def _indexed_job(client: Any, tmp_path: Path, kind: str, fmt: str) -> tuple[Any, pd.DataFrame]:
    """A file-mode job of :data:`INDEXED` (``run()``'s index of kind ``kind``) into a ``fmt``
    dataset; its result, and the dataset read back with its rows in file order."""
    settings = {"mini_batch_size": 2, "environment_variables": {"INDEX": kind}}
    dep = write_deployment(tmp_path / "deploy", INDEXED, settings=settings)
    out = tmp_path / "out"
    result = daskscore.run(
        dep, write_inputs(tmp_path / "in", N_FILES), out, client=client, output_format=fmt
    )
    files = sorted((out / "predictions").glob(f"*.{fmt}"))
    read = pd.read_parquet if fmt == "parquet" else pd.read_csv
    frame = pd.concat([read(f) for f in files], ignore_index=True) if files else pd.DataFrame()
    return result, frame


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
@pytest.mark.parametrize(
    ("kind", "columns"),
    [("named", ["f", "n", "x"]), ("multi", ["f", "level_1", "x"]), ("plain", ["f", "n", "x"])],
)
def test_a_dataset_keeps_the_index_run_returned_as_columns(
    client: Any, tmp_path: Path, kind: str, columns: list[str], fmt: str
) -> None:
    result, frame = _indexed_job(client, tmp_path, kind, fmt)

    assert result.status == "Completed"
    assert list(frame.columns) == columns
    assert frame["f"].tolist() == [f.name for f in sorted((tmp_path / "in").iterdir())]
    assert frame[columns[1]].tolist() == [0, 1] * (N_FILES // 2)  # (each mini-batch's own)


def test_an_index_named_as_a_column_fails_each_mini_batch_naming_it(
    client: Any, tmp_path: Path
) -> None:
    result, frame = _indexed_job(client, tmp_path, "clash", "parquet")

    assert result.failed_items == N_FILES and frame.empty
    error = (tmp_path / "out" / "logs" / "job_error.txt").read_text()
    assert "ColumnError" in error and "keeps as column(s) 'x'" in error, error
    assert "df.rename_axis(" in error


ROW_INDEXED = """
    import os

    def run(df):
        out = df.assign(y=df["x"] * 2)
        return out.set_index("y") if os.environ.get("INDEX") == "named" else out
"""


@pytest.mark.parametrize(("kind", "columns"), [("named", ["row", "y", "x"]), ("rows", ["x", "y"])])
def test_a_tabular_dataset_keeps_a_named_index_behind_the_carried_columns(
    client: Any, tmp_path: Path, kind: str, columns: list[str]
) -> None:
    """The row numbers tabular mode indexes a mini-batch by (an unnamed RangeIndex from the
    split's first row: 0 in a file's first mini-batch only) are no column."""
    settings = {"mini_batch_size": "1 rows", "environment_variables": {"INDEX": kind}}
    dep = write_deployment(tmp_path / "deploy", ROW_INDEXED, settings=settings)
    inputs = write_inputs(tmp_path / "in", 3)
    out = tmp_path / "out"

    result = daskscore.run(
        dep,
        inputs,
        out,
        client=client,
        output_format="parquet",
        carry_columns=["row"] if kind == "named" else None,
    )

    assert result.status == "Completed"
    frame = pd.read_parquet(out / "predictions")
    assert list(frame.columns) == columns
    want = pd.concat([pd.read_csv(f) for f in sorted(inputs.iterdir())], ignore_index=True)
    assert frame["x"].tolist() == want["x"].tolist()
    assert frame["y"].tolist() == (want["x"] * 2).tolist()
