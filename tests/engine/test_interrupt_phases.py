"""Ctrl-C outside the scoring phase: before the output folder is claimed (nothing was run: the
same command is printed to start again, the folder is untouched), just after the cluster came
up, and while the output is assembled (the summary and report of what was done are written,
the ``--resume`` command printed, and running it finishes the job with every row once), and
once the job's own summary is written (the job is finished: nothing is rewritten).

The Ctrl-C is raised where it would land, by replacing the function running at that moment
with one that raises ``KeyboardInterrupt``, as the interpreter does on SIGINT; the job is
``daskscore run`` in this process, with its real embedded cluster of worker processes.
(``tests/ui/test_progress_terminal.py`` types Ctrl-C on a terminal while scoring.)"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import REPO, write_deployment, write_inputs
from helpers import sigterm_when

from daskscore import cli
from daskscore.engine import interrupt, runner, scoring
from daskscore.io import outputdir

pytestmark = pytest.mark.timeout(240)

SCRIPT = """
import os

def init():
    pass

def run(mini_batch):
    return [os.path.basename(p) for p in mini_batch]
"""

N_FILES = 12


def _job(root: Path) -> list[str]:
    dep = write_deployment(
        root / "deploy",
        SCRIPT,
        settings={"mini_batch_size": 2, "output_action": "append_row"},
    )
    inputs = write_inputs(root / "in", N_FILES)
    args = ["run", str(dep), "--input", str(inputs), "--output", str(root / "out")]
    return [*args, "--workers", "2", "--no-progress", "--no-dashboard"]


def _main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main(argv)
    return code, capsys.readouterr().err


def _ctrl_c(*args: Any, **kwargs: Any) -> Any:
    raise KeyboardInterrupt


def _summary(out: Path) -> dict[str, Any]:
    return json.loads((out / outputdir.SUMMARY_FILE).read_text("utf-8"))


def _printed_command(err: str, label: str) -> list[str]:
    line = next(li for li in err.splitlines() if li.startswith(label))
    words = shlex.split(line[len(label) :])
    assert words[0] == "daskscore", line
    return words[1:]


def _rows_once(out: Path) -> None:
    rows = pd.read_csv(out / "predictions.csv", sep=" ", header=None)[0].tolist()
    assert sorted(rows) == [f"f{i:04d}.csv" for i in range(N_FILES)]


def test_before_the_folder_is_claimed_nothing_changes_and_the_command_starts_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = _job(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with monkeypatch.context() as patch:
        patch.setattr(runner, "plan_job", _ctrl_c)  # Ctrl-C while the input is listed
        code, err = _main(argv, capsys)
    assert code == 130, err
    assert "interrupted while the cluster started and the input was listed" in err, err
    assert "nothing was run and the output folder was not changed" in err, err
    assert _printed_command(err, "Start again with: ") == argv  # (no --resume: no job there)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    code, err = _main(argv, capsys)  # the printed command, run: the job from the start
    assert code == 0, err
    _rows_once(out)


def test_ctrl_c_while_connecting_to_a_scheduler_does_not_wait_for_the_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scheduler that does not answer: Ctrl-C while the job waits for the connection stops
    the job at once; the connection attempt is left to its thread (before, the job waited
    out Dask's connect timeout, and every further Ctrl-C was taken as the first's)."""
    import _thread
    import threading

    import dask

    import daskscore
    from daskscore.cluster.local import EarlyCluster

    seen: list[EarlyCluster] = []
    original = EarlyCluster.check

    def check(self: EarlyCluster) -> None:
        seen.append(self)
        threading.Timer(0.5, _thread.interrupt_main).start()  # Ctrl-C while it waits
        original(self)

    monkeypatch.setattr(EarlyCluster, "check", check)
    argv = _job(tmp_path)
    with dask.config.set({"distributed.comm.timeouts.connect": "120s"}):
        with pytest.raises(KeyboardInterrupt):
            daskscore.run(argv[1], argv[3], tmp_path / "out", scheduler="tcp://127.0.0.1:1")
        [early] = seen
        assert not early._started.is_set()  # returned while the connection was still tried
    assert not (tmp_path / "out" / "job_summary.json").exists()


