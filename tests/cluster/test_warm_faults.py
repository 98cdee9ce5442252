"""The warm cluster when something is wrong with it: a scheduler that never answers, a script
whose ``shutdown()`` takes long or never returns, two ``cluster start`` at once, a corrupt
state file, and job options that the warm cluster cannot honour.

Real processes on 127.0.0.1 (ports chosen by the OS); each test has a state file of its own
(``warm_env``) and ends every process it started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
from conftest import run_cli, write_deployment, write_inputs
from helpers import cli_args, show, summary_of

#: Seconds the commands wait for the scheduler to answer (``warmask.ANSWER_ENV``, a test hook)
ANSWER_ENV = "DASKSCORE_WARM_ANSWER_S"

#: Accepts connections and never answers (a scheduler whose process is stopped or hung).
SILENT_SERVER = """
import socket, sys, time
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(16)
print(server.getsockname()[1], flush=True)
held = []
while True:
    held.append(server.accept()[0])
"""

#: shutdown() writes a marker when it starts and when it ends, after PAUSE seconds.
SLOW_SHUTDOWN = """
    import os
    import time

    def init():
        pass

    def run(mini_batch):
        return [os.path.basename(p) for p in mini_batch]

    def shutdown():
        with open(os.path.join(os.environ["MARKERS"], f"start-{os.getpid()}"), "w"):
            pass
        time.sleep(float(os.environ["PAUSE"]))
        with open(os.path.join(os.environ["MARKERS"], f"done-{os.getpid()}"), "w"):
            pass
