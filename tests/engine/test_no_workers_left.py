"""A caller's ``LocalCluster`` whose workers a job's ``run()`` kills, or that loses them all.

Dask's ``LocalCluster`` closes the nanny of a worker still missing ``distributed.deploy.
lost-worker-timeout`` after it was lost (15 s; 0 s here, so that the first death does it): a
job whose ``run()`` killed its process, under ``run(client=)`` or ``score()``, used to wait on
a cluster without workers for ever, without a word.  The job now keeps the nannies while it
runs, and a job on a cluster of this process that has no worker and can start none ends,
keeping what it did, resumable.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
import pytest
from distributed import Client, LocalCluster
from helpers import make_job

import daskscore
from daskscore.engine.noworkers import NO_WORKER_ENV

pytestmark = pytest.mark.timeout(90)

#: run() ends its process the first time it is called (a marker file says it did)
KILL_ONCE = """
import os
def run(mb):
    mark = os.path.join(os.environ["MARKS"], "killed")
    if not os.path.exists(mark):
        open(mark, "w").close()
        os._exit(7)
    return [os.path.basename(p) for p in mb]
"""

#: run() of the second file says so, then waits while the file "stall" is there (the test
#: takes the workers away meanwhile)
STALL = """
import os, time
def run(mb):
    marks = os.environ["MARKS"]
    if any(os.path.basename(p).startswith("f0001") for p in mb):
        open(os.path.join(marks, "stalled"), "w").close()
        while os.path.exists(os.path.join(marks, "stall")):
            time.sleep(0.1)
    return [os.path.basename(p) for p in mb]
"""


@contextlib.contextmanager
def caller_cluster(n_workers: int = 1) -> Iterator[tuple[LocalCluster, Client]]:
    """A notebook's cluster: a LocalCluster of this process, whose lost nannies close at once."""
    with (
        dask.config.set({"distributed.deploy.lost-worker-timeout": "0s"}),
        LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
        ) as cluster,
        Client(cluster) as client,
    ):
        yield cluster, client


def _job(tmp_path: Path, script: str, n_files: int) -> tuple[Path, Path, Path]:
    marks = tmp_path / "marks"
    marks.mkdir()
    (marks / "stall").touch()
    settings = {"mini_batch_size": 1, "retry_settings": {"max_retries": 3}}
    return make_job(tmp_path, script, n_files=n_files, settings=settings, env={"MARKS": str(marks)})


def test_a_run_that_kills_its_process_leaves_the_callers_cluster_its_nannies(
    tmp_path: Path,
) -> None:
    dep, inputs, out = _job(tmp_path, KILL_ONCE, n_files=3)
    with caller_cluster() as (cluster, client):
        result = daskscore.run(dep, inputs, out, client=client, progress=False)
        # the cluster is as it was: Dask's own handling of lost workers, its own timeout
        assert "_update_worker_status" not in vars(cluster)
        assert dask.config.get("distributed.deploy.lost-worker-timeout") == "0s"
    assert result.status == "Completed" and result.succeeded_items == 3, result
    assert (tmp_path / "marks" / "killed").exists()  # (the process did die)


def test_score_on_a_cluster_whose_worker_died_gets_its_rows(tmp_path: Path) -> None:
    dep, inputs, _ = _job(tmp_path, KILL_ONCE, n_files=4)
    with caller_cluster() as (cluster, client):
        session = daskscore.open_session(dep, inputs, client=client, on_error="drop", meta=_meta())
        try:
            rows = session.frame.compute()
        finally:
            session.close()
        assert "_update_worker_status" not in vars(cluster)  # (given back with the session)
    assert (tmp_path / "marks" / "killed").exists()
    assert len(rows) == 3  # (the mini-batch in flight when its process died is dropped)


def _meta():  # noqa: ANN202 - a frame's meta
    import pandas as pd

    return pd.DataFrame({"prediction": pd.Series([], dtype=object)})


