"""Input files whose names are not UTF-8 (issue 17, item 4), through the real command.

Linux lets a file name hold any bytes; Python lists ``bad\\xffname.csv`` as the str
``bad\\udcffname.csv`` (surrogateescape), which ``open()`` takes back but which no UTF-8 text can
hold.  The job must complete: ``run()`` gets a path it can open, and every file daskscore writes
(rows, logs, the per-try report, ``report.html``) holds the name escaped as ``\\udcff``, so that
each stays valid UTF-8; ``job_summary.json`` keeps the name as a JSON escape, so Python reads back
a path that opens.  ``--resume`` of such a job, killed half-way, completes the same way.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from helpers import cli, cli_args, make_job, show, summary_of

pytestmark = pytest.mark.timeout(200)

#: A name that is not UTF-8 (``\xff`` starts no UTF-8 sequence): run() reads it and scores it.
GOOD = b"bad\xffname.csv"
#: Another, on which run() raises: its name goes into the error logs and reports.
FAILING = b"worse\xfe.csv"

SCRIPT = """
    import logging
    import os
    import signal
    import time
    from pathlib import Path

    def init():
        pass

    def run(mini_batch):
        rows = []
        for path in mini_batch:
            name = os.path.basename(path)
            print("scoring", path)
            logging.warning("scoring %s", path)
            if name.startswith("worse"):
                raise ValueError(f"cannot score {path}")
            if name == os.environ.get("SLOW_ON"):
                time.sleep(1.2)  # so that the task commits what it did after this one
            if name == os.environ.get("KILL_ON") and not os.path.exists(os.environ["MARKER"]):
                Path(os.environ["MARKER"]).touch()
                os.killpg(int(Path(os.environ["GROUP"]).read_text()), signal.SIGKILL)
            rows.append(f"{name} {len(Path(path).read_text())}")
        return rows
"""


def escaped(text: str) -> str:
    """``text`` as daskscore writes it: what is not valid Unicode as backslash escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def add_file(folder: Path, name: bytes, text: str) -> str:
    """Write ``folder/name`` (a bytes name); return the path as Python lists it."""
    path = os.path.join(os.fsencode(folder), name)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    return os.fsdecode(path)


def assert_all_utf8(out: Path) -> None:
    """Every text file the job wrote is valid UTF-8 (not Parquet, nor the staging folder's
    zlib-compressed list of input names, ``inputs.z``, which keeps their bytes as they are)."""
    for path in out.rglob("*"):
        if path.is_file() and path.suffix not in (".parquet", ".z"):
            try:
                path.read_bytes().decode("utf-8")
            except UnicodeDecodeError as exc:
                pytest.fail(f"{path} is not UTF-8: {exc}")


def test_a_name_that_is_not_utf8_is_scored_and_written_escaped(tmp_path: Path) -> None:
    settings = {"mini_batch_size": 1, "retry_settings": {"max_retries": 0}}
    dep, inputs, out = make_job(tmp_path, SCRIPT, n_files=3, settings=settings)
    good = add_file(inputs, GOOD, "x\n1\n")
    failing = add_file(inputs, FAILING, "x\n2\n")

    proc = cli(dep, inputs, out)

    assert proc.returncode == 0, show(proc)
    assert "UnicodeEncodeError" not in proc.stderr, show(proc)
    s = summary_of(out)
    assert s["status"] == "Completed"
    assert (s["total_items"], s["succeeded_items"], s["failed_items"]) == (5, 4, 1)
    # the row: the name run() returned, escaped; the file was read (run() could open it)
    rows = (out / "predictions.csv").read_bytes().decode("utf-8").splitlines()
    assert rows[0] == "bad\\udcffname.csv 4", rows
    assert len(rows) == 4
    # the failure: its name escaped in every text, and reopenable from job_summary.json
    [failure] = s["failures"]
    assert failure["files"] == [failing] and os.path.exists(failure["files"][0])
    logs = out / "logs"
    shown = escaped(failing)
    assert shown.endswith("worse\\udcfe.csv")
    assert shown in (logs / "job_error.txt").read_text(encoding="utf-8")
    assert shown in (logs / "sys" / "job_report" / "processed_mini-batches.csv").read_text(
        encoding="utf-8"
    )
    assert shown in (out / "report.html").read_text(encoding="utf-8")
    errors = "".join(p.read_text(encoding="utf-8") for p in (logs / "user" / "error").iterdir())
    assert f"ValueError: cannot score {shown}" in errors
    prints = "".join(p.read_text(encoding="utf-8") for p in (logs / "user" / "stdout").iterdir())
    assert f"scoring {escaped(good)}" in prints
    assert f"WARNING root: scoring {escaped(good)}" in prints
    assert_all_utf8(out)
    assert not (out / ".daskscore").exists()