@pytest.mark.parametrize(
    ("where", "phase", "words"),
    [
        ("open_board", "start_cluster", "while the cluster started"),
        ("finish_job", "assemble", "while the output was assembled"),
    ],
)
def test_after_the_claim_the_summary_is_written_and_resume_finishes(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    where: str,
    phase: str,
    words: str,
) -> None:
    argv = _job(tmp_path)
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        patch.setattr(runner, where, _ctrl_c)
        code, err = _main(argv, capsys)
    assert code == 130, err
    s = _summary(out)
    assert s["status"] == outputdir.INTERRUPTED and s["interrupted_phase"] == phase, s
    assert words in s["reason"] and words in err, err
    if phase == "start_cluster":  # (nothing scored yet; everything scored, not assembled)
        assert s["not_run_mini_batches"] == s["total_mini_batches"] == N_FILES // 2, s
    else:
        assert s["not_run_mini_batches"] == 0 and s["failed_mini_batches"] == 0, s
    assert (out / "report.html").is_file() and f"Report: {out / 'report.html'}" in err, err
    assert (out / outputdir.STAGING_DIR).is_dir()  # kept for --resume
    resumed = _printed_command(err, "Go on with: ")
    assert resumed == [*argv, "--resume"], err
    code, err = _main(resumed, capsys)
    assert code == 0, err
    assert _summary(out)["status"] == "Completed"
    _rows_once(out)


def test_ctrl_c_while_init_runs_is_the_init_phase_and_resume_finishes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while the script is installed on the workers (its import, init()): the phase is
    ``init``, its time counted under it, and nothing is charged to scoring."""
    argv = _job(tmp_path)
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        patch.setattr(scoring.ScriptInstall, "install", _ctrl_c)
        code, err = _main(argv, capsys)
    assert code == 130, err
    s = _summary(out)
    assert s["interrupted_phase"] == "init", s
    assert sorted(s["phases"]) == ["init", "start_cluster"], s["phases"]
    assert s["reason"].startswith("interrupted (Ctrl-C) while init() ran, with at least 0 of ")
    assert "while init() ran" in err and "while scoring" not in err, err
    code, err = _main(_printed_command(err, "Go on with: "), capsys)
    assert code == 0, err
    _rows_once(out)


def test_once_its_summary_is_written_the_job_is_finished(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = _job(tmp_path)
    out = tmp_path / "out"
    real = runner.finish_job

    def finish_then_ctrl_c(*args: Any, **kwargs: Any) -> Any:
        real(*args, **kwargs)  # (the summary written, the staging folder removed)
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(runner, "finish_job", finish_then_ctrl_c)
        code, err = _main(argv, capsys)
    assert code == 130, err
    assert "interrupted as the job ended: it is Completed" in err, err
    assert "nothing is left to resume" in err and "--resume" not in err, err
    assert _summary(out)["status"] == "Completed"  # (not rewritten as Interrupted)
    _rows_once(out)


def _signal_after_summary(patch: pytest.MonkeyPatch, sig: int) -> None:
    """Send ``sig`` to this process right after the job's summary is written (a real signal,
    as Ctrl-C or a batch system's SIGTERM would land there)."""
    write_summary = outputdir.write_summary

    def written_then_signalled(*args: Any, **kwargs: Any) -> Any:
        path = write_summary(*args, **kwargs)
        os.kill(os.getpid(), sig)
        return path

    patch.setattr(outputdir, "write_summary", written_then_signalled)


def _leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.startswith(".daskscore"))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_right_after_the_summary_waits_for_the_staging_folder_to_go(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, sig: int
) -> None:
    """The summary and putting the staging folder out of the way are one step for Ctrl-C and
    SIGTERM: the signal is acted on once the folder is gone, and the job is finished."""
    argv = _job(tmp_path)
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        _signal_after_summary(patch, sig)
        code, err = _main(argv, capsys)
    assert code == 128 + sig, err
    assert "interrupted as the job ended: it is Completed" in err, err
    assert _summary(out)["status"] == "Completed"
    assert not _leftovers(out), "the finished job's staging folder was left behind"
    _rows_once(out)


