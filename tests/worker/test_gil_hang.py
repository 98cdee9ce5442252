"""A ``run()`` that hangs while holding the GIL is timed out from outside its process.

The watchdog thread in the worker (:class:`daskscore.worker.runtime.JobRuntime`) needs the GIL
to act; ``ctypes.PyDLL(None).sleep(...)`` (a C call that keeps it) and a catastrophic regular
expression never let it.  The worker's nanny reads the deadline of the ``run()`` in flight
(:mod:`daskscore.worker.deadline`), records the timeout and kills the process: the mini-batch is
charged ``RUN_TIMEOUT`` on each try, its neighbours run again uncharged, and the job ends.

Real processes throughout: the ``daskscore`` command with its own cluster (nannies in the
driver process), and ``dask scheduler``/``dask worker`` processes (a nanny per worker, the
plugin registered from the driver), with and without nannies.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_cli
from dask_processes import ProcessCluster
from helpers import cli_args, make_job, processed_of, show, summary_of

from daskscore.worker import deadline

pytestmark = pytest.mark.slow

N_FILES, SIZE, HANG_MB = 12, 2, 1
TIMEOUT_S = 3

#: One row per input file; the files of mini-batch HANG_MB hang in C code holding the GIL.
SCRIPT = """
    import ctypes, os, re
    from pathlib import Path

    HANG = os.environ["HANG"]
    TARGET = os.environ["TARGET"]

    def init():
        pass

    def run(mini_batch):
        if any(Path(p).name == TARGET for p in mini_batch):
            if HANG == "ctypes":
                ctypes.PyDLL(None).sleep(100000)  # a C call that keeps the GIL
            else:
                re.match(r"(a+)+$", "a" * 60 + "b")  # catastrophic backtracking, GIL held
        return [f"{Path(p).name} ok" for p in mini_batch]
"""


def _job(tmp_path: Path, hang: str) -> tuple[Path, Path, Path]:
    target = f"f{HANG_MB * SIZE + 1:04d}.csv"
    return make_job(
        tmp_path,
        SCRIPT,
        n_files=N_FILES,
        settings={
            "mini_batch_size": SIZE,
            "retry_settings": {"max_retries": 1, "timeout": TIMEOUT_S},
        },
        env={"HANG": hang, "TARGET": target},
    )


def _check_verdict(out: Path, shipped: bool = False) -> None:
    summary = summary_of(out)
    assert summary["status"] == "Completed"
    assert summary["failed_mini_batches"] == 1
    (failure,) = summary["failures"]
    assert failure["mini_batch_id"] == HANG_MB
    assert failure["status"] == "RUN_TIMEOUT"
    assert failure["tries"] == 2
    assert summary["succeeded_items"] == N_FILES - SIZE

    tries = processed_of(out)
    hung = tries[tries["mini_batch_id"] == HANG_MB].sort_values("try")
    assert list(hung["status"]) == ["RUN_TIMEOUT", "RUN_TIMEOUT"]
    others = tries[tries["mini_batch_id"] != HANG_MB]
    # every other mini-batch ran once, uncharged for its neighbour's death
    assert sorted(others["mini_batch_id"]) == [m for m in range(N_FILES // SIZE) if m != HANG_MB]
    assert set(others["status"]) == {"RUN_DONE"} and set(others["try"]) == {1}

    rows = (out / "predictions.csv").read_text().splitlines()
    hung_files = {f"f{i:04d}.csv" for i in range(HANG_MB * SIZE, (HANG_MB + 1) * SIZE)}
    want = [f"f{i:04d}.csv ok" for i in range(N_FILES) if f"f{i:04d}.csv" not in hung_files]
    assert rows == want
    if shipped:  # (the nanny's line went into the dead worker's own folder)
        return
    errors = "".join(p.read_text() for p in (out / "logs" / "user" / "error").glob("*.txt"))
    assert f"run() of mini-batch {HANG_MB} failed" in errors
    assert "nanny killed the process" in errors


@pytest.mark.timeout(240)
@pytest.mark.parametrize("transport", ["shared", "shipped"])
def test_gil_holding_hang_is_killed_by_the_nanny_of_the_embedded_cluster(
    tmp_path: Path, transport: str
) -> None:
    """Shipped: the timeout is noted in the scheduler's metadata by the nanny, as the
    in-process watchdog notes it there (the worker's ledger is its own)."""
    dep, inputs, out = _job(tmp_path, "ctypes")
    extra = ["--no-shared-filesystem"] if transport == "shipped" else []
    proc = run_cli(*cli_args(dep, inputs, out, *extra), timeout=200)
    assert proc.returncode == 0, show(proc)
    _check_verdict(out, shipped=transport == "shipped")
    log = (out / "logs" / "sys" / "daskscore.txt").read_text()
    assert "its nanny kills worker process" in log


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "daskscore", "run", *args, "--no-progress"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=200)


