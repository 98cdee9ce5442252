"""Dask's own views of a daskscore job: task keys named by the mini-batches they hold (the
task stream and the progress panel read ``daskscore-mb``), and Dask's fine-grained metrics
dividing a task's time into ``run()``, fetching and writing, under the job's span."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from conftest import write_deployment, write_inputs
from distributed.utils import key_split

import daskscore
from daskscore.cluster.local import local_cluster
from daskscore.ui.taskkeys import PREFIX, task_key

SCRIPT = """
    import os
    import time

    def init():
        pass

    def run(mini_batch):
        time.sleep(0.05)
        return [os.path.basename(p) for p in mini_batch]
"""


def test_a_key_names_its_mini_batches_and_stays_unique_per_attempt() -> None:
    first = task_key([120, 121, 149], "r01a000007-abc123")
    again = task_key([120, 121, 149], "r01a000031-abc123")  # the same range, submitted again
    assert first == "daskscore-mb-120-149-r01a000007-abc123"
    assert first != again
    part = task_key([5], "r01a000008-abc123", (5, 40, 80))
    assert part == "daskscore-mb-5-5-i40-80-r01a000008-abc123"
    # Dask groups them all under one prefix
    assert {key_split(k) for k in (first, again, part)} == {PREFIX}


def _scheduler_view(dask_scheduler: Any) -> dict[str, Any]:
    metrics = dask_scheduler.cumulative_worker_metrics
    return {
        "prefixes": sorted(dask_scheduler.task_prefixes),
        "labels": sorted(
            {k[2] for k in metrics if isinstance(k, tuple) and len(k) == 4 and k[1] == PREFIX}
        ),
        "spans": sorted(str(s.name) for s in dask_scheduler.extensions["spans"].spans.values()),
    }


@pytest.mark.slow
def test_a_job_shows_in_dask_as_mini_batches_with_metrics(tmp_path: Path) -> None:
    dep = write_deployment(tmp_path / "deploy", SCRIPT, settings={"mini_batch_size": 2})
    with local_cluster(2, dashboard=False) as handle:
        result = daskscore.run(
            dep, write_inputs(tmp_path / "in", 12), tmp_path / "out", client=handle.client
        )
        # (workers send their metrics with their heartbeats: wait for them)
        deadline = time.monotonic() + 60
        view = handle.client.run_on_scheduler(_scheduler_view)
        while not {"run", "write"} <= set(view["labels"]) and time.monotonic() < deadline:
            time.sleep(0.5)
            view = handle.client.run_on_scheduler(_scheduler_view)
    assert result.summary["status"] == "Completed"
    assert PREFIX in view["prefixes"], view
    assert "daskscore" not in view["prefixes"]  # (the old, undivided name)
    # time inside the tasks, as Dask's fine-grained metrics attribute it
    assert {"run", "fetch", "write"} <= set(view["labels"]), view
    assert any(result.job_id in name and "daskscore" in name for name in view["spans"]), view
