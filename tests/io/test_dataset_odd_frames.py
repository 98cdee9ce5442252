"""Results a dataset output could not hold, or held wrongly, and inputs tabular mode met in
real folders.

* ``run()`` returning MultiIndex columns (a ``groupby().agg([...])``): each mini-batch fails
  with a ``ColumnError`` saying how to flatten them, and the job ends with its summary (it
  ended with an internal error from Arrow, and no summary);
* a text value ending in a lone carriage return (text split on ``\\n`` from CRLF lines): the
  CSV dataset reads back with the value whole (it was written unquoted, and readers took the
  ``\\r`` for the end of a line);
* a Spark output folder (``_SUCCESS`` beside the Parquet files) is read in tabular mode, the
  marker left out with a line in the job log; another file that is not tabular is refused,
  saying that the byte-size mini_batch_size turned tabular mode on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.csv as pacsv
import pytest
from conftest import write_deployment, write_inputs

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
