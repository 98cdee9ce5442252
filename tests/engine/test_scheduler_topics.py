"""A notebook's (or a warm cluster's) scheduler runs job after job: each job's event topics go
with it.  Dask's broker makes a topic for whatever it is asked of, and a job's unsubscribe
(sent on the client's batched stream) may reach the scheduler after the job dropped its
topics: that named them again, and each job and each session left one empty topic behind for
the scheduler's life.  Real jobs and sessions on the module's LocalCluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import write_deployment, write_inputs

import daskscore

SCRIPT = """
    import os

    def run(mini_batch):
        return [os.path.basename(p) for p in mini_batch]
"""


def _job_topics(dask_scheduler: Any = None) -> list[str]:
    topics = dask_scheduler._broker._topics
    return [
        name for name in topics if name.startswith(("daskscore-progress-", "daskscore-records-"))
    ]


def test_jobs_and_sessions_leave_no_topics_behind(tmp_path: Path, client: Any) -> None:
    dep = write_deployment(tmp_path / "deploy", SCRIPT, settings={"mini_batch_size": 2})
    inputs = write_inputs(tmp_path / "in", 4)
    for i in range(4):
        daskscore.run(dep, inputs, tmp_path / f"out{i}", client=client, progress=False)
        with daskscore.open_session(dep, inputs, client=client, progress=False) as session:
            assert len(session.frame.compute()) == 4
    left = client.run_on_scheduler(_job_topics)
    assert len(left) <= 1, left  # (the last one's late unsubscribe, at most)
