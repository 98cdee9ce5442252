"""The built-in MLflow scorer's reading of input values: signature types kept exactly.

Each test saves a small pyfunc model (a loader module echoing its input as text) with a
signature of its own, deploys it without a scoring script and scores real files.
"""

from __future__ import annotations

import os
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import daskscore

if not os.environ.get("CI"):  # CI installs the mlflow extra: a missing mlflow fails there
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"mlflow(\.|$)")
        pytest.importorskip("mlflow")

from test_mlflow import read_rows, without_script  # noqa: E402

ECHO_MODEL = """
    import os


    class Echo:
        def predict(self, model_input, params=None):
            once = os.environ.get("FAIL_ONCE")  # (a marker file: the first try fails)
            if once and not os.path.exists(once):
                open(once, "w").close()
                raise RuntimeError("the first try fails")
            return ["|".join(repr(v) for v in row) for row in model_input.itertuples(False)]


    def _load_pyfunc(path):
        return Echo()
"""


def echo_deployment(tmp_path: Path, columns: dict[str, str], **settings: Any) -> Path:
    """A deployment of a model returning each row's values (``repr``, ``|``-joined), typed by
    a signature of ``columns`` (name: MLflow type)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"mlflow(\.|$)")
        import mlflow.pyfunc
        from mlflow.models import ModelSignature
        from mlflow.types import ColSpec, Schema

        code = tmp_path / "echo_model.py"
        code.write_text(textwrap.dedent(ECHO_MODEL), encoding="utf-8")
        signature = ModelSignature(
            inputs=Schema([ColSpec(kind, name) for name, kind in columns.items()])
        )
        mlflow.pyfunc.save_model(
            str(tmp_path / "echo"),
            loader_module=code.stem,
            code_paths=[str(code)],
            signature=signature,
            pip_requirements=[],
        )
    return without_script(tmp_path / "deploy", tmp_path / "echo", **settings)


@pytest.fixture(autouse=True)
def _no_mlruns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())  # not ./mlruns


# --------------------------------------------------------------------------- string columns


@pytest.mark.parametrize("tabular", [False, True])
def test_string_columns_keep_their_text(client: Any, tmp_path: Path, tabular: bool) -> None:
    dep = echo_deployment(tmp_path, {"code": "string", "n": "long"})
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "codes.csv").write_text("code,n\n007,1\n0123,2\n1e3,3\nTrue,4\n", encoding="utf-8")

    result = daskscore.run(dep, inputs, tmp_path / "out", client=client, tabular=tabular)

    assert (result.succeeded_items, result.failed_items) == ((4, 0) if tabular else (1, 0))
    lines = result.predictions.read_text(encoding="utf-8").splitlines()
    predictions = [line.split(",")[1] for line in lines]
    assert predictions == ["'007'|1", "'0123'|2", "'1e3'|3", "'True'|4"]


def _codes(tmp_path: Path) -> Path:
    inputs = tmp_path / "in"
    inputs.mkdir()
    # (every code looks like a number: pandas alone would read 7, 123 and 1000.0)
    (inputs / "codes.csv").write_text("code,n\n007,1\n0123,2\n1e3,3\n", encoding="utf-8")
    return inputs


CODES = ["'007'|1", "'0123'|2", "'1e3'|3"]


def test_validate_reads_string_columns_as_a_tabular_job_does(tmp_path: Path) -> None:
    """``validate`` read a tabular split with pandas' guesses ("007" became 7) where the
    job reads the signature's string, long and integer columns as text."""
    dep = echo_deployment(tmp_path, {"code": "string", "n": "long"})

    checked = daskscore.validate(dep, _codes(tmp_path), tabular=True, mini_batch_size="10 rows")

    assert checked.ok, checked.error
    assert [line.split(",")[1] for line in checked.rows] == CODES


