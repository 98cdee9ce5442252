"""MLflow models deployed without a scoring script: the built-in scorer (contract §8).

A deployment with no ``code_configuration`` whose model folder holds an ``MLmodel`` file runs
``daskscore/builtin/mlflow/score.py``: ``predict`` once per file, typed by the signature,
comma-separated ``row,prediction,file`` rows.  The example ``configs/mlflow-breast-cancer`` is
scored end to end; the other tests change its inputs or write small models of their own.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

import daskscore
from daskscore.errors import ConfigError

if not os.environ.get("CI"):  # CI installs the mlflow extra: a missing mlflow fails there
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"mlflow(\.|$)")
        pytest.importorskip("mlflow")

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "configs" / "mlflow-breast-cancer"
DEPLOYMENT = EXAMPLE / "deployment.yml"
SAMPLES = EXAMPLE / "sample-inputs"
COLUMNS = ["row", "prediction", "file"]


def read_rows(path: Path) -> pd.DataFrame:
    """The append_row file: no header, comma-separated ``row,prediction,file``."""
    return pd.read_csv(path, header=None, names=COLUMNS)


def expected_predictions() -> dict[str, list[int]]:
    """The example model's predictions of every sample file, from its pickled pipeline."""
    from sklearn.exceptions import InconsistentVersionWarning

    with warnings.catch_warnings():  # CI may install another scikit-learn than train.py had
        warnings.simplefilter("ignore", InconsistentVersionWarning)
        with open(EXAMPLE / "model" / "model.pkl", "rb") as fh:
            pipeline = pickle.load(fh)
        return {
            p.name: pipeline.predict(pd.read_csv(p)).tolist() for p in sorted(SAMPLES.glob("*.csv"))
        }


def without_script(root: Path, model: Path, **settings: Any) -> Path:
    """A deployment with no code_configuration, scoring ``model`` (copied next to it)."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(model, root / "model")
    doc = {
        "type": "model",
        "model": {"name": "m", "path": "model"},
        "settings": {"max_concurrency_per_instance": 2, **settings},
    }
    path = root / "deployment.yml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- the example


def test_example_scores_every_row_comma_separated(client: Any, tmp_path: Path) -> None:
    result = daskscore.run(DEPLOYMENT, SAMPLES, tmp_path / "out", client=client)

    assert (result.status, result.succeeded_items, result.failed_items) == ("Completed", 6, 0)
    first = result.predictions.read_text(encoding="utf-8").splitlines()[0]
    assert first.split(",")[0] == "0" and first.endswith(",patients_0.csv"), first
    rows = read_rows(result.predictions)
    expected = expected_predictions()
    assert sorted(rows["file"].unique()) == sorted(expected)
    for name, predictions in expected.items():
        mine = rows[rows["file"] == name]
        assert mine["row"].tolist() == list(range(len(predictions)))
        assert mine["prediction"].tolist() == predictions, name


def test_deployment_points_at_the_builtin_scorer() -> None:
    dep = daskscore.load_deployment(DEPLOYMENT)
    assert dep.code == Path(daskscore.__file__).resolve().parent / "builtin" / "mlflow"
    assert dep.scoring_script == dep.code / "score.py"
    assert (dep.code / "parallel_run_step.settings.json").is_file()
    assert dep.model is not None and dep.model.path == EXAMPLE / "model"


# --------------------------------------------------------------------------- failing files


def write_inputs(folder: Path, bad_value: str = "abc") -> Path:
    """``a.csv`` (good), ``b.csv`` (``bad_value`` in row 1 of 'mean radius'), ``c.parquet``."""
    folder.mkdir(parents=True)
    shutil.copy(SAMPLES / "patients_0.csv", folder / "a.csv")
    bad = pd.read_csv(SAMPLES / "patients_1.csv").astype({"mean radius": object})
    bad.loc[1, "mean radius"] = bad_value
    bad.to_csv(folder / "b.csv", index=False)
    pd.read_csv(SAMPLES / "patients_2.csv").to_parquet(folder / "c.parquet", index=False)
    return folder


def test_a_wrong_typed_value_fails_only_its_file(client: Any, tmp_path: Path) -> None:
    inputs = write_inputs(tmp_path / "in")

    result = daskscore.run(
        DEPLOYMENT, inputs, tmp_path / "out", client=client, mini_batch_size=1, max_retries=0
    )

    assert (result.status, result.succeeded_items, result.failed_items) == ("Completed", 2, 1)
    (failure,) = result.failures
    assert [Path(f).name for f in failure["files"]] == ["b.csv"]
    for part in ("b.csv", "column 'mean radius'", "row 1", "'abc'", "double"):
        assert part in failure["error"], (part, failure["error"])
    rows = read_rows(result.predictions)
    assert rows.groupby("file").size().to_dict() == {"a.csv": 10, "c.parquet": 10}


def test_a_failed_file_leaves_the_rest_of_its_mini_batch(client: Any, tmp_path: Path) -> None:
    inputs = write_inputs(tmp_path / "in")

    result = daskscore.run(DEPLOYMENT, inputs, tmp_path / "out", client=client, mini_batch_size=3)

    # the rows of a.csv and c.parquet; b.csv counts as a failed item, its reason in the logs
    rows = read_rows(result.predictions)
    assert rows.groupby("file").size().to_dict() == {"a.csv": 10, "c.parquet": 10}
    assert (result.succeeded_items, result.failed_items) == (2, 1)
    assert "b.csv" in result.failures[0]["error"] and result.failures[0]["status"] == "RUN_DONE"
    logs = "".join(p.read_text() for p in (result.logs / "user" / "stdout").glob("*.txt"))
    assert "b.csv: column 'mean radius', row 1: value 'abc' is not a double" in logs
    # the failed file alone, where the scorer named it: not the files of its mini-batch
    assert [Path(f).name for f in result.failures[0]["files"]] == ["b.csv"]
    failed = result.failed_items_frame()
    assert [Path(f).name for f in failed["file"]] == ["b.csv"], failed
    assert failed["status"].tolist() == ["PARTIAL"]
    assert "column 'mean radius', row 1" in failed["error"][0]


def test_an_unsupported_file_type_fails_with_a_clear_message(client: Any, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(SAMPLES / "patients_0.csv", inputs / "a.csv")
    (inputs / "notes.txt").write_text("not a table\n")

    result = daskscore.run(
        DEPLOYMENT, inputs, tmp_path / "out", client=client, mini_batch_size=1, max_retries=0
    )

    assert (result.succeeded_items, result.failed_items) == (1, 1)
    (failure,) = result.failures
    assert "notes.txt: files of type '.txt' cannot be scored" in failure["error"]
    assert ".csv" in failure["error"] and ".png" in failure["error"]


# --------------------------------------------------------------------------- other outputs


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_dataset_outputs_have_the_three_columns(client: Any, tmp_path: Path, fmt: str) -> None:
    result = daskscore.run(DEPLOYMENT, SAMPLES, tmp_path / "out", client=client, output_format=fmt)

    parts = sorted((tmp_path / "out" / "predictions").glob(f"part-*.{fmt}"))
    frame = pd.concat(pd.read_parquet(p) if fmt == "parquet" else pd.read_csv(p) for p in parts)
    assert result.status == "Completed"
    assert list(frame.columns) == COLUMNS
    assert len(frame) == 60
    assert frame.groupby("file")["row"].max().to_dict() == {
        f"patients_{k}.csv": 9 for k in range(6)
    }


def test_score_returns_the_three_columns(client: Any) -> None:
    with daskscore.open_session(DEPLOYMENT, SAMPLES, client=client) as session:
        frame = client.compute(session.frame).result()

    assert list(frame.columns) == COLUMNS
    assert len(frame) == 60
    assert frame["prediction"].tolist() == sum(expected_predictions().values(), [])


# --------------------------------------------------------------------------- images

IMAGE_MODEL = """
    import numpy as np


    class MeanPixel:
        def predict(self, model_input, params=None):
            return np.asarray(model_input, dtype="float64").reshape(len(model_input), -1).mean(1)


    def _load_pyfunc(path):
        return MeanPixel()
