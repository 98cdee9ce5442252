"""What ``--resume`` compares of the code folder: the code Python imports, byte for byte — not
what the job writes there itself (its output folder inside the code folder, a cache ``init()``
writes next to ``__file__``, ``__pycache__``, a cache ``init()`` writes into the model folder)
— and what a shipped job's code bundle holds."""

from __future__ import annotations

import textwrap
from pathlib import Path

import conftest
import pytest
import yaml
from helpers import cli_args, kill_tree, start_cli, summary_of, wait_until

from daskscore.engine.resume import code_stats
from daskscore.io.shipping import pack

pytestmark = pytest.mark.timeout(150)

SCRIPT = """
    import os, time
    import helper

    def init():
        here = os.path.dirname(os.path.abspath(__file__))
        with open(os.path.join(here, "cache.json"), "w") as fh:
            fh.write(str(time.time()))  # rewritten by every init(), as a tokenizer cache is
        model = os.path.join(os.environ["AZUREML_MODEL_DIR"], "model")
        with open(os.path.join(model, "compiled.cache"), "w") as fh:
            fh.write(str(time.time()))  # a compiled model next to the weights

    def run(mini_batch):
        env = os.environ
        while os.path.basename(mini_batch[0]) == env["HOLD"] and not os.path.exists(env["GO"]):
            open(env["HELD"], "w").close()
            time.sleep(0.05)
        return [helper.tag(p) for p in mini_batch]
"""


def _code_dot(root: Path, **env: str) -> Path:
    """A deployment with ``code: .`` (its folder holds the script, a module and the model)."""
    root.mkdir(parents=True)
    (root / "score.py").write_text(textwrap.dedent(SCRIPT))
    (root / "helper.py").write_text("import os\n\ndef tag(p):\n    return os.path.basename(p)\n")
    (root / "model").mkdir()
    (root / "model" / "w.txt").write_text("3")
    doc = {
        "type": "model",
        "model": {"path": "model"},
        "code_configuration": {"code": ".", "scoring_script": "score.py"},
        "settings": {"mini_batch_size": 1, "environment_variables": env},
    }
    (root / "deployment.yml").write_text(yaml.safe_dump(doc))
    return root / "deployment.yml"


def test_a_job_writing_into_its_code_and_model_folders_resumes(tmp_path: Path) -> None:
    root = tmp_path / "job"
    held, go = tmp_path / "held", tmp_path / "go"
    dep = _code_dot(root, HOLD="f0005.csv", HELD=str(held), GO=str(go))
    inputs = conftest.write_inputs(tmp_path / "in", 6)
    out = root / "out"  # inside the code folder
    # killed in the middle: init() wrote its cache, the output folder holds the job
    _kill_at_the_last_then_resume(cli_args(dep, inputs, out), held, go)
    assert summary_of(out)["succeeded_items"] == 6


def _kill_at_the_last_then_resume(args: list[str], held: Path, go: Path) -> None:
    """Start the job, kill it once its last mini-batch is held, let that one go, resume."""
    job = start_cli(*args)
    try:
        wait_until(held.exists, job, "the job reached its last mini-batch")
    finally:
        kill_tree(job)
    go.touch()
    proc = conftest.run_cli(*args, "--resume", timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_an_output_folder_inside_the_model_folder_resumes(tmp_path: Path) -> None:
    """``model: {path: .}`` with the output folder inside: the job's own writes there were
    taken for a change of the model, and every resume was refused."""
    root = tmp_path / "job"
    held, go = tmp_path / "held", tmp_path / "go"
    dep = _code_dot(root, HOLD="f0005.csv", HELD=str(held), GO=str(go))
    (root / "score.py").write_text(
        textwrap.dedent(SCRIPT).replace("def init():", "def init():\n    return\n\ndef _no():")
    )
    doc = yaml.safe_load(dep.read_text())
    doc["model"]["path"] = "."
    dep.write_text(yaml.safe_dump(doc))
    inputs = conftest.write_inputs(tmp_path / "in", 6)
    out = root / "out"  # inside the model folder (and the code folder)
    _kill_at_the_last_then_resume(cli_args(dep, inputs, out), held, go)
    assert summary_of(out)["succeeded_items"] == 6
    rows = (out / "predictions.csv").read_text().split()
    assert rows == [f"f{i:04d}.csv" for i in range(6)]


def test_code_stats_are_the_code_python_imports(tmp_path: Path) -> None:
    root = tmp_path / "job"
    _code_dot(root)
    (root / "labels.txt").write_text("cat\n")
    before = code_stats(root, root / "score.py", skip=root / "out")
    (root / "cache.json").write_text("written by init()")
    (root / "labels.txt").write_text("dog\n")
    for folder in ("out/.daskscore", "__pycache__", "old/.daskscore-kept"):
        (root / folder).mkdir(parents=True)
        (root / folder / "x.py").write_text("written by a job")
    assert code_stats(root, root / "score.py", skip=root / "out") == before
    (root / "helper.py").write_text("def tag(p):\n    return p\n")  # a real edit
    assert code_stats(root, root / "score.py", skip=root / "out") != before


def test_the_code_bundle_leaves_out_job_outputs(tmp_path: Path) -> None:
    import io
    import zipfile

    root = tmp_path / "job"
    _code_dot(root)
    for folder in ("out", "old", "old/.daskscore"):
        (root / folder).mkdir()
        (root / folder / "predictions.csv").write_text("rows")
    names = zipfile.ZipFile(io.BytesIO(pack(root, skip=root / "out").data)).namelist()
    assert sorted(names) == ["deployment.yml", "helper.py", "model/w.txt", "score.py"]


@pytest.mark.timeout(60)
def test_a_named_pipe_in_the_code_folder_is_counted_not_opened(tmp_path: Path) -> None:
    """A named pipe named like a module (``helper.py``) in the code folder: the job's
    fingerprint, made at every job's start, counted it without opening it (opening one waits
    for a writer: every job hung before it started); a regular file there is told apart."""
    import os

    root = tmp_path / "code"
    root.mkdir()
    (root / "score.py").write_text("def run(mini_batch):\n    return []\n")
    os.mkfifo(root / "helper.py")
    stats = code_stats(root, root / "score.py")
    assert ["helper.py", None, "not a regular file"] in stats
    (root / "helper.py").unlink()
    (root / "helper.py").write_text("")
    assert code_stats(root, root / "score.py") != stats
