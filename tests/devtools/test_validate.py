"""The local debugging loop: ``daskscore validate`` (a dry run of one mini-batch in this
process, no cluster), :func:`daskscore.devtools.validate.collect_problems` and ``daskscore init``.

Most tests call :func:`daskscore.cli.main` in this process (fast; output through ``capsys``);
``--pdb`` and one scaffold round trip go through ``python -m daskscore`` in a subprocess.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import distributed
import psutil
import pytest
import yaml
from conftest import run_cli, write_deployment, write_inputs
from helpers import sigterm_when

from daskscore import cli
from daskscore.config import RetrySettings, Settings
from daskscore.config.loader import load_deployment
from daskscore.devtools import scaffold
from daskscore.devtools.validate import WARNING, collect_problems

GOOD = """
    import os, sys
    import pandas as pd

    def init():
        global env
        model_dir = os.environ["AZUREML_MODEL_DIR"]
        env = [
            os.path.exists(os.path.join(model_dir, "model", "model.pt")),
            os.path.isdir(os.environ["AZUREML_BI_OUTPUT_PATH"]),
            os.environ.get("MY_FLAG"),
            sys.argv[0].endswith("score.py") and len(sys.argv) == 1,
        ]
        print("init says hello")

    def run(mini_batch):
        names = [os.path.basename(p) for p in mini_batch]
        return pd.DataFrame({"file": names, "env": "-".join(map(str, env))})
"""

RAISES = """
    def init():
        pass

    def helper(path):
        raise ValueError(f"cannot score {path}")

    def run(mini_batch):
        return [helper(p) for p in mini_batch]
