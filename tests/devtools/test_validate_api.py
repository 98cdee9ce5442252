"""``daskscore.validate``: the dry run of ``daskscore validate`` as a Python function that
returns what happened (``ValidationResult``) instead of printing an exit code."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import distributed
import pandas as pd
import pytest
from conftest import write_deployment, write_inputs

import daskscore
from daskscore.devtools.checks import ValidationResult

GOOD = """
    import os
    import pandas as pd

    def init():
        global prefix
        prefix = os.environ["PREFIX"] + ":" + str(os.path.isdir(os.environ["AZUREML_MODEL_DIR"]))

    def run(mini_batch):
        names = [os.path.basename(p) for p in mini_batch]
        return pd.DataFrame({"file": names, "label": [prefix + n for n in names]})
"""

RAISES = """
    import os

    def init():
        pass

    def mean(values):
        return sum(values) / len(values)

    def run(mini_batch):
        return [mean([]) for p in mini_batch]
"""


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    return write_inputs(tmp_path / "in", 7)  # mini-batches of 3: 3, 3, 1 files


def _deployment(tmp_path: Path, script: str) -> Path:
    return write_deployment(
        tmp_path / "deploy",
        script,
        settings={"mini_batch_size": 3, "environment_variables": {"PREFIX": "p"}},
    )


def test_validate_a_good_script_returns_its_rows_and_timings(
    tmp_path: Path, inputs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_cluster(*args: object, **kwargs: object) -> None:
        raise AssertionError("validate started a LocalCluster")

    monkeypatch.setattr(distributed.LocalCluster, "__init__", no_cluster)
    environ = dict(os.environ)
    dep = _deployment(tmp_path, GOOD)
    result = daskscore.validate(dep, inputs, mini_batch=2)
    assert isinstance(result, ValidationResult)
    assert result.ok and result.failed_stage is None and result.error is None
    assert (result.mini_batch, result.mini_batches, result.unit) == (2, 3, "files")
    assert [Path(f).name for f in result.files] == ["f0006.csv"]
    assert isinstance(result.returned, pd.DataFrame)
    assert result.returned.to_dict("records") == [{"file": "f0006.csv", "label": "p:Truef0006.csv"}]
    assert result.rows == ["f0006.csv p:Truef0006.csv"]
    assert (result.items, result.results, result.succeeded, result.failed) == (1, 1, 1, 0)
    assert list(result.timings) == ["import", "init()", "run()"]
    assert all(seconds >= 0 for seconds in result.timings.values())
    assert dict(os.environ) == environ  # the worker's environment was undone
    # as the notebook shows it, and as a line
    html = result._repr_html_()
    assert 'data-verdict="ok"' in html and "p:Truef0006.csv" in html and "<table" in html
    assert repr(result).startswith("ValidationResult(OK: init() and run() work; mini-batch 2")
    assert "\n" not in repr(result)
    # settings by name, as for daskscore.run
    assert daskscore.validate(dep, inputs, mini_batch_size=7).items == 7


def test_validate_a_raising_script_returns_the_users_traceback(
    tmp_path: Path, inputs: Path
) -> None:
    dep = _deployment(tmp_path, RAISES)
    result = daskscore.validate(dep, inputs)
    assert not result.ok
    assert result.failed_stage == "run()"
    assert result.returned is None and result.results is None
    assert (result.succeeded, result.failed) == (0, 3)
    error = result.error or ""
    assert error.startswith("Traceback (most recent call last):")
    assert (
        "score.py" in error and "in mean" in error and "return sum(values) / len(values)" in error
    )
    assert error.rstrip().endswith("ZeroDivisionError: division by zero")
    assert "daskscore" not in error.replace(str(dep.parent), "")  # the script's frames alone
    assert list(result.timings) == ["import", "init()", "run()"]
    html = result._repr_html_()
    assert 'data-verdict="failed"' in html
    assert "run() failed: ZeroDivisionError: division by zero" in html
    assert "ZeroDivisionError: division by zero" in str(result)
    # the file fixed, the same call runs the new script
    script = dep.parent / "code" / "score.py"
    script.write_text(script.read_text().replace("/ len(values)", "/ max(len(values), 1)"))
    fixed = daskscore.validate(dep, inputs)
    assert fixed.ok and fixed.returned == [0.0, 0.0, 0.0]
    assert fixed.rows == ["0.0", "0.0", "0.0"]
    assert "score" not in sys.modules  # (imported afresh each time)


def test_validate_warns_as_the_command_does_when_run_returns_too_few_results(
    tmp_path: Path, inputs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A job counts the missing results as failed items: the result says so, as
    ``daskscore validate`` does (a warning; its exit code stays 0, ``ok`` stays True)."""
    from daskscore.cli import main

    script = "import os\ndef run(mini_batch):\n    return mini_batch[1:]\n"
    dep = write_deployment(tmp_path / "deploy", script, settings={"mini_batch_size": 3})
    result = daskscore.validate(dep, inputs)
    assert (result.ok, result.items, result.succeeded, result.failed) == (True, 3, 2, 1)
    assert main(["validate", str(dep), "--input", str(inputs)]) == 0
    printed = capsys.readouterr().out.splitlines()
    warned = [line.removeprefix("warning: ") for line in printed if line.startswith("warning: ")]
    assert warned == result.warnings
    assert result.warnings == [
        "run() returned 2 results for 3 files: daskscore run counts 1 of them failed (a result "
        "per item is what Azure counts as succeeded)."
    ]
    assert printed[-1] == "OK: init() and run() work, with 1 warning."
    assert result.headline() == "OK: init() and run() work, with 1 warning"
    assert "run() returned 2 results (1 failed)" in repr(result)
    assert str(result).splitlines()[-1] == "warning: " + result.warnings[0]
    html = result._repr_html_()
    assert 'data-verdict="warn"' in html and 'data-field="warning"' in html
    assert "daskscore run counts 1 of them failed" in html
    # a script that returns a result per item has nothing to warn of
    clean = daskscore.validate(_deployment(tmp_path / "ok", GOOD), inputs)
    assert clean.ok and clean.warnings == [] and 'data-verdict="ok"' in clean._repr_html_()
    assert clean.headline() == "OK: init() and run() work"


