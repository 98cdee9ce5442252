"""Dataset columns with nulls, ints beyond 2**53 or 64 bits, decimals and dates.

A dataset column's type is one across mini-batches, found in Arrow's types, which hold nulls:

* bools with ``None`` among them, and a column of ints or bools that holds only nulls in one
  mini-batch or is missing from it, are written as Arrow's bool and int64 with nulls, their
  values unchanged (bools were written False, big ints as float64, bools as the text 'True');
* numpy's int64 in one mini-batch and pandas' ``Int64`` with a gap in another (``uint8`` and
  ``UInt8``, ``bool`` and ``boolean`` too) make int64 with nulls (the job ended with an
  internal error, ``cannot convert NA to integer``, and no summary);
* a partition column of bools with nulls puts the null rows in Hive's null folder (they were
  in ``flag=False``);
* a Python int beyond int64 fails its mini-batch alone with a ``ColumnError`` naming the column,
  and the job goes on (it ended with an ``OverflowError`` and no summary);
* a CSV dataset writes each decimal with its own digits (``1.10``, not its mini-batch's
  widest scale, ``1.100``), and a Parquet dataset writes dates as ``date32`` (it wrote text).

Every job runs on the module's LocalCluster (the ``client`` fixture).
"""

from __future__ import annotations

import decimal
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from conftest import write_deployment, write_inputs

import daskscore
from daskscore.io import datasets

N_FILES = 6  # three mini-batches of two files
BIG = 2**60 + 1  # (float64 would make it 2**60)

NULLS = """
    import os

    import numpy as np
    import pandas as pd

    BIG = 2**60 + 1

    def run(mini_batch):
        m = int(os.path.basename(mini_batch[0])[1:5]) // 2
        frame = pd.DataFrame({
            "file": [os.path.basename(p) for p in mini_batch],
            "flag": [True, None],
            "match_id": [None, None] if m == 0 else [BIG + m, BIG],
            "is_dup": [None, None] if m == 0 else [True, False],
            "n_boxes": [3, 4] if m == 0 else pd.array([BIG, None], "Int64"),
            "u8": np.array([1, 2], "uint8") if m == 0 else pd.array([255, None], "UInt8"),
            "bn": [True, False] if m == 0 else pd.array([False, None], "boolean"),
        })
        if m != 1:
            frame["v"] = [BIG, -BIG]
        return frame
"""

#: each column's values in file order (None: a null), and its Arrow type in Parquet
WANT = {
    "flag": ([True, None] * 3, pa.bool_()),
    "match_id": ([None, None, BIG + 1, BIG, BIG + 2, BIG], pa.int64()),
    "is_dup": ([None, None, True, False, True, False], pa.bool_()),
    "n_boxes": ([3, 4, BIG, None, BIG, None], pa.int64()),
    "u8": ([1, 2, 255, None, 255, None], pa.uint8()),
    "bn": ([True, False, False, None, False, None], pa.bool_()),
    "v": ([BIG, -BIG, None, None, BIG, -BIG], pa.int64()),
}


def csv_text(values: list[Any]) -> list[str]:
    """``values`` as a CSV dataset writes them: a null as an empty field."""
    return ["" if v is None else str(v) for v in values]


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_nulls_and_big_ints_keep_their_values_across_mini_batches(
    client: Any, tmp_path: Path, fmt: str
) -> None:
    dep = write_deployment(tmp_path / "deploy", NULLS, settings={"mini_batch_size": 2})
    out = tmp_path / "out"

    result = daskscore.run(
        dep, write_inputs(tmp_path / "in", N_FILES), out, client=client, output_format=fmt
    )

    assert result.status == "Completed" and result.rows_written == N_FILES
    dest = out / "predictions"
    files = sorted(dest.glob(f"*.{fmt}"))
    if fmt == "parquet":
        table = ds.dataset([str(f) for f in files], format="parquet").to_table()
        assert table.column("file").to_pylist() == [f"f{i:04d}.csv" for i in range(N_FILES)]
        for column, (values, kind) in WANT.items():
            assert table.schema.field(column).type == kind, column
            assert table.column(column).to_pylist() == values, column
        back = pd.read_parquet(dest)  # (pandas reads the nulls back as its own nullable dtypes)
        assert back["match_id"].tolist()[2:] == [BIG + 1, BIG, BIG + 2, BIG]
    else:
        frames = [pd.read_csv(f, dtype=str, keep_default_na=False) for f in files]
        back = pd.concat(frames, ignore_index=True)
        for column, (values, _) in WANT.items():
            assert back[column].tolist() == csv_text(values), column
    assert json.loads((out / "job_summary.json").read_text())["failed_items"] == 0


