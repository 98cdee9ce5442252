"""One job at a time in an output folder (:mod:`daskscore.io.outputlock`).

The lock itself, in this process and in subprocesses that die holding it; the advisory marker
of an output URL (fsspec's in-memory filesystem); and real ``daskscore run`` jobs, two at a
time into one folder, the second started at three points of the first's life.

The jobs are held at a point of their life with real files: ``run()`` of one mini-batch waits
while a gate file exists, and ``logs/job_result.txt`` is made a FIFO beforehand, so that the
job, once it has written ``predictions.csv``, waits in its finish (lock held) until the test
reads it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from conftest import REPO, write_deployment, write_inputs
from helpers import cli_args, summary_of

from daskscore.errors import OutputError
from daskscore.io import outputlock
from daskscore.io.outputlock import LOCK_FILE, Holder, lock_output

N_FILES = 40
SIZE = 2

SCRIPT = """\
import os
import time
from pathlib import Path

TAG = os.environ["TAG"]
GATE = os.environ.get("GATE", "")


def init():
    pass


def run(mini_batch):
    names = [Path(p).name for p in mini_batch]
    if GATE and "f0010.csv" in names:  # this mini-batch waits while the gate file exists
        Path(GATE + ".reached").touch()
        while os.path.exists(GATE):
            time.sleep(0.02)
    time.sleep(0.05)
    return [f"{TAG} {name}" for name in names]
"""


# --------------------------------------------------------------------------- the lock itself


def ended_pid() -> int:
    """The pid of a process of this host that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_second_lock_is_refused_naming_the_first(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = lock_output(out, "job-one")
    try:
        held = json.loads((out / LOCK_FILE).read_text())
        assert held["job_id"] == "job-one" and held["pid"] == os.getpid()
        with pytest.raises(OutputError) as info:
            lock_output(out, "job-two")
        message = str(info.value)
        for part in ("job job-one", f"pid {os.getpid()}", socket.gethostname(), held["started"]):
            assert part in message, message
        assert "--overwrite and --resume" in message
    finally:
        first.release()
    assert not (out / LOCK_FILE).exists(), "the lock file outlived its job"
    with lock_output(out, "job-two"):  # free again
        pass


def test_a_lock_on_a_missing_folder_is_removed_with_the_folder_when_unused(tmp_path: Path) -> None:
    out = tmp_path / "new" / "out"
    lock_output(out, "job-one").release()
    assert not (tmp_path / "new").exists(), "a job refused before it ran left folders behind"


def test_a_refused_job_removes_a_killed_jobs_lock_file(tmp_path: Path) -> None:
    """A job killed after its summary leaves its lock file, locked by no one, in a finished
    folder: the next job there removes it as it ends, even one refused for what the folder
    holds (its lock never announced); until then it does not rewrite it."""
    out = tmp_path / "out"
    out.mkdir()
    stale = Holder("killed-job", ended_pid(), socket.gethostname(), "earlier").encode()
    (out / LOCK_FILE).write_bytes(stale)
    lock = lock_output(out, "job-two")  # refused for what the folder holds: not announced
    assert (out / LOCK_FILE).read_bytes() == stale
    lock.release()
    assert not (out / LOCK_FILE).exists(), "the killed job's lock file outlived the next job"
    (out / LOCK_FILE).write_bytes(stale)
    lock = lock_output(out, "job-three")
    lock.announce()  # a job that ran: names itself, and removes the file as it ends
    assert Holder.parse((out / LOCK_FILE).read_bytes()).job_id == "job-three"
    lock.release()
    assert not (out / LOCK_FILE).exists()


HOLD_AND_DIE = """\
import os, signal, sys, time
from daskscore.io.outputlock import lock_output

lock = lock_output(sys.argv[1], "killed-job")
child = os.fork()  # a worker forked from the driver (start method "fork")
if child == 0:
    time.sleep(120)
    os._exit(0)
with open(sys.argv[2], "w") as fh:
    fh.write(str(child))
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_the_lock_dies_with_its_process_not_with_its_forked_children(tmp_path: Path) -> None:
    out, child_file = tmp_path / "out", tmp_path / "child.pid"
    err = tmp_path / "stderr.txt"
    args = [sys.executable, "-c", HOLD_AND_DIE, str(out), str(child_file)]
    with open(err, "w") as fh:  # (not a pipe: the forked child would hold it open)
        proc = subprocess.run(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=fh, timeout=60)
    assert proc.returncode == -signal.SIGKILL, err.read_text()
    child = int(child_file.read_text())
    try:
        assert psutil.pid_exists(child), "the forked child should still run"
        assert (out / LOCK_FILE).exists()  # the file stays; no one holds its lock
        with lock_output(out, "next-job"):
            pass
    finally:
        os.kill(child, signal.SIGKILL)


# --------------------------------------------------------------------------- output URLs


def test_an_output_url_has_an_advisory_marker() -> None:
    url = f"memory://daskscore-lock-{uuid.uuid4().hex}/out"
    first = lock_output(url, "job-one")
    first.announce()
    try:
        with pytest.raises(OutputError) as info:
            lock_output(url, "job-two")
        message = str(info.value)
        assert "job job-one" in message and f"pid {os.getpid()}" in message, message
        assert f"{url}/{LOCK_FILE}" in message and "advisory" in message, message
    finally:
        first.release()
    fs, root = outputlock.storage.filesystem(url)
    assert not fs.exists(f"{root}/{LOCK_FILE}"), "the marker outlived its job"

    # a marker of a job of this host that has ended is taken over; another host's is not
    gone = Holder("gone", ended_pid(), socket.gethostname(), "earlier")
    fs.pipe_file(f"{root}/{LOCK_FILE}", gone.encode())
    with lock_output(url, "job-three") as third:
        third.announce()
    fs.pipe_file(f"{root}/{LOCK_FILE}", Holder("far", 1, "another-host", "y").encode())
    with pytest.raises(OutputError, match="job far .*another-host"):
        lock_output(url, "job-four")


# --------------------------------------------------------------------------- real jobs


class Job:
    """``daskscore run`` in a subprocess of its own process group."""

    def __init__(self, dep: Path, inputs: Path, out: Path, *extra: str) -> None:
        self.log = out.parent / f"job-{time.monotonic_ns()}.stderr"
        with open(self.log, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "daskscore", *cli_args(dep, inputs, out, *extra)],
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        return self.log.read_text()

    def wait(self, timeout: float = 120) -> int:
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL the whole process group and check that nothing of it is left."""
        try:
            family = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            family = []
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)
        gone, alive = psutil.wait_procs(family, timeout=15)
        for p in alive:
            p.kill()
        assert not alive, f"processes left after killing the job: {alive}"