def test_a_retry_pass_signalled_after_its_summary_is_finished(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retry pass that wrote its own summary has ended: a Ctrl-C then says so (nothing to
    retry), and its kept staging folder goes, nothing being left to retry."""
    flag = tmp_path / "broken"
    script = SCRIPT.replace(
        "def run(mini_batch):\n",
        f"def run(mini_batch):\n    if os.path.exists({str(flag)!r}):\n        raise ValueError\n",
    )
    argv = _job(tmp_path)
    write_deployment(tmp_path / "deploy", script, settings={"mini_batch_size": 2})
    out = tmp_path / "out"
    flag.touch()
    code, err = _main([*argv, "--set", "settings.error_threshold=-1"], capsys)
    assert code == 0 and _summary(out)["failed_mini_batches"] == N_FILES // 2, err
    flag.unlink()
    with monkeypatch.context() as patch:
        _signal_after_summary(patch, signal.SIGINT)
        code, err = _main([*argv, "--set", "settings.error_threshold=-1", "--retry-failed"], capsys)
    assert code == 130, err
    assert "interrupted as the job ended: it is Completed" in err, err
    assert "--retry-failed" not in err, err
    assert _summary(out)["failed_mini_batches"] == 0
    assert not _leftovers(out), "the finished pass's staging folder was left behind"
    _rows_once(out)


def test_the_python_api_signalled_after_the_summary_finds_the_job_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import daskscore

    dep = write_deployment(tmp_path / "deploy", SCRIPT, settings={"mini_batch_size": 2})
    inputs = write_inputs(tmp_path / "in", N_FILES)
    out = tmp_path / "out"
    with monkeypatch.context() as patch, pytest.raises(interrupt.JobInterrupted) as caught:
        _signal_after_summary(patch, signal.SIGINT)
        daskscore.run(dep, inputs, out, workers=1, progress=False, dashboard=False)
    assert caught.value.finished, str(caught.value)
    assert not _leftovers(out), "the finished job's staging folder was left behind"
    _rows_once(out)


def test_the_python_api_says_how_to_go_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import daskscore

    root = tmp_path
    dep = write_deployment(root / "deploy", SCRIPT, settings={"mini_batch_size": 2})
    inputs = write_inputs(root / "in", 4)
    monkeypatch.setattr(runner, "open_board", _ctrl_c)
    with pytest.raises(KeyboardInterrupt) as caught:
        daskscore.run(dep, inputs, root / "out", workers=1, progress=False, dashboard=False)
    text = str(caught.value)
    assert "while the cluster started" in text and "resume=True" in text, text
    assert str(root / "out") in text


SLOW_SCRIPT = """
import os
import time

def run(mini_batch):
    with open(os.environ["CALLS"], "a") as f:
        f.write("x")
    time.sleep(0.3)
    return [os.path.basename(p) for p in mini_batch]
"""


def test_sigterm_stops_the_job_as_ctrl_c_does_and_resume_finishes_it(tmp_path: Path) -> None:
    """A batch system's (or ``timeout``'s) SIGTERM while scoring: what is done is kept, the
    summary says Interrupted, the ``--resume`` command is printed, the exit status is
    128 + 15; the resumed job has every row once."""
    calls = tmp_path / "calls"
    dep = write_deployment(
        tmp_path / "deploy",
        SLOW_SCRIPT,
        settings={"mini_batch_size": 1, "environment_variables": {"CALLS": str(calls)}},
    )
    inputs = write_inputs(tmp_path / "in", N_FILES)
    out = tmp_path / "out"
    argv = ["run", str(dep), "-i", str(inputs), "-o", str(out), "--workers", "2"]
    scoring = lambda: calls.exists() and len(calls.read_text()) >= 2  # noqa: E731
    code, err = sigterm_when(scoring, *argv, "--no-progress", "--no-dashboard")
    assert code == 128 + signal.SIGTERM, err
    assert "SIGTERM received" in err
    assert _summary(out)["status"] == outputdir.INTERRUPTED
    again = _printed_command(err, "Go on with: ")
    assert "--resume" in again

    assert cli.main(again) == 0
    _rows_once(out)


def test_a_worker_process_sent_sigterm_still_ends(tmp_path: Path) -> None:
    """The driver's SIGTERM handler is not a worker's: a worker process forked from the driver
    and sent SIGTERM ends (its mini-batch PROCESS_DIED), as by default."""
    script = """
    import os
    import signal
    import time

    def run(mini_batch):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
        return ["outlived SIGTERM"]
    """
    dep = write_deployment(
        tmp_path / "deploy",
        script,
        settings={"mini_batch_size": N_FILES, "retry_settings": {"max_retries": 0}},
    )
    out = tmp_path / "out"
    argv = ["run", str(dep), "-i", str(write_inputs(tmp_path / "in", N_FILES)), "-o", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "daskscore", *argv, "--workers", "1", "--no-progress"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr  # (error_threshold -1)
    assert "killed by signal SIGTERM" in proc.stderr, proc.stderr
    assert _summary(out)["failed_items"] == N_FILES


#: init() waits while the file named by $HOLD exists (up to a minute), after saying it began.
SLOW_INIT = """
import os
import time

