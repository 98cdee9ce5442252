"""A worker process that dies in run() is named by how it ended (on the embedded cluster,
whose nannies say it): its exit code, or the signal that killed it."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from helpers import cli, make_job, show, summary_of

SCRIPT = """
import ctypes, os

def init():
    pass

def run(mini_batch):
    names = [os.path.basename(p) for p in mini_batch]
    if "f0001.csv" in names:
        os._exit(7)
    if "f0003.csv" in names:
        ctypes.string_at(0)  # a crash in native code
    return names
"""


def test_a_death_in_run_names_its_exit_code_or_signal(tmp_path: Path) -> None:
    dep, inputs, out = make_job(
        tmp_path,
        SCRIPT,
        n_files=5,
        settings={"mini_batch_size": 1, "retry_settings": {"max_retries": 0}},
    )

    proc = cli(dep, inputs, out)

    assert proc.returncode == 0, show(proc)  # (error_threshold -1: the job completes)
    errors = {f["mini_batch_id"]: f["error"] for f in summary_of(out)["failures"]}
    assert set(errors) == {1, 3}
    assert "died during run(): it exited with code 7" in errors[1], errors[1]
    assert "os._exit(7)" in errors[1]
    assert "killed by signal SIGSEGV" in errors[3] and "native code" in errors[3], errors[3]
    assert (out / "predictions.csv").read_text().split() == ["f0000.csv", "f0002.csv", "f0004.csv"]


HANGS_WITH_A_CHILD = """
import os, subprocess, sys, time

def init():
    pass

def run(mini_batch):
    if any(os.path.basename(p) == "f0001.csv" for p in mini_batch):
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        with open(os.environ["CHILD_PID"], "w") as fh:
            fh.write(str(child.pid))
        time.sleep(300)  # past retry_settings.timeout
    return [os.path.basename(p) for p in mini_batch]
"""


def test_a_run_ended_for_its_timeout_takes_the_processes_it_started_with_it(
    tmp_path: Path,
) -> None:
    import psutil

    child_pid = tmp_path / "child.pid"
    dep, inputs, out = make_job(
        tmp_path,
        HANGS_WITH_A_CHILD,
        n_files=3,
        settings={"mini_batch_size": 1, "retry_settings": {"max_retries": 0, "timeout": 2}},
        env={"CHILD_PID": str(child_pid)},
    )

    proc = cli(dep, inputs, out)

    assert proc.returncode == 0, show(proc)
    (failure,) = summary_of(out)["failures"]
    assert failure["status"] == "RUN_TIMEOUT"
    pid = int(child_pid.read_text())
    try:
        psutil.Process(pid).wait(timeout=10)  # (gone, or ending: a zombie being reaped)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        psutil.Process(pid).kill()
        raise AssertionError("the subprocess of the run() that timed out outlived it") from None


LEAVES_CHILDREN = """
import os, subprocess, sys

def start_child(what):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    with open(os.environ["CHILD_PIDS"], "a") as fh:
        fh.write(f"{what} {child.pid}\\n")

def init():
    start_child("init")  # a server the model needs, say

def run(mini_batch):
    if any(os.path.basename(p) == "f0001.csv" for p in mini_batch):
        start_child("run")
        os._exit(3)  # the process dies with its child running
    return [os.path.basename(p) for p in mini_batch]
