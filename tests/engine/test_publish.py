"""A job whose output is a URL, when the store fails as its output is uploaded at the end.

A moto S3 server of the test's own (a real process on loopback) is the output store (not
Azurite: the Azure client's own retries of a store that is gone last minutes); the
scoring script ends it with SIGKILL while it scores, after the job has claimed its output
URL, so the upload at the end finds no store.  The command then says, in one paragraph and
without a traceback, that the upload to the URL failed and which local folder holds the whole
output (kept, not deleted), and exits 1, as a job whose files could not be written does.

A job to an output URL stopped by SIGTERM while it scores keeps what it committed in its local
assembly folder (named by the URL), and the same command with ``--resume`` scores only the rest,
uploads each row once and removes that folder.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import fsspec
import pandas as pd
import pytest
from conftest import run_cli, write_deployment, write_inputs
from helpers import show, sigterm_when
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


#: each run() call, once it has scored its mini-batch, is noted in the file $CALLS
NOTED = """
    import os
    import time

    def init():
        pass

    def run(mini_batch):
        time.sleep(0.3)
        with open(os.environ["CALLS"], "a") as f:
            f.write("".join(os.path.basename(p) + "\\n" for p in mini_batch))
        return [os.path.basename(p) for p in mini_batch]
"""


def test_sigterm_then_resume_finishes_a_job_written_to_a_url(tmp_path: Path) -> None:
    n = 10
    calls = tmp_path / "calls"
    settings = {"mini_batch_size": 1, "environment_variables": {"CALLS": str(calls)}}
    dep = write_deployment(tmp_path / "d", NOTED, settings=settings)
    inputs = write_inputs(tmp_path / "in", n)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    with run_moto_s3(tmp_path) as info:
        url = f"{make_bucket(info)}/out"
        argv = ["run", str(dep), "-i", str(inputs), "-o", url, "--workers", "1"]
        argv += ["--no-progress", "--no-dashboard"]
        env = {**os.environ, "TMPDIR": str(scratch)}
        code, err = sigterm_when(
            lambda: calls.exists() and len(calls.read_text().split()) >= 3, *argv, env=env
        )
        assert code == 128 + signal.SIGTERM, err
        message = " ".join(err.split())
        kept = sorted(scratch.glob("daskscore-output-*"))
        assert len(kept) == 1, err
        assert f"What is done is kept in {kept[0]}" in message, err
        assert "--resume finishes it" in message, err
        line = next(li for li in err.splitlines() if li.startswith("Go on with: "))
        again = line[len("Go on with: ") :].split()
        assert again[0] == "daskscore" and "--resume" in again, line
        first = calls.read_text().split()
        calls.unlink()

        resumed = run_cli(*again[1:], env={"TMPDIR": str(scratch)})
        assert resumed.returncode == 0, show(resumed)
        assert f"output: {url} (assembled in {kept[0]})" in resumed.stderr, show(resumed)
        rescored = calls.read_text().split()
        fs, base = fsspec.core.url_to_fs(url, **info["storage_options"])
        rows = fs.cat_file(f"{base}/predictions.csv").decode().split()
    # only what the interrupted run had not committed is scored again
    assert len(rescored) < n, (first, rescored)
    assert sorted(set(first) | set(rescored)) == [f"f{i:04d}.csv" for i in range(n)]
    assert sorted(rows) == [f"f{i:04d}.csv" for i in range(n)]  # each row once
    assert not list(scratch.glob("daskscore-output-*")), show(resumed)  # (removed once uploaded)


#: the one mini-batch's run() notes its call in $CALLS and writes many small files into the
#: output folder, so that the upload at the end lasts long enough to be interrupted
MANY_FILES = """
    import os

    def init():
        pass

    def run(mini_batch):
        with open(os.environ["CALLS"], "a") as f:
            f.write("".join(os.path.basename(p) + "\\n" for p in mini_batch))
        extra = os.path.join(os.environ["AZUREML_BI_OUTPUT_PATH"], "extra")
        os.makedirs(extra, exist_ok=True)
        for i in range(2000):
            with open(os.path.join(extra, f"e{i:05d}.txt"), "w") as f:
                f.write(str(i))
        return [os.path.basename(p) for p in mini_batch]
