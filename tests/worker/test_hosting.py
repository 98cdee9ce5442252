"""The worker process as the script's host: the script may start processes of its own (they
end with the job, or with a worker or driver that dies), what is written below ``sys.stdout``
goes to the worker's log, and failures that come of the host say what to do."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import conftest
import psutil
import pytest
from helpers import cli, cli_args, make_job, show, summary_of

from daskscore.worker.hosting import DAEMONIC_HINT, SIGNAL_HINT, hint

POOLS = """
import multiprocessing as mp, os
from concurrent.futures import ProcessPoolExecutor

def square(x):
    return x * x

def init():
    global POOL
    POOL = mp.Pool(2)  # kept for every run(), as a DataLoader's workers are

def run(mini_batch):
    with ProcessPoolExecutor(1) as ex:
        cubes = list(ex.map(square, range(len(mini_batch))))
    return [f"{os.path.basename(p)} {a} {b}" for p, a, b
            in zip(mini_batch, POOL.map(square, range(len(mini_batch))), cubes)]
"""


def test_a_script_may_start_processes(tmp_path: Path) -> None:
    """multiprocessing.Pool in init(), ProcessPoolExecutor in run(): on Azure the script's
    process is an ordinary one; an embedded cluster's workers are not daemonic either."""
    dep, inputs, out = make_job(tmp_path, POOLS, n_files=4, settings={"mini_batch_size": 2})

    proc = cli(dep, inputs, out)

    assert proc.returncode == 0, show(proc)
    assert summary_of(out)["succeeded_items"] == 4, show(proc)
    assert (out / "predictions.csv").read_text().splitlines()[1] == "f0001.csv 1 1"


LEAVES_A_PROCESS = """
import os, subprocess

def init():
    pass

def run(mini_batch):
    # a helper that starts a server in the background: its shell exits, the server stays
    subprocess.run(["bash", "-c", "sleep 300 >/dev/null 2>&1 & echo $! > " +
                    os.path.join(os.environ["PIDS"], str(os.getpid()))])
    return mini_batch
"""


def _pids(folder: Path) -> list[int]:
    return [int(p.read_text()) for p in folder.iterdir() if p.read_text().strip()]


def _gone(pids: list[int], within: float = 20.0) -> list[int]:
    """The ``pids`` still running (a zombie is gone) after waiting up to ``within`` seconds
    for them to end."""
    deadline = time.monotonic() + within
    while True:
        left = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    left.append(pid)
            except psutil.NoSuchProcess:
                pass
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def _kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def test_a_process_a_script_left_in_the_background_ends_with_the_job(tmp_path: Path) -> None:
    """Its parent shell is gone, so it is no child of the worker any more: it is ended as a
    process of the worker's process group, once the script is uninstalled."""
    pids = tmp_path / "pids"
    pids.mkdir()
    dep, inputs, out = make_job(tmp_path, LEAVES_A_PROCESS, n_files=2, env={"PIDS": str(pids)})

    proc = cli(dep, inputs, out)

    started = _pids(pids)
    try:
        assert proc.returncode == 0, show(proc)
        assert started, show(proc)
        assert not _gone(started), "a process run() left in the background outlived the job"
    finally:
        _kill(started)


KEEPS_PROCESSES = """
import multiprocessing as mp, os, subprocess, time

def init():
    global POOL
    POOL = mp.Pool(2)
    server = subprocess.run(["bash", "-c", "sleep 300 >/dev/null 2>&1 & echo $!"],
                            capture_output=True, text=True).stdout.split()
    pids = [p.pid for p in POOL._pool] + [int(server[0])]
    path = os.path.join(os.environ["PIDS"], str(os.getpid()))
    with open(path + ".part", "w") as fh:
        fh.write(" ".join(map(str, pids)))
    os.replace(path + ".part", path)

def run(mini_batch):
    time.sleep(300)
    return mini_batch
"""


def test_a_killed_driver_leaves_no_process_of_the_script(tmp_path: Path) -> None:
    """The embedded cluster's nannies die with its driver, and Dask's worker process then
    exits at once: the group's guard ends what the script started (a Pool's workers would
    otherwise wait on their queues for ever)."""
    pids = tmp_path / "pids"
    pids.mkdir()
    dep, inputs, out = make_job(tmp_path, KEEPS_PROCESSES, n_files=2, env={"PIDS": str(pids)})
    driver = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "daskscore", *cli_args(dep, inputs, out, "--workers", "1")],
        cwd=conftest.REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    started: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while not list(pids.glob("[0-9]*[0-9]")) and time.monotonic() < deadline:
            assert driver.poll() is None, "the job ended before init() was done"
            time.sleep(0.1)
        started = [int(p) for f in pids.glob("[0-9]*[0-9]") for p in f.read_text().split()]
        assert len(started) == 3
        driver.kill()
        driver.wait()
        assert not _gone(started), "processes of the script outlived the killed driver"
    finally:
        driver.kill()
        driver.wait()
        _kill(started)


