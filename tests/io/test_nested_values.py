"""Nested values in a dataset: lists, numpy arrays, dicts, maps, decimals and bytes.

``run()`` returns a column of numpy arrays (2,000 floats each: numpy's repr cuts that short with
``...``), lists (of ints in some mini-batches, of floats in others), dicts, decimals and bytes;
a tabular job passes an input Parquet file's list, struct, map and decimal columns through.
Parquet keeps each as its Arrow type, the same in every file, with Dask's
``dataframe.convert-string`` on (it made every such column text) or off (it failed the job with
an internal error); CSV writes each value whole (JSON for lists, dicts and maps).  append_row
writes a numpy array of 2,000 values whole too.
"""

from __future__ import annotations

import decimal
import json
import re
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import write_deployment, write_inputs

import daskscore
from daskscore.io import dataschema, datasets, nested
from daskscore.io.writers import CsvWriter, ParquetWriter

N_FILES = 6  # three mini-batches of two files

NESTED = """
    import decimal
    import os

    import numpy as np
    import pandas as pd

    def init():
        pass

    def run(mini_batch):
        rows = []
        for path in mini_batch:
            n = int(os.path.basename(path)[1:5])
            rows.append({
                "n": n,
                "emb": np.arange(2000.0) + n,
                "lst": [n, n + 1] if n < 2 else [n + 0.5, None],  # ints, then floats
                "d": {"k": n, "name": f"f{n}"},
                "dec": decimal.Decimal(f"{n}.25"),
                "raw": bytes([n + 65, 0xFF]),
                "maybe": None if n < 2 else [n],  # only nulls in mini-batch 0
            })
        return pd.DataFrame(rows)
"""


def nested_job(root: Path) -> tuple[Path, Path]:
    dep = write_deployment(root / "deploy", NESTED, settings={"mini_batch_size": 2})
    return dep, write_inputs(root / "in", N_FILES)


@pytest.mark.parametrize("convert_string", [True, False], ids=["strings", "no-strings"])
def test_parquet_keeps_nested_values_as_their_arrow_types(
    client: Any, tmp_path: Path, convert_string: bool
) -> None:
    dep, inputs = nested_job(tmp_path)
    out = tmp_path / "out"
    with dask.config.set({"dataframe.convert-string": convert_string}):
        result = daskscore.run(
            dep, inputs, out, client=client, output_format="parquet", rows_per_file=2
        )
    assert result.status == "Completed" and result.rows_written == N_FILES
    files = sorted((out / "predictions").iterdir())
    assert [f.name for f in files] == [f"part-{i:05d}.parquet" for i in range(3)]
    want = {
        "emb": pa.list_(pa.float64()),
        "lst": pa.list_(pa.float64()),
        "d": pa.struct([("k", pa.int64()), ("name", pa.string())]),
        "dec": pa.decimal128(3, 2),
        "raw": pa.binary(),
        "maybe": pa.list_(pa.int64()),
    }
    for path in files:  # every file: the same Arrow types
        schema = pq.read_schema(path)
        got = {c: schema.field(c).type for c in want}
        assert got == want, path
    frame = pd.read_parquet(out / "predictions").sort_values("n").reset_index(drop=True)
    assert frame["n"].tolist() == list(range(N_FILES))
    for n, row in frame.iterrows():
        np.testing.assert_array_equal(row["emb"], np.arange(2000.0) + n)  # whole, exact
        lst = [n, n + 1] if n < 2 else [n + 0.5, None]
        assert [None if v != v else v for v in row["lst"]] == lst
        assert row["d"] == {"k": n, "name": f"f{n}"}
        assert row["dec"] == decimal.Decimal(f"{n}.25")
        assert row["raw"] == bytes([n + 65, 0xFF])
        assert (row["maybe"] is None) if n < 2 else row["maybe"].tolist() == [n]
    log = (out / "logs" / "sys" / "daskscore.txt").read_text()
    [line] = [line for line in log.splitlines() if "dataset column 'lst'" in line]
    assert re.search(
        r"is list<\w+: int64> in mini-batch 0, list<\w+: double> in mini-batch 1: "
        r"written as list<\w+: double> in every file",
        line,
    ), line
    assert " INFO " in line, line


