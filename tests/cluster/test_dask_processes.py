"""The ProcessCluster test helper: a real scheduler and nanny-managed workers as subprocesses.

Tasks are builtins (``os.getcwd``, ``os.getpid`` ...): the workers cannot import this module
(no ``PYTHONPATH``, their own working directories), so test functions would not unpickle there.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from dask_processes import ClusterStartError, ProcessCluster, isolation_available
from distributed import Client

#: Connect a Client without security; exit 3 with the error.  ``os._exit``: a failed Client's
#: event loop would otherwise hold up the interpreter's exit for seconds.
REFUSED = """
import os, sys
from distributed import Client
try:
    Client(sys.argv[1], timeout="3s", set_as_default=False).close()
except BaseException as exc:
    print(f"{type(exc).__name__}: {exc}", flush=True)
    os._exit(3)
print("connected")
"""


def _gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie waiting for its reaper counts as exited)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _refused(address: str) -> str:
    """Connect a ``Client`` without security to ``address`` in a subprocess; return its error.

    A subprocess, because a ``Client`` whose constructor fails is closed again by ``__del__``,
    in whatever thread collects it: in this process that can hang another client's start.
    """
    done = subprocess.run(
        [sys.executable, "-c", REFUSED, address],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3, done.stdout + done.stderr
    return done.stdout


def _on(client: Client, name: str, func, *args):
    """Run ``func(*args)`` on the worker called ``name`` only; return the result."""
    return client.submit(func, *args, workers=[name], pure=False).result(timeout=30)


def test_plain_cluster_runs_tasks_on_every_worker_in_its_own_folder(tmp_path: Path) -> None:
    with ProcessCluster(tmp_path / "cluster", workers=2) as cluster:
        assert cluster.address.startswith("tcp://127.0.0.1:")
        assert cluster.scheduler_workers() == ["w0", "w1"]
        with cluster.client() as client:
            for name in ("w0", "w1"):
                nanny, *children = cluster.worker_pids(name)
                assert _on(client, name, os.getpid) in children, cluster.logs()
                assert _on(client, name, os.getppid) == nanny
                assert _on(client, name, os.getcwd) == str(cluster.root / name)
                assert _on(client, name, os.getenv, "PYTHONPATH") is None
        assert (cluster.root / "w0" / "local").is_dir()
    assert "Start worker at" in (cluster.root / "w0" / "worker.log").read_text()


def test_killed_worker_leaves_and_an_added_one_joins(tmp_path: Path) -> None:
    with ProcessCluster(tmp_path / "cluster", workers=2) as cluster:
        pids = cluster.worker_pids("w1")
        assert len(pids) >= 2  # the nanny and its worker
        cluster.kill_worker("w1")
        assert all(_gone(pid) for pid in pids)
        cluster.wait_for_workers(1, timeout=30)
        assert cluster.scheduler_workers() == ["w0"]

        assert cluster.add_worker() == "w2"
        cluster.wait_for_workers(2, timeout=30)
        assert cluster.scheduler_workers() == ["w0", "w2"]
        assert cluster.workers == ["w0", "w2"]
        with cluster.client() as client:
            assert _on(client, "w2", os.getcwd) == str(cluster.root / "w2")

        cluster.kill_worker("w2", signal.SIGTERM)  # a graceful stop, too
        cluster.wait_for_workers(1, timeout=30)
        leftover = cluster.worker_pids("w0")
    assert all(_gone(pid) for pid in leftover)  # close() stopped the rest


def test_tls_cluster_accepts_only_clients_with_its_certificates(tmp_path: Path) -> None:
    with ProcessCluster(tmp_path / "cluster", workers=1, tls=True) as cluster:
        assert cluster.address.startswith("tls://127.0.0.1:")
        assert cluster.ca_file is not None and cluster.ca_file.is_file()
        with Client(cluster.address, security=cluster.security(), timeout="10s") as client:
            assert _on(client, "w0", os.getpid) in cluster.worker_pids("w0")
        # no TLS context: refused before any connection
        assert "TypeError: TLS expects a `ssl_context`" in _refused(cluster.address)
        # plain TCP to the TLS port: the scheduler drops the connection
        plain = cluster.address.replace("tls://", "tcp://")
        assert re.search(r"(CommClosed|OSError|Timeout)", _refused(plain)), cluster.logs()


@pytest.mark.skipif(not isolation_available(), reason="no private mount namespaces (unshare -m)")
def test_hidden_path_is_invisible_to_the_workers(tmp_path: Path) -> None:
    driver = tmp_path / "driver"
    driver.mkdir()
    secret = driver / "inputs.csv"
    secret.write_text("x\n1\n")
    with ProcessCluster(tmp_path / "cluster", workers=1, hide=[driver]) as cluster:
        assert secret.exists()
        with cluster.client() as client:
            assert _on(client, "w0", os.path.exists, str(secret)) is False
            assert _on(client, "w0", os.path.isdir, str(driver)) is True  # an empty tmpfs
            assert _on(client, "w0", os.path.exists, str(cluster.root / "w0")) is True
    assert secret.read_text() == "x\n1\n"  # the tmpfs never reached this namespace


def test_a_worker_that_cannot_start_fails_startup_with_its_log(tmp_path: Path) -> None:
    cluster = ProcessCluster(tmp_path / "cluster", workers=1, worker_args=["--no-such-option"])
    with pytest.raises(ClusterStartError, match="(?s)w0 exited with code.*no-such-option"):
        cluster.start()
    assert cluster._scheduler is not None and cluster._scheduler.popen.returncode is not None
    cluster.close()  # a second close is harmless


def test_hide_must_not_cover_the_cluster_root(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="holds the cluster root"):
        ProcessCluster(tmp_path / "cluster", hide=[tmp_path])
