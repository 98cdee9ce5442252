"""A job whose output is a URL, when the store fails as its output is uploaded at the end.

A moto S3 server of the test's own (a real process on loopback) is the output store (not
Azurite: the Azure client's own retries of a store that is gone last minutes); the
scoring script ends it with SIGKILL while it scores, after the job has claimed its output
URL, so the upload at the end finds no store.  The command then says, in one paragraph and
without a traceback, that the upload to the URL failed and which local folder holds the whole
output (kept, not deleted), and exits 1, as a job whose files could not be written does.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_cli, write_deployment, write_inputs
from helpers import show
from storage_emulators import make_bucket, run_moto_s3

pytestmark = pytest.mark.slow

SCRIPT = """
    import os
    import signal

    def init():
        pass

    def run(mini_batch):
        try:
            os.kill(int(os.environ["STORE_PID"]), signal.SIGKILL)  # the output store dies
        except ProcessLookupError:
            pass
        return [os.path.basename(p) for p in mini_batch]
"""


def _store_pid(port: int) -> int:
    """The pid of the test's moto server: the child process started with ``port``."""
    import psutil

    for child in psutil.Process().children():
        if str(port) in child.cmdline():
            return child.pid
    raise AssertionError(f"no child process serves port {port}")


def test_failed_upload_keeps_the_output_and_says_where(tmp_path: Path) -> None:
    with run_moto_s3(tmp_path) as info:
        url = f"{make_bucket(info)}/out"
        pid = _store_pid(info["port"])
        settings = {"mini_batch_size": 10, "environment_variables": {"STORE_PID": str(pid)}}
        dep = write_deployment(tmp_path / "d", SCRIPT, settings=settings)
        inputs = write_inputs(tmp_path / "in", 3)
        scratch = tmp_path / "tmp"
        scratch.mkdir()
        args = ("run", str(dep), "--input", str(inputs), "--output", url)
        proc = run_cli(
            *args,
            "--workers",
            "1",
            "--no-progress",
            "--no-dashboard",
            env={"TMPDIR": str(scratch), "AWS_MAX_ATTEMPTS": "1"},
        )
    assert proc.returncode == 1, show(proc)
    assert "Traceback" not in proc.stderr, show(proc)
    assert "internal error" not in proc.stderr, show(proc)
    kept = sorted(scratch.glob("daskscore-output-*"))
    assert len(kept) == 1, show(proc)
    folder = kept[0]
    message = " ".join(proc.stderr.split())
    assert f"uploading the job's output to {url} failed" in message, show(proc)
    assert f"kept in {folder}" in message, show(proc)
    assert "--overwrite" in message and "aws s3 cp --recursive" in message, show(proc)
    assert f"marker {url}/.daskscore.lock" in message, show(proc)
    assert "could not remove the marker" not in proc.stderr, show(proc)  # (said once, above)
    # the whole output is there, and the traceback is in its job log
    rows = pd.read_csv(folder / "predictions.csv", sep=" ", header=None)
    assert rows[0].tolist() == ["f0000.csv", "f0001.csv", "f0002.csv"]
    assert (folder / "job_summary.json").is_file()
    log = (folder / "logs" / "sys" / "daskscore.txt").read_text()
    assert f"uploading the output to {url} failed" in log
    assert "Traceback" in log
    assert os.path.isdir(folder / "logs" / "user")