def test_csv_writes_nested_values_whole(client: Any, tmp_path: Path) -> None:
    dep, inputs = nested_job(tmp_path)
    out = tmp_path / "out"
    result = daskscore.run(dep, inputs, out, client=client, output_format="csv")
    assert result.status == "Completed" and result.rows_written == N_FILES
    frame = pd.concat(
        [pd.read_csv(p, dtype=str, keep_default_na=False) for p in (out / "predictions").iterdir()]
    )
    frame = frame.assign(n=frame["n"].astype(int)).sort_values("n").reset_index(drop=True)
    for n, row in frame.iterrows():
        assert json.loads(row["emb"]) == (np.arange(2000.0) + n).tolist()  # JSON, whole
        lst = [float(n), float(n + 1)] if n < 2 else [n + 0.5, None]
        assert json.loads(row["lst"]) == lst
        assert json.loads(row["d"]) == {"k": n, "name": f"f{n}"}
        assert row["dec"] == f"{n}.25"
        assert row["raw"] == bytes([n + 65, 0xFF]).decode("utf-8", "backslashreplace")
        assert row["maybe"] == ("" if n < 2 else json.dumps([n]))


# --------------------------------------------------------------------------- tabular input

PASS_THROUGH = """
    def init():
        pass

    def run(df):
        return df
"""


def nested_parquet(path: Path) -> pa.Table:
    """A Parquet input of 20 rows: list, struct, map and decimal columns."""
    n = 20
    table = pa.table(
        {
            "id": pa.array(range(n), pa.int64()),
            "vec": pa.array([[float(i), i / 3] for i in range(n)], pa.list_(pa.float64())),
            "st": pa.array([{"a": i, "b": str(i)} for i in range(n)]),
            "mp": pa.array(
                [[("k", i), ("j", -i)] if i % 5 else None for i in range(n)],
                pa.map_(pa.string(), pa.int64()),
            ),
            "dec": pa.array([decimal.Decimal(f"{i}.125") for i in range(n)], pa.decimal128(9, 3)),
        }
    )
    path.parent.mkdir(parents=True)
    pq.write_table(table, path)
    return table


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_a_tabular_input_s_nested_columns_pass_through(
    client: Any, tmp_path: Path, fmt: str
) -> None:
    """A map column used to fail every mini-batch (ColumnError: 'holds values of the types list
    together'); lists, structs and decimals were written as text."""
    table = nested_parquet(tmp_path / "in" / "data.parquet")
    settings = {"mini_batch_size": "5 rows", "error_threshold": -1}
    dep = write_deployment(tmp_path / "deploy", PASS_THROUGH, settings=settings)
    out = tmp_path / "out"
    result = daskscore.run(dep, tmp_path / "in", out, client=client, output_format=fmt)
    assert result.status == "Completed", result.summary.get("failures")
    assert result.rows_written == 20
    if fmt == "parquet":
        got = pq.read_table(out / "predictions").sort_by("id")
        for column in ("vec", "st", "mp", "dec"):
            if column != "dec":  # (a decimal's precision is its values' in run(): 5 here)
                assert got.column(column).type == table.column(column).type, column
            assert got.column(column).to_pylist() == table.column(column).to_pylist(), column
        assert got.column("dec").type.scale == 3
    else:
        frame = pd.concat([pd.read_csv(p, dtype=str) for p in (out / "predictions").iterdir()])
        frame = frame.assign(id=frame["id"].astype(int)).sort_values("id")
        assert [json.loads(v) for v in frame["vec"]] == table.column("vec").to_pylist()
        assert [json.loads(v) for v in frame["st"]] == table.column("st").to_pylist()
        maps = [None if v != v else [tuple(p) for p in json.loads(v)] for v in frame["mp"]]
        assert maps == table.column("mp").to_pylist()
        assert frame["dec"].tolist() == [f"{i}.125" for i in range(20)]


# --------------------------------------------------------------------------- append_row

ARRAYS = """
    import numpy as np
    import pandas as pd

    def init():
        pass

    def run(mini_batch):
        if len(mini_batch) == 1:  # a list of arrays
            return [np.arange(2000.0) for _ in mini_batch]
        return pd.DataFrame({"emb": [np.arange(2000.0) for _ in mini_batch]})
"""


