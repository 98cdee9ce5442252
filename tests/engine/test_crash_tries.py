"""Whole jobs (the command, its embedded cluster, real worker processes) whose scoring script
raises on some calls and kills its process on others, several mini-batches to a task: every
try that failed or died is in ``processed_mini-batches.csv``, numbered as the calls were made,
as the script's own log of its calls says.

A task commits its clean mini-batches in flushes; a mini-batch that had a failed try is
committed as soon as it ends, and its failed tries are noted as they end.  So when the process
dies later in the task (or in a retry of that very mini-batch) no failed try is lost, and a
mini-batch that went wrong and then succeeded is not run again.  What a death loses is clean
first tries not yet committed: those run again, uncharged, and show one try.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import pytest
from helpers import cli, make_job, show, summary_of

#: The script: each call of ``run()`` on a file first appends ``<file> <action>`` to
#: ``$MARKER_DIR/calls.log``, then does the file's next action in ``$PLANS``
#: (``f0002.csv:raise,exit;...``): ``raise``, ``exit`` (``os._exit``), then ``return`` for
#: every later call.  Mini-batches of one file; a row per file.
SCRIPT = """\
import os
from pathlib import Path

LOG = Path(os.environ["MARKER_DIR"]) / "calls.log"
PLANS = {
    name: actions.split(",")
    for name, _, actions in (p.partition(":") for p in os.environ["PLANS"].split(";"))
}


def init():
    pass


def call(name):
    made = LOG.read_text().split().count(name) if LOG.exists() else 0
    plan = PLANS.get(name, [])
    action = plan[made] if made < len(plan) else "return"
    fd = os.open(LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.write(fd, f"{name} {action}\\n".encode())
    os.close(fd)
    if action == "raise":
        raise RuntimeError(f"planned failure of {name}")
    if action == "exit":
        os._exit(1)


def run(mini_batch):
    names = [Path(p).name for p in mini_batch]
    for name in names:
        call(name)
    return names
"""

STATUS = {"raise": "RUN_EXCEPTION", "exit": "PROCESS_DIED", "return": "RUN_DONE"}
N_FILES = 40


def name(i: int) -> str:
    return f"f{i:04d}.csv"


def calls_of(markers: Path) -> dict[int, list[str]]:
    """The script's log: each mini-batch's calls' actions, in order."""
    calls: dict[int, list[str]] = defaultdict(list)
    for line in (markers / "calls.log").read_text().splitlines():
        file, action = line.split(" ")
        calls[int(file[1:5])].append(action)
    return dict(calls)


def tries_of(out: Path) -> dict[int, list[tuple[int, str]]]:
    """processed_mini-batches.csv: each mini-batch's (try, status), in try order."""
    path = out / "logs" / "sys" / "job_report" / "processed_mini-batches.csv"
    tries: dict[int, list[tuple[int, str]]] = defaultdict(list)
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            tries[int(row["mini_batch_id"])].append((int(row["try"]), row["status"]))
    return {mb: sorted(rows) for mb, rows in tries.items()}


SCENARIOS = {
    # the first task carries mini-batches 0-9 (40 on one worker): 2 raises once and succeeds;
    # 5, in the same task, raises, then kills its process on its retry; 8 kills it at once
    "retries": (2, {2: ["raise"], 5: ["raise", "exit"], 8: ["exit"]}),
    # no retries: 2 fails for good (it would raise again), then 5 kills the process
    "no_retries": (0, {2: ["raise"] * 3, 5: ["exit"]}),
}


@pytest.mark.slow
@pytest.mark.timeout(200)
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_failed_try_of_a_task_whose_process_died_is_reported(
    tmp_path: Path, scenario: str
) -> None:
    max_retries, plans = SCENARIOS[scenario]
    markers = tmp_path / "markers"
    markers.mkdir()
    env = {
        "MARKER_DIR": str(markers),
        "PLANS": ";".join(f"{name(mb)}:{','.join(acts)}" for mb, acts in plans.items()),
    }
    settings = {"mini_batch_size": 1, "retry_settings": {"max_retries": max_retries}}
    dep, inputs, out = make_job(tmp_path, SCRIPT, n_files=N_FILES, settings=settings, env=env)
    proc = cli(dep, inputs, out, "--workers", "1")
    assert proc.returncode == 0, show(proc)

    calls, tries = calls_of(markers), tries_of(out)
    assert sorted(calls) == sorted(tries) == list(range(N_FILES))
    failed: list[int] = []
    for mb in range(N_FILES):
        went_wrong = [STATUS[a] for a in calls[mb] if a != "return"]
        returned = "return" in calls[mb]
        want = went_wrong + (["RUN_DONE"] if returned else [])
        assert tries[mb] == list(enumerate(want, start=1)), (mb, calls[mb])
        if went_wrong:  # every call of it is a try: it was not run again after it ended
            assert len(calls[mb]) == len(want), (mb, calls[mb])
        if not returned:
            failed.append(mb)
    # the planned faults happened as planned, each once
    for mb, actions in plans.items():
        assert calls[mb][: max_retries + 1] == (actions + ["return"])[: max_retries + 1]

    s = summary_of(out)
    assert s["status"] == "Completed"
    assert s["failed_mini_batches"] == len(failed) == (0 if max_retries else 2)
    assert s["retried_mini_batches"] == sum(len(t) > 1 for t in tries.values())
    assert s["retried_mini_batches"] == (len(plans) if max_retries else 0)
    assert {f["mini_batch_id"]: f["tries"] for f in s["failures"]} == {mb: 1 for mb in failed}
    # rows: of every mini-batch that returned, once each, in mini-batch order
    lines = (out / "predictions.csv").read_text().splitlines()
    assert lines == [name(i) for i in range(N_FILES) if i not in failed]
    assert s["rows_written"] == len(lines)