def test_validate_names_every_problem_of_the_deployment_at_once(
    tmp_path: Path, inputs: Path
) -> None:
    dep = write_deployment(
        tmp_path / "deploy", GOOD, settings={"mini_batch_size": "lots", "error_threshold": "x"}
    )
    with pytest.raises(daskscore.ConfigError, match="2 problems found; nothing was run") as info:
        daskscore.validate(dep, inputs)
    assert "settings.mini_batch_size" in str(info.value)
    assert "settings.error_threshold" in str(info.value)


def test_validate_refuses_a_mini_batch_that_is_not_there(tmp_path: Path, inputs: Path) -> None:
    dep = _deployment(tmp_path, GOOD)
    with pytest.raises(
        daskscore.UsageError, match=r"makes 3 mini-batches of files, numbered 0 to 2"
    ):
        daskscore.validate(dep, inputs, mini_batch=3)
    with pytest.raises(TypeError, match="mini_batch_sise"):
        daskscore.validate(dep, inputs, mini_batch_sise=3)


def test_validate_a_loaded_deployment(tmp_path: Path, inputs: Path) -> None:
    loaded = daskscore.load_deployment(_deployment(tmp_path, GOOD))
    result = daskscore.validate(loaded, inputs, mini_batch_size=2)
    assert result.ok and result.mini_batches == 4 and result.items == 2


def test_validate_a_script_that_changes_directory_leaves_the_callers(
    tmp_path: Path, inputs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = """
        import os

        def init():
            os.chdir(os.path.dirname(os.path.abspath(__file__)))

        def run(mini_batch):
            return [os.path.exists("label.txt") for p in mini_batch]
    """
    dep = write_deployment(
        tmp_path / "deploy",
        script,
        extra_code={"label.txt": "cat"},
        settings={"mini_batch_size": 3},
    )
    monkeypatch.chdir(tmp_path)
    caller = os.getcwd()
    result = daskscore.validate(dep, inputs)
    assert result.ok and result.returned == [True, True, True], "run() had the script's directory"
    assert os.getcwd() == caller


SECRET_SCRIPT = """
    import logging
    import os

    import pandas as pd

    def secrets():
        return os.environ["API_KEY"] + " " + os.environ["AWS_SECRET_ACCESS_KEY"]

    def init():
        print("connecting with", secrets())
        logging.getLogger("score").warning("connecting with %r", secrets())

    def run(mini_batch):
        if os.environ.get("NAME_THEM"):
            frame = pd.DataFrame({"file": [os.path.basename(p) for p in mini_batch]})
            frame.attrs["daskscore_failed_items"] = [f"{mini_batch[0]}: refused {secrets()}"]
            return frame
        raise KeyError(secrets())
"""
SECRETS = ("sk-live-ABCDEF123456", "AWSSECRETvalue12345")


def test_validate_masks_the_jobs_secrets_as_a_job_does(
    tmp_path: Path, inputs: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """The deployment's secret variables and this process's storage secrets are masked in
    what the script prints and logs, in the result's error (its repr, str and HTML) and in the
    failed items' reasons, as a job masks them in its logs."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRETS[1])
    dep = write_deployment(
        tmp_path / "deploy",
        SECRET_SCRIPT,
        settings={"mini_batch_size": 3, "environment_variables": {"API_KEY": SECRETS[0]}},
    )

    result = daskscore.validate(dep, inputs)
    named = daskscore.validate(dep, inputs, set={"settings.environment_variables.NAME_THEM": "1"})

    printed = capsys.readouterr()
    assert result.failed_stage == "run()", result
    assert "KeyError: '*** ***'" in (result.error or ""), result.error
    assert named.ok and named.failed_items and "refused *** ***" in named.failed_items[0]
    texts = {
        "error": result.error or "",
        "repr": repr(result),
        "str": str(result),
        "html": result._repr_html_(),
        "failed items": "\n".join(named.failed_items),
        "warnings": "\n".join(named.warnings),
        "stdout": printed.out,
        "stderr": printed.err,
    }
    leaks = {name: [s for s in SECRETS if s in text] for name, text in texts.items()}
    assert not any(leaks.values()), leaks
    assert "connecting with *** ***" in printed.out, printed
    assert "connecting with '*** ***'" in printed.err, printed