@pytest.mark.parametrize("size", [1, 2], ids=["list", "frame"])
def test_append_row_writes_a_numpy_array_whole(client: Any, tmp_path: Path, size: int) -> None:
    dep = write_deployment(tmp_path / "deploy", ARRAYS, settings={"mini_batch_size": size})
    out = tmp_path / "out"
    result = daskscore.run(dep, write_inputs(tmp_path / "in", 2), out, client=client)
    assert result.status == "Completed"
    text = (out / "predictions.csv").read_text()
    assert "..." not in text
    lines = text.splitlines()
    assert len(lines) == 2, lines[:3]
    for line in lines:
        values = line.strip('"[]').split()
        assert [float(v) for v in values] == np.arange(2000.0).tolist()


# --------------------------------------------------------------------------- array-likes

# run() returns the file numbers of its mini-batch (f0003.csv: 3) as KIND says: a 1-D numpy
# array (how a column of numbers looks), a 1-D torch tensor (a classifier's argmax), a list of
# 0-d numpy arrays, or a 2-D tensor (one row of numbers per item).
ARRAY_LIKES = """
    import os

    import numpy as np

    def run(mini_batch):
        n = [int(os.path.basename(p)[1:5]) for p in mini_batch]
        kind = os.environ["KIND"]
        if kind == "numpy":
            return np.array(n)
        if kind == "zero-d":
            return [np.array(v) for v in n]
        import torch

        one_hot = torch.eye(8)[n]
        return torch.argmax(one_hot * 3.0, dim=1) if kind == "tensor" else one_hot
"""


def _array_likes_dataset(client: Any, root: Path, kind: str, fmt: str) -> pd.DataFrame:
    settings = {"mini_batch_size": 2, "environment_variables": {"KIND": kind}}
    dep = write_deployment(root / kind, ARRAY_LIKES, settings=settings)
    out = root / kind / "out"
    inputs = write_inputs(root / "in", N_FILES)
    result = daskscore.run(dep, inputs, out, client=client, output_format=fmt)
    assert result.status == "Completed" and result.rows_written == N_FILES, result.summary
    if fmt == "parquet":
        return pd.read_parquet(out / "predictions")
    return pd.concat([pd.read_csv(p) for p in sorted((out / "predictions").iterdir())])


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_a_tensor_or_0_d_arrays_are_a_column_of_numbers_as_a_numpy_array_is(
    client: Any, tmp_path: Path, fmt: str
) -> None:
    """Each mini-batch of a 1-D tensor or of a list of 0-d arrays failed with an internal
    traceback (ArrowInvalid, then "TypeError: iteration over a 0-d tensor")."""
    pytest.importorskip("torch")
    want = _array_likes_dataset(client, tmp_path, "numpy", fmt)
    assert want["prediction"].tolist() == list(range(N_FILES))
    for kind in ("tensor", "zero-d"):
        got = _array_likes_dataset(client, tmp_path, kind, fmt)
        pd.testing.assert_frame_equal(got, want, obj=kind)
    rows = _array_likes_dataset(client, tmp_path, "rows", fmt)["prediction"]
    if fmt == "csv":  # (a list: JSON in a CSV dataset)
        rows = rows.map(json.loads)
    assert [list(r).index(1.0) for r in rows] == list(range(N_FILES))


UNWRITABLE_LIST = """
    class Opaque:
        pass

    def run(mini_batch):
        if mini_batch[0].endswith("f0000.csv"):
            return [Opaque() for _ in mini_batch]
        return []
"""


def test_a_list_run_returned_that_a_dataset_cannot_hold_is_said_as_a_list(
    client: Any, tmp_path: Path
) -> None:
    """The error spoke of "column 'prediction' of run()'s DataFrame" and advised
    df['prediction'].astype(str) for a list; and a mini-batch of one file that returned
    nothing said "0 results for 1 files"."""
    settings = {"mini_batch_size": 1, "retry_settings": {"max_retries": 0}}
    dep = write_deployment(tmp_path / "deploy", UNWRITABLE_LIST, settings=settings)
    out = tmp_path / "out"
    inputs = write_inputs(tmp_path / "in", 2)
    result = daskscore.run(dep, inputs, out, client=client, output_format="parquet")
    first, second = sorted(result.failures, key=lambda f: f["mini_batch_id"])  # (one partial)
    error = first["error"]
    assert "ColumnError: run() returned a list whose items (the dataset's 'prediction' " in error
    assert "Opaque values (a type Arrow cannot convert)" in error, error
    assert "[str(v) for v in items]" in error and "DataFrame holds" not in error, error
    assert "astype" not in error and "Traceback" not in error, error
    assert second["error"] == "run() returned 0 results for 1 file", second


