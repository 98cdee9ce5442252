"""The warm cluster (``daskscore cluster start|status|stop``) and warm workers: jobs of the same
deployment reuse the script a previous job initialised; any change of code, model, environment
variables or init-time settings initialises again (the old script's ``shutdown()`` runs).

Real processes on 127.0.0.1 (ports chosen by the OS); each test points ``DASKSCORE_CLUSTER_STATE``
at a state file of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
from conftest import run_cli, write_deployment, write_inputs
from distributed import Client
from helpers import cli_args, show, summary_of

import daskscore
from daskscore.cluster.warm import JOB_PLUGIN

#: init(), run() and shutdown() leave marker files named after the event and the process;
#: run() also writes into AZUREML_BI_OUTPUT_PATH and prints (the job's stdout log).
SCRIPT = """
    import os
    import uuid

    def _mark(kind):
        name = f"{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        with open(os.path.join(os.environ["MARKERS"], name), "w") as fh:
            fh.write(os.environ.get("VERSION", ""))

    def init():
        _mark("init")

    def run(mini_batch):
        out = os.environ["AZUREML_BI_OUTPUT_PATH"]
        with open(os.path.join(out, f"ran-{os.getpid()}"), "a") as fh:
            fh.write(f"{len(mini_batch)}\\n")
        print(f"scored {len(mini_batch)} files")
        return [f"{os.path.basename(p)} {os.environ.get('VERSION', '')}" for p in mini_batch]

    def shutdown():
        _mark("shutdown")
