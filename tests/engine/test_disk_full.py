"""A disk that cannot take the job's files (full, over quota, a file-size limit).

Every task would fail the same way, so the job stops at the first one with ``WriteFailed``
(exit 1), saying what could not be written and that ``--resume`` goes on; no try is charged
to a mini-batch (a task that raised ``OSError`` used to be taken for a lost worker: every
mini-batch ended ``PROCESS_DIED``). Once the disk is fixed, ``--resume`` writes every row once.

The disk is made "full" without privileges: a file-size limit (``RLIMIT_FSIZE``; Python
ignores ``SIGXFSZ``) makes a write past it fail with ``EFBIG``, as ``ENOSPC`` would.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, run_cli, write_deployment, write_inputs

pytestmark = pytest.mark.timeout(300)

ROW = 20_000  # characters a row
N_FILES = 30

SCRIPT = f"""
    import os
    import resource

    def init():
        limit = os.environ.get("FSIZE_LIMIT")
        if limit:  # (this worker process's disk is "full" past that many bytes a file)
            resource.setrlimit(resource.RLIMIT_FSIZE, (int(limit), resource.RLIM_INFINITY))
        elif os.environ.get("FSIZE_FREE"):  # (the driver's is; not this worker's)
            resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)

    def run(mini_batch):
        return [os.path.basename(p) + " " + "y" * {ROW} for p in mini_batch]
"""


def _deployment(tmp_path: Path) -> Path:
    return write_deployment(tmp_path / "deploy", SCRIPT, settings={"mini_batch_size": 3})


def _rows_once(out: Path) -> None:
    names = [line.split()[0] for line in (out / "predictions.csv").read_text().splitlines()]
    assert sorted(names) == sorted(f"f{i:04d}.csv" for i in range(N_FILES))


def test_a_worker_that_cannot_write_stops_the_job_then_resume_finishes_it(
    tmp_path: Path,
) -> None:
    inputs = write_inputs(tmp_path / "in", N_FILES)
    out = tmp_path / "out"

    args = ["run", str(_deployment(tmp_path)), "--input", str(inputs), "--output", str(out)]

    full = run_cli(*args, env={"FSIZE_LIMIT": "30000"})

    assert full.returncode == 1, full.stderr
    assert "daskscore: error: writing the job's staged output failed: File too large" in (
        full.stderr
    ), full.stderr
    assert "--resume" in full.stderr
    assert "PROCESS_DIED" not in full.stderr and "internal error" not in full.stderr
    assert not (out / "predictions.csv").exists()

    again = run_cli(*args, "--resume")

    assert again.returncode == 0, again.stderr
    _rows_once(out)


def _limited(limit: int) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # (until the interpreter ignores it itself)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))


def test_a_driver_that_cannot_write_the_predictions_says_so_then_resume_writes_them(
    tmp_path: Path,
) -> None:
    """The driver's files are limited (its workers lift the limit in init()): the job is
    scored, and the assembled predictions do not fit."""
    inputs = write_inputs(tmp_path / "in", N_FILES)
    out = tmp_path / "out"
    args = ["run", str(_deployment(tmp_path)), "--input", str(inputs), "--output", str(out)]

    full = subprocess.run(
        [sys.executable, "-m", "daskscore", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "FSIZE_FREE": "1"},
        preexec_fn=lambda: _limited(N_FILES * ROW // 2),
    )

    assert full.returncode == 1, full.stderr
    assert "writing the predictions and the job's summary failed: File too large" in (
        full.stderr
    ), full.stderr
    assert "internal error" not in full.stderr

    again = run_cli(*args, "--resume")

    assert again.returncode == 0, again.stderr
    _rows_once(out)


LOCKING = """
    import os
    import subprocess

    def run(mini_batch):
        parts = os.path.join(os.environ["AZUREML_BI_OUTPUT_PATH"], ".daskscore", "parts")
        if not os.path.exists(os.environ["LOCKED"]):  # (the first call: the folder goes read-only)
            open(os.environ["LOCKED"], "w").close()
            os.chmod(parts, 0o555)
            if os.geteuid() == 0:  # (root writes through a mode: make the folder immutable)
                subprocess.run(["chattr", "+i", parts], check=False, capture_output=True)
        return [os.path.basename(p) for p in mini_batch]