# --------------------------------------------------------------------------- mixed kinds

MIXED = """
    import numpy as np
    import pandas as pd

    def init():
        pass

    def run(mini_batch):
        if "f0000.csv" in mini_batch[0]:  # arrays here, text in the other mini-batch
            return pd.DataFrame({"v": [np.arange(2000.0) for _ in mini_batch]})
        return pd.DataFrame({"v": ["text" for _ in mini_batch]})
"""


def test_a_column_of_arrays_and_text_is_text_with_the_arrays_whole(
    client: Any, tmp_path: Path
) -> None:
    dep = write_deployment(tmp_path / "deploy", MIXED, settings={"mini_batch_size": 1})
    out = tmp_path / "out"
    inputs = write_inputs(tmp_path / "in", 2)
    result = daskscore.run(dep, inputs, out, client=client, output_format="parquet")
    assert result.status == "Completed"
    values = pd.read_parquet(out / "predictions")["v"].tolist()
    assert json.loads(values[0]) == np.arange(2000.0).tolist() and values[1] == "text"
    log = (out / "logs" / "sys" / "daskscore.txt").read_text()
    assert "WARNING daskscore: dataset column 'v' is list<" in log, log


def test_a_result_s_nested_column_is_staged_as_its_arrow_type() -> None:
    frame = pd.DataFrame({"n": [1, 2], "lst": [[1, 2], None], "mp": [[("a", 1)], [("b", 2)]]})
    staged = nested.writable(frame)
    assert staged["n"].dtype == "int64"
    assert staged["lst"].dtype == pd.ArrowDtype(pa.list_(pa.int64()))
    assert staged["mp"].dtype == pd.ArrowDtype(pa.map_(pa.string(), pa.int64()))
    with pytest.raises(nested.ColumnError, match=r"'bad' .* list values of more than one type"):
        nested.writable(pd.DataFrame({"bad": [[1, "a"], [2, "b"]]}))
    with pytest.raises(nested.ColumnError, match=r"'bad' .* the types dict, str together"):
        nested.writable(pd.DataFrame({"bad": [{"k": 1}, "a"]}))


def test_an_arrow_error_writing_the_dataset_is_the_job_s_verdict() -> None:
    """An error of Arrow's while the dataset is written (values it cannot write as the
    dataset's type) fails the job with its summary, not with an internal error."""
    layout = dataschema.unify([(pa.schema([("v", pa.list_(pa.int64()))]), 0)])
    exc = pa.ArrowInvalid("Could not convert 'x' with type str: Conversion failed for column v")
    conflict = layout.conflict(exc)
    assert isinstance(conflict, dataschema.SchemaConflict)
    assert "column 'v'" in str(conflict) and "ArrowInvalid" in str(conflict)
    assert layout.conflict(ValueError("something else")) is None


class _Unconvertible:
    """A value of a type Arrow has no conversion for."""


@pytest.mark.parametrize(
    ("values", "said"),
    [
        ([_Unconvertible(), _Unconvertible()], "_Unconvertible values (a type Arrow cannot"),
        ([1, "a"], "values of the types int, str together"),
        ([[1, "a"], [2]], "list values of more than one type inside"),
    ],
    ids=["one-odd-type", "two-types", "mixed-inside"],
)
def test_a_column_no_parquet_column_holds_is_refused_saying_why(values: list, said: str) -> None:
    frame = pd.DataFrame({"c": pd.Series(values, dtype=object)})
    with pytest.raises(nested.ColumnError) as info:
        nested.writable(frame)
    assert f"column 'c' of run()'s DataFrame holds {said}" in str(info.value), info.value


@pytest.mark.parametrize(
    ("writer", "holder"),
    [(ParquetWriter, "one Parquet column"), (CsvWriter, "one column of a CSV dataset")],
    ids=["parquet", "csv"],
)
def test_the_refusal_names_the_dataset_s_format(writer: type, holder: str) -> None:
    """A CSV dataset's mini-batch was refused in Parquet's name."""
    frame = datasets.prediction_frame([_Unconvertible(), _Unconvertible()])  # (a list returned)
    with pytest.raises(nested.ColumnError) as info:
        writer().encode(frame, {})
    message = str(info.value)
    assert f"_Unconvertible values (a type Arrow cannot convert), which {holder} cannot" in message
    assert ("Parquet" in message) == (writer is ParquetWriter), message