"""


def _deploy(root: Path, markers: Path, version: str = "1", script: str = SCRIPT) -> Path:
    return write_deployment(
        root,
        script,
        settings={
            "mini_batch_size": 2,
            "environment_variables": {"MARKERS": str(markers), "VERSION": version},
        },
    )


def _marks(markers: Path, kind: str, pids: set[int] | None = None) -> list[str]:
    """The marker files of ``kind`` (of processes ``pids`` only, when given)."""
    found = [p.name for p in markers.iterdir() if p.name.startswith(f"{kind}-")]
    if pids is not None:
        found = [n for n in found if int(n.split("-")[1]) in pids]
    return sorted(found)


def _cluster_pids(state: dict, pids: set[int]) -> set[int]:
    """``pids`` with the warm cluster's worker processes now: a worker process replaced by a
    fresh one (another deployment installs) is not among those its state file lists."""
    with Client(state["address"], set_as_default=False) as client:
        return pids | set(client.run(os.getpid).values())


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _run(dep: Path, inputs: Path, out: Path, env: dict[str, str], *extra: str):
    proc = run_cli(*cli_args(dep, inputs, out, *extra), env=env)
    assert proc.returncode == 0, show(proc)
    return proc


def test_jobs_reuse_the_warm_clusters_initialised_workers(tmp_path, warm_env):
    markers = tmp_path / "markers"
    markers.mkdir()
    dep = _deploy(tmp_path / "deploy", markers)
    inputs = write_inputs(tmp_path / "in", 7)

    cold = _run(dep, inputs, tmp_path / "cold", warm_env)  # no warm cluster yet: embedded
    assert "warm cluster" not in cold.stderr
    assert summary_of(tmp_path / "cold")["warm_workers"] is False

    started = run_cli("cluster", "start", "--workers", "2", env=warm_env, timeout=180)
    assert started.returncode == 0, show(started)
    assert "Started the warm cluster at tcp://127.0.0.1:" in started.stdout
    state = json.loads(Path(warm_env["DASKSCORE_CLUSTER_STATE"]).read_text())
    pids = set(state["pids"])
    assert all(not _gone(pid) for pid in pids)
    again = run_cli("cluster", "start", env=warm_env)
    assert again.returncode == 0 and "Already running" in again.stdout, show(again)

    out = tmp_path / "out"  # (the warm key holds the output folder: one, run again)
    first = _run(dep, inputs, out, warm_env)
    assert f"Using the warm cluster at {state['address']}" in first.stderr
    one = summary_of(out)
    cold_rows = (tmp_path / "cold" / "predictions.csv").read_bytes()
    assert (out / "predictions.csv").read_bytes() == cold_rows
    assert sum(len(p.read_text().split()) for p in out.glob("ran-*")) == 4
    second = _run(dep, inputs, out, warm_env, "--overwrite")
    assert "Using the warm cluster" in second.stderr

    two = summary_of(out)
    assert _cluster_pids(state, pids) == pids, "the same deployment: the same processes"
    assert one["warm_workers"] is False and two["warm_workers"] is True
    assert one["status"] == two["status"] == "Completed"
    assert len(_marks(markers, "init", pids)) == 2, "init() once per warm worker, first job"
    assert _marks(markers, "shutdown", pids) == [], "the script stays initialised"
    assert (out / "predictions.csv").read_bytes() == cold_rows
    # the second job's own files: AZUREML_BI_OUTPUT_PATH (the script's files of the first
    # stay, as --overwrite keeps what daskscore did not write) and the stdout logs
    ran = sum(len(p.read_text().split()) for p in out.glob("ran-*"))
    assert ran - 4 == two["total_mini_batches"] == 4
    logs = "".join(p.read_text() for p in (out / "logs/user/stdout").glob("*.txt"))
    assert logs.count("scored ") == 4, logs

    status = run_cli("cluster", "status", env=warm_env)
    assert status.returncode == 0, show(status)
    assert "2 workers" in status.stdout and "score.py on 2 workers" in status.stdout

    # another environment variable: a new key, the old script is shut down first, and the new
    # one initialises in fresh worker processes
    _deploy(tmp_path / "deploy", markers, version="2")
    _run(dep, inputs, out, warm_env, "--overwrite")
    pids = _cluster_pids(state, pids)
    assert summary_of(out)["warm_workers"] is False
    assert len(_marks(markers, "shutdown", pids)) == 2
    assert len(_marks(markers, "init", pids)) == 4
    rows = (out / "predictions.csv").read_text().splitlines()
    assert rows and all(row.endswith(" 2") for row in rows)

    # changed code, same settings: initialised again too
    _deploy(tmp_path / "deploy", markers, version="2", script=SCRIPT + "    # changed\n")
    _run(dep, inputs, out, warm_env, "--overwrite")
    pids = _cluster_pids(state, pids)
    assert summary_of(out)["warm_workers"] is False
    assert len(_marks(markers, "shutdown", pids)) == 4
    assert len(_marks(markers, "init", pids)) == 6

    # another output folder: initialised again (init() may keep AZUREML_BI_OUTPUT_PATH)
    _run(dep, inputs, tmp_path / "elsewhere", warm_env)
    pids = _cluster_pids(state, pids)
    assert summary_of(tmp_path / "elsewhere")["warm_workers"] is False
    assert len(_marks(markers, "init", pids)) == 8

    # --no-warm: an embedded cluster, whatever runs
    fresh = _run(dep, inputs, tmp_path / "five", warm_env, "--no-warm")
    assert "warm cluster" not in fresh.stderr
    assert summary_of(tmp_path / "five")["warm_workers"] is False
    assert len(_marks(markers, "init", pids)) == 8

    stopped = run_cli("cluster", "stop", env=warm_env, timeout=120)
    assert stopped.returncode == 0 and "Stopped the warm cluster" in stopped.stdout, show(stopped)
    assert not Path(warm_env["DASKSCORE_CLUSTER_STATE"]).exists()
    deadline = time.monotonic() + 10
    while not all(_gone(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [pid for pid in pids if not _gone(pid)] == [], "cluster stop left processes behind"
    assert len(_marks(markers, "shutdown", pids)) == 8, "the kept script's shutdown() ran"

    after = run_cli("cluster", "status", env=warm_env)
    assert after.returncode == 1 and "No warm cluster is running" in after.stdout, show(after)


#: A script that changes its process in every way a later deployment would notice: a
#: ``sys.path`` entry with a ``helper`` (imported), warnings made errors, the garbage collector
#: off, the recursion limit, ``logging.basicConfig(force=True)`` bound to its own log,
#: ``logging.disable``, Dask's logger's level; ``ALL`` adds a logger that no longer
#: propagates, a thread left running and a closed ``sys.__stderr__``.  Its process id and its
#: ``shutdown()`` leave markers.
LEAVES_STATE = """
    import gc
    import logging
    import os
    import sys
    import threading
    import time
    import warnings

    sys.path.append(os.path.join(os.path.dirname(__file__), "src"))
    import helper

    def _mark(kind):
        with open(os.path.join(os.environ["MARKERS"], f"{kind}-{os.getpid()}"), "w"):
            pass

    def init():
        _mark("left")
        warnings.simplefilter("error")
        gc.disable()
        sys.setrecursionlimit(12345)
        logging.basicConfig(level=logging.INFO, force=True)
        logging.getLogger("distributed").setLevel(logging.CRITICAL)
        logging.disable(logging.CRITICAL)
        if os.environ.get("ALL"):
            logging.getLogger("probe.quiet").propagate = False
            threading.Thread(target=time.sleep, args=(3600,), name="left-running").start()
            sys.__stderr__.close()

    def run(mini_batch):
        return [os.path.basename(p) for p in mini_batch]

    def shutdown():
        _mark("shutdown")