def test_a_job_with_such_a_name_killed_half_way_resumes(tmp_path: Path) -> None:
    dep, inputs, out = make_job(
        tmp_path,
        SCRIPT,
        n_files=3,
        settings={"mini_batch_size": 1},
        env={
            "SLOW_ON": "f0000.csv",
            "KILL_ON": "f0001.csv",
            "MARKER": str(tmp_path / "killed"),
            "GROUP": str(tmp_path / "group"),
        },
    )
    add_file(inputs, GOOD, "x\n1\n")  # mini-batch 0: sorted before f0000.csv
    args = cli_args(dep, inputs, out)
    args[args.index("--workers") + 1] = "1"  # one worker: the mini-batches run in order
    with open(tmp_path / "first.stderr", "w") as err:
        # its own session and process group: run() kills that group, never this test's
        first = subprocess.Popen(
            [sys.executable, "-m", "daskscore", *args],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
        (tmp_path / "group").write_text(str(first.pid))
        try:
            first.wait(timeout=120)
        finally:
            if first.poll() is None:
                os.killpg(first.pid, signal.SIGKILL)
                first.wait()
    stderr = (tmp_path / "first.stderr").read_text()
    assert first.returncode == -signal.SIGKILL, f"exit {first.returncode}\n{stderr}"
    assert (out / ".daskscore").is_dir()

    proc = cli(dep, inputs, out, "--resume")

    assert proc.returncode == 0, show(proc)
    s = summary_of(out)
    assert s["status"] == "Completed"
    assert (s["total_items"], s["succeeded_items"], s["failed_items"]) == (4, 4, 0)
    assert s["resumed_mini_batches"] >= 1  # the name's mini-batch came back from the ledger
    rows = (out / "predictions.csv").read_bytes().decode("utf-8").splitlines()
    sizes = [len(f"x\n{i}\n{i + 0.5}\n") for i in range(3)]  # (conftest.write_inputs)
    assert rows == ["bad\\udcffname.csv 4"] + [f"f{i:04d}.csv {sizes[i]}" for i in range(3)]
    assert json.loads((out / "job_summary.json").read_text())["failures"] == []
    assert_all_utf8(out)


def test_a_line_break_in_a_failed_file_s_name_keeps_its_failure_on_one_line(
    tmp_path: Path,
) -> None:
    script = """
import os

def run(mini_batch):
    for path in mini_batch:
        if "\\n" in os.path.basename(path):
            raise ValueError("cannot score that one")
    return [os.path.basename(p) for p in mini_batch]
"""
    dep, inputs, out = make_job(tmp_path, script, n_files=2, settings={"mini_batch_size": 1})
    (inputs / "two\nlines.csv").write_text("x\n1\n")

    proc = cli(dep, inputs, out)

    assert proc.returncode == 0, show(proc)  # (error_threshold -1)
    for text in (proc.stderr, (out / "logs" / "job_error.txt").read_text()):
        [line] = [li for li in text.splitlines() if li.lstrip().startswith("mini-batch ")]
        assert line.endswith("1 failed): two\\nlines.csv"), line
