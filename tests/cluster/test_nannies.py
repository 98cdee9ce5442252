"""daskscore.cluster.nannies: a caller's LocalCluster keeps the nannies of workers that die while
a job holds it, and is left as it was after; whether a cluster of this process can start a
worker again.

Dask closes the nanny of a worker missing ``lost-worker-timeout`` after it was lost: 0 s here,
so that a worker's first death does it."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator

import dask
import pytest
from distributed import Client, LocalCluster

from daskscore.cluster.nannies import cannot_start_workers, keep_nannies

pytestmark = pytest.mark.timeout(60)


@contextlib.contextmanager
def one_worker() -> Iterator[tuple[LocalCluster, Client]]:
    with (
        dask.config.set({"distributed.deploy.lost-worker-timeout": "0s"}),
        LocalCluster(
            n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0"
        ) as cluster,
        Client(cluster) as client,
    ):
        yield cluster, client


def _until(ok: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 20
    while not ok():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _kill_the_worker(client: Client) -> None:
    client.submit(os._exit, 3, pure=False)  # (its result never comes)


def test_a_held_cluster_keeps_its_nanny_and_is_given_back_after_the_last_hold() -> None:
    with one_worker() as (cluster, client):
        assert cannot_start_workers(client) is None  # a running nanny
        first, second = keep_nannies(client), keep_nannies(client)
        _kill_the_worker(client)
        _until(lambda: not cluster.scheduler_info["workers"])  # (lost...)
        _until(lambda: len(client.scheduler_info()["workers"]) == 1)  # (... and started again)
        assert len(cluster.workers) == 1
        first()
        first()  # (once per hold)
        assert "_update_worker_status" in vars(cluster)  # (the second job still holds it)
        second()
        assert "_update_worker_status" not in vars(cluster)

        # given back: Dask's own timeout again, and a cluster that can start no worker is told
        _kill_the_worker(client)
        _until(lambda: not cluster.workers)
        why = cannot_start_workers(client)
        assert why is not None and "closed the nannies of its 1 worker(s)" in why, why


def test_a_cluster_scaled_to_zero_can_start_none_unless_it_adapts() -> None:
    with one_worker() as (cluster, client):
        with Client(cluster.scheduler_address) as by_address:  # (not known: an autoscaler?)
            assert keep_nannies(by_address)() is None
            cluster.scale(0)
            _until(lambda: not cluster.workers)
            assert cannot_start_workers(by_address) is None
        why = cannot_start_workers(client)
        assert why is not None and "was scaled to 0 workers" in why, why
        cluster.adapt(minimum=0, maximum=1)  # (it starts workers as work waits)
        assert cannot_start_workers(client) is None


def test_an_embedded_job_leaves_the_environment_as_it_was(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dask's nannies set OMP_NUM_THREADS=1 (and its kin, PYTHONHASHSEED) in the process that
    runs them and never take them back: after a job in a notebook, torch and numpy imported
    there ran on one thread."""
    from conftest import write_deployment, write_inputs

    import daskscore

    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    for name in ("MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "PYTHONHASHSEED"):
        monkeypatch.delenv(name, raising=False)
    before = dict(os.environ)
    dep = write_deployment(tmp_path / "dep", "def run(mini_batch):\n    return mini_batch\n")
    inputs = write_inputs(tmp_path / "in", 2, width=3)
    result = daskscore.run(dep, inputs, tmp_path / "out", workers=1)
    assert result.status == "Completed"
    assert dict(os.environ) == before