BELOW_STDOUT = """
import subprocess, sys

def init():
    pass

def run(mini_batch):
    subprocess.run(["echo", "SUBPROCESS-LINE"])  # a CLI tool, nvidia-smi, ...
    sys.__stdout__.write("DUNDER-LINE\\n")
    sys.__stdout__.flush()
    print("PRINTED-LINE")
    return mini_batch
"""


def test_output_below_sys_stdout_goes_to_the_log_and_a_closed_stdout_fails_nothing(
    tmp_path: Path,
) -> None:
    """``daskscore run ... | head -1``: the driver's standard output is a closed pipe; what
    the script writes to the process's own output reaches the worker's log instead."""
    dep, inputs, out = make_job(tmp_path, BELOW_STDOUT, n_files=4, settings={"mini_batch_size": 1})
    driver = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "daskscore", *cli_args(dep, inputs, out)],
        cwd=conftest.REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert driver.stdout is not None
    driver.stdout.close()  # (nobody reads the driver's standard output)
    _, err = driver.communicate(timeout=150)

    summary = summary_of(out)
    assert (summary["succeeded_items"], summary["failed_items"]) == (4, 0), err.decode()
    logs = "".join(p.read_text() for p in (out / "logs" / "user" / "stdout").glob("*.txt"))
    for line in ("SUBPROCESS-LINE", "DUNDER-LINE", "PRINTED-LINE"):
        assert logs.count(line) == 4, logs


SIGNALS = """
import signal

def on_alarm(signum, frame):
    raise TimeoutError("item took too long")

def init():
    signal.signal(signal.SIGALRM, on_alarm)

def run(mini_batch):
    return mini_batch
"""


def test_signal_in_init_fails_with_what_to_do_instead(tmp_path: Path) -> None:
    dep, inputs, out = make_job(tmp_path, SIGNALS, n_files=1)

    proc = cli(dep, inputs, out)

    assert proc.returncode != 0, show(proc)
    assert "signal only works in main thread" in proc.stderr, show(proc)
    assert "ThreadPoolExecutor" in proc.stderr and "retry_settings.timeout" in proc.stderr


def test_the_hints_name_their_failure() -> None:
    """A real refusal of signal.signal() outside the main thread, and only that, gets the
    signal hint; the daemonic one is found behind the exception it caused, too."""
    caught: list[BaseException] = []

    def in_thread() -> None:
        try:
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
        except ValueError as exc:
            caught.append(exc)

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    assert hint(caught[0]).strip() == SIGNAL_HINT
    assert hint(ValueError("another value error")) == ""
    try:
        try:
            raise AssertionError("daemonic processes are not allowed to have children")
        except AssertionError as exc:
            raise RuntimeError("DataLoader worker failed") from exc
    except RuntimeError as wrapped:
        assert hint(wrapped).strip() == DAEMONIC_HINT
    assert "DASK_DISTRIBUTED__WORKER__DAEMON=False" in DAEMONIC_HINT


def test_a_callers_daemonic_workers_fail_with_what_to_set(tmp_path: Path) -> None:
    """A caller's own cluster, started with Dask's defaults: its workers are daemonic, and
    the failure says how to start them otherwise."""
    from distributed import Client, LocalCluster

    import daskscore

    dep, inputs, out = make_job(
        tmp_path, POOLS, n_files=1, settings={"retry_settings": {"max_retries": 0}}
    )
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        try:
            daskscore.run(str(dep), str(inputs), str(out), client=client, progress=False)
        except daskscore.JobFailed as exc:
            error = exc.user_traceback or ""
        else:
            raise AssertionError("init() started a Pool on a daemonic worker")
    assert "daemonic processes are not allowed" in error, error
    assert "DASK_DISTRIBUTED__WORKER__DAEMON=False" in error, error


WARM_POOLS = """
import multiprocessing as mp, os, time

def busy(path):
    open(path, "w").close()
    time.sleep(300)

def init():
    global POOL
    POOL = mp.Pool(2)
    with open(os.path.join(os.environ["PIDS"], str(os.getpid())), "w") as fh:
        fh.write(" ".join(str(p.pid) for p in POOL._pool))

def run(mini_batch):
    started = os.path.join(os.environ["PIDS"], "busy")
    with mp.Pool(1) as pool:  # left while its worker is busy: terminate() ends it
        pool.apply_async(busy, (started,))
        while not os.path.exists(started):
            time.sleep(0.05)
    return POOL.map(os.path.basename, mini_batch)
"""


