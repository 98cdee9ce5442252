"""A ``run()`` that ends its worker process under ``daskscore.score()``.

Dask runs a partition whose worker died again elsewhere, and gives up on the whole computation
with ``KilledWorker`` after a few deaths.  The session charges the death to the mini-batch whose
``run()`` was in flight (``PROCESS_DIED``, or ``RUN_TIMEOUT`` from the watchdog), does not run
it again, and the other mini-batches' rows come back; ``on_error`` decides as for an exception.

A cluster of its own (workers die here): two worker processes of two threads each, so that a
process also runs a second partition, which must not be charged, and whose ``run()`` calls
must not overlap.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import write_deployment, write_inputs

import daskscore
from daskscore.errors import JobFailed

pytestmark = pytest.mark.timeout(240)

N_FILES, SIZE = 16, 2

SCRIPT = """
    import os
    import threading
    import time

    CALLS = os.environ["CALLS"]
    _guard = threading.Lock()
    _active = 0
    peak = 0

    def run(mini_batch):
        global _active, peak
        with _guard:
            _active += 1
            peak = max(peak, _active)
        try:
            names = [os.path.basename(p) for p in mini_batch]
            for name in names:
                with open(os.path.join(CALLS, name), "a") as f:
                    f.write("x")
            if os.environ.get("DIE_ON") in names:
                if os.environ.get("HIDE_MARKERS"):  # (as if run on another host)
                    folder = os.path.join(os.environ["AZUREML_BI_OUTPUT_PATH"], ".daskscore")
                    for name in os.listdir(os.path.join(folder, "score-markers")):
                        os.remove(os.path.join(folder, "score-markers", name))
                os._exit(3)
            if os.environ.get("HANG_ON") in names:
                time.sleep(120)
            if os.environ.get("HOLD_ON") in names:  # (C code that keeps the GIL)
                import ctypes

                ctypes.PyDLL(None).sleep(60)
                with open(os.path.join(CALLS, "held-to-the-end"), "w"):
                    pass
            time.sleep(0.01)
            return [f"{name} {peak}" for name in names]
        finally:
            with _guard:
                _active -= 1
