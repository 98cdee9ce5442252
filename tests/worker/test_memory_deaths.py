"""Memory deaths named (issue 18, item 6): ``--worker-memory`` sets the embedded workers'
memory limit; a worker killed for exceeding it is charged ``PROCESS_DIED`` with the error
``out of memory (limit ..., peak ...)``, and every try's peak RSS is in
``processed_mini-batches.csv``.

The job tests use real worker processes and a small limit (300 MB; one file's ``run()`` touches
600 MB, far below the machine's memory); the rest checks the parts without a cluster: the RSS
measurement of a ``run()`` call, the driver's reading of a dead process (the nanny's event, the
exit signal), and the option's checks.
"""

from __future__ import annotations

import csv
import logging
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from helpers import cli, make_job, show, summary_of

from daskscore.cluster.local import _watch_exits, exit_signal
from daskscore.config.options import JobOptions
from daskscore.engine.memory import MemoryDeaths
from daskscore.errors import UsageError
from daskscore.io.ledger import LedgerState, LedgerWriter, make_staging, read_ledger
from daskscore.worker.memory import MIB, rss_bytes

# --------------------------------------------------------------------------- whole jobs

#: f0005.csv makes run() touch 600 MB: its worker (limit 300 MB) is killed by its nanny.
HOG = """\
from pathlib import Path


def run(mini_batch):
    for path in mini_batch:
        if Path(path).name == "f0005.csv":
            block = bytearray(600 << 20)
            for i in range(0, len(block), 4096):
                block[i] = 1  # resident, page by page
    return [f"{Path(p).name} scored" for p in mini_batch]
"""
SETTINGS = {"mini_batch_size": 4, "retry_settings": {"max_retries": 1, "timeout": 60}}


def _tries(out: Path) -> list[dict[str, str]]:
    path = out / "logs" / "sys" / "job_report" / "processed_mini-batches.csv"
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("isolate", [False, True], ids=["whole", "isolated"])
def test_a_worker_killed_for_memory_is_charged_out_of_memory(tmp_path: Path, isolate: bool) -> None:
    dep, inputs, out = make_job(tmp_path, HOG, n_files=12, settings=SETTINGS)
    extra = ("--worker-memory", "300MB") + (("--isolate-failures",) if isolate else ())
    proc = cli(dep, inputs, out, *extra, timeout=300)
    assert proc.returncode == 0, show(proc)
    s = summary_of(out)
    [failure] = s["failures"]
    assert failure["mini_batch_id"] == 1 and failure["status"] == "PROCESS_DIED"
    assert failure["error"].startswith("out of memory (limit 300MB, peak "), failure["error"]
    assert "out of memory (limit 300MB" in proc.stderr, show(proc)
    # the rest of the job completed: every other row once, in order
    lost = [5] if isolate else [4, 5, 6, 7]
    lines = (out / "predictions.csv").read_text().splitlines()
    assert lines == [f"f{i:04d}.csv scored" for i in range(12) if i not in lost]
    assert s["failed_items"] == len(lost)
    tries = _tries(out)
    died = [t for t in tries if t["status"] == "PROCESS_DIED"]
    assert died and all(t["error"].startswith("out of memory (limit 300MB") for t in died)
    # the nanny killed it above 95 % of 300 MB: the peak it read is in the report
    assert all(float(t["peak_rss_mb"]) >= 0.95 * 300e6 / MIB for t in died), died
    done = [t for t in tries if t["status"] == "RUN_DONE"]
    assert done and all(0 < float(t["peak_rss_mb"]) < 300 for t in done), done
    with open(out / "failed_items.csv", newline="") as fh:
        failed = list(csv.DictReader(fh))
    assert [Path(r["file"]).name for r in failed] == [f"f{i:04d}.csv" for i in lost]
    assert all(r["error"].startswith("out of memory") for r in failed)


def test_worker_memory_is_refused_with_a_scheduler(tmp_path: Path) -> None:
    dep, inputs, out = make_job(tmp_path, HOG, n_files=1)
    proc = cli(dep, inputs, out, "--worker-memory", "4GB", "--scheduler", "tcp://127.0.0.1:9")
    assert proc.returncode == 2, show(proc)
    assert "--worker-memory" in proc.stderr and "dask worker --memory-limit" in proc.stderr
    assert not (out / "job_summary.json").exists()


def test_worker_memory_values_are_checked() -> None:
    assert JobOptions(worker_memory="512 MiB").worker_memory == "512 MiB"
    for bad in ("lots", "0GB", -1):
        with pytest.raises(UsageError, match="worker_memory"):
            JobOptions(worker_memory=bad)
    with pytest.raises(UsageError, match="client="):
        JobOptions(worker_memory="4GB", client=object())