def until(condition: Callable[[], bool], *jobs: Job, timeout: float = 90) -> None:
    """Poll ``condition``; fail when a job ends first or time runs out (a hang guard)."""
    deadline = time.monotonic() + timeout
    while not condition():
        for job in jobs:
            assert job.proc.poll() is None, f"the job ended early:\n{job.stderr()}"
        assert time.monotonic() < deadline, "timed out:\n" + "\n".join(j.stderr() for j in jobs)
        time.sleep(0.02)


def first_to_end(jobs: list[Job], timeout: float = 90) -> Job:
    deadline = time.monotonic() + timeout
    while True:
        for job in jobs:
            if job.proc.poll() is not None:
                return job
        assert time.monotonic() < deadline, "no job ended: both are running (or waiting)"
        time.sleep(0.02)


def read_fifo(path: Path) -> list[str]:
    """Read the FIFO a job's finish waits on, on a thread: the job goes on; returns a list
    that holds what it wrote once it has closed it."""
    got: list[str] = []

    def drain() -> None:
        with open(path, encoding="utf-8") as fh:  # (opens once the job opens it to write)
            got.append(fh.read())

    threading.Thread(target=drain, daemon=True).start()
    return got


def rows_of(out: Path) -> list[str]:
    return (out / "predictions.csv").read_text().splitlines()


def expected(tag: str) -> list[str]:
    return [f"{tag} f{i:04d}.csv" for i in range(N_FILES)]


