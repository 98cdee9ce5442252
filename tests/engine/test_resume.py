"""Resuming interrupted jobs (``--resume``): kill a job at any instant, finish it later, and get
the output an uninterrupted run gives, byte for byte.

The jobs here run the CLI in a subprocess in its own process group (session), which the tests
SIGKILL as a whole — driver, scheduler and worker processes at once, as a power cut or an OOM
killer would — at chosen points: early (the first ledger appeared), in the middle (about half
the mini-batches committed), and during the final assembly of ``predictions.csv``.  Each kill
is checked to leave no process behind.

The job: 300 small files in mini-batches of 3 (100 mini-batches) on 2 workers; ``run()`` sleeps
a little and returns one long row per file (its name, the SHA-256 of its contents and padding),
so that a job lasts a few seconds and its ``predictions.csv`` (6 MB) takes a moment to assemble.
Every resumed output is compared with the output of one clean, uninterrupted run of the job.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import helpers
import psutil
import pytest
from conftest import REPO
from helpers import cli_args, make_job, summary_of

import daskscore

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

N_FILES = 300
SIZE = 3
N_BATCHES = N_FILES // SIZE
#: Seconds each run() sleeps: 100 mini-batches on 2 workers take about 4 s.
DELAY = 0.08
#: Characters of padding in each row: 300 rows of ~20 kB, a 6 MB predictions.csv.
WIDTH = 20_000

SCRIPT = """\
import hashlib
import os
import signal
import time
from pathlib import Path

DELAY = float(os.environ.get("DELAY", "0"))
WIDTH = int(os.environ.get("WIDTH", "0"))
# run() raises on the file named FAIL_ON as long as the file FAIL_WHILE exists
FAIL_ON = os.environ.get("FAIL_ON", "")
FAIL_WHILE = os.environ.get("FAIL_WHILE", "")
# run() kills its own process, on the first try only, on mini-batches starting with KILL_ON
KILL_ON = set(filter(None, os.environ.get("KILL_ON", "").split(",")))
KILL_MARKERS = os.environ.get("KILL_MARKERS", "")


def init():
    pass


