"""A ``run()`` past ``retry_settings.timeout`` on an in-process cluster (``processes=False``):
the worker shares its process with the caller — a notebook's kernel, this test process — so
the watchdog must not end it (it did: the caller died with exit status 75, without a word).
The call is left to finish and its try counts as timed out (``RUN_TIMEOUT``), retried as any;
the other mini-batches are scored."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import write_deployment, write_inputs

import daskscore

pytestmark = pytest.mark.timeout(240)

SCRIPT = """
    import os
    import time

    def run(mini_batch):
        names = [os.path.basename(p) for p in mini_batch]
        if "f0003.csv" in names:
            time.sleep(3)
        return names
"""


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=1, processes=False, dashboard_address="127.0.0.1:0") as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        yield client


def _deployment(tmp_path: Path) -> Path:
    return write_deployment(
        tmp_path / "deploy",
        SCRIPT,
        settings={"mini_batch_size": 2, "retry_settings": {"max_retries": 1, "timeout": 1}},
    )


def test_a_run_past_its_timeout_on_an_in_process_cluster_is_timed_out_not_killed(
    client: Any, tmp_path: Path
) -> None:
    pid = os.getpid()
    result = daskscore.run(
        _deployment(tmp_path), write_inputs(tmp_path / "in", 8), tmp_path / "out", client=client
    )

    assert os.getpid() == pid  # (the caller is alive: this line runs)
    assert result.status == "Completed"
    assert (result.succeeded_items, result.failed_items) == (6, 2)
    (failure,) = json.loads((tmp_path / "out" / "job_summary.json").read_text())["failures"]
    assert failure["mini_batch_id"] == 1 and failure["status"] == "RUN_TIMEOUT"
    assert failure["tries"] == 2, failure  # (retried, as any timed-out try)
    assert "time.sleep(3)" in failure["error"] and "left to finish" in failure["error"]
    assert "Stack of run() at its timeout" in failure["error"]
    names = sorted(result.predictions.read_text().split())
    assert names == [f"f{i:04d}.csv" for i in range(8) if i not in (2, 3)]


def test_score_on_an_in_process_cluster_drops_the_timed_out_mini_batch(
    client: Any, tmp_path: Path
) -> None:
    with daskscore.open_session(
        _deployment(tmp_path), str(write_inputs(tmp_path / "in", 8)), client=client,
        on_error="drop",
    ) as session:  # fmt: skip
        frame = client.compute(session.frame).result()
        (failure,) = session.failures

    assert len(frame) == 6
    assert failure["mini_batch"] == 1 and failure["status"] == "RUN_TIMEOUT"