"""


def save_image_model(folder: Path, code: Path) -> None:
    """A pyfunc model (a loader module): the mean pixel of a batch of 8x8 grey uint8 images."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"mlflow(\.|$)")
        import mlflow.pyfunc
        from mlflow.models import ModelSignature
        from mlflow.types import Schema, TensorSpec

        code.write_text(textwrap.dedent(IMAGE_MODEL), encoding="utf-8")
        signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype("uint8"), (-1, 8, 8))]))
        mlflow.pyfunc.save_model(
            str(folder),
            loader_module=code.stem,
            code_paths=[str(code)],
            signature=signature,
            pip_requirements=[],
        )


def test_images_are_arrays_shaped_by_the_signature(
    client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())  # not ./mlruns
    save_image_model(tmp_path / "image-model", tmp_path / "mean_pixel.py")
    dep = without_script(tmp_path / "deploy", tmp_path / "image-model", mini_batch_size=2)
    inputs = tmp_path / "in"
    inputs.mkdir()
    for value, size in ((10, (8, 8)), (200, (20, 12))):  # RGB; the second one is resized
        Image.new("RGB", size, (value,) * 3).save(inputs / f"grey_{value}.png")

    result = daskscore.run(dep, inputs, tmp_path / "out", client=client)

    assert (result.succeeded_items, result.failed_items) == (2, 0)
    rows = read_rows(result.predictions)
    assert rows["row"].isna().all()  # no row numbers for images
    assert dict(zip(rows["file"], rows["prediction"], strict=True)) == {
        "grey_10.png": 10.0,
        "grey_200.png": 200.0,
    }


# --------------------------------------------------------------------------- configuration


def test_a_missing_mlflow_gives_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r"no scoring script and an MLflow model") as info:
        daskscore.load_deployment(DEPLOYMENT)
    assert "pip install 'daskscore[mlflow]'" in str(info.value)


def test_no_script_and_no_mlflow_model_is_still_an_error(tmp_path: Path) -> None:
    model = tmp_path / "plain-model"
    model.mkdir()
    (model / "model.pkl").write_bytes(b"weights")
    dep = without_script(tmp_path / "deploy", model)
    with pytest.raises(ConfigError, match=r"code_configuration: missing.*has no MLmodel file"):
        daskscore.load_deployment(dep)


def test_train_py_regenerates_the_example(tmp_path: Path) -> None:
    shutil.copy(EXAMPLE / "train.py", tmp_path / "train.py")
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "train.py")],
        cwd=tmp_path,  # where older mlflow versions put their ./mlruns
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "held-out accuracy" in proc.stdout
    assert (tmp_path / "model" / "MLmodel").is_file()
    assert sorted(p.name for p in (tmp_path / "sample-inputs").iterdir()) == sorted(
        p.name for p in SAMPLES.iterdir()
    )
