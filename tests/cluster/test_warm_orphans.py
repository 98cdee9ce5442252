"""A job killed mid-job on the warm cluster (``kill -9`` of ``daskscore run``): its install does
not stay on the workers for the cluster's life.  The next job removes it (its ``shutdown()``
runs), ``cluster status`` counts each worker once, and a code folder edited since the killed job
scores with its current modules.  A job whose client is connected keeps its install.

Real processes on 127.0.0.1 (``daskscore cluster start``, ``daskscore run``), ports chosen by
the OS; the test's own state file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, run_cli, write_deployment, write_inputs
from distributed import Client
from helpers import cli_args, show, summary_of

import daskscore

#: init() and shutdown() leave a marker named after the event, holding the helper's NAME;
#: run() marks that it started, takes a while, and returns the helper's NAME per file.
SCRIPT = """
    import os
    import time
    import uuid

    import helper

    def _mark(kind):
        name = f"{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        with open(os.path.join(os.environ["MARKERS"], name), "w") as fh:
            fh.write(helper.NAME)

    def init():
        _mark("init")

    def run(mini_batch):
        _mark("run")
        time.sleep(float(os.environ.get("PAUSE", "0")))
        return [helper.NAME for _ in mini_batch]

    def shutdown():
        _mark("shutdown")
"""


def _deploy(root: Path, markers: Path, name: str, pause: float = 0.0) -> Path:
    return write_deployment(
        root,
        SCRIPT,
        extra_code={"helper.py": f"NAME = {name!r}\n"},
        settings={
            "mini_batch_size": 1,
            "environment_variables": {"MARKERS": str(markers), "PAUSE": str(pause)},
        },
    )


def _marks(markers: Path, kind: str, name: str | None = None) -> list[str]:
    found = [p for p in markers.iterdir() if p.name.startswith(f"{kind}-")]
    return sorted(p.name for p in found if name is None or p.read_text() == name)


def _clients(client: Any) -> set[str]:
    return set(client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.clients)))


def _wait_clients_gone(client: Any, before: set[str]) -> None:
    """Wait until the scheduler has seen every client that connected since ``before`` go (it
    learns it from the closed connection, in its own time)."""
    deadline = time.monotonic() + 60
    while _clients(client) - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _clients(client) - before == set(), "a client stays connected"


def _kill_once_scoring(args: list[str], env: dict[str, str], markers: Path) -> None:
    """Start ``daskscore ARGS``, SIGKILL it once its run() calls have started."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "daskscore", *args],
        cwd=REPO,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        while not _marks(markers, "run") and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.05)
        assert _marks(markers, "run"), "the job never started scoring"
    finally:
        proc.kill()
        proc.wait()
        if proc.stderr:
            proc.stderr.close()


def test_a_killed_jobs_install_is_removed_by_the_next_job(
    tmp_path: Path, warm_env: dict[str, str]
) -> None:
    started = run_cli("cluster", "start", "--workers", "2", env=warm_env, timeout=180)
    assert started.returncode == 0, show(started)
    markers = tmp_path / "markers"
    markers.mkdir()
    dep = _deploy(tmp_path / "h2", markers, "helper-B", pause=0.5)
    inputs = write_inputs(tmp_path / "in", 20)
    address = json.loads(Path(warm_env["DASKSCORE_CLUSTER_STATE"]).read_text())["address"]
    with Client(address, set_as_default=False) as watcher:
        before = _clients(watcher)
        _kill_once_scoring(cli_args(dep, inputs, tmp_path / "killed"), warm_env, markers)
        _wait_clients_gone(watcher, before)
    assert _marks(markers, "shutdown") == []

    _deploy(tmp_path / "h2", markers, "helper-version-2")  # (no pause: a new key too)
    # (a driver gone for 1.5 x this many seconds is taken for dead: 30 s by default)
    quick = {**warm_env, "DASKSCORE_SCHEDULER_LOST_S": "0.1"}
    proc = run_cli(*cli_args(dep, inputs, tmp_path / "out"), env=quick)
    assert proc.returncode == 0, show(proc)
    assert summary_of(tmp_path / "out")["status"] == "Completed"
    rows = set((tmp_path / "out" / "predictions.csv").read_text().split())
    assert rows == {"helper-version-2"}, rows  # (was helper-B: the killed install's helper)
    # the killed job's install was removed on both workers: its shutdown() ran
    assert len(_marks(markers, "shutdown", "helper-B")) == 2, _marks(markers, "shutdown")

    status = run_cli("cluster", "status", env=warm_env)
    assert status.returncode == 0, show(status)
    assert "score.py on 2 workers" in status.stdout, status.stdout  # (was: on 4 workers)