"""

#: A script that says what its process is like: its own ``helper`` or none, whether its
#: warning fails it, and the state ``LEAVES_STATE`` changes; it logs a line per mini-batch.
REPORTS_STATE = """
    import gc
    import logging
    import os
    import sys
    import threading
    import warnings

    try:
        import helper
        HELPER = helper.NAME
    except ImportError:
        HELPER = "no-helper"

    def init():
        pass

    def run(mini_batch):
        warnings.warn("a harmless warning")
        logging.getLogger("probe.quiet").warning("scored %d files", len(mini_batch))
        state = [
            HELPER,
            f"gc={gc.isenabled()}",
            f"recursion={sys.getrecursionlimit()}",
            f"distributed={logging.getLogger('distributed').getEffectiveLevel()}",
            f"propagate={logging.getLogger('probe.quiet').propagate}",
            f"threads={[t.name for t in threading.enumerate() if t.name == 'left-running']}",
        ]
        return [" ".join([os.path.basename(p), *state]) for p in mini_batch]
"""


def _leaves_and_reports(root: Path, markers: Path, *, all_of_it: bool) -> tuple[Path, Path]:
    """Deployment A (``LEAVES_STATE``, with ``src/helper.py``) and B (``REPORTS_STATE``)."""
    env = {"MARKERS": str(markers), **({"ALL": "1"} if all_of_it else {})}
    a = write_deployment(
        root / "a",
        LEAVES_STATE,
        extra_code={"src/helper.py": "NAME = 'deployment-A-helper'\n"},
        settings={"mini_batch_size": 1, "environment_variables": env},
    )
    b = write_deployment(root / "b", REPORTS_STATE, settings={"mini_batch_size": 1})
    return a, b


def _user_log(out: Path) -> str:
    return "".join(p.read_text() for p in sorted((out / "logs/user/stdout").glob("*.txt")))


def test_a_new_deployment_on_the_warm_cluster_starts_in_fresh_worker_processes(tmp_path, warm_env):
    """What a deployment's script set in its worker process (a ``sys.path`` entry, warnings
    made errors, ``gc.disable()``, logging configured to its own log or disabled, a logger's
    level, a thread, a closed ``sys.__stderr__``) no longer reaches the next deployment on the
    warm cluster: its shutdown() runs, and the next one scores in a fresh process, as on a
    fresh cluster (``--no-warm``).  Was: B imported A's helper, its warning failed every
    mini-batch, its log held "--- Logging error ---" tracebacks, or every job failed with
    ``ValueError: I/O operation on closed file.``"""
    markers = tmp_path / "markers"
    markers.mkdir()
    a, b = _leaves_and_reports(tmp_path, markers, all_of_it=True)
    inputs = write_inputs(tmp_path / "in", 2)
    _run(b, inputs, tmp_path / "fresh", warm_env, "--no-warm")
    assert run_cli("cluster", "start", "--workers", "1", env=warm_env).returncode == 0

    _run(a, inputs, tmp_path / "a-out", warm_env)
    [left] = _marks(markers, "left")
    _run(b, inputs, tmp_path / "b-out", warm_env)

    fresh, warm = tmp_path / "fresh", tmp_path / "b-out"
    assert (warm / "predictions.csv").read_text() == (fresh / "predictions.csv").read_text()
    assert "no-helper" in (warm / "predictions.csv").read_text()
    assert _marks(markers, "shutdown") == [f"shutdown-{left.split('-')[1]}"], "A's shutdown() ran"
    assert _gone(int(left.split("-")[1])), "B ran in a fresh worker process"
    summary = summary_of(warm)
    assert summary["status"] == "Completed" and summary["warm_workers"] is False
    assert summary["retried_mini_batches"] == 0 and summary["failures"] == []  # (no death)
    log = _user_log(warm)
    assert log.count("scored 1 files") == 2 and "Logging error" not in log, log
    status = run_cli("cluster", "status", env=warm_env)
    assert f"initialised: {b.parent / 'code' / 'score.py'} on 1 worker" in status.stdout
    assert str(a.parent) not in status.stdout, status.stdout

    again = _run(b, inputs, warm, warm_env, "--overwrite")  # (the same key: taken over)
    assert summary_of(warm)["warm_workers"] is True, show(again)
    assert (warm / "predictions.csv").read_text() == (fresh / "predictions.csv").read_text()


#: init() leaves a marker named after the deployment and the process; shutdown() marks that it
#: started, then waits for the test's GO file.
HELD_SHUTDOWN = """
    import os
    import time

    def init():
        open(f"{os.environ['HELD']}-init-{os.environ['NAME']}-{os.getpid()}", "w").close()

    def run(mini_batch):
        return [f"{os.environ['NAME']} {os.path.basename(p)}" for p in mini_batch]

    def shutdown():
        open(os.environ["HELD"], "w").close()
        deadline = time.monotonic() + 120
        while not os.path.exists(os.environ["GO"]) and time.monotonic() < deadline:
            time.sleep(0.05)
