"""Unit tests of daskscore.worker.task: what a task leaves in its attempt's ledger, in this
process (a stand-in scoring module, no cluster).

A failed try is noted in the ledger as it ends, and a mini-batch that had one is committed as
soon as it ends: a process that dies later in the task (or in a retry of that mini-batch)
leaves every failed try in the ledger, and such a mini-batch is not run again.  Clean
mini-batches are still committed in flushes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from helpers import worker_job

from daskscore.io.ledger import ledger_path, read_ledger
from daskscore.protocol import Status
from daskscore.worker import plugin, task
from daskscore.worker.runtime import JobRuntime


class Script:
    """run() of one file: raises on the calls its plan says (by file name), else returns."""

    def __init__(self, plans: dict[str, list[str]]) -> None:
        self.plans = plans
        self.calls: list[str] = []

    def run(self, mini_batch: list[str]) -> list[str]:
        name = os.path.basename(mini_batch[0])
        self.calls.append(name)
        plan = self.plans.get(name)
        if plan and plan.pop(0) == "raise":
            raise RuntimeError(f"bad {name}")
        return [name]


def run_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, n: int, plans: dict[str, list[str]]
) -> tuple[Any, list[tuple[str, Any]], Script]:
    """Run ``n`` one-file mini-batches in one task; return its result, its ledger's lines
    (kind, and the mini-batch ids of a commit or a failed try's (mini-batch, try)), the
    script."""
    job = worker_job(tmp_path, max_retries=1)
    staging = Path(job.staging)
    files = []
    for i in range(n):
        (tmp_path / f"f{i}.csv").write_text(f"x\n{i}\n")
        files.append(str(tmp_path / f"f{i}.csv"))
    runtime = JobRuntime(job, "worker-0")
    script = Script(plans)
    runtime.module = SimpleNamespace(run=script.run)
    monkeypatch.setitem(plugin._RUNTIMES, job.job_id, runtime)
    monkeypatch.setattr(task, "FLUSH_SECONDS", 1e9)  # clean ones: flushed at the end only
    try:
        result = task.run_task(job.job_id, "a1", [(mb, 0, [f]) for mb, f in enumerate(files)])
    finally:
        runtime.cwd.close()  # (as an uninstall does: the process's directory count back to 0)
    lines: list[tuple[str, Any]] = []
    for line in ledger_path(staging, "a1").read_text().splitlines():
        kind, _, rest = line.partition(" ")
        if kind in ("S", "F"):
            lines.append((kind, int(rest.split(" ")[0])))
        elif kind == "E":
            rec = json.loads(rest)
            lines.append((kind, (rec["mini_batch"], rec["try"])))
        elif kind == "C":
            lines.append((kind, [(r["mini_batch"], r["try"]) for r in json.loads(rest)]))
    return result, lines, script


def test_a_failed_try_is_noted_and_its_mini_batch_committed_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # f1 raises once; f3 raises on both of its tries (max_retries 1)
    plans = {"f1.csv": ["raise"], "f3.csv": ["raise", "raise"]}
    result, lines, script = run_files(tmp_path, monkeypatch, 6, plans)
    assert script.calls == [f"f{i}.csv" for i in (0, 1, 1, 2, 3, 3, 4, 5)]
    assert lines == [
        ("S", 0), ("F", 0),
        ("S", 1), ("F", 1), ("E", (1, 1)), ("S", 1), ("F", 1),
        ("C", [(0, 1), (1, 1), (1, 2)]),  # before the next run(): kept whatever comes next
        ("S", 2), ("F", 2),
        ("S", 3), ("F", 3), ("E", (3, 1)), ("S", 3), ("F", 3), ("E", (3, 2)),
        ("C", [(2, 1), (3, 1), (3, 2)]),
        ("S", 4), ("F", 4), ("S", 5), ("F", 5),
        ("C", [(4, 1), (5, 1)]),  # clean ones: in a flush (here, the task's last)
    ]  # fmt: skip
    tries = [(r.mini_batch, r.try_no, r.status, r.final) for r in result.all_records()]
    assert (1, 1, Status.RUN_EXCEPTION, False) in tries and (1, 2, Status.RUN_DONE, True) in tries
    assert (3, 2, Status.RUN_EXCEPTION, True) in tries
    state = read_ledger(tmp_path / "staging", "a1")
    assert state.tried == [] and state.running is None  # all committed: nothing to read back
    assert len(state.committed) == 8


def test_the_failed_try_before_a_retry_in_flight_is_read_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ledger as a process that died in the retry of f1 leaves it: its lines up to that
    retry's start."""
    _, lines, _ = run_files(tmp_path, monkeypatch, 3, {"f1.csv": ["raise"]})
    path = ledger_path(tmp_path / "staging", "a1")
    text = path.read_text().splitlines(keepends=True)
    starts = [i for i, line in enumerate(text) if line.startswith("S 1 ")]
    path.write_text("".join(text[: starts[1] + 1]))  # died inside run() of f1's second try
    state = read_ledger(tmp_path / "staging", "a1")
    assert state.committed == []
    assert [(r.mini_batch, r.try_no, r.status) for r in state.tried] == [
        (1, 1, Status.RUN_EXCEPTION)
    ]
    assert "bad f1.csv" in state.tried[0].error
    assert state.running == (1, 2)