def test_the_warm_clusters_workers_may_start_processes(tmp_path: Path, warm_env) -> None:
    """The warm cluster's workers too: a Pool in init(), kept while the script stays
    initialised and ended when another deployment takes the worker (its process is replaced by
    a fresh one); a Pool left while busy in
    run() ends at once (Pool.terminate()'s SIGTERM: the warm server's own handler is not its
    workers')."""
    pids = tmp_path / "pids"
    pids.mkdir()
    dep, inputs, out = make_job(
        tmp_path,
        WARM_POOLS,
        n_files=2,
        settings={"retry_settings": {"max_retries": 0, "timeout": 60}},
        env={"PIDS": str(pids)},
    )
    started = conftest.run_cli("cluster", "start", "--workers", "1", env=warm_env, timeout=180)
    assert started.returncode == 0, show(started)

    proc = conftest.run_cli(*cli_args(dep, inputs, out), env=warm_env)

    assert proc.returncode == 0, show(proc)
    assert summary_of(out)["succeeded_items"] == 2, show(proc)
    (worker,) = [int(f.name) for f in pids.glob("[0-9]*")]
    kept = [int(p) for p in (pids / str(worker)).read_text().split()]
    try:
        assert len(kept) == 2 and sorted(_gone(kept, within=0)) == sorted(kept), "ended early"
        # another deployment: the parked script is uninstalled, its Pool ended, and the worker
        # process replaced by a fresh one, where the other script installs
        other = make_job(tmp_path / "other", "def run(mini_batch):\n    return mini_batch\n",
                         n_files=1)  # fmt: skip
        assert conftest.run_cli(*cli_args(*other), env=warm_env).returncode == 0
        assert not _gone(kept), "the script's Pool outlived its uninstall"
        assert not _gone([worker]), "the worker process was not replaced"
        stopped = conftest.run_cli("cluster", "stop", env=warm_env, timeout=120)
        assert stopped.returncode == 0, show(stopped)
    finally:
        _kill(kept)


LOGS = """
import logging, os

def run(mini_batch):
    names = [os.path.basename(p) for p in mini_batch]
    logging.getLogger("score").error("logged %s", names[0])
    print("printed", names[0], flush=True)
    os.write(1, f"below {names[0]}\\n".encode())
    return names
"""


def test_a_warm_jobs_output_goes_to_its_own_log(tmp_path: Path) -> None:
    """The second job on a caller's cluster takes over the script its first job initialised:
    its log lines, prints and what is written below sys.stdout go to its own stdout log (the
    log lines went to the worker's standard error: the job's handler was taken for one of the
    process's own)."""
    import daskscore
    from daskscore.cluster.local import local_cluster

    dep, inputs, _ = make_job(tmp_path, LOGS, n_files=2, settings={"mini_batch_size": 2})
    with local_cluster(1, dashboard=False) as handle:
        for again in (False, True):  # (one output folder, run again: the warm key holds it)
            result = daskscore.run(
                dep, inputs, tmp_path / "out", client=handle.client, progress=False, overwrite=again
            )
            assert result.summary["warm_workers"] is again
            logs = (result.logs / "user" / "stdout").glob("*.txt")
            text = "".join(p.read_text() for p in logs)
            assert "ERROR score: logged f0000.csv" in text, text
            assert "printed f0000.csv" in text and "below f0000.csv" in text, text


INTERRUPTS = """
import _thread, os, signal, time

def init():
    pass

def run(mini_batch):
    if any(os.path.basename(p) == "f0002.csv" for p in mini_batch):
        {how}
        time.sleep(2)  # (the KeyboardInterrupt comes here, in run()'s own thread)
    return [os.path.basename(p) for p in mini_batch]
"""


@pytest.mark.timeout(150)
@pytest.mark.parametrize(
    "how", ["_thread.interrupt_main()", "os.kill(os.getpid(), signal.SIGINT)"], ids=["main", "kill"]
)
def test_a_sigint_run_sends_its_own_process_fails_that_run_only(tmp_path: Path, how: str) -> None:
    """A library's own timeout may interrupt the main thread, as if the script ran there: the
    ``KeyboardInterrupt`` is raised in ``run()`` (its try fails with it). Before, it was raised
    in the worker's event loop, through the handler the worker inherited from the
    ``daskscore`` command: both workers closed, and the job hung or ended as NoWorkersLeft."""
    dep, inputs, out = make_job(
        tmp_path,
        INTERRUPTS.format(how=how),
        n_files=8,
        settings={"mini_batch_size": 2, "retry_settings": {"max_retries": 0}},
    )
    proc = cli(dep, inputs, out, timeout=120)
    assert proc.returncode == 0, show(proc)
    summary = summary_of(out)
    assert summary["status"] == "Completed", summary
    (failure,) = summary["failures"]
    assert failure["mini_batch_id"] == 1 and failure["status"] == "RUN_EXCEPTION"
    assert "KeyboardInterrupt" in failure["error"] and "time.sleep(2)" in failure["error"]
    rows = (out / "predictions.csv").read_text().split()
    assert rows == [f"f{i:04d}.csv" for i in (0, 1, 4, 5, 6, 7)]
    assert "Traceback" not in proc.stderr.split("First error")[0], show(proc)
