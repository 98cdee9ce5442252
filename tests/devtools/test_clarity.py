"""Failures said as what they are, with the next step: the real ``daskscore`` command.

* a scoring script whose import fails is reported as an import (not "init() raised"), with the
  missing module's name and where to install it — by ``run`` and by ``validate``;
* a misspelt ``scoring_script`` gets a did-you-mean from the code folder's files;
* a file ``init()`` does not find under ``AZUREML_MODEL_DIR`` is followed by what that folder
  holds;
* ``validate --mini-batch N`` tries mini-batch ``N``;
* a job where no item succeeded has a red verdict (stderr, ``job_result.txt``, ``report.html``)
  with the replay command under ``--pdb``, and still exits 0 as Azure does.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from conftest import run_cli, write_deployment
from helpers import cli, make_job, show, summary_of

pytestmark = pytest.mark.timeout(200)

NAMES = """
    import os

    def run(mini_batch):
        return [os.path.basename(p) for p in mini_batch]
"""


def test_an_import_error_is_reported_as_one_with_the_module_to_install(tmp_path: Path) -> None:
    script = "import no_such_module_xyz  # noqa\n" + textwrap.dedent(NAMES)
    dep, inputs, out = make_job(tmp_path, script, n_files=2)
    proc = cli(dep, inputs, out)
    assert proc.returncode == 1, show(proc)
    assert "Job Failed: importing the scoring script score.py failed" in proc.stderr, show(proc)
    assert "ModuleNotFoundError: No module named 'no_such_module_xyz'" in proc.stderr
    assert "'no_such_module_xyz' is not installed in the Python environment the workers" in (
        proc.stderr
    )
    assert "init() of the scoring script raised" not in proc.stderr
    assert "First error (import):" in proc.stderr
    summary = summary_of(out)
    assert summary["init_error"].startswith("importing the scoring script score.py failed")
    report = (out / "report.html").read_text()
    assert ">Importing the scoring script failed</h2>" in report

    check = run_cli("validate", str(dep), "--input", str(inputs))
    assert check.returncode == 1, show(check)
    assert "import failed" in check.stderr
    assert "'no_such_module_xyz' is not installed" in check.stderr, show(check)


def test_a_relative_import_in_the_script_is_said_to_need_the_module_s_name(
    tmp_path: Path,
) -> None:
    script = "from .helpers import X  # noqa\n" + textwrap.dedent(NAMES)
    dep, inputs, _ = make_job(tmp_path, script, n_files=2)
    (dep.parent / "code" / "helpers.py").write_text("X = 1\n")

    check = run_cli("validate", str(dep), "--input", str(inputs))

    assert check.returncode == 1, show(check)
    assert "attempted relative import" in check.stderr, show(check)
    assert "score.py is imported as a top-level module" in check.stderr
    assert "(`from utils import x`)" in check.stderr
    assert "install the versions" not in check.stderr


def test_a_misspelt_scoring_script_gets_a_did_you_mean(tmp_path: Path) -> None:
    dep = write_deployment(
        tmp_path / "deploy",
        NAMES,
        extra_code={"helpers.py": "X = 1\n"},
        raw={
            "type": "model",
            "code_configuration": {"code": "code", "scoring_script": "scoer.py"},
            "settings": {"mini_batch_size": 2},
        },
    )
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "a.csv").write_text("x\n1\n")
    for args in (
        ["run", str(dep), "-i", str(inputs), "-o", str(tmp_path / "out"), "--no-progress"],
        ["validate", str(dep), "-i", str(inputs)],
    ):
        proc = run_cli(*args)
        assert proc.returncode == 2, show(proc)
        assert "'scoer.py' not found in the code folder" in proc.stderr, show(proc)
        assert "(did you mean 'score.py'?)" in proc.stderr, show(proc)


MODEL_LOOKUP = """
    import os

    def init():
        global MODEL
        path = os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.pt")  # it is in model/
        MODEL = open(path, "rb").read()

    def run(mini_batch):
        return list(mini_batch)
"""


def test_a_model_file_not_found_is_followed_by_what_the_model_folder_holds(
    tmp_path: Path,
) -> None:
    dep = write_deployment(
        tmp_path / "deploy",
        MODEL_LOOKUP,
        model_files={"model.pt": b"w", "vocab/words.txt": "a b"},
    )
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "a.csv").write_text("x\n1\n")
    proc = run_cli("run", str(dep), "-i", str(inputs), "-o", str(tmp_path / "out"), "--no-progress")
    assert proc.returncode == 1, show(proc)
    assert "FileNotFoundError" in proc.stderr
    assert "was looked for under AZUREML_MODEL_DIR" in proc.stderr, show(proc)
    for entry in ("model/", "model/model.pt", "model/vocab/", "model/vocab/words.txt"):
        assert f"$AZUREML_MODEL_DIR/{entry}\n" in proc.stderr, show(proc)

    check = run_cli("validate", str(dep), "--input", str(inputs))
    assert check.returncode == 1, show(check)
    assert "$AZUREML_MODEL_DIR/model/model.pt" in check.stderr, show(check)


def test_validate_tries_the_mini_batch_it_is_told(tmp_path: Path) -> None:
    dep, inputs, _ = make_job(tmp_path, NAMES, n_files=6, settings={"mini_batch_size": 2})
    proc = run_cli("validate", str(dep), "--input", str(inputs), "--mini-batch", "2")
    assert proc.returncode == 0, show(proc)
    assert "3 mini-batches of files; trying mini-batch 2" in proc.stdout
    shown = [line.strip() for line in proc.stdout.splitlines() if line.startswith("  f")]
    assert shown == ["f0004.csv", "f0005.csv"], show(proc)

    beyond = run_cli("validate", str(dep), "--input", str(inputs), "--mini-batch", "3")
    assert beyond.returncode == 2, show(beyond)
    assert "--mini-batch 3:" in beyond.stderr and "numbered 0 to 2" in beyond.stderr


def test_a_job_where_nothing_succeeded_has_a_red_verdict_and_exit_0(tmp_path: Path) -> None:
    script = """
        def run(mini_batch):
            raise RuntimeError("every mini-batch fails")
    """
    dep, inputs, out = make_job(
        tmp_path, script, n_files=4, settings={"retry_settings": {"max_retries": 0}}
    )
    proc = cli(dep, inputs, out)
    assert proc.returncode == 0, show(proc)  # Azure's: error_threshold -1 allows them
    assert "Job Completed, but no item succeeded: 0 of 4 items succeeded" in proc.stderr
    assert f"daskscore replay {out} --mini-batch 0 --pdb" in proc.stderr, show(proc)
    assert summary_of(out)["replay"] == f"daskscore replay {out} --mini-batch 0"
    result = (out / "logs" / "job_result.txt").read_text()
    assert result.startswith("Job Completed (no item succeeded)")
    report = (out / "report.html").read_text()
    assert '<span class="badge bad" data-status="Completed">' in report
    assert "Completed, but no item succeeded" in report
    assert f"daskscore replay {out} --mini-batch 0 --pdb" in report
    assert json.loads((out / "job_summary.json").read_text())["status"] == "Completed"
