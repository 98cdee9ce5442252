"""A task result lost with its worker after the task finished is recovered from the ledger.

Forced with real processes: the ``daskscore`` command with its own one-worker cluster, whose
scheduler loads a plugin (Dask's own ``distributed.scheduler.preload`` setting, given in the
environment) that SIGKILLs the worker process at the moment one of the job's tasks has its
result in memory there and nothing else to run.  The driver's test hook
(:data:`daskscore.engine.dispatch.HOLD_ENV`) makes it look at each finished task a second
later, when Dask has marked the result lost; the restarted worker's ``init()`` is slow, so the
result cannot have been computed again by then.  Before the fix the job failed with
``task ... failed inside daskscore: None``.

The ledger is the source of truth: the lost task's committed mini-batches are read back from it
(shared disk), or run again (shipped: its rows were in the lost reply); every row is in
``predictions.csv`` once, and the summary counts each mini-batch once.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import run_cli
from helpers import cli_args, make_job, processed_of, show, summary_of

from daskscore.engine.dispatch import HOLD_ENV

pytestmark = pytest.mark.slow

N_FILES = 8

#: One row per file; a second init() (the worker restarted after the kill) takes 4 s.
SCRIPT = """
    import os, time
    from pathlib import Path

    MARKERS = Path(os.environ["MARKER_DIR"])

    def init():
        log = MARKERS / "init.log"
        again = log.exists()
        with open(log, "a") as fh:
            fh.write(f"{os.getpid()}\\n")
        if again:
            time.sleep(4)

    def run(mini_batch):
        time.sleep(0.2)
        return [f"{Path(p).name} ok" for p in mini_batch]
"""

#: Loaded by the scheduler: kill the worker holding the first daskscore task result that lands
#: while that worker has nothing else to run (so no run() is in flight when it dies).
KILLER = """
import os
import signal
from pathlib import Path

from distributed.diagnostics.plugin import SchedulerPlugin

MARK = Path(os.environ["KILL_MARK"])


class KillHolder(SchedulerPlugin):
    name = "test-kill-result-holder"

    def __init__(self, scheduler):
        self.scheduler = scheduler

    def transition(self, key, start, finish, *args, **kwargs):
        if finish != "memory" or not str(key).startswith("daskscore-") or MARK.exists():
            return
        ts = self.scheduler.tasks.get(key)
        holders = list(ts.who_has) if ts is not None else []
        if len(holders) != 1 or holders[0].processing or not holders[0].pid:
            return
        MARK.write_text(f"{key} {holders[0].pid}")
        os.kill(holders[0].pid, signal.SIGKILL)


def dask_setup(scheduler):
    scheduler.add_plugin(KillHolder(scheduler))
"""


@pytest.mark.timeout(240)
@pytest.mark.parametrize("transport", ["shared", "shipped"])
def test_a_result_lost_with_its_worker_is_recovered_from_the_ledger(
    tmp_path: Path, transport: str
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    dep, inputs, out = make_job(
        tmp_path,
        SCRIPT,
        n_files=N_FILES,
        settings={"mini_batch_size": 1},
        env={"MARKER_DIR": str(markers)},
    )
    killer = tmp_path / "killer.py"
    killer.write_text(KILLER)
    mark = tmp_path / "killed.txt"
    env = {
        "DASK_DISTRIBUTED__SCHEDULER__PRELOAD": str(killer),
        "KILL_MARK": str(mark),
        HOLD_ENV: "1",
    }
    args = cli_args(dep, inputs, out)
    args[args.index("--workers") + 1] = "1"
    if transport == "shipped":
        args.append("--no-shared-filesystem")
    proc = run_cli(*args, timeout=200, env=env)
    assert proc.returncode == 0, show(proc)
    assert mark.exists(), "the scheduler plugin killed no worker"
    key = mark.read_text().split()[0]
    assert len((markers / "init.log").read_text().split()) == 2  # the kill restarted it

    summary = summary_of(out)
    assert summary["status"] == "Completed"
    assert summary["succeeded_items"] == N_FILES
    assert summary["failed_items"] == summary["failed_mini_batches"] == 0
    assert summary["total_mini_batches"] == N_FILES
    assert summary["not_run_mini_batches"] == 0
    # each mini-batch once, on its first try, never charged for the lost result
    tries = processed_of(out)
    assert sorted(tries["mini_batch_id"]) == list(range(N_FILES))
    assert set(tries["status"]) == {"RUN_DONE"} and set(tries["try"]) == {1}
    rows = (out / "predictions.csv").read_text().splitlines()
    assert rows == [f"f{i:04d}.csv ok" for i in range(N_FILES)]
    # the driver saw that very task's result lost (with any other result the worker held)
    log = (out / "logs" / "sys" / "daskscore.txt").read_text()
    lost = re.findall(r"task (\S+): its result was lost with its worker", log)
    assert any(key.endswith(attempt) for attempt in lost), log[-3000:]
