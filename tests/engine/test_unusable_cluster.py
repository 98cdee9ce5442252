"""A job that cannot run says so before it touches the output folder.

A closed client, a client whose cluster was closed, or a scheduler that does not answer is a
:class:`~daskscore.errors.UsageError` raised before the output folder is claimed: with
``overwrite=True`` the earlier job's results used to be removed first, and the job then failed
with a KeyError of Dask's.  Arguments of the Python API that cannot be meant (a string for a
flag, a list of inputs, a client given as an address) are refused by name before anything
runs.  Real LocalClusters.
"""

from __future__ import annotations

import time
from pathlib import Path

import dask
import pytest
from conftest import write_deployment, write_inputs
from distributed import Client, LocalCluster

import daskscore
from daskscore.errors import UsageError

SCRIPT = """
    import os

    def run(mini_batch):
        return [os.path.basename(p) for p in mini_batch]
"""


@pytest.fixture
def job(tmp_path: Path) -> tuple[Path, Path, Path]:
    dep = write_deployment(tmp_path / "deploy", SCRIPT, settings={"mini_batch_size": 2})
    return dep, write_inputs(tmp_path / "in", 6), tmp_path / "out"


def _snapshot(out: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and ".lock" not in p.name
    }


def _cluster() -> LocalCluster:
    return LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0", host="127.0.0.1")


@pytest.mark.parametrize("closed", ["client", "cluster"])
def test_a_closed_client_is_refused_and_the_earlier_results_are_kept(job, closed):
    dep, inputs, out = job
    cluster = _cluster()
    client = Client(cluster)
    try:
        first = daskscore.run(dep, inputs, out, client=client, progress=False)
        assert first.status == "Completed"
        before = _snapshot(out)
        assert "predictions.csv" in before and "job_summary.json" in before
        if closed == "client":
            client.close()
        else:
            cluster.close()
            deadline = time.monotonic() + 30
            while client.status == "running" and time.monotonic() < deadline:
                time.sleep(0.1)
        with pytest.raises(UsageError, match="not connected to its scheduler"):
            daskscore.run(dep, inputs, out, client=client, overwrite=True, progress=False)
        with pytest.raises(UsageError, match="not connected to its scheduler"):
            daskscore.score(dep, inputs, client=client)
        assert _snapshot(out) == before  # nothing removed, nothing written
    finally:
        client.close()
        cluster.close()


def test_an_unreachable_scheduler_leaves_the_earlier_results(job):
    dep, inputs, out = job
    with _cluster() as cluster, Client(cluster) as client:
        daskscore.run(dep, inputs, out, client=client, progress=False)
    before = _snapshot(out)
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        with pytest.raises(UsageError, match="cannot connect to the Dask scheduler"):
            daskscore.run(
                dep, inputs, out, scheduler="tcp://127.0.0.1:1", overwrite=True, progress=False
            )
    assert _snapshot(out) == before


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"overwrite": "no"}, "overwrite='no': expected True or False"),
        ({"resume": 1}, "resume=1: expected True or False"),
        ({"set": "settings.mini_batch_size=2"}, "set='settings.mini_batch_size=2'"),
        ({"partition_on": [1]}, "partition_on=[1]"),
        ({"client": "tcp://127.0.0.1:8786"}, "pass scheduler="),
        ({"scheduler": "tcp://127.0.0.1:1", "workers": 2}, "workers=2 (--workers)"),
    ],
)
def test_arguments_that_cannot_be_meant_are_refused_by_name(job, kwargs, named):
    dep, inputs, out = job
    with pytest.raises(UsageError) as caught:
        daskscore.run(dep, inputs, out, **kwargs)
    assert named in str(caught.value)
    assert not out.exists()  # refused before the output folder was made


def test_a_list_of_inputs_is_refused_naming_what_to_do(job):
    dep, inputs, out = job
    files = sorted(str(p) for p in inputs.iterdir())
    with pytest.raises(UsageError, match=r"input: expected one file, folder or URL, got a list"):
        daskscore.run(dep, files, out)
    with pytest.raises(UsageError, match=r"partitions=0: expected a positive integer"):
        daskscore.score(dep, inputs, client=object(), partitions=0)