def test_a_job_whose_client_is_connected_keeps_its_install(
    client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session left open on a live client keeps its script while other clients' jobs come
    and go; one whose client closed is removed by the next job (its shutdown() runs)."""
    markers = tmp_path / "markers"
    markers.mkdir()
    inputs = write_inputs(tmp_path / "in", 4)
    address = client.scheduler.address
    before = _clients(client)
    kept = daskscore.open_session(
        _deploy(tmp_path / "kept", markers, "kept"), inputs, client=client
    )
    try:
        with Client(address, set_as_default=False) as other:
            left = daskscore.open_session(
                _deploy(tmp_path / "left", markers, "left"), inputs, client=other
            )  # never closed: its client goes
            assert set(left.frame.compute(scheduler=other.get).iloc[:, 0]) == {"left"}
        _wait_clients_gone(client, before)
        monkeypatch.setenv("DASKSCORE_SCHEDULER_LOST_S", "0.1")  # (gone for 0.15 s: dead)
        time.sleep(0.5)
        result = daskscore.run(
            _deploy(tmp_path / "next", markers, "next"), inputs, tmp_path / "out", client=client
        )
        assert set(result.predictions.read_text().split()) == {"next"}
        assert len(_marks(markers, "shutdown", "left")) == 2, _marks(markers, "shutdown")
        assert _marks(markers, "shutdown", "kept") == []
        assert set(kept.frame.compute(scheduler=client.get).iloc[:, 0]) == {"kept"}
    finally:
        kept.close()
    assert len(_marks(markers, "shutdown", "kept")) == 2


class _Scheduler:
    """What claim_plugin reads of a scheduler: its metadata, plugins and clients."""

    def __init__(self) -> None:
        self.metadata: dict[str, Any] = {}
        self.worker_plugins: dict[str, Any] = {}
        self.clients: set[str] = set()

    def get_metadata(self, keys: list[str], default: Any = None) -> Any:
        return self.metadata.get(keys[0], default)

    def set_metadata(self, keys: list[str], value: Any) -> None:
        self.metadata[keys[0]] = value

    def get_events(self, topic: str) -> tuple[Any, ...]:
        return ()  # (no "remove-client" event kept: the time it is first found gone counts)


def test_a_client_gone_for_a_moment_keeps_its_jobs_install() -> None:
    """A live job whose client lost its connection for a moment (it comes back, or gives up on
    its job itself within DASKSCORE_SCHEDULER_LOST_S) is not taken for a dead driver's."""
    from daskscore.worker.plugin import claim_plugin

    scheduler = _Scheduler()
    scheduler.clients = {"c1", "c2"}
    scheduler.worker_plugins["daskscore-aaaaaaaaaaaa"] = object()
    assert claim_plugin("daskscore-aaaaaaaaaaaa", "c1", 30.0, dask_scheduler=scheduler) == []
    scheduler.clients.discard("c1")  # (a blip: c1 is away)
    scheduler.worker_plugins["daskscore-bbbbbbbbbbbb"] = object()
    assert claim_plugin("daskscore-bbbbbbbbbbbb", "c2", 30.0, dask_scheduler=scheduler) == []
    assert "daskscore-aaaaaaaaaaaa" in scheduler.worker_plugins
    scheduler.clients.add("c1")  # (back)
    scheduler.worker_plugins["daskscore-cccccccccccc"] = object()
    assert claim_plugin("daskscore-cccccccccccc", "c2", 0.0, dask_scheduler=scheduler) == []
    scheduler.clients.discard("c1")  # (gone for good: found gone again, past the grace)
    scheduler.worker_plugins["daskscore-dddddddddddd"] = object()
    assert claim_plugin("daskscore-dddddddddddd", "c2", 0.0, dask_scheduler=scheduler) == [
        "daskscore-aaaaaaaaaaaa"
    ]
    assert "daskscore-aaaaaaaaaaaa" not in scheduler.worker_plugins