def init():
    open(os.environ["BEGAN"], "w").close()
    end = time.time() + 60
    while os.path.exists(os.environ["HOLD"]) and time.time() < end:
        time.sleep(0.05)

def run(mini_batch):
    return [os.path.basename(p) for p in mini_batch]
"""


def test_sigterm_while_init_runs_is_named_and_resume_finishes(tmp_path: Path) -> None:
    """SIGTERM (a batch system's) while init() runs on the workers: the summary says the
    init phase, and the signal as it was, not Ctrl-C."""
    hold, began = tmp_path / "hold", tmp_path / "began"
    hold.touch()
    env = {"HOLD": str(hold), "BEGAN": str(began)}
    dep = write_deployment(tmp_path / "deploy", SLOW_INIT, settings={"environment_variables": env})
    out = tmp_path / "out"
    argv = ["run", str(dep), "-i", str(write_inputs(tmp_path / "in", 4)), "-o", str(out)]
    code, err = sigterm_when(began.exists, *argv, "--workers", "1", "--no-progress")
    assert code == 128 + signal.SIGTERM, err
    s = _summary(out)
    assert (s["status"], s["interrupted_phase"]) == (outputdir.INTERRUPTED, "init"), s
    assert "init" in s["phases"] and "score" not in s["phases"], s["phases"]
    assert s["reason"].startswith("interrupted (SIGTERM) while init() ran"), s["reason"]
    assert "(SIGTERM) while init() ran" in err and "Ctrl-C)" not in err, err
    hold.unlink()
    assert cli.main(_printed_command(err, "Go on with: ")) == 0
    assert _summary(out)["succeeded_items"] == 4


def test_a_second_signal_while_the_first_is_written_up_is_ignored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM sent twice (as a batch system may): the second comes while the first's
    interruption is written up, and does not cut it short: the summary, the report and the
    resume command all come, and the exit status is the first's."""
    argv = _job(tmp_path)
    out = tmp_path / "out"
    write_logs = interrupt.write_logs

    def sigterm(*args: Any, **kwargs: Any) -> Any:
        signal.raise_signal(signal.SIGTERM)

    def sigterm_again(*args: Any, **kwargs: Any) -> Any:
        signal.raise_signal(signal.SIGTERM)  # (in the middle of the write-up)
        return write_logs(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(scoring.ScriptInstall, "install", sigterm)
        patch.setattr(interrupt, "write_logs", sigterm_again)
        code, err = _main(argv, capsys)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # (put back)
    assert code == 128 + signal.SIGTERM, err
    assert _summary(out)["status"] == outputdir.INTERRUPTED
    assert f"Report: {out / 'report.html'}" in err, err
    code, err = _main(_printed_command(err, "Go on with: "), capsys)
    assert code == 0, err
    _rows_once(out)


def test_a_signal_whose_interrupt_was_lost_still_stops() -> None:
    """Only a signal that comes while an earlier one's KeyboardInterrupt is handled is
    ignored: one raised where Python drops exceptions (a __del__) leaves the next to stop."""
    ended, saved = cli._stop_like_ctrl_c()
    try:
        with pytest.raises(KeyboardInterrupt) as first:
            signal.raise_signal(signal.SIGTERM)
        assert first.value.signal_name == "SIGTERM"  # type: ignore[attr-defined]
        try:
            signal.raise_signal(signal.SIGTERM)
        except KeyboardInterrupt:
            signal.raise_signal(signal.SIGTERM)  # (handled: ignored)
            signal.raise_signal(signal.SIGHUP)
        assert ended == [signal.SIGTERM, signal.SIGTERM]
        with pytest.raises(KeyboardInterrupt):  # (nothing handled now: this one stops)
            signal.raise_signal(signal.SIGHUP)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


#: run() fails unless the secret variables hold what the first run was given.
SECRET_SCRIPT = """
import os
import time

def run(mini_batch):
    assert os.environ["API_KEY"] == "Sup3rS3cretVal" and os.environ["DB_PASSWORD"] == "pw"
    with open(os.environ["CALLS"], "a") as f:
        f.write("x")
    time.sleep(0.3)
    return [os.path.basename(p) for p in mini_batch]
"""


def test_the_command_to_go_on_with_shows_no_secret_and_runs_with_it_given_again(
    tmp_path: Path,
) -> None:
    """Ctrl-C while scoring a job given secret variables with ``--set`` (as ``--set ITEM``
    and ``--set=ITEM``): the printed ``--resume`` command holds neither value but
    ``"${NAME:?}"`` for each, with a note saying so; run in a shell without the variables it
    is refused before anything runs, and with them set it finishes the job."""
    calls = tmp_path / "calls"
    dep = write_deployment(
        tmp_path / "deploy",
        SECRET_SCRIPT,
        settings={"mini_batch_size": 1, "environment_variables": {"CALLS": str(calls)}},
    )
    out = tmp_path / "out"
    argv = ["run", str(dep), "-i", str(write_inputs(tmp_path / "in", N_FILES)), "-o", str(out)]
    argv += ["--workers", "2", "--no-progress", "--no-dashboard"]
    argv += ["--set", "settings.environment_variables.API_KEY=Sup3rS3cretVal"]
    argv += ["--set=settings.environment_variables.DB_PASSWORD=pw"]
    scoring = lambda: calls.exists() and len(calls.read_text()) >= 2  # noqa: E731
    code, err = sigterm_when(scoring, *argv, sig=signal.SIGINT)
    assert code == 130, err
    assert "Sup3rS3cretVal" not in err and "=pw" not in err, err
    line = next(li for li in err.splitlines() if li.startswith("Go on with: "))
    assert '--set settings.environment_variables.API_KEY="${API_KEY:?}"' in line, line
    assert '--set=settings.environment_variables.DB_PASSWORD="${DB_PASSWORD:?}"' in line, line
    assert "the value given for API_KEY is not shown" in err, err
    assert "the value given for DB_PASSWORD is not shown" in err, err
    shell_line = line.removeprefix("Go on with: daskscore ")
    assert shell_line != line
    shell_line = f"{shlex.quote(sys.executable)} -m daskscore {shell_line}"
    env = {k: v for k, v in os.environ.items() if k not in ("API_KEY", "DB_PASSWORD")}
    refused = subprocess.run(
        ["bash", "-c", shell_line], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert refused.returncode != 0 and "API_KEY" in refused.stderr, refused.stderr
    assert _summary(out)["status"] == outputdir.INTERRUPTED
    env.update(API_KEY="Sup3rS3cretVal", DB_PASSWORD="pw")
    again = subprocess.run(
        ["bash", "-c", shell_line], cwd=REPO, env=env, capture_output=True, text=True, timeout=180
    )
    assert again.returncode == 0, again.stderr
    s = _summary(out)
    assert s["status"] == "Completed" and s["failed_items"] == 0, s
    _rows_once(out)