"""


@contextlib.contextmanager
def _cluster(threads: int, allowed_failures: int = 20) -> Iterator[Any]:
    """Two worker processes of ``threads`` threads. (Dask gives up on a task after
    ``allowed-failures`` deaths of workers it was queued on, its own or not: on a loaded
    machine the restarts of an earlier test's workers added to this module's innocent
    partitions, and one reached 3. The deaths each test charges are counted below; the
    threshold is Dask's.)"""
    import dask
    from distributed import Client, LocalCluster

    with (
        dask.config.set({"distributed.scheduler.allowed-failures": allowed_failures}),
        LocalCluster(
            n_workers=2, threads_per_worker=threads, host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):  # fmt: skip
        yield client


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with _cluster(2) as client:
        yield client


@pytest.fixture(scope="module")
def single_threaded() -> Iterator[Any]:
    """(With two threads per worker, the floor's distributed, 2024.8, left the computation of
    the two tests that use this waiting for ever, on CI's Python 3.10 run: not understood yet;
    the current distributed passes them on either cluster.)"""
    with _cluster(1) as client:
        yield client


@pytest.fixture
def single_sessions(single_threaded: Any) -> Iterator[list[Any]]:
    opened: list[Any] = []
    with single_threaded.as_current():
        yield opened
    for session in opened:
        session.close()


def _score(tmp_path: Path, sessions: list[Any], meta: bool = True, **env: str) -> tuple[Any, Path]:
    on_error = env.pop("ON", "drop")
    calls = tmp_path / "calls"
    calls.mkdir()
    dep = write_deployment(
        tmp_path / "deploy",
        SCRIPT,
        settings={
            "mini_batch_size": SIZE,
            "retry_settings": {"max_retries": 2, "timeout": 3},
            "environment_variables": {"CALLS": str(calls), **env},
        },
    )
    frame_meta = pd.DataFrame({"prediction": pd.Series([], dtype=object)}) if meta else None
    ddf = daskscore.score(
        dep, write_inputs(tmp_path / "in", N_FILES), meta=frame_meta, on_error=on_error
    )
    sessions.append(ddf.attrs["daskscore"])
    return ddf, calls


def _calls(calls: Path, name: str) -> int:
    return len((calls / name).read_text()) if (calls / name).exists() else 0


def test_a_run_that_ends_its_process_fails_its_mini_batch_alone(
    tmp_path: Path, sessions: list[Any]
) -> None:
    ddf, calls = _score(tmp_path, sessions, DIE_ON="f0005.csv", HANG_ON="f0010.csv")

    frame = ddf.compute()

    names = sorted(row.split()[0] for row in frame["prediction"])
    lost = {"f0004.csv", "f0005.csv", "f0010.csv", "f0011.csv"}
    assert names == [f"f{i:04d}.csv" for i in range(N_FILES) if f"f{i:04d}.csv" not in lost]
    failures = {f["mini_batch"]: f for f in ddf.attrs["daskscore"].failures}
    assert sorted(failures) == [2, 5], failures
    assert failures[2]["status"] == "PROCESS_DIED"
    assert "died during run()" in failures[2]["error"]
    assert [Path(f).name for f in failures[2]["files"]] == ["f0004.csv", "f0005.csv"]
    assert failures[5]["status"] == "RUN_TIMEOUT"
    assert "time.sleep(120)" in failures[5]["error"], failures[5]["error"]
    assert all(f["dropped"] for f in failures.values())
    # each was run once: a death is not retried (each one also counts against Dask's tasks)
    assert _calls(calls, "f0005.csv") == 1
    assert _calls(calls, "f0010.csv") == 1
    # one run() at a time per process, though each worker runs two partitions
    assert {row.split()[1] for row in frame["prediction"]} == {"1"}
    report = ddf.attrs["daskscore"].report()
    assert report["failed_items"] == 4
    assert report["succeeded_items"] == N_FILES - 4

    # computed again: the mini-batch that ended its process is not run again
    assert len(ddf.compute()) == N_FILES - 4
    assert _calls(calls, "f0005.csv") == 1


def test_by_default_the_computation_raises_naming_the_mini_batch(
    tmp_path: Path, sessions: list[Any]
) -> None:
    ddf, calls = _score(tmp_path, sessions, DIE_ON="f0007.csv", ON="raise")

    with pytest.raises(JobFailed) as info:
        ddf.compute()

    message = str(info.value)
    assert "mini-batch 3 failed (PROCESS_DIED, 1 try)" in message, message
    assert "f0007.csv" in message
    assert _calls(calls, "f0007.csv") == 1


def test_inferring_the_columns_from_a_first_mini_batch_that_ends_its_process(
    tmp_path: Path, sessions: list[Any]
) -> None:
    with pytest.raises(JobFailed, match="pass meta= to score") as info:
        _score(tmp_path, sessions, meta=False, DIE_ON="f0000.csv", ON="raise")

    assert "died during run()" in str(info.value)
    assert "mini-batch 0 (" in str(info.value) and "f0000.csv" in str(info.value)
    assert "PROCESS_DIED" in str(info.value)
    assert _calls(tmp_path / "calls", "f0000.csv") == 1


def test_on_error_drop_infers_the_columns_past_a_first_mini_batch_that_ends_its_process(
    tmp_path: Path, sessions: list[Any]
) -> None:
    """The columns come from mini-batch 1; the death charged to mini-batch 0 then stands for
    its partition: it is not run again."""
    ddf, calls = _score(tmp_path, sessions, meta=False, DIE_ON="f0000.csv")

    frame = ddf.compute()

    assert sorted(frame["prediction"].str.split().str[0]) == [
        f"f{i:04d}.csv" for i in range(2, N_FILES)
    ]
    (failure,) = ddf.attrs["daskscore"].failures
    assert failure["mini_batch"] == 0 and failure["status"] == "PROCESS_DIED"
    assert failure["dropped"]
    assert _calls(calls, "f0000.csv") == 1


def test_a_death_no_marker_names_is_placed_at_the_next_one(
    tmp_path: Path, single_sessions: list[Any]
) -> None:
    """The task that runs the partition again finds no marker (as on another host): it names
    each mini-batch to the scheduler as it runs, so the second death is charged."""
    ddf, calls = _score(tmp_path, single_sessions, DIE_ON="f0009.csv", HIDE_MARKERS="1")

    frame = ddf.compute()

    assert len(frame) == N_FILES - 2
    (failure,) = ddf.attrs["daskscore"].failures
    assert failure["mini_batch"] == 4
    assert failure["status"] == "PROCESS_DIED"
    assert _calls(calls, "f0009.csv") == 2


def test_a_run_that_keeps_the_gil_past_its_timeout_is_ended_by_the_nanny(
    tmp_path: Path, single_sessions: list[Any]
) -> None:
    """The worker's own watchdog cannot run while C code keeps the GIL: its nanny ends the
    process at the deadline (it was never told of a score() task's run() calls, and the call
    ran to its end, its rows kept)."""
    ddf, calls = _score(tmp_path, single_sessions, HOLD_ON="f0002.csv")

    frame = ddf.compute()

    assert len(frame) == N_FILES - 2
    (failure,) = ddf.attrs["daskscore"].failures
    assert failure["mini_batch"] == 1 and failure["status"] == "RUN_TIMEOUT", failure
    assert not (calls / "held-to-the-end").exists()


def test_more_crashing_mini_batches_than_dask_allows_deaths(tmp_path: Path) -> None:
    """Dask counts each worker death against every task it had on that worker, and gives up
    with ``KilledWorker`` past ``allowed-failures`` (its default, 3).  Five mini-batches of one
    partition that each end their process, and one of another: each death is charged to its
    mini-batch, the partitions and the tasks queued behind them are not held to Dask's
    limit, and every other row comes back."""
    crash = ["f0001.csv", "f0003.csv", "f0005.csv", "f0007.csv", "f0009.csv", "f0013.csv"]
    script = """
    import os

    def run(mini_batch):
        names = [os.path.basename(p) for p in mini_batch]
        if set(names) & set(os.environ["DIE_ON"].split(",")):
            os._exit(3)
        return names
    """
    dep = write_deployment(
        tmp_path / "deploy",
        script,
        settings={"mini_batch_size": 2, "environment_variables": {"DIE_ON": ",".join(crash)}},
    )
    inputs = write_inputs(tmp_path / "in", 24)
    meta = pd.DataFrame({"prediction": pd.Series([], dtype=object)})
    with _cluster(1, allowed_failures=3) as client, client.as_current():
        session = daskscore.open_session(dep, inputs, meta=meta, on_error="drop", partitions=2)
        try:
            frame = session.frame.compute()
            failures = session.failures
        finally:
            session.close()

    lost = {f"f{i:04d}.csv" for i in (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13)}
    assert sorted(frame["prediction"]) == sorted(
        f"f{i:04d}.csv" for i in range(24) if f"f{i:04d}.csv" not in lost
    )
    assert [f["mini_batch"] for f in failures] == [0, 1, 2, 3, 4, 6]
    assert {f["status"] for f in failures} == {"PROCESS_DIED"}
