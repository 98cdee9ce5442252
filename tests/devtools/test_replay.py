"""``daskscore replay OUTPUT --mini-batch N`` and ``daskscore.replay``: one mini-batch of a
finished job run again in this process, with the job's deployment (``--set`` overrides
included), environment and input, and the scoring script as it is now."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli, write_deployment, write_inputs
from helpers import show
from storage_emulators import make_bucket

import daskscore

# f0003 fails: mini-batch 1 (f0002, f0003) of a job of 6 files in mini-batches of 2
SCRIPT = """
    import os

    def init():
        global flag
        flag = os.environ.get("MY_FLAG", "unset")

    def check(path):
        if path.endswith("f0003.csv"):
            raise ValueError(f"cannot score {os.path.basename(path)}")
        return f"{os.path.basename(path)} {flag}"

    def run(mini_batch):
        return [check(p) for p in mini_batch]
"""


@pytest.fixture(scope="module")
def failed_job(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A finished job with one failed mini-batch (1), run with a ``--set`` override."""
    root = tmp_path_factory.mktemp("replay")
    dep = write_deployment(
        root / "d",
        SCRIPT,
        settings={
            "mini_batch_size": 2,
            "error_threshold": -1,
            "retry_settings": {"max_retries": 0},
        },
    )
    inputs = write_inputs(root / "in", 6)
    out = root / "out"
    proc = run_cli(
        *("run", str(dep), "-i", str(inputs), "-o", str(out), "--workers", "1"),
        *("--no-progress", "--no-dashboard"),
        *("--set", "settings.environment_variables.MY_FLAG=from-set"),
    )
    assert proc.returncode == 0, show(proc)
    # every failure summary names the replay command of the first failed mini-batch
    command = f"daskscore replay {out} --mini-batch 1"
    assert command in proc.stderr, show(proc)
    assert command in (out / "logs" / "job_error.txt").read_text()
    assert command in (out / "report.html").read_text()
    return dep, inputs, out


def test_replay_of_a_good_mini_batch_prints_its_rows(failed_job: tuple[Path, Path, Path]) -> None:
    _, _, out = failed_job
    proc = run_cli("replay", str(out), "--mini-batch", "2")
    assert proc.returncode == 0, show(proc)
    # the --set override of the job reached init(): the deployment is the job's, not the file's
    assert proc.stdout.splitlines() == ["f0004.csv from-set", "f0005.csv from-set"], show(proc)
    assert "replaying mini-batch 2" in proc.stderr


def test_replay_of_the_failed_mini_batch_shows_the_users_traceback(
    failed_job: tuple[Path, Path, Path],
) -> None:
    _, _, out = failed_job
    proc = run_cli("replay", str(out), "--mini-batch", "1")
    assert proc.returncode == 1, show(proc)
    assert "ValueError: cannot score f0003.csv" in proc.stderr, show(proc)
    assert "score.py" in proc.stderr and "in check" in proc.stderr, show(proc)
    assert "daskscore/" not in proc.stderr.split("Traceback", 1)[-1], show(proc)  # user frames
    assert proc.stdout == ""


BASE_EXCEPTIONS = """
    def run(mini_batch):
        if mini_batch[0].endswith("f0000.csv"):
            raise GeneratorExit("raised by the model library")
        raise KeyboardInterrupt("raised by the model library")
"""


def test_replay_of_a_run_that_raised_a_base_exception_shows_the_users_traceback(
    tmp_path: Path,
) -> None:
    """The job reports a GeneratorExit or KeyboardInterrupt that run() raised as its
    RUN_EXCEPTION; replay printed daskscore's own traceback for the one, and said
    "interrupted" (exit 130) for the other."""
    settings = {"mini_batch_size": 1, "error_threshold": -1, "retry_settings": {"max_retries": 0}}
    dep = write_deployment(tmp_path / "d", BASE_EXCEPTIONS, settings=settings)
    out = tmp_path / "out"
    proc = run_cli(
        *("run", str(dep), "-i", str(write_inputs(tmp_path / "in", 2)), "-o", str(out)),
        *("--workers", "1", "--no-progress", "--no-dashboard"),
    )
    assert proc.returncode == 0, show(proc)
    for mini_batch, raised in enumerate(["GeneratorExit", "KeyboardInterrupt"]):
        proc = run_cli("replay", str(out), "--mini-batch", str(mini_batch))
        assert proc.returncode == 1, show(proc)
        assert f"run() failed on mini-batch {mini_batch}:" in proc.stderr, show(proc)
        assert f"{raised}: raised by the model library" in proc.stderr, show(proc)
        assert "daskscore/" not in proc.stderr.split("Traceback", 1)[-1], show(proc)
        assert "interrupted" not in proc.stderr, show(proc)