"""


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _servers(path: Path) -> list[int]:
    """The warm cluster servers of state file ``path`` (not their fork servers and workers,
    forked with the same command line)."""
    found = {}
    for proc in psutil.process_iter(["cmdline", "ppid"]):
        line = proc.info["cmdline"] or []
        if "--state" in line and line[line.index("--state") + 1 :][:1] == [str(path)]:
            found[proc.pid] = proc.info["ppid"]
    return [pid for pid, parent in found.items() if parent not in found]


def _state(env: dict[str, str]) -> dict:
    return json.loads(Path(env["DASKSCORE_CLUSTER_STATE"]).read_text())


def _start(env: dict[str, str]) -> dict:
    started = run_cli("cluster", "start", "--workers", "1", env=env, timeout=180)
    assert started.returncode == 0, show(started)
    return _state(env)


def test_a_scheduler_that_never_answers_is_said_and_the_cluster_still_stops(tmp_path, warm_env):
    """``cluster status``, ``daskscore run`` and ``cluster stop`` waited for ever on a
    scheduler that accepts connections and never answers (Dask's handshake has no timeout)."""
    silent = subprocess.Popen(
        [sys.executable, "-c", SILENT_SERVER], stdout=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        port = int(silent.stdout.readline())
        path = Path(warm_env["DASKSCORE_CLUSTER_STATE"])
        path.parent.mkdir(parents=True)
        address = f"tcp://127.0.0.1:{port}"
        created = psutil.Process(silent.pid).create_time()
        state = {"address": address, "pid": silent.pid, "created": created, "workers": 1}
        path.write_text(json.dumps({**state, "threads": 1, "pids": [silent.pid]}))
        env = {**warm_env, ANSWER_ENV: "2"}

        status = run_cli("cluster", "status", env=env, timeout=60)
        assert status.returncode == 1, show(status)
        assert f"Warm cluster at {address}" in status.stdout
        assert "Its scheduler does not answer (no answer in 2 s)" in status.stdout

        dep = write_deployment(tmp_path / "dep", "def init(): pass\ndef run(mb): return mb\n")
        out = tmp_path / "out"
        job = run_cli(*cli_args(dep, write_inputs(tmp_path / "in", 2), out), env=env, timeout=60)
        assert job.returncode == 2, show(job)
        assert f"the warm cluster recorded in {path} (process {silent.pid})" in job.stderr
        assert f"does not answer at {address}" in job.stderr and "--no-warm" in job.stderr
        assert not (out / "predictions.csv").exists()

        stop = run_cli("cluster", "stop", env=env, timeout=60)
        assert stop.returncode == 0, show(stop)
        assert f"Stopped the warm cluster at {address}" in stop.stdout
        assert "Its scheduler did not answer (no answer in 2 s)" in stop.stdout
        assert silent.wait(timeout=30) == -signal.SIGTERM
        assert not path.exists()
    finally:
        silent.kill()
        silent.wait()
        silent.stdout.close()


def test_shutdown_has_its_30_s_at_stop_and_a_cut_one_is_said(tmp_path, warm_env):
    """Dask's nanny killed a worker 4 s into its close: a script's shutdown() that took longer
    was cut, and ``cluster stop`` still said it stopped cleanly."""
    markers = tmp_path / "markers"
    markers.mkdir()
    inputs = write_inputs(tmp_path / "in", 2)
    for pause in ("6", "600"):
        state = _start(warm_env)
        dep = write_deployment(
            tmp_path / f"dep{pause}",
            SLOW_SHUTDOWN,
            settings={"environment_variables": {"MARKERS": str(markers), "PAUSE": pause}},
        )
        out = tmp_path / f"out{pause}"
        job = run_cli(*cli_args(dep, inputs, out), env=warm_env, timeout=120)
        assert job.returncode == 0 and summary_of(out)["status"] == "Completed", show(job)

        stop = run_cli("cluster", "stop", env=warm_env, timeout=120)
        assert stop.returncode == 0, show(stop)
        deadline = time.monotonic() + 30
        while not all(_gone(pid) for pid in state["pids"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [pid for pid in state["pids"] if not _gone(pid)] == [], show(stop)
        started = {p.name.split("-")[1] for p in markers.glob("start-*")}
        done = {p.name.split("-")[1] for p in markers.glob("done-*")}
        if pause == "6":  # (well within the 30 s: it ends, and the stop is a clean one)
            assert done == started and len(done) == 1, show(stop)
            assert "Not cleanly" not in stop.stdout, show(stop)
        else:
            assert len(started) == 2 and len(done) == 1
            [cut] = started - done
            assert f"Not cleanly: worker process(es) {cut} had not closed after 30 s" in (
                stop.stdout
            ), show(stop)


def test_two_starts_at_once_start_one_cluster(tmp_path, warm_env):
    env = {**os.environ, **warm_env}
    command = [sys.executable, "-m", "daskscore", "cluster", "start", "--workers", "1"]
    starts = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
        for _ in range(2)
    ]  # fmt: skip
    try:
        said = [proc.communicate(timeout=180) for proc in starts]
    finally:
        for proc in starts:
            proc.kill()
    assert [proc.returncode for proc in starts] == [0, 0], said
    lines = sorted(out.split(" the warm cluster")[0] for out, _ in said)
    assert lines == ["Already running:", "Started"], said
    path = Path(warm_env["DASKSCORE_CLUSTER_STATE"])
    state = _state(warm_env)
    assert all(state["address"] in out for out, _ in said), said
    assert _servers(path) == [state["pid"]]


def test_a_corrupt_state_file_is_said_and_stop_ends_its_cluster(tmp_path, warm_env):
    state = _start(warm_env)
    path = Path(warm_env["DASKSCORE_CLUSTER_STATE"])
    os.kill(state["pid"], signal.SIGSTOP)  # (or it closes itself, its state file gone)
    try:
        path.write_text('{"address": "tcp://127.0.0.1:1')  # (cut short: a full disk)
        status = run_cli("cluster", "status", env=warm_env)
        assert status.returncode == 2, show(status)
        assert f"the warm cluster's state file {path} is corrupt (JSONDecodeError" in (
            status.stderr
        ), show(status)
        assert "`daskscore cluster stop` ends the warm cluster started for this file" in (
            status.stderr
        )
        again = run_cli("cluster", "start", env=warm_env)
        assert again.returncode == 2 and f"{path} is corrupt" in again.stderr, show(again)

        dep = write_deployment(tmp_path / "dep", "def init(): pass\ndef run(mb): return mb\n")
        job = run_cli(*cli_args(dep, write_inputs(tmp_path / "in", 2), tmp_path / "out"),
                      env=warm_env)  # fmt: skip
        assert job.returncode == 0, show(job)
        assert f"{path} is corrupt" in job.stderr and "Starting an embedded cluster" in job.stderr

        stop = run_cli("cluster", "stop", env=warm_env, timeout=120)
        assert stop.returncode == 0, show(stop)
        assert f"The state file {path} was corrupt" in stop.stdout, show(stop)
        assert f"stopped the warm cluster started for it (process {state['pid']})" in stop.stdout
        assert not path.exists()
        deadline = time.monotonic() + 30
        while not all(_gone(pid) for pid in state["pids"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [pid for pid in state["pids"] if not _gone(pid)] == []
    finally:
        for pid in state["pids"]:
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)


def test_dashboard_and_worker_memory_on_a_warm_cluster_are_said(tmp_path, warm_env):
    state = _start(warm_env)
    dep = write_deployment(tmp_path / "dep", "def init(): pass\ndef run(mb): return mb\n")
    inputs = write_inputs(tmp_path / "in", 2)

    args = cli_args(dep, inputs, tmp_path / "one")
    shown = run_cli(*(a if a != "--no-dashboard" else "--dashboard" for a in args), env=warm_env)
    assert shown.returncode == 0, show(shown)
    assert f"Using the warm cluster at {state['address']}" in shown.stderr
    assert "The warm cluster has no Dask dashboard (`daskscore cluster start --dashboard`" in (
        shown.stderr
    ), show(shown)
    plain = run_cli(*cli_args(dep, inputs, tmp_path / "two"), env=warm_env)
    assert "no Dask dashboard" not in plain.stderr, show(plain)

    sized = run_cli(*cli_args(dep, inputs, tmp_path / "three", "--worker-memory", "1GB"),
                    env=warm_env)  # fmt: skip
    assert sized.returncode == 0, show(sized)
    assert f"Not using the warm cluster at {state['address']}: --worker-memory" in (sized.stderr), (
        show(sized)
    )
    assert summary_of(tmp_path / "three")["warm_workers"] is False