# --------------------------------------------------------------------------- the parts


MEASURE = """
from daskscore.worker.memory import MIB, RunMemory, rss_bytes
memory = RunMemory()
before = rss_bytes()
memory.start(0, None)
block = bytearray(64 << 20)
for i in range(0, len(block), 4096):
    block[i] = 1
memory.sample()  # (the watchdog's reading; a ledger-less call writes none)
print(memory.finish(), before / MIB)
"""


#: the memory touched by a thread of run()'s own (a data loader's, say), read while that thread
#: holds it: the mark read in the worker's thread is the whole process's
MEASURE_THREAD = """
import threading
from daskscore.worker.memory import MIB, max_rss_bytes, rss_bytes
before = rss_bytes()
touched, done = threading.Event(), threading.Event()
def touch():
    block = bytearray(64 << 20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    touched.set()
    done.wait()
thread = threading.Thread(target=touch)
thread.start()
touched.wait()
print(max_rss_bytes() / MIB, before / MIB)
done.set()
thread.join()
"""


@pytest.mark.parametrize("script", [MEASURE, MEASURE_THREAD], ids=["run-thread", "other-thread"])
def test_the_peak_of_a_run_call_is_measured(script: str) -> None:
    """In a fresh process, as a worker's is (in pytest's, memory that earlier tests freed is
    still resident, and a new allocation need not raise the RSS)."""
    import subprocess
    import sys

    assert script == MEASURE or "threading" in script
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    peak, before = (float(x) for x in out.stdout.split())
    assert peak >= before + 60, (peak, before)


class _Client:
    """What MemoryDeaths asks of a client: the scheduler's events and its workers."""

    def __init__(self, events: list[tuple[float, dict[str, Any]]], limit: int = 4 << 30) -> None:
        self.events = events
        self.limit = limit

    def get_events(self, topic: str) -> tuple[Any, ...]:
        assert topic == "worker-restart-memory"
        return tuple(self.events)

    def scheduler_info(self, n_workers: int = 5) -> dict[str, Any]:
        return {"workers": {"tcp://w": {"memory_limit": self.limit}}}


def _died(tmp_path: Path, rss: int, pid: int = 4242) -> LedgerState:
    """The ledger of a task whose process died in run() of mini-batch 7 after sampling
    ``rss``."""
    make_staging(tmp_path)
    ledger = LedgerWriter(tmp_path, "r01a000001")
    ledger.memory(-1, 50 << 20, pid)
    ledger.started(7, 1, "worker-0", 1000.0)
    ledger.memory(7, rss, pid)
    ledger.close()
    return read_ledger(tmp_path, "r01a000001")


def test_the_nannys_memory_event_names_the_death(tmp_path: Path) -> None:
    state = _died(tmp_path, 100 << 20)
    assert (state.pid, state.running_rss, state.running) == (4242, 100 << 20, (7, 1))
    other = (1000.5, {"worker": "tcp://x", "pid": 99, "rss": 5 << 30})
    mine = (1001.0, {"worker": "tcp://w", "pid": 4242, "rss": 3900 << 20})
    error, peak = MemoryDeaths(_Client([mine, other]), "4GB").explain(state)
    assert error.startswith("out of memory (limit 4GB, peak 3.81 GiB): its nanny killed"), error
    assert peak == 3900.0
    # another process's event says nothing of this one
    error, peak = MemoryDeaths(_Client([other]), "4GB").explain(state)
    assert error == "" and peak == 100.0


def test_a_sigkill_near_the_limit_is_taken_for_the_kernels_oom_killer(tmp_path: Path) -> None:
    state = _died(tmp_path, 3600 << 20, pid=4343)
    deaths = MemoryDeaths(_Client([]))  # (the limit read from the scheduler: 4 GiB)
    assert deaths.explain(state)[0] == "", "no exit signal known: a plain death"
    nanny_log = logging.getLogger("distributed.nanny")
    with _watch_exits():
        nanny_log.info("Worker process %d was killed by signal %d", 4343, signal.SIGKILL)
    assert exit_signal(4343) == signal.SIGKILL
    error, _ = deaths.explain(state)
    assert error.startswith("out of memory (limit 4.00 GiB, peak 3.52 GiB)"), error
    assert "kernel" in error
    low = _died(tmp_path / "low", 100 << 20, pid=4343)  # killed, but far from the limit
    error = deaths.explain(low)[0]
    assert "out of memory" not in error and "killed by signal SIGKILL" in error, error


def test_rss_reads_this_process() -> None:
    import psutil

    ours, theirs = rss_bytes(), psutil.Process(os.getpid()).memory_info().rss
    assert abs(ours - theirs) < 32 << 20