"""


def test_a_job_sent_to_a_process_being_replaced_installs_in_the_fresh_one(tmp_path, warm_env):
    """Two new deployments at once: B's install replaces the worker process (the old script's
    shutdown() holds it meanwhile) while C's script is sent to it.  C's install waits there
    rather than run its init() in a process about to end (one killed there failed C as an
    init() that killed its worker), and installs in the fresh one: its init() runs once, both
    complete, and no mini-batch is charged with the replaced process."""
    held, go = tmp_path / "held", tmp_path / "go"
    deploys = {
        name: write_deployment(
            tmp_path / name,
            HELD_SHUTDOWN,
            settings={"environment_variables": {"NAME": name, "HELD": str(held), "GO": str(go)}},
        )
        for name in "ABC"
    }
    inputs = write_inputs(tmp_path / "in", 2)
    assert run_cli("cluster", "start", "--workers", "1", env=warm_env).returncode == 0
    _run(deploys["A"], inputs, tmp_path / "A", warm_env)
    env = {**os.environ, **warm_env}
    jobs: dict[str, subprocess.Popen[str]] = {}

    def start(name: str) -> None:
        command = [
            sys.executable,
            "-m",
            "daskscore",
            *cli_args(deploys[name], inputs, tmp_path / name),
        ]
        jobs[name] = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)  # fmt: skip

    def wait(what: str, done: Any) -> None:
        deadline = time.monotonic() + 120
        while not done():
            for job in jobs.values():
                assert job.poll() is None, job.communicate()
            assert time.monotonic() < deadline, what
            time.sleep(0.05)

    def job_plugins(dask_scheduler: Any = None) -> int:
        return sum(1 for n in dask_scheduler.worker_plugins if JOB_PLUGIN.fullmatch(str(n)))

    try:
        start("B")
        wait("A's shutdown() never started", held.exists)  # (B replaces A's process)
        start("C")
        address = json.loads(Path(warm_env["DASKSCORE_CLUSTER_STATE"]).read_text())["address"]
        with Client(address, set_as_default=False) as watcher:
            wait("C never sent its script", lambda: watcher.run_on_scheduler(job_plugins))
        go.touch()
        ended = {name: job.communicate(timeout=180) for name, job in jobs.items()}
    finally:
        for job in jobs.values():
            job.kill()
    for name, job in jobs.items():
        assert job.returncode == 0, ended[name]
        summary = summary_of(tmp_path / name)
        assert summary["status"] == "Completed" and summary["retried_mini_batches"] == 0
        rows = (tmp_path / name / "predictions.csv").read_text().split("\n")
        assert {r.split()[0] for r in rows if r} == {name}
        assert len(list(tmp_path.glob(f"held-init-{name}-*"))) == 1, f"{name}'s init() once"


def test_a_script_uninstalled_in_place_leaves_what_it_set_undone(client, tmp_path):
    """On a caller's workers (not restarted: they hold the caller's data) the next deployment
    installs in the same process: what the last one's import and init() set there that can be
    put back is (its ``sys.path`` entry and the module found there, warnings filters, the
    garbage collector, the recursion limit, ``logging.disable``, Dask's logger's level, the
    root handler bound to its closed log), and a closed ``sys.__stderr__`` fails nothing."""
    markers = tmp_path / "markers"
    markers.mkdir()
    a, b = _leaves_and_reports(tmp_path, markers, all_of_it=False)
    closes = write_deployment(
        tmp_path / "closes",
        "import os, sys\n"
        "def init():\n    sys.__stderr__.close()\n"
        "def run(mini_batch):\n    return [os.path.basename(p) for p in mini_batch]\n",
    )
    inputs = write_inputs(tmp_path / "in", 2)
    pids = set(client.run(os.getpid).values())
    fresh = daskscore.run(b, inputs, tmp_path / "fresh", warm=False)  # (its own cluster)
    try:
        daskscore.run(a, inputs, tmp_path / "a-out", client=client)
        after_a = daskscore.run(b, inputs, tmp_path / "b-out", client=client)
        assert after_a.predictions.read_text() == fresh.predictions.read_text()
        assert len(_marks(markers, "shutdown", pids)) == 2
        log = _user_log(tmp_path / "b-out")
        assert log.count("scored 1 files") == 2 and "Logging error" not in log, log

        daskscore.run(closes, inputs, tmp_path / "closes-out", client=client)
        after_close = daskscore.run(b, inputs, tmp_path / "b-again", client=client)
        assert after_close.status == "Completed", after_close.summary["reason"]
        assert after_close.predictions.read_text() == fresh.predictions.read_text()
        assert set(client.run(os.getpid).values()) == pids  # (in place: the same processes)
    finally:  # (the module's other tests have workers whose sys.__stderr__ is open)
        client.restart_workers(list(client.scheduler_info()["workers"]))


def _dead_pid() -> tuple[int, float]:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    created = psutil.Process(proc.pid).create_time()
    proc.wait()
    return proc.pid, created


def test_stopping_the_cluster_under_a_job_says_so_and_the_job_resumes(tmp_path, warm_env):
    """``cluster stop`` says which jobs it ends; each ends naming the scheduler it lost (was
    ``at ?``), and ``--resume`` finishes it."""
    assert run_cli("cluster", "start", "--workers", "1", env=warm_env).returncode == 0
    markers = tmp_path / "markers"
    markers.mkdir()
    slow = SCRIPT.replace("def run(mini_batch):", "def run(mini_batch):\n        import time\n"
                          "        time.sleep(0.3)")  # fmt: skip
    dep = _deploy(tmp_path / "dep", markers, script=slow)
    inputs, out = write_inputs(tmp_path / "in", 60), tmp_path / "out"
    env = {**os.environ, **warm_env, "DASKSCORE_SCHEDULER_LOST_S": "2"}
    command = [sys.executable, "-m", "daskscore", *cli_args(dep, inputs, out)]
    job = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("ran-*")):
            assert job.poll() is None and time.monotonic() < deadline, job.communicate()
            time.sleep(0.2)
        address = json.loads(Path(warm_env["DASKSCORE_CLUSTER_STATE"]).read_text())["address"]
        stopped = run_cli("cluster", "stop", env=warm_env, timeout=120)
        _, err = job.communicate(timeout=120)
    finally:
        job.kill()
    assert "It had 1 daskscore job installed" in stopped.stdout, show(stopped)
    assert job.returncode == 1, err
    assert f"the Dask scheduler at {address} has not answered" in err, err

    again = run_cli(*cli_args(dep, inputs, out, "--resume", "--no-warm"), env=warm_env)
    assert again.returncode == 0, show(again)
    assert len((out / "predictions.csv").read_text().splitlines()) == 60


def test_a_stale_state_file_is_reported_and_removed(tmp_path, warm_env):
    path = Path(warm_env["DASKSCORE_CLUSTER_STATE"])
    pid, created = _dead_pid()

    def write_stale() -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {"address": "tcp://127.0.0.1:9", "pid": pid, "created": created}
        path.write_text(json.dumps({**state, "workers": 2, "threads": 1}))

    write_stale()
    status = run_cli("cluster", "status", env=warm_env)
    assert status.returncode == 1, show(status)
    assert f"its process {pid} is not running" in status.stdout
    assert "removed the stale state file" in status.stdout and not path.exists()

    write_stale()
    dep = _deploy(tmp_path / "deploy", tmp_path)
    proc = _run(dep, write_inputs(tmp_path / "in", 3), tmp_path / "out", warm_env)
    assert f"its process {pid} is not running" in proc.stderr
    assert "starting an embedded cluster" in proc.stderr and not path.exists()
    assert summary_of(tmp_path / "out")["status"] == "Completed"

    write_stale()
    stop = run_cli("cluster", "stop", env=warm_env)
    assert stop.returncode == 0 and "No warm cluster is running" in stop.stdout, show(stop)
    assert "stale" in stop.stdout and not path.exists()


def test_api_runs_on_one_client_reuse_the_initialised_workers(client, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    dep = _deploy(tmp_path / "deploy", markers)
    inputs = write_inputs(tmp_path / "in", 6)
    pids = set(client.run(os.getpid).values())

    first = daskscore.run(dep, inputs, tmp_path / "one", client=client)
    rows = first.predictions.read_bytes()
    second = daskscore.run(dep, inputs, tmp_path / "one", client=client, overwrite=True)
    assert first.summary["warm_workers"] is False and second.summary["warm_workers"] is True
    assert len(_marks(markers, "init", pids)) == 2 and _marks(markers, "shutdown") == []
    assert second.predictions.read_bytes() == rows
    ran = sum(len(p.read_text().split()) for p in (tmp_path / "one").glob("ran-*"))
    assert ran - 3 == second.summary["total_mini_batches"] == 3  # (the first's lines stay)

    # warm=False: the kept script is replaced (its shutdown() runs), and this job's own
    # install is uninstalled when it ends, as on an embedded cluster
    third = daskscore.run(dep, inputs, tmp_path / "three", client=client, warm=False)
    assert third.summary["warm_workers"] is False
    assert len(_marks(markers, "init", pids)) == 4
    assert len(_marks(markers, "shutdown", pids)) == 4


LEAKY_SCRIPT = """
    import os

    def init():
        if os.environ.get("SETS"):
            os.environ["LEAKY"] = os.environ["SETS"]  # (the script's own, not the deployment's)

    def run(mini_batch):
        return [f"{os.path.basename(p)} {os.environ.get('LEAKY')}" for p in mini_batch]