"""


def validate(*args: str) -> int:
    return cli.main(["validate", *args])


@pytest.fixture
def good(tmp_path: Path) -> tuple[Path, Path]:
    dep = write_deployment(
        tmp_path / "good", GOOD, settings={"environment_variables": {"MY_FLAG": "on"}}
    )
    return dep, write_inputs(tmp_path / "inputs", 7)


# --------------------------------------------------------------------------- collect_problems


def test_collect_problems_reports_every_wrong_setting_at_once(tmp_path: Path) -> None:
    dep = write_deployment(
        tmp_path / "d",
        RAISES,
        settings={"mini_batch_size": "lots", "error_threshold": "x", "logging_level": "loud"},
    )
    problems = collect_problems(dep)
    assert len(problems) == 3, problems
    for key in ("mini_batch_size", "error_threshold", "logging_level"):
        assert sum(f"settings.{key}:" in p for p in problems) == 1, (key, problems)


def test_collect_problems_lists_settings_code_model_overrides_and_unknown_keys(
    tmp_path: Path,
) -> None:
    dep = write_deployment(tmp_path / "d", RAISES, settings={"retry_settings": {"timeout": -1}})
    raw = yaml.safe_load(dep.read_text())
    raw["code_configuration"]["scoring_script"] = "missing.py"
    raw["model"]["path"] = "no-such-model"
    raw["resources"]["instance_count"] = 0
    raw["settings"]["mini_batch_sise"] = 3
    raw["settings"]["retry_settings"]["max_retries"] = "often"
    dep.write_text(yaml.safe_dump(raw))
    overrides = {"no.such.key": "1", "max_concurrency_per_instance": "0"}
    problems = collect_problems(dep, overrides)
    errors = [p for p in problems if not p.startswith(WARNING)]
    for needle in (
        "unknown key 'settings.mini_batch_sise' (did you mean 'settings.mini_batch_size'?)",
        "override: unknown key 'no.such.key'",
        "settings.max_concurrency_per_instance:",
        "settings.retry_settings.timeout:",
        "settings.retry_settings.max_retries:",
        "resources.instance_count:",
        "code_configuration.scoring_script:",
        "model.path:",
    ):
        assert sum(needle in p for p in errors) == 1, (needle, problems)
    assert len(errors) == 8 and errors == problems, problems
    lenient = collect_problems(dep, overrides, lenient=True)  # the unknown key: a warning
    assert lenient[:7] == errors[1:]
    assert len(lenient) == 8 and lenient[7].startswith(f"{WARNING}{dep.resolve()}: unknown key")


def test_collect_problems_of_a_good_or_unreadable_file(tmp_path: Path) -> None:
    dep = write_deployment(tmp_path / "d", RAISES)
    assert collect_problems(dep) == []
    load_deployment(dep)  # and it does load
    dep.write_text("settings: [unclosed\n")
    (problem,) = collect_problems(dep)
    assert "not valid YAML" in problem
    (problem,) = collect_problems(tmp_path / "nowhere.yml")
    assert "not found" in problem


# --------------------------------------------------------------------------- validate


def test_validate_runs_the_first_mini_batch_here_without_a_cluster(
    good: tuple[Path, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_cluster(*args: object, **kwargs: object) -> None:
        raise AssertionError("validate started a LocalCluster")

    monkeypatch.setattr(distributed.LocalCluster, "__init__", no_cluster)
    children = {p.pid for p in psutil.Process().children(recursive=True)}
    environ, argv, path = dict(os.environ), list(sys.argv), list(sys.path)
    started = time.perf_counter()
    code = validate(str(good[0]), "--input", str(good[1]), "--mini-batch-size", "3")
    elapsed = time.perf_counter() - started
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert elapsed < 10
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= children
    assert "3 mini-batches of files" in out
    assert "init says hello" in out
    # the first rows as append_row writes them: space-separated, no header, no index
    env = "True-True-on-True"  # the model, the output folder, environment_variables, argv
    assert f"  f0000.csv {env}\n  f0001.csv {env}\n  f0002.csv {env}\n" in out
    assert "f0003.csv" not in out
    assert "3 files given; run() returned 3 results: 3 succeeded, 0 failed" in out
    assert "timings: import" in out and "init()" in out and "run()" in out
    # the worker's environment is undone
    assert dict(os.environ) == environ and sys.argv == argv and sys.path == path
    assert "score" not in sys.modules


def test_validate_honours_settings_json_and_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = """
        import pandas as pd

        def run(mini_batch):
            return pd.DataFrame({"file": [p[-9:] for p in mini_batch], "x": "a b"})
    """
    settings_json = '{"append_row": {"pandas.DataFrame.to_csv": {"sep": ","}}}'
    dep = write_deployment(
        tmp_path / "d",
        script,
        extra_code={"parallel_run_step.settings.json": settings_json},
        model_path=None,
    )
    inputs = write_inputs(tmp_path / "in", 5)
    assert validate(str(dep), "-i", str(inputs), "--rows", "2") == 0
    out = capsys.readouterr().out
    assert "first 2 of 5 lines" in out
    assert "  f0000.csv,a b\n  f0001.csv,a b\n\n" in out


def test_validate_tabular_mini_batch_is_a_dataframe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = "def run(frame):\n    return frame.assign(y=frame['x'] * 2)\n"
    dep = write_deployment(tmp_path / "d", script, model_path=None)
    inputs = write_inputs(tmp_path / "in", 3)
    assert validate(str(dep), "-i", str(inputs), "--set", "mini_batch_size=5 rows") == 0
    out = capsys.readouterr().out
    assert "3 mini-batches of rows" in out
    assert "  0.0 0.0\n  0.5 1.0\n" in out
    assert "2 rows given; run() returned 2 results: 2 succeeded, 0 failed" in out


def test_validate_shows_the_users_traceback_when_run_raises(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dep = write_deployment(tmp_path / "d", RAISES)
    assert validate(str(dep), "--input", str(write_inputs(tmp_path / "in", 2))) == 1
    out, err = capsys.readouterr()
    assert "run() failed" in err and "Traceback" in err
    assert "ValueError: cannot score" in err and "f0000.csv" in err
    assert 'score.py", line' in err and "in helper" in err
    assert "daskscore" + os.sep not in err.replace(str(tmp_path), "")  # the user's frames only
    assert "succeeded" not in out


@pytest.mark.parametrize(
    ("script", "stage", "message"),
    [
        (
            "def init():\n    raise KeyError('weights')\ndef run(b):\n    return b\n",
            "init()",
            "KeyError",
        ),
        ("import no_such_module_here\ndef run(b):\n    return b\n", "import", "ModuleNotFound"),
        ("def run(b):\n    return None\n", "run()", "ResultError: run() returned None"),
    ],
)
def test_validate_fails_with_the_stage_that_raised(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], script: str, stage: str, message: str
) -> None:
    dep = write_deployment(tmp_path / "d", script)
    assert validate(str(dep), "--input", str(write_inputs(tmp_path / "in", 2))) == 1
    err = capsys.readouterr().err
    assert f"{stage} failed" in err and message in err


@pytest.mark.parametrize("raised", ["GeneratorExit", "KeyboardInterrupt"])
def test_a_base_exception_raised_by_run_is_its_failure_with_the_users_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], raised: str
) -> None:
    """As a job reports it (RUN_EXCEPTION): validate printed its own traceback for a
    GeneratorExit, and took a KeyboardInterrupt the script raised for a Ctrl-C (exit 130)."""
    script = f"def run(mini_batch):\n    raise {raised}('raised by the model library')\n"
    dep = write_deployment(tmp_path / "d", script)
    assert validate(str(dep), "--input", str(write_inputs(tmp_path / "in", 2))) == 1
    err = capsys.readouterr().err
    assert "daskscore: run() failed:" in err, err
    assert f"{raised}: raised by the model library" in err and 'score.py", line 2' in err
    assert "daskscore" + os.sep not in err.replace(str(tmp_path), "")  # the user's frames only
    assert "interrupted" not in err


def test_a_ctrl_c_while_run_runs_still_stops_validate(tmp_path: Path) -> None:
    began = tmp_path / "began"
    script = f"""
        import time

        def run(mini_batch):
            open({str(began)!r}, "w").close()
            time.sleep(120)
            return mini_batch
    """
    dep = write_deployment(tmp_path / "d", script)
    argv = ("validate", str(dep), "--input", str(write_inputs(tmp_path / "in", 2)))
    code, err = sigterm_when(began.exists, *argv, sig=signal.SIGINT)
    assert code == 128 + signal.SIGINT, err
    assert "daskscore: interrupted" in err and "run() failed" not in err, err


def test_validate_warns_when_run_returns_fewer_results_than_items(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A job would count the missing results as failed items; validate says so."""
    dep = write_deployment(tmp_path / "d", "def run(mini_batch):\n    return mini_batch[:1]\n",
                           settings={"mini_batch_size": 3})  # fmt: skip
    assert validate(str(dep), "--input", str(write_inputs(tmp_path / "in", 3))) == 0
    out = capsys.readouterr().out
    assert "warning: run() returned 1 result for 3 files: daskscore run counts 2" in out, out