def test_replay_pdb_stops_in_the_users_frame(failed_job: tuple[Path, Path, Path]) -> None:
    _, _, out = failed_job
    proc = subprocess.run(
        [sys.executable, "-m", "daskscore", "replay", str(out), "--mini-batch", "1", "--pdb"],
        input="p path\nc\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, show(proc)
    assert "(Pdb)" in proc.stdout
    assert "score.py(10)check()" in proc.stdout, show(proc)
    assert "f0003.csv'" in proc.stdout, show(proc)


def test_replay_refuses_what_it_cannot_replay(
    failed_job: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, inputs, out = failed_job
    proc = run_cli("replay", str(out), "--mini-batch", "3")
    assert proc.returncode == 2, show(proc)
    assert "mini-batches 0 to 2" in proc.stderr, show(proc)
    proc = run_cli("replay", str(tmp_path), "--mini-batch", "0")
    assert proc.returncode == 2, show(proc)
    assert "job_recipe.json is missing" in proc.stderr, show(proc)
    extra = inputs / "f0000a.csv"  # sorts into mini-batch 0: every later mini-batch shifts
    extra.write_text("x\n1\n")
    try:
        proc = run_cli("replay", str(out), "--mini-batch", "1")
    finally:
        extra.unlink()
    assert proc.returncode == 2, show(proc)
    assert "the input file list" in proc.stderr and "changed" in proc.stderr, show(proc)


def test_replay_after_a_fix_runs_the_script_as_it_is_now(
    failed_job: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    dep, _, out = failed_job
    script = dep.parent / "code" / "score.py"
    before = script.read_text()
    script.write_text(before.replace('endswith("f0003.csv")', 'endswith("nothing")'))
    try:
        code = daskscore.replay(out, 1)  # the Python twin
    finally:
        script.write_text(before)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.splitlines() == ["f0002.csv from-set", "f0003.csv from-set"]
    assert "code folder changed since the job ran" in captured.err


@pytest.mark.slow
def test_replay_of_a_remote_input_job_downloads_again(
    tmp_path: Path, moto_s3: dict[str, Any]
) -> None:
    """A job over s3:// (moto's server; its AWS_* variables are exported while it runs): the
    replayed mini-batch is downloaded again."""
    import fsspec

    root = make_bucket(moto_s3)
    fs, base = fsspec.core.url_to_fs(root, **moto_s3["storage_options"])
    fs.pipe({f"{base}/in/f{i:04d}.csv": f"x\n{i}\n".encode() for i in range(4)})
    fs.invalidate_cache()
    dep = write_deployment(
        tmp_path / "d",
        """
        import os
        def run(batch):
            return [os.path.basename(p) + " " + open(p).read().split()[1] for p in batch]
        """,
        settings={"mini_batch_size": 2},
    )
    out = tmp_path / "out"
    proc = run_cli(
        *("run", str(dep), "-i", f"{root}/in", "-o", str(out), "--workers", "1"),
        *("--no-progress", "--no-dashboard"),
    )
    assert proc.returncode == 0, show(proc)
    proc = run_cli("replay", str(out), "--mini-batch", "1")
    assert proc.returncode == 0, show(proc)
    assert proc.stdout.splitlines() == ["f0002.csv 2", "f0003.csv 3"], show(proc)


# --------------------------------------------------------------------------- secrets

SECRET_SCRIPT = """
    import hashlib
    import os

    def init():
        global digest
        both = os.environ["API_KEY"] + os.environ["DB_PASSWORD"]
        digest = hashlib.sha256(both.encode()).hexdigest()[:12]

    def run(mini_batch):
        return [f"{os.path.basename(p)} {digest}" for p in mini_batch]
"""
API_KEY, DB_PASSWORD = "sk-live-ABCDEF123456", "hunter2hunter2"


def test_the_recipe_keeps_no_secret_and_replay_takes_them_back(tmp_path: Path) -> None:
    """The job's secret variables (one in the deployment file, one a --set override) are
    written *** in its recipe; a replay takes them from the file, this process's environment
    or --set, and says which one it found nowhere."""
    dep = write_deployment(
        tmp_path / "d",
        SECRET_SCRIPT,
        settings={"mini_batch_size": 2, "environment_variables": {"API_KEY": API_KEY}},
    )
    inputs, out = write_inputs(tmp_path / "in", 4), tmp_path / "out"
    proc = run_cli(
        *("run", str(dep), "-i", str(inputs), "-o", str(out), "--workers", "1"),
        *("--no-progress", "--no-dashboard"),
        *("--set", f"settings.environment_variables.DB_PASSWORD={DB_PASSWORD}"),
    )
    assert proc.returncode == 0, show(proc)
    recipe = json.loads((out / "logs" / "sys" / "job_recipe.json").read_text())
    assert recipe["masked"] == ["API_KEY", "DB_PASSWORD"]
    variables = recipe["deployment"]["settings"]["environment_variables"]
    assert variables == {"API_KEY": "***", "DB_PASSWORD": "***"}
    for path in (p for p in out.rglob("*") if p.is_file()):
        data = path.read_bytes()
        assert API_KEY.encode() not in data and DB_PASSWORD.encode() not in data, path
    rows = (out / "predictions.csv").read_text().splitlines()[2:]  # (mini-batch 1's)

    proc = run_cli("replay", str(out), "--mini-batch", "1")  # DB_PASSWORD: nowhere
    assert proc.returncode == 2, show(proc)
    assert "settings.environment_variables.DB_PASSWORD" in proc.stderr, show(proc)
    assert "--set settings.environment_variables.DB_PASSWORD=VALUE" in proc.stderr, show(proc)
    assert "API_KEY" not in proc.stderr.split("does not keep", 1)[1], show(proc)

    given = ("--set", f"settings.environment_variables.DB_PASSWORD={DB_PASSWORD}")
    proc = run_cli("replay", str(out), "--mini-batch", "1", *given)
    assert proc.returncode == 0, show(proc)
    assert proc.stdout.splitlines() == rows, show(proc)  # the job's secrets, so its rows
    found = f"API_KEY (a secret the recipe does not keep) is taken from the deployment file {dep}"
    assert found in proc.stderr, show(proc)

    proc = run_cli("replay", str(out), "--mini-batch", "1", env={"DB_PASSWORD": DB_PASSWORD})
    assert proc.returncode == 0, show(proc)
    assert proc.stdout.splitlines() == rows, show(proc)
    assert "taken from this process's environment" in proc.stderr, show(proc)

    proc = run_cli("replay", str(out), "--mini-batch", "1", "--set", "settings.timeout=5")
    assert proc.returncode == 2, show(proc)
    assert "only settings.environment_variables.NAME=VALUE" in proc.stderr, show(proc)


def test_a_recipe_of_the_first_version_is_refused_saying_why(tmp_path: Path) -> None:
    copy = tmp_path / "out"
    (copy / "logs" / "sys").mkdir(parents=True)
    old = {"version": 1, "deployment": "gASV...", "job_id": "x"}  # (a pickle, secrets in clear)
    (copy / "logs" / "sys" / "job_recipe.json").write_text(json.dumps(old))
    proc = run_cli("replay", str(copy), "--mini-batch", "0")
    assert proc.returncode == 2, show(proc)
    assert "earlier version of daskscore (recipe version 1" in proc.stderr, show(proc)
    assert "delete it before sharing the folder" in proc.stderr, show(proc)


def test_replay_and_validate_print_no_secret_and_no_raw_escape(tmp_path: Path) -> None:
    """What the script prints and raises is masked on the terminal as in a job's logs, and a
    file name's escape sequence is written out (``\\x1b``) as ``daskscore run`` writes it."""
    dep = write_deployment(
        tmp_path / "d",
        """
        import os
        def init():
            print("connecting with", os.environ["API_KEY"])
        def run(mini_batch):
            raise ValueError("failed with key " + os.environ["API_KEY"])
        """,
        settings={
            "mini_batch_size": 2,
            "retry_settings": {"max_retries": 0},
            "environment_variables": {"API_KEY": API_KEY},
        },
    )
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "a\x1b[31mred.csv").write_text("x\n1\n")
    out = tmp_path / "out"
    proc = run_cli(
        *("run", str(dep), "-i", str(inputs), "-o", str(out), "--workers", "1"),
        *("--no-progress", "--no-dashboard"),
    )
    assert proc.returncode == 0, show(proc)

    replayed = run_cli("replay", str(out), "--mini-batch", "0")
    validated = run_cli("validate", str(dep), "-i", str(inputs))

    for proc in (replayed, validated):
        assert proc.returncode == 1, show(proc)
        both = proc.stdout + proc.stderr
        assert API_KEY not in both and "\x1b" not in both, show(proc)
        assert "ValueError: failed with key ***" in proc.stderr, show(proc)
        assert "connecting with ***" in proc.stdout, show(proc)
    assert "a\\x1b[31mred.csv" in replayed.stderr.splitlines()[0], show(replayed)


def test_replay_from_another_folder_finds_an_input_given_relative(tmp_path: Path) -> None:
    """A job run with ``-i in`` (relative to where it ran) is replayed from anywhere, as its
    closing message suggests (``daskscore replay /abs/out ...``): the recipe kept ``in`` as
    given, and a replay elsewhere said the input does not exist."""
    dep = write_deployment(
        tmp_path / "d",
        SCRIPT,
        settings={"mini_batch_size": 2, "retry_settings": {"max_retries": 0}},
    )
    write_inputs(tmp_path / "in", 6)
    ran = run_cli(
        *("run", str(dep), "-i", "in", "-o", "out", "--workers", "1", "--no-progress"),
        cwd=tmp_path,
    )
    assert ran.returncode == 0, show(ran)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = run_cli("replay", str(tmp_path / "out"), "--mini-batch", "1", cwd=elsewhere)
    assert proc.returncode == 1, show(proc)  # (the mini-batch's own failure, replayed)
    assert "ValueError: cannot score f0003.csv" in proc.stderr, show(proc)


# --------------------------------------------------------------------------- tabular inputs

TABULAR_SCRIPT = """
    import pandas as pd

    def run(mini_batch):
        return pd.DataFrame({"id": mini_batch["id"], "v": mini_batch["v"]})
"""


def _table(path: Path, prefix: str, n: int, value: Any = lambda i: "v" * 8) -> None:
    path.write_text("id,v\n" + "".join(f"{prefix}{i},{value(i)}\n" for i in range(n)))


def test_replay_of_a_tabular_job_refuses_a_file_whose_mini_batches_hold_other_rows(
    tmp_path: Path,
) -> None:
    """A tabular job in mini-batches of 1 KB over a.csv (4 of them) and b.csv: a.csv edited so
    that its cuts fall at other rows (a longer value in its first mini-batch, shorter ones at
    its end: as many bytes and mini-batches) refuses the replay of a.csv's second mini-batch,
    naming the file, as --resume does; edited in place, every mini-batch keeping its rows (a
    value of the same length), it is replayed with a note naming the file, read as it is now."""
    dep = write_deployment(tmp_path / "d", TABULAR_SCRIPT, settings={"mini_batch_size": "1KB"})
    inputs = tmp_path / "in"
    inputs.mkdir()
    a = inputs / "a.csv"
    _table(a, "a", 300)
    _table(inputs / "b.csv", "b", 50)
    out = tmp_path / "out"
    proc = run_cli(
        *("run", str(dep), "-i", str(inputs), "-o", str(out), "--workers", "1", "--tabular"),
        *("--no-progress", "--no-dashboard"),
    )
    assert proc.returncode == 0, show(proc)
    before = run_cli("replay", str(out), "--mini-batch", "1")
    assert before.returncode == 0, show(before)
    assert before.stdout.split()[0] not in ("a0", "b0"), show(before)  # (a.csv's second)

    # 120 bytes more in row 1, 120 fewer in its last 15 rows: the cuts before them move
    _table(a, "a", 300, lambda i: "w" * (128 if i == 1 else 0 if i >= 285 else 8))
    proc = run_cli("replay", str(out), "--mini-batch", "1")
    assert proc.returncode == 2, show(proc)
    message = " ".join(proc.stderr.split())
    assert f"input file {a} (" in message and "hold other rows" in message, show(proc)
    assert "mini-batch 1 would not hold the rows it held" in message, show(proc)

    _table(a, "a", 300, lambda i: "w" * 8)  # (the same length: every cut at the same row)
    proc = run_cli("replay", str(out), "--mini-batch", "1")
    assert proc.returncode == 0, show(proc)
    assert proc.stdout.splitlines() == before.stdout.replace("v" * 8, "w" * 8).splitlines()
    note = " ".join(proc.stderr.split())
    assert f"note: the input file {a} (" in note and "the same size, modified since" in note
    assert "holds the same rows of it" in note, show(proc)