@pytest.mark.timeout(300)
def test_regex_hang_on_dask_worker_processes_is_killed_by_their_nanny(tmp_path: Path) -> None:
    dep, inputs, out = _job(tmp_path, "regex")
    with ProcessCluster(tmp_path / "cluster", workers=2) as cluster:
        proc = _cli(str(dep), "-i", str(inputs), "-o", str(out), "--scheduler", cluster.address)
        assert proc.returncode == 0, f"{show(proc)}\n--- cluster\n{cluster.logs(30)}"
    _check_verdict(out)


@pytest.mark.timeout(200)
def test_workers_without_a_nanny_are_named_once_in_the_job_log(tmp_path: Path) -> None:
    dep, inputs, out = make_job(
        tmp_path, "def run(mini_batch):\n    return list(mini_batch)\n", n_files=4
    )
    with ProcessCluster(tmp_path / "cluster", workers=1, worker_args=["--no-nanny"]) as cluster:
        proc = _cli(str(dep), "-i", str(inputs), "-o", str(out), "--scheduler", cluster.address)
        assert proc.returncode == 0, f"{show(proc)}\n--- cluster\n{cluster.logs(30)}"
    log = (out / "logs" / "sys" / "daskscore.txt").read_text()
    assert log.count("run without a nanny") == 1, log


# --------------------------------------------------------------------------- the parts


class FakeNanny:
    """What the nanny-side check reads of a nanny: its worker's pid and local directory."""

    def __init__(self, pid: int, worker_dir: Path) -> None:
        self.pid, self.worker_dir = pid, str(worker_dir)


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])


def test_an_overdue_run_is_recorded_in_its_ledger_and_its_process_killed(tmp_path: Path) -> None:
    staging, worker_dir = tmp_path / "staging", tmp_path / "worker"
    for sub in ("parts", "ledger"):
        (staging / sub).mkdir(parents=True)
    victim = _sleeper()
    try:
        file = deadline.DeadlineFile(worker_dir)
        file.describe(
            pid=victim.pid,  # the record is about the victim (written here on its behalf)
            job_id="j1", worker="worker-0", timeout=2.0, staging=str(staging),
            attempt="r01a000001", relay=None, error_log=str(tmp_path / "err.txt"),
        )  # fmt: skip
        nanny = FakeNanny(victim.pid, worker_dir)
        now = time.monotonic()
        file.started(now + 60, 3, 2, time.time())  # in time: nothing happens
        assert deadline.check(nanny) is False
        file.started(now - deadline.GRACE_S - 1, 3, 2, time.time())
        file.finished()  # returned: idle, even long overdue, so nothing happens
        assert deadline.check(nanny) is False
        assert victim.poll() is None
        file.started(now - deadline.GRACE_S - 1, 3, 2, time.time())
        assert deadline.check(nanny) is True
        assert victim.wait(timeout=30) != 0
        ledger = (staging / "ledger" / "r01a000001.log").read_text()
        assert ledger == "T 3\n"
        assert "run() of mini-batch 3 failed on worker-0" in (tmp_path / "err.txt").read_text()
        file.close()
        assert not file.path.exists()
    finally:
        victim.kill()
        victim.wait()


def test_a_record_of_another_process_is_left_alone(tmp_path: Path) -> None:
    victim = _sleeper()
    try:
        file = deadline.DeadlineFile(tmp_path)
        file.describe(job_id="j1", worker="w", timeout=1.0)
        file.started(time.monotonic() - 60, 0, 1, time.time())  # overdue, but for os.getpid()
        assert deadline.check(FakeNanny(victim.pid, tmp_path)) is False
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait()


def test_a_shipped_task_timeout_is_noted_as_the_in_process_watchdog_notes_it() -> None:
    noted: list[tuple[list[str], dict[str, object]]] = []
    record = {
        "mini_batch": 4, "try": 1, "start": 12.5, "worker": "w0",
        "relay": ["daskscore", "j1", "r01a000002"],
    }  # fmt: skip
    deadline.record_timeout(record, lambda key, entry: noted.append((key, entry)))
    assert noted == [
        (["daskscore", "j1", "r01a000002"], {"running": [4, 1, 12.5, "w0"], "timed_out": 4})
    ]


def test_no_nanny_workers_are_found_from_the_scheduler_info() -> None:
    workers = {"tcp://a:1": {"nanny": "tcp://a:2"}, "tcp://b:1": {"nanny": None}}
    assert deadline.unwatched_workers(workers) == ["tcp://b:1"]