def test_score_reads_string_columns_as_a_tabular_job_does(client: Any, tmp_path: Path) -> None:
    dep = echo_deployment(tmp_path, {"code": "string", "n": "long"})

    ddf = daskscore.score(dep, _codes(tmp_path), client=client, tabular=True, progress=False)
    try:
        frame = ddf.compute()
    finally:
        ddf.attrs["daskscore"].close()

    assert frame["prediction"].tolist() == CODES


def test_a_retried_tabular_mini_batch_reads_string_columns_as_its_first_try(
    client: Any, tmp_path: Path
) -> None:
    """A retry reads its split again: with the signature's text columns too (not only a
    task's first read)."""
    settings = {
        "retry_settings": {"max_retries": 1},
        "environment_variables": {"FAIL_ONCE": str(tmp_path / "failed-once")},
    }
    dep = echo_deployment(tmp_path, {"code": "string", "n": "long"}, **settings)

    result = daskscore.run(dep, _codes(tmp_path), tmp_path / "out", client=client, tabular=True)

    assert (tmp_path / "failed-once").exists()
    assert (result.succeeded_items, result.failed_items) == (3, 0)
    lines = result.predictions.read_text(encoding="utf-8").splitlines()
    assert [line.split(",")[1] for line in lines] == CODES


# --------------------------------------------------------------------------- numbers in range

LONGS = ["1", "9223372036854775807", "-9223372036854775808", "007", "2e3"]


@pytest.mark.parametrize("tabular", [False, True])
def test_integers_arrive_exactly(client: Any, tmp_path: Path, tabular: bool) -> None:
    dep = echo_deployment(tmp_path, {"n": "long", "k": "integer"})
    inputs = tmp_path / "in"
    inputs.mkdir()
    ints = ["1", "2147483647", "-2147483648", "4", "5"]
    rows = [f"{n},{k}" for n, k in zip(LONGS, ints, strict=True)]
    (inputs / "big.csv").write_text("n,k\n" + "\n".join(rows) + "\n", encoding="utf-8")

    result = daskscore.run(dep, inputs, tmp_path / "out", client=client, tabular=tabular)

    assert result.failed_items == 0, result.failures
    lines = result.predictions.read_text(encoding="utf-8").splitlines()
    assert [line.split(",")[1] for line in lines] == [
        "1|1",
        "9223372036854775807|2147483647",
        "-9223372036854775808|-2147483648",
        "7|4",
        "2000|5",
    ]


@pytest.mark.parametrize(
    ("kind", "value", "shown"),
    [
        ("integer", "3000000000", "'3000000000'"),  # (integers are read as text)
        ("integer", "-2147483649", "'-2147483649'"),
        ("long", "1e19", "'1e19'"),
        ("long", "9223372036854775808", "'9223372036854775808'"),
        ("float", "1e40", "1e+40"),
    ],
)
def test_a_value_out_of_the_types_range_fails_its_file(
    client: Any, tmp_path: Path, kind: str, value: str, shown: str
) -> None:
    dep = echo_deployment(tmp_path, {"v": kind})
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "a.csv").write_text("v\n1\n2\n", encoding="utf-8")
    (inputs / "b.csv").write_text(f"v\n1\n{value}\n", encoding="utf-8")

    result = daskscore.run(
        dep, inputs, tmp_path / "out", client=client, mini_batch_size=1, max_retries=0
    )

    assert (result.succeeded_items, result.failed_items) == (1, 1)
    (failure,) = result.failures
    expected = f"b.csv: column 'v', row 1: value {shown} is not a {kind}"
    assert expected in failure["error"], failure["error"]


# --------------------------------------------------------------------------- empty tables