def run(mini_batch):
    first = Path(mini_batch[0]).name
    if first in KILL_ON:
        try:
            os.close(os.open(os.path.join(KILL_MARKERS, first), os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            pass  # killed on an earlier try: this one goes through
        else:
            os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(DELAY)
    rows = []
    for path in mini_batch:
        name = Path(path).name
        if name == FAIL_ON and os.path.exists(FAIL_WHILE):
            raise ValueError(f"cannot score {name} yet")
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        rows.append(f"{name} {digest} " + digest[:10] * (WIDTH // 10))
    return rows
"""


# --------------------------------------------------------------------------- jobs


def resume_job(root: Path, n_files: int = N_FILES, **env: str) -> tuple[Path, Path, Path]:
    """Write the job of :data:`SCRIPT` under ``root`` (``env`` over its DELAY and WIDTH);
    return (deployment.yml, input, output)."""
    return make_job(
        root,
        SCRIPT,
        n_files=n_files,
        settings={
            "mini_batch_size": SIZE,
            "error_threshold": -1,
            "retry_settings": {"max_retries": 2, "timeout": 60},
        },
        env={"DELAY": str(DELAY), "WIDTH": str(WIDTH), **env},
    )


#: A CLI job here is cut off before the test's own timeout (150 s) would stop the test.
cli = functools.partial(helpers.cli, timeout=120)


class Job:
    """A CLI job in a subprocess of its own process group, to be killed whole."""

    def __init__(self, dep: Path, inputs: Path, out: Path, *extra: str) -> None:
        self.out = out
        self.log = out.parent / f"{out.name}-{time.monotonic_ns()}.stderr"
        with open(self.log, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "daskscore", *cli_args(dep, inputs, out, *extra)],
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )

    def stderr(self) -> str:
        return self.log.read_text()

    def wait_for(self, condition: Callable[[], bool], timeout: float = 60, poll: float = 0.01):
        """Poll ``condition`` until it holds; fail when the job ends first or time runs out."""
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None:
                return False
            assert time.monotonic() < deadline, f"timed out; stderr:\n{self.stderr()}"
            time.sleep(poll)
        return True

    def kill(self) -> None:
        """SIGKILL the whole process group, reap the driver, check that nothing is left."""
        pgid = self.proc.pid
        try:
            family = psutil.Process(pgid).children(recursive=True)
        except psutil.NoSuchProcess:
            family = []
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)
        deadline = time.monotonic() + 15
        while True:
            left = [p for p in family if _alive(p)] + _in_group(pgid)
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        for p in left:  # leave nothing behind even when the check fails
            try:
                p.kill()
            except psutil.Error:
                pass
        assert not left, f"processes left after killing the job's process group: {left}"


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _in_group(pgid: int) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid and _alive(p):
                found.append(p)
        except (ProcessLookupError, psutil.Error):
            continue
    return found


# --------------------------------------------------------------------------- reading results


def committed(out: Path) -> dict[int, str]:
    """Mini-batch -> status of its final try, for every final record of a whole ``C`` line of
    the staging folder's ledgers (what a resume may keep)."""
    done: dict[int, str] = {}
    for ledger in sorted((out / ".daskscore" / "ledger").glob("*.log")):
        for line in ledger.read_text(errors="replace").split("\n")[:-1]:
            if not line.startswith("C "):
                continue
            try:
                records = json.loads(line[2:])
            except ValueError:
                continue
            for rec in records:
                if rec.get("final"):
                    done.setdefault(rec["mini_batch"], rec["status"])
    return done


def succeeded(out: Path) -> int:
    return sum(1 for status in committed(out).values() if status == "RUN_DONE")


def has_ledger(out: Path) -> bool:
    folder = out / ".daskscore" / "ledger"
    return folder.is_dir() and any(folder.glob("*.log"))


def tries_numbered(out: Path) -> dict[int, list[tuple[int, str]]]:
    """processed_mini-batches.csv: each mini-batch's (try, status) rows, in file order."""
    path = out / "logs" / "sys" / "job_report" / "processed_mini-batches.csv"
    grouped: dict[int, list[tuple[int, str]]] = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            grouped.setdefault(int(row["mini_batch_id"]), []).append(
                (int(row["try"]), row["status"])
            )
    return grouped


def tries(out: Path) -> dict[int, list[str]]:
    """The statuses of each mini-batch's tries, in file order."""
    return {mb: [status for _, status in rows] for mb, rows in tries_numbered(out).items()}


def snapshot(folder: Path) -> dict[str, Any]:
    """Every file and folder under ``folder``: size, modification time, SHA-256 (but the lock
    file a killed job left, locked by no one, which the next job removes, refused or not)."""
    out: dict[str, Any] = {}
    for path in sorted(folder.rglob("*")):
        key = path.relative_to(folder).as_posix()
        if key == ".daskscore.lock":
            continue
        if path.is_dir():
            out[key] = "dir"
        else:
            st = path.stat()
            out[key] = (st.st_size, st.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def assert_resumed_like_clean(
    out: Path, proc: subprocess.CompletedProcess[str], clean: bytes, kept: int
) -> dict[str, Any]:
    """The resumed job completed with the clean run's output, every item counted once."""
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert (out / "predictions.csv").read_bytes() == clean
    s = summary_of(out)
    assert s["status"] == "Completed"
    assert s["total_items"] == s["succeeded_items"] == s["rows_written"] == N_FILES
    assert s["failed_items"] == s["not_run_items"] == 0
    assert s["total_mini_batches"] == N_BATCHES
    assert s["failed_mini_batches"] == s["not_run_mini_batches"] == 0
    assert s["resumed_mini_batches"] == kept
    if kept:
        were = "was" if kept == 1 else "were"
        assert f"Resuming: {kept} of {N_BATCHES} mini-batches {were} already done" in proc.stderr
    assert not (out / ".daskscore").exists(), "the staging folder outlived the job"
    assert not (out / "predictions.csv.partial").exists()
    return s


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """predictions.csv of a clean, uninterrupted run of the job."""
    dep, inputs, out = resume_job(tmp_path_factory.mktemp("clean"))
    proc = cli(dep, inputs, out)
    assert proc.returncode == 0, proc.stderr
    data = (out / "predictions.csv").read_bytes()
    lines = data.decode().splitlines()
    assert [line.split(" ", 1)[0] for line in lines] == [f"f{i:04d}.csv" for i in range(N_FILES)]
    assert all(len(line) > WIDTH for line in lines)
    return data


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, int]:
    """A job killed after it committed at least 10 mini-batches: (deployment, input, output,
    mini-batches committed).  Tests copy the output folder before they use it."""
    dep, inputs, out = resume_job(tmp_path_factory.mktemp("interrupted"))
    job = Job(dep, inputs, out)
    try:
        assert job.wait_for(lambda: succeeded(out) >= 10), job.stderr()
    finally:
        job.kill()
    assert (out / ".daskscore" / "job.json").is_file()
    kept = succeeded(out)
    assert 10 <= kept < N_BATCHES
    return dep, inputs, out, kept


def copy_of(interrupted: tuple[Path, Path, Path, int], tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(interrupted[2], out)
    return out


# --------------------------------------------------------------------------- 1. kill and resume


def _assembling(out: Path) -> bool:
    if (out / "predictions.csv.partial").exists():
        return True
    return (out / "predictions.csv").exists() and not (out / "job_summary.json").exists()


@pytest.mark.parametrize("point", ["early", "middle", "assembly"])
def test_job_killed_at_any_point_resumes_to_the_clean_output(
    tmp_path: Path, clean: bytes, point: str
) -> None:
    dep, inputs, out = resume_job(tmp_path)
    for _ in range(3):  # the assembly window is short: a try that misses it runs again
        job = Job(dep, inputs, out, "--overwrite")
        try:
            if point == "early":
                caught = job.wait_for(lambda: has_ledger(out), poll=0.002)
            elif point == "middle":
                caught = job.wait_for(lambda: len(committed(out)) >= N_BATCHES // 2)
            else:
                caught = job.wait_for(lambda: _assembling(out), poll=0.0005)
        finally:
            job.kill()
        if caught and (out / ".daskscore").is_dir():
            break
    else:
        pytest.fail(f"never killed the job at the {point} point; stderr:\n{job.stderr()}")

    kept = succeeded(out)
    assert kept == len(committed(out)), "nothing failed, so every committed mini-batch is kept"
    if point == "middle":
        assert N_BATCHES // 2 <= kept < N_BATCHES
    if point == "assembly":
        assert kept == N_BATCHES
        assert not (out / "job_summary.json").exists()

    proc = cli(dep, inputs, out, "--resume")
    assert_resumed_like_clean(out, proc, clean, kept)
    if point != "early":
        assert kept > 0 and summary_of(out)["resumed_mini_batches"] > 0


# ------------------------------------------------------------------ 2. refused without flags


def test_interrupted_folder_is_refused_without_resume_or_overwrite(
    tmp_path: Path, interrupted: tuple[Path, Path, Path, int]
) -> None:
    dep, inputs, _, _ = interrupted
    out = copy_of(interrupted, tmp_path)
    before = snapshot(out)

    proc = cli(dep, inputs, out)
    assert proc.returncode == 2, proc.stderr
    assert "--resume" in proc.stderr
    assert "unfinished job" in proc.stderr
    assert "Traceback" not in proc.stderr

    with pytest.raises(daskscore.OutputError, match="--resume"):
        daskscore.run(dep, inputs, out)
    assert snapshot(out) == before


# --------------------------------------------------------------------------- 3. workers killed


def test_worker_processes_killed_mid_job_lose_and_duplicate_no_rows(
    tmp_path: Path, clean: bytes
) -> None:
    markers = tmp_path / "killed"
    markers.mkdir()
    # mini-batches 10, 50 and 90 kill their worker process on their first try
    chosen = ["f0030.csv", "f0150.csv", "f0270.csv"]
    dep, inputs, out = resume_job(tmp_path, KILL_ON=",".join(chosen), KILL_MARKERS=str(markers))
    proc = cli(dep, inputs, out)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in markers.iterdir()) == chosen, "every chosen run() killed once"

    assert (out / "predictions.csv").read_bytes() == clean
    s = summary_of(out)
    assert s["status"] == "Completed"
    assert s["total_items"] == s["succeeded_items"] == s["rows_written"] == N_FILES
    assert s["failed_items"] == s["failed_mini_batches"] == 0
    assert s["retried_mini_batches"] == 3
    report = tries(out)
    assert sorted(report) == list(range(N_BATCHES))
    for mb in range(N_BATCHES):
        want = ["PROCESS_DIED", "RUN_DONE"] if mb in (10, 50, 90) else ["RUN_DONE"]
        assert report[mb] == want, f"mini-batch {mb}"


def test_a_try_charged_to_a_dead_process_is_kept_by_the_resume(tmp_path: Path) -> None:
    """Mini-batch 2 kills its worker process on its first try and succeeds on its second;
    the job is killed after that and resumed.  The driver's charge of the dead try is noted in
    the dead task's ledger, so the resumed job's history keeps it: before, only the second
    try's commit was read back, and the resumed report showed a try 2 without a try 1."""
    markers = tmp_path / "killed"
    markers.mkdir()
    dep, inputs, out = resume_job(tmp_path, KILL_ON="f0006.csv", KILL_MARKERS=str(markers))
    job = Job(dep, inputs, out)
    try:
        assert job.wait_for(lambda: committed(out).get(2) == "RUN_DONE"), job.stderr()
    finally:
        job.kill()
    assert (out / ".daskscore").is_dir(), "killed too late: the job had finished"
    assert [p.name for p in markers.iterdir()] == ["f0006.csv"]

    proc = cli(dep, inputs, out, "--resume")
    assert proc.returncode == 0, proc.stderr
    assert tries_numbered(out)[2] == [(1, "PROCESS_DIED"), (2, "RUN_DONE")]
    s = summary_of(out)
    assert s["retried_mini_batches"] == 1, s
    assert (s["succeeded_items"], s["failed_items"]) == (N_FILES, 0), s


# --------------------------------------------------------------------------- 4. fingerprints


def test_resume_is_refused_when_what_decides_the_rows_changed(
    tmp_path: Path, interrupted: tuple[Path, Path, Path, int], clean: bytes
) -> None:
    dep, inputs, _, kept = interrupted
    out = copy_of(interrupted, tmp_path)
    before = snapshot(out)
    script = dep.parent / "code" / "score.py"
    model = dep.parent / "model" / "model.pt"
    phrases = {
        "code": "the scoring script",
        "model": "the model files",
        "inputs": "the input file list",
        "mini_batches": "the mini-batching",
        "output": "the output settings",
    }

    def refused(what: str, *extra: str, via_api: dict[str, Any] | None = None) -> str:
        if via_api is not None:
            with pytest.raises(daskscore.OutputError) as info:
                daskscore.run(dep, inputs, out, resume=True, **via_api)
            message = str(info.value)
        else:
            proc = cli(dep, inputs, out, "--resume", *extra)
            assert proc.returncode == 2, f"{what}: {proc.stderr}"
            assert "Traceback" not in proc.stderr
            message = proc.stderr
        assert "cannot resume" in message, message
        assert phrases[what] in message, message
        for other, phrase in phrases.items():
            if other != what:
                assert phrase not in message, f"{what}: {other} named as changed too: {message}"
        assert "--overwrite" in message, message
        assert snapshot(out) == before, f"a refused resume ({what}) changed the output folder"
        return message

    # the scoring script's contents
    original = script.read_text()
    script.write_text(original + "\n# a new comment\n")
    refused("code")
    refused("code", via_api={})
    script.write_text(original)

    # the model file (its contents and so its size and time; then put back as it was)
    st = model.stat()
    weights = model.read_bytes()
    model.write_bytes(weights + b" retrained")
    refused("model", via_api={})
    model.write_bytes(weights)
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns))

    # the input file list: one file more, then one file fewer; each named
    extra = inputs / "f9999.csv"
    extra.write_text("x\n1\n")
    assert f"the input file list ('{extra.resolve()}' added) changed" in refused("inputs")
    extra.unlink()
    gone = sorted(inputs.iterdir())[1]
    gone.rename(tmp_path / gone.name)
    assert f"the input file list ('{gone.resolve()}' removed) changed" in refused("inputs")
    (tmp_path / gone.name).rename(gone)

    # mini-batching and output settings, given on the command line
    refused("mini_batches", "--mini-batch-size", str(SIZE + 1))
    refused("mini_batches", via_api={"mini_batch_size": SIZE + 1})
    refused("output", "--set", "settings.output_file_name=other.csv")

    # the refusals left the job as it was: it resumes
    proc = cli(dep, inputs, out, "--resume")
    assert_resumed_like_clean(out, proc, clean, kept)


# --------------------------------------------------------------------------- 5. failures retried


def test_failed_mini_batches_of_the_interrupted_run_are_retried_on_resume(
    tmp_path: Path, clean: bytes
) -> None:
    marker = tmp_path / "still-failing"
    marker.touch()
    # f0007.csv is in mini-batch 2: it fails all its tries while the marker exists
    dep, inputs, out = resume_job(tmp_path, FAIL_ON="f0007.csv", FAIL_WHILE=str(marker))
    job = Job(dep, inputs, out)
    try:
        assert job.wait_for(lambda: committed(out).get(2) == "RUN_EXCEPTION"), job.stderr()
    finally:
        job.kill()
    assert (out / ".daskscore").is_dir(), "killed too late: the job had finished"
    kept = succeeded(out)
    assert kept < N_BATCHES - 1

    marker.unlink()
    proc = cli(dep, inputs, out, "--resume")
    s = assert_resumed_like_clean(out, proc, clean, kept)
    assert s["failures"] == []
    # the failed tries of the first run stay in the history, and the resume's try is the last
    # one: one row per try, tries numbered on (no two rows of one mini-batch with the same try)
    history = tries_numbered(out)[2]
    assert [status for _, status in history] == ["RUN_EXCEPTION"] * 3 + ["RUN_DONE"], history
    numbers = [number for number, _ in history]
    assert len(set(numbers)) == len(numbers), f"try numbers repeat: {history}"


# --------------------------------------------------------------------------- 6. nothing to resume


def test_resume_of_a_finished_job_is_refused(tmp_path: Path) -> None:
    dep, inputs, out = resume_job(tmp_path, n_files=12, DELAY="0")
    first = cli(dep, inputs, out)
    assert first.returncode == 0, first.stderr
    before = snapshot(out)

    proc = cli(dep, inputs, out, "--resume")
    assert proc.returncode == 2, proc.stderr
    assert "nothing to resume" in proc.stderr
    assert "--overwrite" in proc.stderr
    assert "Traceback" not in proc.stderr
    with pytest.raises(daskscore.OutputError, match="nothing to resume"):
        daskscore.run(dep, inputs, out, resume=True)
    assert snapshot(out) == before


@pytest.mark.parametrize("folder", ["missing", "empty"])
def test_resume_of_a_new_or_empty_folder_just_runs(tmp_path: Path, folder: str) -> None:
    dep, inputs, out = resume_job(tmp_path, n_files=12, DELAY="0")
    if folder == "empty":
        out.mkdir()
    proc = cli(dep, inputs, out, "--resume")
    assert proc.returncode == 0, proc.stderr
    assert "Resuming" not in proc.stderr
    s = summary_of(out)
    assert s["status"] == "Completed"
    assert s["succeeded_items"] == s["rows_written"] == 12
    assert s["resumed_mini_batches"] == 0
    lines = (out / "predictions.csv").read_text().splitlines()
    assert [line.split(" ", 1)[0] for line in lines] == [f"f{i:04d}.csv" for i in range(12)]
    assert not (out / ".daskscore").exists()


#: ``python -c`` of the CLI SIGKILLed (with its process group) once it has made the staging
#: folder, before it writes the job's ``job.json`` into it.
KILLED_BEFORE_JOB_JSON = """\
import os, signal, sys

from daskscore import cli
from daskscore.engine import resume


def killed(*args, **kwargs):
    os.killpg(0, signal.SIGKILL)


resume.write_manifest = killed
sys.argv[0] = "daskscore"
cli.entry()
"""


@pytest.mark.parametrize("extra", [(), ("--resume",)], ids=["plain", "resume"])
def test_a_staging_folder_killed_before_its_job_json_is_no_job(
    tmp_path: Path, extra: tuple[str, ...]
) -> None:
    """A job killed in the instant between making ``.daskscore/`` and writing its
    ``job.json`` scored nothing: the next run, plain or ``--resume``, starts afresh there (it
    was told to pass --resume, which then refused the folder as not this version's)."""
    dep, inputs, out = resume_job(tmp_path, n_files=12, DELAY="0")
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_BEFORE_JOB_JSON, *cli_args(dep, inputs, out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        start_new_session=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert (out / ".daskscore").is_dir() and not (out / ".daskscore" / "job.json").exists()

    proc = cli(dep, inputs, out, *extra)
    assert proc.returncode == 0, helpers.show(proc)
    s = summary_of(out)
    assert (s["status"], s["succeeded_items"], s["resumed_mini_batches"]) == ("Completed", 12, 0)
    lines = (out / "predictions.csv").read_text().splitlines()
    assert [line.split(" ", 1)[0] for line in lines] == [f"f{i:04d}.csv" for i in range(12)]
    assert not [p.name for p in out.iterdir() if p.name.startswith(".daskscore")]


@pytest.mark.parametrize("n", [0, 1, 3, 9_999, 10_000, 25_001])
def test_the_input_fingerprint_is_hashed_in_chunks_as_one_list(n: int) -> None:
    """The input list is hashed a chunk at a time (no JSON string of a million names), to the
    digest of the whole list: jobs started before can still be resumed."""
    from daskscore.engine.resume import _hash, _hash_names

    files = [f'/in/d{i % 7}/f "{i}" é.csv' for i in range(n)]
    assert _hash_names(files) == _hash(files)


@pytest.mark.parametrize(
    ("done", "total", "said"),
    [
        (0, 1, "Resuming: 0 of 1 mini-batch was already done."),
        (1, 1, "Resuming: 1 of 1 mini-batch was already done."),
        (1, 10, "Resuming: 1 of 10 mini-batches was already done."),
        (0, 10, "Resuming: 0 of 10 mini-batches were already done."),
        (3, 10, "Resuming: 3 of 10 mini-batches were already done."),
    ],
)
def test_the_resume_line_agrees_with_its_counts(done: int, total: int, said: str) -> None:
    """ "0 of 1 mini-batch were already done" before."""
    from daskscore.engine.scoring import resumed_note

    assert resumed_note(done, total) == said
