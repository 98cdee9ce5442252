"""``--set model.path=...`` means what the deployment file's ``model.path`` means: the model
under the name it is given (a symbolic link is not followed to its target's name, §2), and a
registered model (``azureml:...``) refused with the same clear message."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import write_deployment, write_inputs

from daskscore import cli

LISTS_MODEL_DIR = """
    import os

    def run(mini_batch):
        return [",".join(os.listdir(os.environ["AZUREML_MODEL_DIR"]))] * len(mini_batch)
"""


def _validate(capsys: pytest.CaptureFixture[str], dep: Path, *extra: str) -> tuple[int, str]:
    inputs = write_inputs(dep.parent / "in", 1)
    code = cli.main(["validate", str(dep), "-i", str(inputs), *extra])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_a_model_path_given_by_set_keeps_its_link_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    dep = write_deployment(tmp_path / "deploy", LISTS_MODEL_DIR, model_path=None)
    (tmp_path / "models" / "v3").mkdir(parents=True)
    (tmp_path / "models" / "v3" / "w.txt").write_text("3")
    os.symlink(tmp_path / "models" / "v3", tmp_path / "current")
    monkeypatch.chdir(tmp_path)
    code, text = _validate(capsys, dep, "--set", "model.path=current")
    assert code == 0, text
    assert "\n  current\n" in text and "v3" not in text


def test_a_registered_model_given_by_set_gets_the_files_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dep = write_deployment(tmp_path / "deploy", LISTS_MODEL_DIR)
    code, text = _validate(capsys, dep, "--set", "model.path=azureml:mymodel:1")
    assert code == 2, text
    assert "'azureml:mymodel:1' is a model registered in an Azure ML workspace" in text


@pytest.mark.parametrize("model", ["azureml:heart-classifier-mlflow@latest",
                                   {"name": "heart", "path": "azureml:heart:3"}])  # fmt: skip
def test_a_registered_model_without_a_scoring_script_gets_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model: object
) -> None:
    """Azure's no-code MLflow deployment (a registered model, no code_configuration): the one
    error says the model cannot be fetched here and how to point model.path at its folder,
    not that a scoring script is missing or that the reference is a path without MLmodel."""
    import yaml

    dep = tmp_path / "azml.yml"
    dep.write_text(yaml.safe_dump({"type": "model", "model": model, "name": "classifier"}))
    code, text = _validate(capsys, dep)
    assert code == 2, text
    errors = [line for line in text.splitlines() if line.startswith("daskscore: error:")]
    assert len(errors) == 1, text
    assert "registered in an Azure ML workspace, which cannot be fetched locally" in errors[0]
    assert "--set model.path=<folder>" in errors[0] and "MLmodel file" in errors[0]
    assert "code_configuration: missing" not in text and "has no MLmodel file" not in text