@pytest.mark.parametrize("size", [1, 2, 3])
def test_a_header_only_file_fails_alone_whatever_its_mini_batch(
    client: Any, tmp_path: Path, size: int
) -> None:
    dep = echo_deployment(tmp_path, {"v": "long"})
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "a_empty.csv").write_text("v\n", encoding="utf-8")
    (inputs / "b_one.csv").write_text("v\n1\n", encoding="utf-8")
    (inputs / "c_three.csv").write_text("v\n1\n2\n3\n", encoding="utf-8")

    result = daskscore.run(
        dep, inputs, tmp_path / "out", client=client, mini_batch_size=size, max_retries=0
    )

    assert (result.succeeded_items, result.failed_items) == (2, 1)
    failed = result.failed_items_frame()
    assert [Path(f).name for f in failed["file"]] == ["a_empty.csv"], failed
    assert "a_empty.csv: the file has no rows" in failed["error"][0]
    assert read_rows(result.predictions).groupby("file").size().to_dict() == {
        "b_one.csv": 1,
        "c_three.csv": 3,
    }


# --------------------------------------------------------------------------- datetimes


def test_datetimes_of_several_iso_formats_are_read(client: Any, tmp_path: Path) -> None:
    dep = echo_deployment(tmp_path, {"t": "datetime"})
    inputs = tmp_path / "in"
    inputs.mkdir()
    values = ["2024-01-01", "2024-01-02 10:30:00", "2024-01-03T04:05:06.5"]
    (inputs / "good.csv").write_text("t\n" + "\n".join(values) + "\n", encoding="utf-8")
    (inputs / "bad.csv").write_text("t\n2024-01-01\nnot a date\n", encoding="utf-8")

    result = daskscore.run(
        dep, inputs, tmp_path / "out", client=client, mini_batch_size=1, max_retries=0
    )

    assert (result.succeeded_items, result.failed_items) == (1, 1)
    rows = read_rows(result.predictions)
    assert rows["prediction"].tolist() == [repr(pd.Timestamp(v)) for v in values]
    (failure,) = result.failures
    assert "bad.csv: column 't', row 1: value 'not a date' is not a datetime" in failure["error"]


# --------------------------------------------------------------------------- file types


@pytest.mark.parametrize("tabular", [False, True])
def test_pqt_files_are_read_as_parquet(client: Any, tmp_path: Path, tabular: bool) -> None:
    dep = echo_deployment(tmp_path, {"v": "long"})
    inputs = tmp_path / "in"
    inputs.mkdir()
    pd.DataFrame({"v": [1, 2]}).to_parquet(inputs / "a.pqt", index=False)
    pd.DataFrame({"v": [3]}).to_parquet(inputs / "b.pq", index=False)

    result = daskscore.run(dep, inputs, tmp_path / "out", client=client, tabular=tabular)

    assert (result.succeeded_items, result.failed_items) == ((3, 0) if tabular else (2, 0))
    lines = result.predictions.read_text(encoding="utf-8").splitlines()
    assert [line.split(",")[1] for line in lines] == ["1", "2", "3"]


# --------------------------------------------------------------------------- model URLs


def test_an_mlflow_model_may_be_given_as_a_url(tmp_path: Path, moto_s3: Any) -> None:
    import fsspec
    from storage_emulators import make_bucket

    from daskscore.cluster.local import local_cluster
    from daskscore.errors import UsageError

    dep = echo_deployment(tmp_path, {"code": "string"})
    bucket = make_bucket(moto_s3)
    fs, base = fsspec.core.url_to_fs(bucket, **moto_s3["storage_options"])
    fs.put(str(tmp_path / "echo"), f"{base}/models/echo", recursive=True)
    fs.pipe({f"{base}/plain/model.pkl": b"weights"})
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "codes.csv").write_text("code\n007\n1e3\n", encoding="utf-8")

    with local_cluster(1, dashboard=False) as handle:  # started with the emulator's credentials
        result = daskscore.run(
            dep,
            inputs,
            tmp_path / "out",
            client=handle.client,
            tabular=True,
            set={"model.path": f"{bucket}/models/echo"},
        )
    lines = result.predictions.read_text(encoding="utf-8").splitlines()
    assert [line.split(",")[1] for line in lines] == ["'007'", "'1e3'"]
    with pytest.raises(UsageError, match=r"holds no MLmodel file .*give a scoring script"):
        daskscore.run(dep, inputs, tmp_path / "o2", set={"model.path": f"{bucket}/plain"})