def two_jobs(root: Path, gate: Path | None = None) -> tuple[Path, Path, Path, Path]:
    """Deployments A and B (rows tagged with their name), one input, one output whose
    ``logs/job_result.txt`` is a FIFO: (dep A, dep B, input, output)."""
    deps = []
    for tag in ("A", "B"):
        env = {"TAG": tag, "GATE": str(gate) if gate and tag == "A" else ""}
        settings = {"mini_batch_size": SIZE, "error_threshold": -1, "environment_variables": env}
        deps.append(write_deployment(root / f"deploy-{tag}", SCRIPT, settings=settings))
    inputs = write_inputs(root / "in", N_FILES)
    out = root / "out"
    (out / "logs").mkdir(parents=True)
    os.mkfifo(out / "logs" / "job_result.txt")
    return deps[0], deps[1], inputs, out


def assert_refused_naming(refused: Job, running: Job) -> None:
    assert refused.wait() == 2, refused.stderr()
    message = refused.stderr()
    assert "is in use by job" in message, message
    assert f"pid {running.pid} on host {socket.gethostname()}" in message, message
    assert "Traceback" not in message, message


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("when", ["together", "while_scoring", "while_finishing"])
def test_two_jobs_in_one_folder_one_is_refused_naming_the_other(tmp_path: Path, when: str) -> None:
    gate = tmp_path / "gate"
    dep_a, dep_b, inputs, out = two_jobs(tmp_path, gate if when == "while_scoring" else None)
    fifo = out / "logs" / "job_result.txt"
    if when == "while_scoring":
        gate.touch()
    a = Job(dep_a, inputs, out)
    jobs = [a]
    try:
        if when == "together":
            jobs.append(Job(dep_b, inputs, out))
            loser = first_to_end(jobs)
            winner = jobs[1 - jobs.index(loser)]
            assert_refused_naming(loser, winner)
        elif when == "while_scoring":
            until(lambda: Path(f"{gate}.reached").exists(), a)
            for extra in ((), ("--overwrite",), ("--resume",)):
                b = Job(dep_b, inputs, out, *extra)
                jobs.append(b)
                assert_refused_naming(b, a)
            winner = a
            gate.unlink()
        else:
            until(lambda: (out / "predictions.csv").exists(), a)  # A is in its finish
            b = Job(dep_b, inputs, out)
            jobs.append(b)
            assert_refused_naming(b, a)
            winner = a
        result = read_fifo(fifo)
        assert winner.wait() == 0, winner.stderr()
    finally:
        for job in jobs:
            if job.proc.poll() is None:
                job.kill()
    tag = "A" if winner is a else "B"
    assert rows_of(out) == expected(tag), "the survivor's rows, each once, and no other's"
    assert result and result[0].startswith("Job Completed"), result
    s = summary_of(out)
    assert s["status"] == "Completed" and s["rows_written"] == N_FILES
    loser_text = next(j.stderr() for j in jobs if j is not winner)
    assert f"job {s['job_id']} " in loser_text, loser_text
    assert not (out / LOCK_FILE).exists() and not (out / ".daskscore").exists()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_killed_job_leaves_no_stale_lock(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    dep_a, _, inputs, out = two_jobs(tmp_path, gate)
    (out / "logs" / "job_result.txt").unlink()  # (no FIFO: the resumed job runs through)
    gate.touch()
    a = Job(dep_a, inputs, out)
    try:
        until(lambda: Path(f"{gate}.reached").exists() and committed(out), a)
    finally:
        a.kill()
    assert (out / LOCK_FILE).exists(), "the killed job's lock file stays, locked by no one"
    gate.unlink()

    again = Job(dep_a, inputs, out)
    assert again.wait() == 2, again.stderr()
    assert "unfinished job" in again.stderr() and "--resume" in again.stderr(), again.stderr()
    assert "in use by" not in again.stderr(), again.stderr()

    resumed = Job(dep_a, inputs, out, "--resume")
    assert resumed.wait() == 0, resumed.stderr()
    assert rows_of(out) == expected("A")
    s = summary_of(out)
    assert s["status"] == "Completed" and s["resumed_mini_batches"] > 0
    assert not (out / LOCK_FILE).exists() and not (out / ".daskscore").exists()


def committed(out: Path) -> bool:
    """Whether a ledger of the job holds a commit line (a mini-batch done)."""
    ledgers = (out / ".daskscore" / "ledger").glob("*.log")
    return any("\nC " in "\n" + p.read_text(errors="replace") for p in ledgers)