"""


def test_what_init_sets_in_the_environment_does_not_reach_the_next_deployment(client, tmp_path):
    """A warm worker runs deployment after deployment in one process: a variable one script's
    init() set is undone with it, as in a fresh process (Azure's, an embedded cluster's)."""
    inputs = write_inputs(tmp_path / "in", 4)
    a = write_deployment(tmp_path / "a", LEAKY_SCRIPT,
                         settings={"environment_variables": {"SETS": "from-A"}})  # fmt: skip
    b = write_deployment(tmp_path / "b", LEAKY_SCRIPT.replace("(the", "(this"))

    first = daskscore.run(a, inputs, tmp_path / "one", client=client)
    second = daskscore.run(b, inputs, tmp_path / "two", client=client)

    assert {r.split()[1] for r in first.predictions.read_text().splitlines()} == {"from-A"}
    assert {r.split()[1] for r in second.predictions.read_text().splitlines()} == {"None"}
    assert "LEAKY" not in client.run(lambda: dict(os.environ)).popitem()[1]


CACHED_OUTPUT = """
    import os

    def init():
        global output_path  # (as Azure's custom-output example keeps it)
        output_path = os.environ["AZUREML_BI_OUTPUT_PATH"]

    def run(mini_batch):
        for path in mini_batch:
            with open(os.path.join(output_path, os.path.basename(path) + ".out"), "w") as fh:
                fh.write("scored")
        return [os.path.basename(p) for p in mini_batch]
