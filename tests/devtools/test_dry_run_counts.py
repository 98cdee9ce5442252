"""``daskscore validate``, ``daskscore.validate()`` and ``daskscore replay`` count the failed
items a script names in ``df.attrs["daskscore_failed_items"]`` (as the built-in MLflow scorer
does) exactly as ``daskscore run`` counts them, list them and warn; and a replay whose code
folder is gone says so in one paragraph."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli, write_deployment, write_inputs
from helpers import show

import daskscore

# f0001 and f0002 cannot be scored: named as failed items; the other two give two rows each
NAMES_FAILED = """
    import os
    import pandas as pd

    BAD = ("f0001.csv", "f0002.csv")

    def run(mini_batch):
        bad = [p for p in mini_batch if os.path.basename(p) in BAD]
        good = [p for p in mini_batch if p not in bad]
        result = pd.concat(
            [pd.read_csv(p).assign(file=os.path.basename(p)) for p in good], ignore_index=True
        )
        result.attrs["daskscore_failed_items"] = [f"{p}: cannot score it" for p in bad]
        return result
"""


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, str]:
    root = tmp_path_factory.mktemp("named")
    dep = write_deployment(
        root / "d",
        NAMES_FAILED,
        settings={"mini_batch_size": 4, "error_threshold": -1,
                  "retry_settings": {"max_retries": 0}},
    )  # fmt: skip
    inputs = write_inputs(root / "in", 4)
    out = root / "out"
    proc = run_cli(
        *("run", str(dep), "-i", str(inputs), "-o", str(out), "--workers", "1"),
        *("--no-progress", "--no-dashboard"),
    )
    assert proc.returncode == 0, show(proc)
    assert "2 of 4 items succeeded, 2 failed" in proc.stderr, show(proc)
    return dep, inputs, out, proc.stderr


def test_validate_counts_the_named_failed_items_as_run_does(
    job: tuple[Path, Path, Path, str],
) -> None:
    dep, inputs, _, _ = job
    proc = run_cli("validate", str(dep), "-i", str(inputs))
    assert proc.returncode == 0, show(proc)
    assert "4 files given; run() returned 4 results: 2 succeeded, 2 failed" in proc.stdout
    warned = proc.stdout.split("warning: ", 1)[-1]
    assert warned.startswith("run() named 2 of its 4 files failed"), show(proc)
    assert f"\n  {inputs / 'f0001.csv'}: cannot score it\n" in warned, show(proc)
    assert f"\n  {inputs / 'f0002.csv'}: cannot score it\n" in warned, show(proc)
    assert proc.stdout.rstrip().endswith("OK: init() and run() work, with 1 warning.")


def test_the_validate_function_counts_them_too(job: tuple[Path, Path, Path, str]) -> None:
    dep, inputs, _, _ = job
    result = daskscore.validate(dep, inputs)
    assert (result.ok, result.items, result.results) == (True, 4, 4)
    assert (result.succeeded, result.failed) == (2, 2)
    named = [f"{inputs / name}: cannot score it" for name in ("f0001.csv", "f0002.csv")]
    assert result.failed_items == named
    assert len(result.warnings) == 1 and "named 2 of its 4 files failed" in result.warnings[0]
    assert "(2 failed)" in repr(result) and "2 succeeded, 2 failed" in str(result)
    assert 'data-verdict="warn"' in result._repr_html_()


def test_replay_counts_them_and_warns(job: tuple[Path, Path, Path, str]) -> None:
    _, inputs, out, _ = job
    proc = run_cli("replay", str(out), "--mini-batch", "0")
    assert proc.returncode == 0, show(proc)
    assert "run() returned 4 results (2 succeeded, 2 failed)" in proc.stderr, show(proc)
    assert "daskscore: warning: run() named 2 of its 4 files failed" in proc.stderr, show(proc)
    assert f"{inputs / 'f0002.csv'}: cannot score it" in proc.stderr, show(proc)


def test_replay_after_the_code_folder_moved_names_it_in_one_paragraph(
    job: tuple[Path, Path, Path, str],
) -> None:
    dep, _, out, _ = job
    code = dep.parent / "code"
    code.rename(dep.parent / "moved")
    try:
        proc = run_cli("replay", str(out), "--mini-batch", "0")
    finally:
        (dep.parent / "moved").rename(code)
    assert proc.returncode == 2, show(proc)
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, show(proc)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("daskscore: error: cannot replay"), show(proc)
    assert f"its scoring script {code / 'score.py'} is missing" in lines[0]
    assert f"the code folder {code} no longer exists" in lines[0]
    assert str(out / "logs" / "sys" / "job_recipe.json") in lines[0]