"""


def test_processes_the_script_started_end_with_its_worker_and_its_job(tmp_path: Path) -> None:
    """A child of a run() whose process died, and the children of every init(), are ended
    with the job: they held the command's output pipes, so it did not return until they
    ended (the subprocess below would have made it wait 300 s)."""
    import psutil

    child_pids = tmp_path / "children"
    dep, inputs, out = make_job(
        tmp_path,
        LEAVES_CHILDREN,
        n_files=4,
        settings={"mini_batch_size": 1, "retry_settings": {"max_retries": 0}},
        env={"CHILD_PIDS": str(child_pids)},
    )

    proc = cli(dep, inputs, out, timeout=90)

    assert proc.returncode == 0, show(proc)
    (failure,) = summary_of(out)["failures"]
    assert "exited with code 3" in failure["error"], failure
    started = [line.split() for line in child_pids.read_text().splitlines()]
    assert sorted({what for what, _ in started}) == ["init", "run"], started
    left = []
    for what, pid in started:
        try:
            psutil.Process(int(pid)).wait(timeout=10)
        except psutil.NoSuchProcess:
            pass
        except psutil.TimeoutExpired:
            psutil.Process(int(pid)).kill()
            left.append(what)
    assert not left, f"the subprocesses of {left} outlived the job"


def test_a_worker_in_the_callers_process_leaves_its_group_and_children_alone(
    tmp_path: Path,
) -> None:
    """A worker without a nanny may live in a notebook's kernel (``processes=False``): its
    process group stays, and the processes the kernel started survive the job's end."""
    import subprocess
    import sys

    from distributed import Client, LocalCluster

    import daskscore

    script = "import os\ndef init(): pass\ndef run(mb): return [os.path.basename(p) for p in mb]\n"
    dep, inputs, out = make_job(tmp_path, script, n_files=2, settings={"mini_batch_size": 1})
    mine = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    group, streams = os.getpgid(0), (sys.stdout, sys.stderr)
    try:
        with (
            LocalCluster(n_workers=1, processes=False, dashboard_address=":0") as cluster,
            Client(cluster) as client,
        ):
            result = daskscore.run(dep, inputs, out, client=client, progress=False)
            # the script is not kept initialised in the caller's process (warm=True is the
            # default): its streams went with it, and the caller's prints are the caller's
            assert (sys.stdout, sys.stderr) == streams, (
                "the caller's prints went to the script's log"
            )
            # nor is the job's progress handler left on the caller's client
            assert not [t for t in client._event_handlers if t.startswith("daskscore")]
        assert result.summary["succeeded_items"] == 2
        assert os.getpgid(0) == group, "the caller's process left its process group"
        assert mine.poll() is None, "a process of the caller was ended with the job"
    finally:
        mine.kill()
        mine.wait()


def test_ending_a_workers_processes_leaves_the_resource_tracker(tmp_path: Path) -> None:
    """multiprocessing's resource tracker ends by itself once its process does, after it has
    removed the shared memory it tracks; killed at the script's uninstall, it would leave that
    behind (and the next job's script would see it relaunched with a warning)."""
    import subprocess
    import sys

    probe = """
import multiprocessing.resource_tracker as rt, os, subprocess, sys, time
from daskscore.worker import deaths
rt.ensure_running()
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
deaths.end_children()
time.sleep(0.3)
print(os.waitpid(rt._resource_tracker._pid, os.WNOHANG) == (0, 0), child.poll() is not None)
"""
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert proc.stdout.split() == ["True", "True"], proc.stdout + proc.stderr


DIES_ONCE = """
import os, time

def init():
    pass

def run(mini_batch):
    names = [os.path.basename(p) for p in mini_batch]
    marker = os.path.join(os.environ["MARKERS"], "died")
    if "f0001.csv" in names and not os.path.exists(marker):
        with open(marker, "w") as fh:
            fh.write(repr(time.time()))  # just before the process ends
        os._exit(3)
    return names
"""


def test_a_dead_try_lasts_until_its_process_died_not_until_the_driver_looked(
    tmp_path: Path,
) -> None:
    """The driver looks at each finished task only after HOLD_S seconds (a test hook): the
    try charged PROCESS_DIED lasts until its process died, as its nanny logged it, not until
    the driver looked.  Before, its elapsed_s and run_s were at least HOLD_S, and the report
    listed it among the slowest tries."""
    from conftest import run_cli
    from helpers import cli_args, processed_of

    from daskscore.engine.dispatch import HOLD_ENV

    hold_s = 5.0  # (far above a death and its nanny's log line, however loaded the machine)
    markers = tmp_path / "markers"
    markers.mkdir()
    dep, inputs, out = make_job(
        tmp_path,
        DIES_ONCE,
        n_files=3,
        settings={"mini_batch_size": 1},
        env={"MARKERS": str(markers)},
    )
    args = cli_args(dep, inputs, out)
    args[args.index("--workers") + 1] = "1"
    proc = run_cli(*args, timeout=200, env={HOLD_ENV: str(hold_s)})
    assert proc.returncode == 0, show(proc)

    tries = processed_of(out)
    died = tries[tries["status"] == "PROCESS_DIED"]
    assert list(died["mini_batch_id"]) == [1], tries
    row = died.iloc[0]
    assert row["elapsed_s"] == row["run_s"]
    assert row["elapsed_s"] < hold_s, row  # (the driver looked HOLD_S after the death)
    start = pd.Timestamp(row["start"]).timestamp()
    ended = float((markers / "died").read_text())
    assert row["elapsed_s"] >= ended - start - 0.01, (row, ended - start)  # (ms in the CSV)