"""


def _writable(folder: Path) -> bool:
    try:
        (folder / "probe").touch()
    except OSError:
        return False
    (folder / "probe").unlink()
    return True


def test_a_staging_folder_made_read_only_stops_the_job_then_resume_finishes_it(
    tmp_path: Path,
) -> None:
    """A permission refused on the job's own files (a folder made read-only under the output
    folder) is the disk's, as a full disk is: the job stops with WriteFailed, no try charged
    (each was taken for a worker death, PROCESS_DIED, and the job ended Completed)."""
    locked = tmp_path / "locked"
    dep = write_deployment(
        tmp_path / "deploy",
        LOCKING,
        settings={"mini_batch_size": 3, "environment_variables": {"LOCKED": str(locked)}},
    )
    inputs = write_inputs(tmp_path / "in", N_FILES)
    out = tmp_path / "out"
    args = ["run", str(dep), "--input", str(inputs), "--output", str(out), "--workers", "1"]
    parts = out / ".daskscore" / "parts"
    try:
        proc = run_cli(*args)
        if proc.returncode == 0 and locked.exists() and _writable(parts):
            pytest.skip("the staging folder could not be made read-only here")

        assert proc.returncode == 1, proc.stderr
        assert "daskscore: error: writing the job's staged output failed: " in proc.stderr
        assert "--resume" in proc.stderr
        assert "PROCESS_DIED" not in proc.stderr and "internal error" not in proc.stderr
        assert not (out / "predictions.csv").exists()
    finally:
        subprocess.run(["chattr", "-i", str(parts)], check=False, capture_output=True)
        if parts.exists():
            parts.chmod(0o755)

    again = run_cli(*args, "--resume")

    assert again.returncode == 0, again.stderr
    names = (out / "predictions.csv").read_text().split()
    assert sorted(names) == [f"f{i:04d}.csv" for i in range(N_FILES)]


REMOVED = """
    import os
    import time

    def run(mini_batch):
        time.sleep(0.5)
        return [os.path.basename(p) for p in mini_batch]
"""


def test_an_output_folder_removed_while_the_job_runs_stops_it_saying_so(tmp_path: Path) -> None:
    """``rm -rf`` of the output folder mid-job: the first task that cannot commit stops the
    job with an error saying the folder went, not an internal ``FileNotFoundError`` at the
    end (the tasks were sent again and again meanwhile)."""
    import shutil
    import time

    dep = write_deployment(tmp_path / "deploy", REMOVED, settings={"mini_batch_size": 1})
    inputs, out = write_inputs(tmp_path / "in", N_FILES), tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "daskscore", "run", str(dep), "--input", str(inputs), "--output",
         str(out), "--workers", "2", "--no-progress", "--no-dashboard"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    ledgers = out / ".daskscore" / "ledger"
    deadline = time.monotonic() + 120
    while not (ledgers.is_dir() and any(ledgers.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.1)
    shutil.rmtree(out)
    _, stderr = proc.communicate(timeout=150)
    assert proc.returncode == 1, stderr
    assert "internal error" not in stderr, stderr
    assert "was removed or moved while the job ran" in stderr, stderr


IN_THE_WAY = """
    import os

    def run(mini_batch):
        if not os.path.exists(os.environ["CLEARED"]):  # (makes the folder until told not to)
            out = os.environ["AZUREML_BI_OUTPUT_PATH"]
            os.makedirs(os.path.join(out, "predictions.csv.partial"), exist_ok=True)
        return [os.path.basename(p) for p in mini_batch]
"""


def test_a_folder_in_the_way_of_the_predictions_is_named_then_resume_writes_them(
    tmp_path: Path,
) -> None:
    """The script made a folder where the job writes its predictions: the job said "internal
    error: IsADirectoryError"; it names the folder and keeps what was done for --resume."""
    import shutil

    import daskscore
    from daskscore.errors import WriteFailed

    cleared = tmp_path / "cleared"
    dep = write_deployment(
        tmp_path / "dep",
        IN_THE_WAY,
        settings={"mini_batch_size": 2, "environment_variables": {"CLEARED": str(cleared)}},
    )
    inputs = write_inputs(tmp_path / "in", 4, width=3)
    out = tmp_path / "out"
    with pytest.raises(WriteFailed) as failed:
        daskscore.run(dep, inputs, out, workers=1)
    text = str(failed.value)
    assert f"{out / 'predictions.csv.partial'} is in the way (Is a directory)" in text
    assert "--resume" in text
    shutil.rmtree(out / "predictions.csv.partial")
    cleared.touch()
    result = daskscore.run(dep, inputs, out, workers=1, resume=True)
    assert result.status == "Completed"
    assert sorted(result.predictions.read_text().split()) == [f"f{i:03d}.csv" for i in range(4)]