def _when(path: Path, then: object) -> threading.Thread:
    """Call ``then()`` on a thread once ``path`` exists."""

    def wait() -> None:
        while not path.exists():
            time.sleep(0.1)
        then()  # type: ignore[operator]

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    return thread


def test_a_job_on_a_cluster_that_can_start_no_worker_ends_resumable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(NO_WORKER_ENV, "1")
    dep, inputs, out = _job(tmp_path, STALL, n_files=4)
    with caller_cluster() as (cluster, client):
        _when(tmp_path / "marks" / "stalled", lambda: cluster.scale(0))
        with pytest.raises(daskscore.NoWorkersLeft) as raised:
            daskscore.run(dep, inputs, out, client=client, progress=False)
    message = str(raised.value)
    assert "scaled to 0 workers" in message and "resume=True" in message, message
    assert isinstance(raised.value, daskscore.ClusterLost)  # (handled as a lost scheduler)
    log = (out / "logs" / "sys" / "daskscore.txt").read_text()
    assert "the cluster has had no worker for" in log, log
    assert (out / ".daskscore").is_dir()  # kept, as the error says

    (tmp_path / "marks" / "stall").unlink()
    with caller_cluster() as (cluster, client):
        result = daskscore.run(dep, inputs, out, client=client, progress=False, resume=True)
    assert result.status == "Completed" and result.succeeded_items == 4, result


def test_a_score_computation_without_workers_says_none_will_come_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(NO_WORKER_ENV, "1")
    dep, inputs, _ = _job(tmp_path, STALL, n_files=4)
    caplog.set_level(logging.WARNING, logger="daskscore")
    with caller_cluster() as (cluster, client):
        session = daskscore.open_session(dep, inputs, client=client, on_error="drop", meta=_meta())
        try:
            _when(tmp_path / "marks" / "stalled", lambda: cluster.scale(0))
            persisted = session.frame.persist()
            deadline = time.monotonic() + 30
            while "none will come back" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.2)
            del persisted
        finally:
            (tmp_path / "marks" / "stall").unlink()
            session.close()
    assert "score(): the computation's tasks wait for one" in caplog.text, caplog.text
    assert "scaled to 0 workers" in caplog.text, caplog.text
    assert "waits for ever" in caplog.text, caplog.text


class _Pending:
    """A task's future whose result is being computed again and never comes (its worker
    left with it, and no worker can come back)."""

    def __init__(self) -> None:
        self.asked: list[float] = []

    def result(self, timeout: float | None = None) -> Any:
        assert timeout is not None, "a wait without a timeout never ends"
        self.asked.append(timeout)
        raise TimeoutError(f"timed out after {timeout} s")

    exception = result


class _Gone:
    status = "closed"


@pytest.mark.parametrize("what", ["result", "exception"])
def test_fetching_a_result_that_never_comes_ends_with_the_clusters_checks(what: str) -> None:
    """The dispatcher's fetch of a finished task's result (or error) looks at the cluster
    while it waits: it waited without a timeout, and a result lost with the last worker
    hung the job for ever (the loop's checks never ran)."""
    from daskscore.engine.connection import SchedulerWatch, wait_result
    from daskscore.errors import ClusterLost, NoWorkersLeft

    fut, checked = _Pending(), []

    def checks() -> None:
        checked.append(1)
        if len(checked) == 3:
            raise NoWorkersLeft("no worker can come back")

    watch = SchedulerWatch(_Client(), lambda: "2 items", "out")
    get = getattr(fut, what)
    with pytest.raises(NoWorkersLeft):
        wait_result(fut, watch, checks, every=0.01, get=get)
    assert fut.asked == [0.01] * 3
    gone = SchedulerWatch(_Gone(), lambda: "2 items", "out")
    gone.limit = 0.0
    with pytest.raises(ClusterLost):
        wait_result(fut, gone, None, every=0.01, get=get)


class _Client:
    status = "running"
