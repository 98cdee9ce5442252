"""The command with values it must read as their keys' types: ``--set`` keeps a string key's
text as typed, a malformed integer is a configuration error (exit 2) and not an internal
error, and an internal error says one line on stderr, its traceback only under ``--verbose``
(as the line promises).  Real ``python -m daskscore`` processes; no cluster starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, run_cli, write_deployment, write_inputs
from helpers import show

ENV_SCRIPT = """
    import os

    def init():
        pass

    def run(mini_batch):
        return [f"{k}={os.environ.get(k)!r}" for k in ("G", "E", "B", "D")]
"""


def test_set_keeps_an_environment_variable_as_typed(tmp_path: Path) -> None:
    """(``--set`` values were read as YAML 1.1: the script got G='90', E='16', B='false',
    D='1.1'.)"""
    dep = write_deployment(tmp_path / "deploy", ENV_SCRIPT)
    inputs = write_inputs(tmp_path / "in", 1)
    sets = ["G=1:30", "E=0x10", "B=no", "D=1.10"]
    args = [a for s in sets for a in ("--set", f"settings.environment_variables.{s}")]
    proc = run_cli("validate", str(dep), "-i", str(inputs), *args)
    assert proc.returncode == 0, show(proc)
    for expected in ("G='1:30'", "E='0x10'", "B='no'", "D='1.10'"):
        assert expected in proc.stdout + proc.stderr, show(proc)


@pytest.mark.parametrize(
    ("how", "key"),
    [
        (["--set", "settings.error_threshold=--1"], "override: settings.error_threshold"),
        (["--set", "max_concurrency_per_instance=²"], "override: settings.max_concurrency"),
        (["--mini-batch-size", "²"], "argument --mini-batch-size: expected a positive integer"),
        ([], "deployment.yml: settings.error_threshold: expected an integer >= -1"),
    ],
)
def test_a_malformed_integer_is_a_configuration_error(
    tmp_path: Path, how: list[str], key: str
) -> None:
    """(``'--1'`` and digits such as ``'²'`` passed a check that ``int()`` then refused: an
    internal ValueError with its traceback, exit 1.)"""
    settings = {} if how else {"error_threshold": "--1"}
    dep = write_deployment(tmp_path / "deploy", ENV_SCRIPT, settings=settings)
    inputs = str(write_inputs(tmp_path / "in", 1))
    for command in (["validate", str(dep), "-i", inputs],
                    ["run", str(dep), "-i", inputs, "-o", str(tmp_path / "out")]):  # fmt: skip
        proc = run_cli(*command, *how)
        assert proc.returncode == 2, show(proc)
        assert key in proc.stderr, show(proc)
        assert "'--1'" in proc.stderr or "'²'" in proc.stderr, show(proc)
        for wrong in ("Traceback", "internal error", "invalid literal"):
            assert wrong not in proc.stderr, show(proc)
        assert not (tmp_path / "out").exists()


BROKEN = """
import sys
from daskscore import cli

def broken(args):
    raise RuntimeError("deliberately broken")

cli.COMMANDS["run"] = broken
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("verbose", [False, True])
def test_an_internal_error_shows_its_traceback_only_when_verbose(
    tmp_path: Path, verbose: bool
) -> None:
    """(Logged with no handler, the traceback fell to Python's last-resort handler: printed on
    stderr before the line that says to rerun with --verbose to see it.)"""
    dep = write_deployment(tmp_path / "deploy", ENV_SCRIPT)
    inputs = str(write_inputs(tmp_path / "in", 1))
    out = str(tmp_path / "out")
    argv = ["run", str(dep), "-i", inputs, "-o", out, *(["--verbose"] if verbose else [])]
    proc = subprocess.run(
        [sys.executable, "-c", BROKEN, *argv],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 1, show(proc)
    if verbose:
        assert "Traceback" in proc.stderr and "deliberately broken" in proc.stderr, show(proc)
    else:
        assert proc.stderr.strip().splitlines() == [
            "daskscore: internal error: RuntimeError: deliberately broken (rerun with --verbose "
            "for the traceback)"
        ], show(proc)
