"""A job sees its own environment variables and the worker's, not those of another job still
installed in the same worker process: a ``score()`` session whose client closed without
closing it (its script stays installed until a later job removes it), or a killed driver's
job.  Its values went into the next job's results unseen.  Real worker processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import write_deployment, write_inputs
from distributed import Client, LocalCluster

import daskscore


def _one_worker() -> LocalCluster:
    return LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0", host="127.0.0.1")


SCRIPT = """
    import os

    def run(mini_batch):
        seen = os.environ.get("PROBE_VAR", "-")
        return [f"{os.path.basename(p)} {seen}" for p in mini_batch]
"""


def test_a_left_sessions_variables_do_not_reach_the_next_job(tmp_path: Path) -> None:
    dep = write_deployment(tmp_path / "deploy", SCRIPT, settings={"mini_batch_size": 2})
    inputs = write_inputs(tmp_path / "in", 6)
    out = tmp_path / "out"
    with _one_worker() as cluster:
        first = Client(cluster)
        ddf = daskscore.score(
            dep,
            inputs,
            client=first,
            progress=False,
            set={"settings.environment_variables.PROBE_VAR": "from-the-session"},
        )
        seen = {row.split()[1] for row in ddf.compute()["prediction"]}
        assert seen == {"from-the-session"}
        first.close()  # the session itself is never closed: its script stays installed
        with Client(cluster) as second:
            result = daskscore.run(dep, inputs, out, client=second, progress=False)
            assert result.status == "Completed"
    rows = (out / "predictions.csv").read_text().splitlines()
    assert len(rows) == 6
    assert {row.split(" ", 1)[1] for row in rows} == {"-"}


def _seen(ddf) -> set[str]:  # noqa: ANN001
    return {row.split(" ", 1)[1] for row in ddf.compute()["prediction"]}


def test_two_open_sessions_each_see_their_own_variables_in_turn(tmp_path: Path) -> None:
    """Each task makes its job's environment the process's again: sessions computed in turn
    on one worker each see their own values (the newer one none of the older one's)."""
    dep = write_deployment(tmp_path / "deploy", SCRIPT, settings={"mini_batch_size": 2})
    inputs = write_inputs(tmp_path / "in", 4)
    with (
        _one_worker() as cluster,
        Client(cluster) as client,
    ):
        older = daskscore.score(
            dep, inputs, client=client, progress=False,
            set={"settings.environment_variables.PROBE_VAR": "older"},
        )  # fmt: skip
        newer = daskscore.score(dep, inputs, client=client, progress=False)
        assert _seen(newer) == {"-"}
        assert _seen(older) == {"older"}
        assert _seen(newer) == {"-"}


DRIVER = """
import sys
from distributed import Client
import daskscore

client = Client(sys.argv[1])
ddf = daskscore.score(sys.argv[2], sys.argv[3], client=client, progress=False)
print(len(ddf.compute()))
# the interpreter exits with the session (and the client) open
"""


def _job_plugins(dask_scheduler) -> list[str]:  # noqa: ANN001
    return [name for name in dask_scheduler.worker_plugins if name.startswith("daskscore-")]


def test_a_session_left_open_at_exit_is_uninstalled(tmp_path: Path) -> None:
    dep = write_deployment(tmp_path / "deploy", SCRIPT, settings={"mini_batch_size": 2})
    inputs = write_inputs(tmp_path / "in", 4)
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    with (
        _one_worker() as cluster,
        Client(cluster) as client,
    ):
        done = subprocess.run(
            [sys.executable, str(driver), cluster.scheduler_address, str(dep), str(inputs)],
            capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["4"]
        assert client.run_on_scheduler(_job_plugins) == []
        installed = client.run(lambda dask_worker: _job_plugins_of(dask_worker))
        assert list(installed.values()) == [[]]


def _job_plugins_of(dask_worker) -> list[str]:  # noqa: ANN001
    return [name for name in dask_worker.plugins if name.startswith("daskscore-")]