"""


def test_ctrl_c_during_the_upload_says_so_and_resume_uploads_the_kept_output(
    tmp_path: Path,
) -> None:
    """Ctrl-C once the job has ended and its output is being uploaded: the command says the
    upload was interrupted, where the whole output is kept and how to upload it (not "nothing
    is left to resume"); the same command without --resume is refused naming that folder, and
    with it uploads the output (each row once, the summary last) without scoring again."""
    calls = tmp_path / "calls"
    settings = {"mini_batch_size": 10, "environment_variables": {"CALLS": str(calls)}}
    dep = write_deployment(tmp_path / "d", MANY_FILES, settings=settings)
    inputs = write_inputs(tmp_path / "in", 3)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    with run_moto_s3(tmp_path) as info:
        url = f"{make_bucket(info)}/out"
        fs, base = fsspec.core.url_to_fs(url, **info["storage_options"])

        def uploading() -> bool:  # (the output's first files have reached the store)
            fs.invalidate_cache()
            return fs.exists(f"{base}/extra")

        argv = ["run", str(dep), "-i", str(inputs), "-o", url, "--workers", "1"]
        argv += ["--no-progress", "--no-dashboard"]
        env = {**os.environ, "TMPDIR": str(scratch)}
        code, err = sigterm_when(uploading, *argv, env=env, sig=signal.SIGINT)
        assert code == 128 + signal.SIGINT, err
        (kept,) = sorted(scratch.glob("daskscore-output-*"))
        message = " ".join(err.split())
        assert f"interrupted while the output was uploaded to {url}" in message, err
        assert f"whole output is kept in {kept}" in message, err
        assert "nothing is left to resume" not in message, err
        assert not fs.exists(f"{base}/job_summary.json")  # (uploaded last: not yet)
        line = next(li for li in err.splitlines() if li.startswith("Upload it with: "))
        again = line[len("Upload it with: ") :].split()
        assert again[0] == "daskscore" and again[-1] == "--resume", line

        refused = run_cli(*again[1:-1], env={"TMPDIR": str(scratch)})
        assert refused.returncode == 2, show(refused)
        said = " ".join(refused.stderr.split())
        assert f"kept in {kept}" in said and "Pass --resume to upload it" in said, show(refused)

        resumed = run_cli(*again[1:], env={"TMPDIR": str(scratch)})
        assert resumed.returncode == 0, show(resumed)
        fs.invalidate_cache()
        rows = fs.cat_file(f"{base}/predictions.csv").decode().split()
        summary = json.loads(fs.cat_file(f"{base}/job_summary.json"))
        extra = fs.ls(f"{base}/extra")
    assert sorted(rows) == ["f0000.csv", "f0001.csv", "f0002.csv"]  # each row once
    assert summary["status"] == "Completed" and summary["output"] == url, summary
    assert len(extra) == 2000
    assert calls.read_text().split() == ["f0000.csv", "f0001.csv", "f0002.csv"]  # scored once
    assert not kept.exists(), show(resumed)  # (removed once uploaded)


#: run() raises on the mini-batch that holds f0002.csv
ONE_FAILS = """
    import os

    def init():
        pass

    def run(mini_batch):
        if any(os.path.basename(p) == "f0002.csv" for p in mini_batch):
            raise ValueError("bad item")
        return [os.path.basename(p) for p in mini_batch]
"""


def test_uploaded_logs_name_the_url_and_how_to_replay(tmp_path: Path) -> None:
    """The logs and report.html uploaded with a job to a URL name the URL (failed_items.csv,
    the logs, the predictions), not the local assembly folder that is removed once uploaded,
    and print no replay command of that folder: they say to download the output and replay
    it, which works; a replay given the URL itself says it needs a local folder."""
    import daskscore

    settings = {"mini_batch_size": 2, "retry_settings": {"max_retries": 0}}
    dep = write_deployment(tmp_path / "d", ONE_FAILS, settings=settings)
    inputs = write_inputs(tmp_path / "in", 4)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    with run_moto_s3(tmp_path) as info:
        url = f"{make_bucket(info)}/out"
        argv = ["run", str(dep), "-i", str(inputs), "-o", url, "--workers", "1"]
        proc = run_cli(*argv, "--no-progress", "--no-dashboard", env={"TMPDIR": str(scratch)})
        assert proc.returncode == 0, show(proc)
        fs, base = fsspec.core.url_to_fs(url, **info["storage_options"])
        names = ("logs/job_error.txt", "logs/job_result.txt", "report.html")
        texts = {name: fs.cat_file(f"{base}/{name}").decode() for name in names}
        fs.get(f"{base}/", str(tmp_path / "downloaded"), recursive=True)
    for name, text in texts.items():
        assert "daskscore-output-" not in text and str(scratch) not in text, (name, text)
    error, result = texts["logs/job_error.txt"], texts["logs/job_result.txt"]
    assert f"Failed items, one per line: {url}/failed_items.csv" in error, error
    assert f"Full logs: {url}/logs" in error and f"report: {url}/report.html" in error, error
    assert f"predictions: {url}/predictions.csv (2 rows)" in result, result
    how = f"download {url} into a local folder, then `daskscore replay FOLDER --mini-batch 1`"
    assert how in error and how in texts["report.html"], error
    assert "daskscore replay /" not in error + texts["report.html"]
    # as they say: the downloaded folder replays mini-batch 1 (run() raises again: 1)
    assert daskscore.replay(tmp_path / "downloaded", 1) == 1
    with pytest.raises(daskscore.UsageError, match="is a URL: replaying needs a job's output"):
        daskscore.replay(url, 1)