FLAGS = """
    import os

    import pandas as pd

    def run(mini_batch):
        names = [os.path.basename(p) for p in mini_batch]
        return pd.DataFrame({"file": names, "flag": [True, None]})
"""


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_a_partition_column_of_bools_with_nulls_puts_them_in_the_null_folder(
    client: Any, tmp_path: Path, fmt: str
) -> None:
    dep = write_deployment(tmp_path / "deploy", FLAGS, settings={"mini_batch_size": 2})
    out = tmp_path / "out"

    result = daskscore.run(
        dep,
        write_inputs(tmp_path / "in", N_FILES),
        out,
        client=client,
        output_format=fmt,
        partition_on="flag",
    )

    assert result.status == "Completed"
    dest = out / "predictions"
    folders = sorted({p.parent.name for p in dest.rglob(f"*.{fmt}")})
    assert folders == sorted([f"flag={datasets.NULL_FOLDER}", "flag=True"]), folders
    hive = ds.HivePartitioning.discover()
    table = ds.dataset(str(dest), format=fmt, partitioning=hive).to_table()
    rows = dict(
        zip(table.column("file").to_pylist(), table.column("flag").to_pylist(), strict=True)
    )
    assert rows == {f"f{i:04d}.csv": ("True" if i % 2 == 0 else None) for i in range(N_FILES)}


BIGINT = """
    import os

    import pandas as pd

    def run(mini_batch):
        names = [os.path.basename(p) for p in mini_batch]
        big = names[0] == "f0002.csv"  # mini-batch 1 only
        return pd.DataFrame({"file": names, "h": pd.Series([2**70 if big else 5, 1], dtype=object)})
"""


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_an_int_beyond_64_bits_fails_its_mini_batch_alone_naming_the_column(
    client: Any, tmp_path: Path, fmt: str
) -> None:
    dep = write_deployment(
        tmp_path / "deploy",
        BIGINT,
        settings={"mini_batch_size": 2, "retry_settings": {"max_retries": 0}},
    )
    out = tmp_path / "out"

    result = daskscore.run(
        dep, write_inputs(tmp_path / "in", N_FILES), out, client=client, output_format=fmt
    )

    assert result.status == "Completed" and result.rows_written == N_FILES - 2
    summary = json.loads((out / "job_summary.json").read_text())
    assert summary["failed_mini_batches"] == 1 and summary["failed_items"] == 2, summary
    (failure,) = summary["failures"]
    assert failure["mini_batch_id"] == 1
    error = failure["error"]
    assert error.startswith("ColumnError: column 'h'") and str(2**70) in error, error
    assert "astype(str)" in error
    files = sorted((out / "predictions").glob(f"*.{fmt}"))
    read = pd.read_parquet if fmt == "parquet" else pd.read_csv
    back = pd.concat([read(f) for f in files], ignore_index=True)
    assert back["file"].tolist() == ["f0000.csv", "f0001.csv", "f0004.csv", "f0005.csv"]
    assert back["h"].tolist() == [5, 1, 5, 1]


DECIMALS = """
    import datetime
    import decimal
    import os

    import pandas as pd

    def run(mini_batch):
        names = [os.path.basename(p) for p in mini_batch]
        D = decimal.Decimal
        first = names[0] == "f0000.csv"
        return pd.DataFrame({
            "file": names,
            "price": [D("1.10"), D("-0.001") if first else D("12345678901234567890.123456789")],
            "day": [datetime.date(2024, 1, 2), None],
        })
"""


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_decimals_keep_their_digits_in_csv_and_dates_are_dates_in_parquet(
    client: Any, tmp_path: Path, fmt: str
) -> None:
    dep = write_deployment(tmp_path / "deploy", DECIMALS, settings={"mini_batch_size": 2})
    out = tmp_path / "out"

    result = daskscore.run(
        dep, write_inputs(tmp_path / "in", N_FILES), out, client=client, output_format=fmt
    )

    assert result.status == "Completed"
    files = sorted((out / "predictions").glob(f"*.{fmt}"))
    prices = ["1.10", "-0.001"] + ["1.10", "12345678901234567890.123456789"] * 2
    days = ["2024-01-02", ""] * 3
    if fmt == "csv":
        frames = [pd.read_csv(f, dtype=str, keep_default_na=False) for f in files]
        back = pd.concat(frames, ignore_index=True)
        assert back["price"].tolist() == prices
        assert back["day"].tolist() == days
    else:
        schema = pq.read_schema(files[0])
        assert schema.field("day").type == pa.date32()
        assert pa.types.is_decimal(schema.field("price").type)
        table = ds.dataset([str(f) for f in files], format="parquet").to_table()
        assert table.column("price").to_pylist() == [decimal.Decimal(p) for p in prices]
        assert [v.isoformat() if v else "" for v in table.column("day").to_pylist()] == days