def test_validate_counts_one_item_in_the_singular(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It said "1 files given" and "0 results for 1 files"."""
    dep = write_deployment(tmp_path / "d", "def run(mini_batch):\n    return []\n",
                           settings={"mini_batch_size": 1})  # fmt: skip
    assert validate(str(dep), "--input", str(write_inputs(tmp_path / "in", 1))) == 0
    out = capsys.readouterr().out
    assert "1 file given; run() returned 0 results" in out, out
    assert "warning: run() returned 0 results for 1 file: daskscore run counts 1" in out, out


def test_validate_lists_every_problem_of_a_bad_deployment_and_runs_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "imported"
    script = f"open({str(marker)!r}, 'w').close()\ndef run(b):\n    return b\n"
    dep = write_deployment(
        tmp_path / "d",
        script,
        settings={"mini_batch_size": 0, "output_action": "print", "timeout": 5},
        model_path="model",
    )
    raw = yaml.safe_load(dep.read_text())
    raw["model"]["path"] = "gone"
    dep.write_text(yaml.safe_dump(raw))
    assert validate(str(dep), "--input", str(tmp_path / "no-inputs")) == 2
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("daskscore: error:")]
    assert len(errors) == 5, err
    for needle in ("mini_batch_size", "output_action", "model.path", "no-inputs"):
        assert any(needle in line for line in errors), (needle, err)
    assert "unknown key 'settings.timeout'" in errors[0], err
    assert "5 problems found; nothing was run." in err
    assert not marker.exists() and out == ""


def test_validate_reports_a_script_that_does_not_parse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dep = write_deployment(tmp_path / "d", "def run(b):\n    return b +\n")
    assert validate(str(dep), "--input", str(write_inputs(tmp_path / "in", 1))) == 2
    assert "syntax error at line 2" in capsys.readouterr().err


def test_validate_pdb_stops_in_the_users_frame(tmp_path: Path) -> None:
    dep = write_deployment(tmp_path / "d", RAISES)
    inputs = write_inputs(tmp_path / "in", 2)
    for commands in ("p path\nc\n", "q\n"):
        proc = subprocess.run(
            [sys.executable, "-m", "daskscore", "validate", str(dep), "-i", str(inputs), "--pdb"],
            input=commands,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "(Pdb)" in proc.stdout
        assert "score.py(6)helper()" in proc.stdout  # the user's frame, not daskscore's
        assert "ValueError: cannot score" in proc.stderr
        if commands.startswith("p path"):
            assert "f0000.csv'" in proc.stdout, proc.stdout


# --------------------------------------------------------------------------- init


def test_init_scaffold_validates(tmp_path: Path) -> None:
    proc = run_cli("init", "my-model", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    root = tmp_path / "my-model"
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert "code/score.py" in files and "deployment.yml" in files
    assert len([f for f in files if f.startswith("sample-inputs/")]) == 3
    assert any(f.startswith("model/") for f in files)
    proc = run_cli(
        "validate", "my-model/deployment.yml", "--input", "my-model/sample-inputs", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 files given; run() returned 3 results: 3 succeeded, 0 failed" in proc.stdout
    assert "sample-000.csv" in proc.stdout


def test_init_torch_template_validates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    root = tmp_path / "net"
    assert cli.main(["init", str(root), "--template", "torch"]) == 0
    assert (root / "model" / "model.pt").is_file()
    code = validate(str(root / "deployment.yml"), "-i", str(root / "sample-inputs"))
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert "3 files given; run() returned 12 results" in out
    assert "random weights" not in err


def test_init_refuses_an_existing_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "mine.txt").write_text("keep me")
    assert cli.main(["init", str(taken)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert [p.name for p in taken.iterdir()] == ["mine.txt"]
    capsys.readouterr()
    (tmp_path / "file").write_text("x")
    assert cli.main(["init", str(tmp_path / "file")]) == 2
    assert "already exists and is a file, not a folder" in capsys.readouterr().err
    assert cli.main(["init", ""]) == 2  # not the current folder
    assert "the folder name '' is empty" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["init", str(empty)]) == 0  # an empty folder is fine


def test_init_of_a_name_with_spaces_prints_a_command_that_pastes_and_a_valid_azure_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The printed command is quoted for the shell, and deployment.yml's names are Azure's
    (letters, digits and dashes), whatever the folder is called."""
    import shlex

    monkeypatch.chdir(tmp_path)
    assert cli.main(["init", "My model (v2)"]) == 0
    printed = capsys.readouterr().err
    command = shlex.split(printed.split("Try it: ", 1)[1])
    assert command == [
        *("daskscore", "validate", "My model (v2)/deployment.yml"),
        *("--input", "My model (v2)/sample-inputs"),
    ]
    raw = yaml.safe_load((tmp_path / "My model (v2)" / "deployment.yml").read_text())
    assert (raw["name"], raw["endpoint_name"]) == ("my-model-v2", "my-model-v2-endpoint")
    for folder, name in [("9 lives", "lives"), ("ab", "scoring-ab"), ("Ünï_" * 10, None)]:
        made = scaffold.azure_name(folder)
        assert name is None or made == name
        assert re.fullmatch(r"[a-z][a-z0-9-]{1,21}[a-z0-9]", made), made


def test_init_deployment_lists_every_setting_and_loads_to_the_defaults(tmp_path: Path) -> None:
    root = tmp_path / "d"
    assert cli.main(["init", str(root)]) == 0
    text = (root / "deployment.yml").read_text()
    for cls in (Settings, RetrySettings):
        for f in dataclasses.fields(cls):
            assert f"{f.name}:" in text, f.name
            doc = f.metadata.get("doc")
            if doc:
                assert " ".join(doc.split()[:4]) in text, f.name
    deployment = load_deployment(root / "deployment.yml")  # warnings are errors: none
    assert deployment.settings == Settings()
    assert deployment.scoring_script == (root / "code" / "score.py").resolve()
    assert deployment.model is not None and deployment.model.path == (root / "model").resolve()


def test_validate_warns_of_a_signal_handler_a_worker_would_refuse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """signal.signal() works in validate's main thread but raises in a worker's thread: the
    dry run passes, says so, and puts the handler back."""
    import signal

    script = (
        "import signal\n\n"
        "def init():\n"
        "    signal.signal(signal.SIGALRM, lambda *_: None)\n\n"
        "def run(mini_batch):\n"
        "    return mini_batch\n"
    )
    before = signal.getsignal(signal.SIGALRM)
    dep = write_deployment(tmp_path / "d", script)
    assert validate(str(dep), "--input", str(write_inputs(tmp_path / "in", 1))) == 0
    out = capsys.readouterr().out
    assert "warning: the script set a handler for SIGALRM with signal.signal()" in out, out
    assert signal.getsignal(signal.SIGALRM) is before
