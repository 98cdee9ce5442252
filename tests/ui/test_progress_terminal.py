"""The progress display of a real ``daskscore run``, as a user sees it: on a pseudo-terminal 60,
80 and 120 columns wide (no redraw of the bar wider than the terminal, its last counts the
summary's, the phases named as they happen, failed files by their path under the input, the
report's path last), off a terminal (progress lines), and Ctrl-C typed on the terminal: the
summary and report of what was done are written, the resume command is printed, and running
it finishes the job with every row once, its bar reaching 100 %."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
from pathlib import Path

import pytest
from conftest import run_cli, write_deployment, write_inputs
from helpers import make_job, show, summary_of
from ptyrun import PtyRun

from daskscore.io import outputdir

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

SCRIPT = """
import os
import time

def init():
    pass

def run(mini_batch):
    time.sleep(float(os.environ.get("DELAY", "0.1")))
    if any(p.replace(os.sep, "/").endswith("b/f0003.csv") for p in mini_batch):
        raise ValueError("bad file")
    return [os.path.relpath(p, os.environ["INPUT_ROOT"]) for p in mini_batch]
"""


def _job(root: Path, n_per_folder: int, delay: float, size: int = 2) -> tuple[Path, Path, Path]:
    """Inputs in two folders with the same file names (a/f0000.csv, b/f0000.csv, ...)."""
    inputs = root / "in"
    write_inputs(inputs / "a", n_per_folder)
    write_inputs(inputs / "b", n_per_folder)
    env = {"DELAY": str(delay), "INPUT_ROOT": str(inputs)}
    settings = {
        "mini_batch_size": size,
        "error_threshold": -1,
        "retry_settings": {"max_retries": 0},
        "environment_variables": env,
    }
    dep = write_deployment(root / "deploy", SCRIPT, settings=settings)
    return dep, inputs, root / "out"


def _args(dep: Path, inputs: Path, out: Path, *extra: str) -> list[str]:
    args = ["run", str(dep), "--input", str(inputs), "--output", str(out), "--workers", "2"]
    return [*args, "--no-dashboard", *extra]


def _lines(text: str) -> list[str]:
    return [line.strip() for line in re.split(r"[\r\n]", text) if line.strip()]


@pytest.mark.parametrize("columns", [60, 80, 120])
def test_the_bar_fits_the_terminal_and_ends_at_the_summarys_counts(
    tmp_path: Path, columns: int
) -> None:
    # (paths long enough to be wider than the widest terminal: lines holding them are wrapped)
    dep, inputs, out = _job(tmp_path / ("a-deep-folder-" * 5), 10, 0.1)
    run = PtyRun(_args(dep, inputs, out), columns)
    assert run.finish() == 0, run.text
    bars = run.bars()
    assert bars, run.text
    assert all(len(bar) < columns for bar in bars), [b for b in bars if len(b) >= columns]
    s = summary_of(out)
    done = f"{s['total_mini_batches']}/{s['total_mini_batches']} mini-batches"
    assert re.search(rf"100% {done}, {s['failed_mini_batches']} failed", bars[-1]), bars[-1]
    if columns >= 120:
        assert f"{s['total_items']}/{s['total_items']} items" in bars[-1]
    # the command's own lines fit too: wrapped at spaces; a path or a command to copy alone on
    # its line may be wider (never cut), and so may the user's traceback (as Python printed it)
    wide = [
        f
        for f in run.frames()
        if len(f) >= columns
        and " " in f.strip()
        and not f.strip().startswith(("daskscore ", 'File "'))
    ]
    assert not wide, wide
    assert any(len(f) >= columns for f in run.frames())  # (the paths alone are wider)
    text = run.text
    phases = ["starting 2 workers…", "init()…", "writing predictions…"]
    assert all(p in text for p in phases), text
    assert [text.index(p) for p in phases] == sorted(text.index(p) for p in phases)
    assert re.search(r"b/f0002\.csv,\s+b/f0003\.csv", text), text  # (f0003.csv alone: a/'s?)
    assert _lines(text)[-1] in (f"Report: {out}/report.html", f"{out}/report.html")


def test_progress_lines_off_a_terminal(tmp_path: Path) -> None:
    dep, inputs, out = _job(tmp_path, 10, 0.05)
    proc = run_cli(*_args(dep, inputs, out), timeout=180)
    assert proc.returncode == 0, show(proc)
    s = summary_of(out)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("progress: ")]
    assert lines, show(proc)
    total = s["total_mini_batches"]
    assert lines[-1].startswith(f"progress: {total}/{total} mini-batches, 1 failed | 20/20 items")
    assert "starting 2 workers…" in proc.stderr and "init()…" in proc.stderr
    assert "b/f0002.csv, b/f0003.csv" in proc.stderr
    assert proc.stderr.splitlines()[-1] == f"Report: {out}/report.html"


@pytest.mark.parametrize("how", ["typed", "driver"])
def test_ctrl_c_writes_the_summary_and_report_and_resume_finishes(tmp_path: Path, how: str):
    dep, inputs, out = _job(tmp_path, 40, 0.25, size=1)  # 80 mini-batches, ~10 s
    run = PtyRun(_args(dep, inputs, out), 80)
    started = run.wait_for(
        # (a second or more of work: the workers' ledgers have been written to at least once)
        lambda text: re.search(r"\b([2-7]\d)/80 mini-batches", text) is not None,
        120,
    )
    assert started, run.text
    if how == "typed":  # Ctrl-C on the terminal: SIGINT to its foreground process group
        run.type(b"\x03")
    else:  # SIGINT to the daskscore process alone (kill -INT)
        os.kill(run.proc.pid, signal.SIGINT)
    assert run.finish() == 130, run.text
    lines = _lines(run.text)
    assert lines[-1] in (f"Report: {out}/report.html", f"{out}/report.html"), run.text
    # (on 80 columns the command has a line of its own, after its label)
    at = max(i for i, line in enumerate(lines) if line.startswith("Go on with:"))
    go_on = [lines[at].removeprefix("Go on with:").strip() or lines[at + 1]]
    assert go_on[-1].startswith("daskscore run ") and go_on[-1].endswith(" --resume"), run.text
    s = json.loads((out / "job_summary.json").read_text(encoding="utf-8"))
    assert s["status"] == "Interrupted"
    assert 0 < s["total_mini_batches"] - s["not_run_mini_batches"] < 80
    page = (out / "report.html").read_text(encoding="utf-8")
    assert 'data-status="Interrupted"' in page
    assert (out / outputdir.STAGING_DIR).is_dir()  # resumable
    assert not (out / "predictions.csv").exists()

    # the printed command finishes the job: every row once, the bar at 100 %
    again = PtyRun(shlex.split(go_on[-1])[1:], 80)
    assert again.finish() == 0, again.text
    assert re.search(r"100% 80/80 mini-batches, 1 failed", again.bars()[-1]), again.bars()
    s = summary_of(out)
    assert s["status"] == "Completed" and s["resumed_mini_batches"] > 0
    rows = (out / "predictions.csv").read_text(encoding="utf-8").split()
    assert sorted(rows) == sorted(
        f"{d}/f{i:04d}.csv" for d in "ab" for i in range(40) if (d, i) not in {("b", 3)}
    )


def test_a_retry_pass_counts_the_kept_mini_batches_and_reaches_100(tmp_path: Path) -> None:
    dep, inputs, out = _job(tmp_path, 10, 0.05)
    assert run_cli(*_args(dep, inputs, out), timeout=180).returncode == 0
    again = PtyRun(_args(dep, inputs, out, "--retry-failed"), 80)
    assert again.finish() == 0, again.text
    bars = again.bars()
    assert bars and re.search(r"100% 10/10 mini-batches, 1 failed", bars[-1]), again.text


def test_an_interrupted_summary_leaves_the_job_resumable(tmp_path: Path) -> None:
    """A summary written at Ctrl-C beside the staging folder is no finished job's: --resume
    resumes, a plain run asks for --resume, --retry-failed refuses (before, a summary beside a
    staging folder meant a finished job)."""
    from daskscore.engine import retry
    from daskscore.errors import OutputError

    out = tmp_path / "out"
    (out / outputdir.STAGING_DIR).mkdir(parents=True)
    outputdir.write_summary(out, {"status": outputdir.INTERRUPTED})
    assert outputdir.claim_output(out, "predictions.csv", overwrite=False, resume=True)
    with pytest.raises(OutputError, match="unfinished job.*--resume"):
        outputdir.claim_output(out, "predictions.csv", overwrite=False)
    with pytest.raises(OutputError, match="interrupted job.*--resume"):
        retry.finished_summary(out)
    assert outputdir.find_kept(out) is None
    outputdir.write_summary(out, {"status": "Completed"})  # (a finished job's, as before)
    with pytest.raises(OutputError, match="holds a finished job"):
        outputdir.claim_output(out, "predictions.csv", overwrite=False, resume=True)


GATED = """
import os
import time