"""


def test_a_job_to_another_output_does_not_take_over_an_init_that_kept_the_last(client, tmp_path):
    """init() keeps AZUREML_BI_OUTPUT_PATH in a global: a second job to another folder took the
    script over and wrote its files into the first job's folder (the warm key now holds the
    output folder: that job initialises again)."""
    dep = write_deployment(tmp_path / "deploy", CACHED_OUTPUT, settings={"mini_batch_size": 2})
    one = daskscore.run(dep, write_inputs(tmp_path / "a", 2), tmp_path / "outA", client=client)
    two = daskscore.run(dep, write_inputs(tmp_path / "b", 3), tmp_path / "outB", client=client)
    assert one.status == two.status == "Completed"
    assert two.summary["warm_workers"] is False
    assert sorted(p.name for p in (tmp_path / "outA").glob("*.out")) == [
        f"f{i:04d}.csv.out" for i in range(2)
    ]
    assert sorted(p.name for p in (tmp_path / "outB").glob("*.out")) == [
        f"f{i:04d}.csv.out" for i in range(3)
    ]
    again = daskscore.run(
        dep, write_inputs(tmp_path / "b", 3), tmp_path / "outB", client=client, overwrite=True
    )
    assert again.summary["warm_workers"] is True  # (the same output folder: taken over)
