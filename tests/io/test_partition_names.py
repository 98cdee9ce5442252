"""A partition value too long for a folder name (issue 17, item 9).

A hive-style folder ``column=value`` (the value percent-encoded) must fit the 255 bytes a file
system allows in one name.  A mini-batch whose result holds a longer value fails with a message
naming the column and the value (cut short); the job completes with the other mini-batches'
rows and writes its summary.  A shortened or hashed folder name is not used: hive readers take
the value from the folder name, and would read back a value run() never returned.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
import pytest
from helpers import cli, make_job, show, summary_of

from daskscore.io.datasets import MAX_NAME_BYTES, PartitionValueError, check_partition_values

SCRIPT = """
    import os

    import pandas as pd

    def init():
        pass

    def run(mini_batch):
        names = [os.path.basename(path) for path in mini_batch]
        return pd.DataFrame(
            {"name": names, "group": ["g" * 300 if n == "f0001.csv" else "short" for n in names]}
        )
"""


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_a_partition_value_too_long_for_a_folder_fails_its_mini_batch(
    tmp_path: Path, fmt: str
) -> None:
    settings = {"mini_batch_size": 1, "retry_settings": {"max_retries": 0}}
    dep, inputs, out = make_job(tmp_path, SCRIPT, n_files=3, settings=settings)

    proc = cli(dep, inputs, out, "--output-format", fmt, "--partition-on", "group")

    assert proc.returncode == 0, show(proc)
    assert "internal error" not in proc.stderr, show(proc)
    s = summary_of(out)
    assert s["status"] == "Completed"
    assert (s["succeeded_items"], s["failed_items"], s["rows_written"]) == (2, 1, 2)
    [failure] = s["failures"]
    assert failure["files"] == [str(inputs / "f0001.csv")]
    error = failure["error"]
    assert error.startswith("PartitionValueError: partition_on column 'group': the value 'ggg")
    assert "(300 characters)" in error and "g" * 61 not in error  # the value cut short
    assert "Traceback" not in error
    assert "partition_on column 'group'" in (out / "logs" / "job_error.txt").read_text()
    table = ds.dataset(str(out / "predictions"), format=fmt, partitioning="hive").to_table()
    frame = table.to_pandas().sort_values("name")
    assert list(frame["name"]) == ["f0000.csv", "f0002.csv"]
    assert set(frame["group"].astype(str)) == {"short"}
    assert not (out / ".daskscore").exists()


def test_the_limit_counts_the_column_and_the_encoded_bytes() -> None:
    column = "group"
    fits = "a" * (MAX_NAME_BYTES - len(column) - 1)
    check_partition_values(pd.DataFrame({column: [fits, "b"]}), [column])
    with pytest.raises(PartitionValueError, match="of 256 bytes"):
        check_partition_values(pd.DataFrame({column: [fits + "a"]}), [column])
    # 'é' is 2 bytes of UTF-8, each written %XX: 6 bytes a character in the folder name
    with pytest.raises(PartitionValueError, match=r"\(50 characters\)"):
        check_partition_values(pd.DataFrame({column: ["é" * 50]}), [column])
    # a column run() did not return is the driver's to name, not this check's
    check_partition_values(pd.DataFrame({"other": [fits * 2]}), [column])


MIXED = """
    import os
    import pandas as pd

    def init():
        pass

    def run(mini_batch):
        names = [os.path.basename(path) for path in mini_batch]
        if "f0001.csv" in names:  # ints and text in one column
            return pd.DataFrame({"name": names, "label": [7] + ["cat"] * (len(names) - 1)})
        if "f0003.csv" in names:  # one column name twice
            return pd.DataFrame([[n, 1] for n in names], columns=["name", "name"])
        return pd.DataFrame({"name": names, "label": ["dog"] * len(names)})
"""


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_a_result_no_dataset_can_hold_fails_its_mini_batch_naming_the_column(
    tmp_path: Path, fmt: str
) -> None:
    """A DataFrame whose column mixes ints and text, or that names a column twice, cannot be
    staged (a Parquet part); it used to end the job with an internal error and no summary."""
    settings = {"mini_batch_size": 2, "retry_settings": {"max_retries": 0}}
    dep, inputs, out = make_job(tmp_path, MIXED, n_files=6, settings=settings)

    proc = cli(dep, inputs, out, "--output-format", fmt)

    assert proc.returncode == 0, show(proc)
    assert "inside daskscore" not in proc.stderr, show(proc)
    s = summary_of(out)
    assert (s["succeeded_items"], s["failed_items"], s["rows_written"]) == (2, 4, 2)
    errors = {f["mini_batch_id"]: f["error"] for f in s["failures"]}
    assert errors[0].startswith("ColumnError: column 'label' of run()'s DataFrame holds values")
    assert "int, str" in errors[0] and "astype(str)" in errors[0]
    assert errors[1].startswith("ColumnError: run() returned a DataFrame with the column name")
    assert all("Traceback" not in e for e in errors.values()), errors
    table = ds.dataset(str(out / "predictions"), format=fmt).to_table()
    assert sorted(table.to_pandas()["name"]) == ["f0004.csv", "f0005.csv"]


NULLS = """
    import os

    import pandas as pd

    def init():
        pass

    def run(mini_batch):
        names = [os.path.basename(path) for path in mini_batch]
        labels = {"f0000.csv": None, "f0001.csv": float("nan"), "f0002.csv": "nan"}
        return pd.DataFrame({"name": names, "label": [labels.get(n, "cat") for n in names]})
"""


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_a_null_partition_value_reads_back_as_null(tmp_path: Path, fmt: str) -> None:
    """None and NaN used to make the folder ``label=nan``, read back as the text 'nan': they go
    into Hive's folder for nulls, read back as null; the text 'nan' stays text."""
    settings = {"mini_batch_size": 2, "retry_settings": {"max_retries": 0}}
    dep, inputs, out = make_job(tmp_path, NULLS, n_files=4, settings=settings)

    proc = cli(dep, inputs, out, "--output-format", fmt, "--partition-on", "label")

    assert proc.returncode == 0, show(proc)
    folders = sorted(p.name for p in (out / "predictions").iterdir())
    assert folders == ["label=__HIVE_DEFAULT_PARTITION__", "label=cat", "label=nan"], folders
    table = ds.dataset(str(out / "predictions"), format=fmt, partitioning="hive").to_table()
    names, labels = table.column("name").to_pylist(), table.column("label").to_pylist()
    got = dict(zip(names, labels, strict=True))
    assert got == {"f0000.csv": None, "f0001.csv": None, "f0002.csv": "nan", "f0003.csv": "cat"}


def test_the_text_of_hive_s_null_folder_is_refused() -> None:
    frame = pd.DataFrame({"label": ["cat", "__HIVE_DEFAULT_PARTITION__", None]})
    with pytest.raises(PartitionValueError, match="column 'label'.*read it back as null"):
        check_partition_values(frame, ["label"])
    check_partition_values(frame.iloc[[0, 2]], ["label"])  # a null is no such text