def init():
    pass

def run(mini_batch):
    if any(p.endswith("f0009.csv") for p in mini_batch):  # the first task's last: held
        end = time.monotonic() + 120
        while not os.path.exists(os.environ["RELEASE"]) and time.monotonic() < end:
            time.sleep(0.05)
    return [os.path.basename(p) for p in mini_batch]
"""


@pytest.mark.timeout(300)
def test_mini_batches_count_as_they_end_on_dask_worker_processes(tmp_path: Path) -> None:
    """A real ``dask scheduler`` and ``dask worker`` (one thread): the first task carries
    mini-batches 0-9 and its last is held until the test lets it go, so no task has come back
    when the bar must already show the 9 mini-batches that ended inside it."""
    from dask_processes import ProcessCluster

    release = tmp_path / "release"
    dep = write_deployment(
        tmp_path / "deploy",
        GATED,
        settings={"mini_batch_size": 1, "environment_variables": {"RELEASE": str(release)}},
    )
    inputs = write_inputs(tmp_path / "in", 40)
    out = tmp_path / "out"
    with ProcessCluster(tmp_path / "cluster", workers=1) as cluster:
        args = ["run", str(dep), "--input", str(inputs), "--output", str(out)]
        run = PtyRun([*args, "--scheduler", cluster.address, "--no-dashboard"], 80)
        try:
            live = run.wait_for(lambda text: " 9/40 mini-batches" in text, 120)
            assert live, f"{run.text}\n--- cluster\n{cluster.logs(30)}"
            assert not (out / "predictions.csv").exists()
        finally:
            release.touch()
        assert run.finish() == 0, run.text
    assert re.search(r"100% 40/40 mini-batches", run.bars()[-1]), run.bars()
    assert summary_of(out)["succeeded_items"] == 40


@pytest.mark.parametrize("term", ["xterm", "dumb"])
def test_a_verdict_where_nothing_succeeded_is_red_on_a_terminal(tmp_path: Path, term: str):
    """Drawn red, not written out: the colour's escape codes went through the text's own
    escaping of control characters and showed as ``\\x1b[1;31m``.  A terminal whose
    ``TERM`` is ``dumb`` gets no escape sequence at all: no colour, and the bar is erased
    to its end with spaces, not ``\\033[K``."""
    script = """
        def run(mini_batch):
            raise RuntimeError("every mini-batch fails")
    """
    dep, inputs, out = make_job(
        tmp_path, script, n_files=2, settings={"retry_settings": {"max_retries": 0}}
    )
    run = PtyRun(_args(dep, inputs, out), 100, env={"TERM": term})
    assert run.finish() == 0, run.text
    assert "\\x1b" not in run.text, run.text
    if term == "dumb":
        assert "\x1b" not in run.text, run.text
        assert "Job Completed, but no item succeeded" in run.text, run.text
        assert re.search(r"100% 1/1 mini-batch, 1 failed", run.bars()[-1]), run.bars()
    else:
        assert "\x1b[1;31mJob Completed, but no item succeeded" in run.text, run.text
