"""Jobs on a cluster daskscore did not start: a real ``dask scheduler`` and ``dask worker``
processes on loopback, each worker in its own working directory, without the code folder on its
path, and — standing for other hosts — in its own mount namespace where the driver's folder
(deployment, code, model, output) is an empty tmpfs.  The job is driven through the CLI, as a
user would: ``daskscore run ... --scheduler ADDRESS``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import write_deployment, write_inputs
from dask_processes import ProcessCluster, isolation_available

pytestmark = pytest.mark.slow

needs_isolation = pytest.mark.skipif(
    not isolation_available(), reason="needs mount namespaces (unshare -m, as root)"
)

SCRIPT = """
    import os, time
    import helper

    def init():
        global weight
        with open(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model", "w.txt")) as fh:
            weight = int(fh.read())
        print("init in", os.getcwd())

    def run(mini_batch):
        time.sleep(helper.PAUSE)
        out = []
        for path in mini_batch:
            value = int(open(path).read().split()[1])
            out.append(f"{os.path.basename(path)} {value * weight}")
        return out
"""


def _driver(tmp_path: Path, pause: float = 0.0, **settings) -> Path:
    """The driver's own folder: deployment, code and model (hidden from the workers)."""
    return write_deployment(
        tmp_path / "driver" / "dep",
        SCRIPT,
        extra_code={"helper.py": f"PAUSE = {pause}\n"},
        model_files={"w.txt": "3"},
        settings={"mini_batch_size": 1, **settings},
    )


def _cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "daskscore", "run", *args, "--no-progress"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _expected(inputs: Path) -> list[str]:
    return [f"{p.name} {3 * int(p.read_text().split()[1])}" for p in sorted(inputs.iterdir())]


def _show(proc: subprocess.CompletedProcess[str], cluster: ProcessCluster) -> str:
    return f"exit {proc.returncode}\n{proc.stderr[-3000:]}\n--- cluster\n{cluster.logs(20)}"


@needs_isolation
def test_workers_that_cannot_see_the_driver_disk(tmp_path: Path) -> None:
    dep = _driver(tmp_path)
    (tmp_path / "driver" / "out").mkdir()
    shared = write_inputs(tmp_path / "nfs" / "in", 12, width=3)  # a mount every host has
    hidden_inputs = write_inputs(tmp_path / "driver" / "in", 3, width=3)
    with ProcessCluster(tmp_path / "cluster", hide=[tmp_path / "driver"]) as cluster:
        out = tmp_path / "driver" / "out" / "run1"
        proc = _cli(str(dep), "-i", str(shared), "-o", str(out), "--scheduler", cluster.address)
        assert proc.returncode == 0, _show(proc, cluster)
        assert (out / "predictions.csv").read_text().splitlines() == _expected(shared)
        job_log = (out / "logs" / "sys" / "daskscore.txt").read_text()
        assert "do not share" in job_log  # found out, not told
        stdout = "".join(p.read_text() for p in (out / "logs/user/stdout").glob("*.txt"))
        assert (
            str(tmp_path / "cluster" / "w0") in stdout
            and str(tmp_path / "cluster" / "w1") in stdout
        )

        refused = _cli(str(dep), "-i", str(hidden_inputs), "-o", str(out.parent / "run2"),
                       "--scheduler", cluster.address)  # fmt: skip
        assert refused.returncode == 2, _show(refused, cluster)
        assert "cannot see" in refused.stderr and str(hidden_inputs) in refused.stderr
        assert "Traceback" not in refused.stderr


def _parts(out: Path) -> int:
    ledgers = out / ".daskscore" / "ledger"
    return len(list(ledgers.glob("*.log"))) if ledgers.is_dir() else 0


@needs_isolation
def test_a_worker_killed_and_one_added_mid_job(tmp_path: Path) -> None:
    # 80 × 0.3 s on two workers: ~12 s; the first task comes home after ~5 s
    dep = _driver(tmp_path, pause=0.3, retry_settings={"max_retries": 3})
    inputs = write_inputs(tmp_path / "nfs" / "in", 80, width=3)
    out = tmp_path / "driver" / "out"
    out.mkdir(parents=True)
    with ProcessCluster(tmp_path / "cluster", hide=[tmp_path / "driver"]) as cluster:
        cmd = [sys.executable, "-m", "daskscore", "run", str(dep), "-i", str(inputs),
               "-o", str(out), "--scheduler", cluster.address, "--no-progress"]  # fmt: skip
        job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while _parts(out) < 1 and time.monotonic() < deadline and job.poll() is None:
                time.sleep(0.1)  # a first task came home: the job is under way
            cluster.kill_worker("w1")
            added = cluster.add_worker()
            stdout, stderr = job.communicate(timeout=240)
        finally:
            if job.poll() is None:
                job.kill()
    proc = subprocess.CompletedProcess(cmd, job.returncode, stdout, stderr)
    assert job.returncode == 0, _show(proc, cluster)
    # every file exactly once, in order, scored with the model: nothing lost, nothing twice
    assert (out / "predictions.csv").read_text().splitlines() == _expected(inputs)
    tries = pd.read_csv(out / "logs/sys/job_report/processed_mini-batches.csv")
    assert added in set(tries["worker"]), tries["worker"].value_counts()  # it got code and model
    done = tries[tries["status"] == "RUN_DONE"]
    assert sorted(done["mini_batch_id"]) == list(range(80))


@needs_isolation
def test_cli_job_with_inputs_model_and_output_in_object_storage(tmp_path: Path, moto_s3) -> None:
    import fsspec
    from storage_emulators import make_bucket

    bucket = make_bucket(moto_s3)
    fs, base = fsspec.core.url_to_fs(bucket, **moto_s3["storage_options"])
    fs.pipe({f"{base}/in/f{i:03d}.csv": f"x\n{i}\n{i + 0.5}\n".encode() for i in range(7)})
    fs.pipe({f"{base}/models/model/w.txt": b"5"})
    dep = _driver(tmp_path)
    with ProcessCluster(tmp_path / "cluster", hide=[tmp_path / "driver"]) as cluster:
        proc = _cli(str(dep), "-i", f"{bucket}/in", "-o", f"{bucket}/out",
                    "--set", f"model.path={bucket}/models/model",
                    "--scheduler", cluster.address)  # fmt: skip
        assert proc.returncode == 0, _show(proc, cluster)
    fs.invalidate_cache()
    rows = fs.cat(f"{base}/out/predictions.csv").decode().splitlines()
    assert rows == [f"f{i:03d}.csv {5 * i}" for i in range(7)]
    assert fs.exists(f"{base}/out/logs/user/stdout")


def test_tls_cluster(tmp_path: Path) -> None:
    dep = _driver(tmp_path)
    inputs = write_inputs(tmp_path / "in", 5, width=3)
    with ProcessCluster(tmp_path / "cluster", tls=True) as cluster:
        assert cluster.address.startswith("tls://")
        proc = _cli(str(dep), "-i", str(inputs), "-o", str(tmp_path / "out"),
                    "--scheduler", cluster.address, "--no-shared-filesystem",
                    "--tls-ca-file", str(cluster.ca_file), "--tls-cert", str(cluster.cert_file),
                    "--tls-key", str(cluster.key_file))  # fmt: skip
        assert proc.returncode == 0, _show(proc, cluster)
        assert (tmp_path / "out/predictions.csv").read_text().splitlines() == _expected(inputs)

        plain = _cli(str(dep), "-i", str(inputs), "-o", str(tmp_path / "out2"),
                     "--scheduler", cluster.address, timeout=60)  # fmt: skip
        assert plain.returncode == 2, _show(plain, cluster)
        assert "cannot connect to the Dask scheduler" in plain.stderr
        assert "--tls-ca-file" in plain.stderr and "Traceback" not in plain.stderr


def test_tasks_run_only_on_workers_with_the_resources(tmp_path: Path) -> None:
    dep = _driver(tmp_path)
    inputs = write_inputs(tmp_path / "in", 10, width=3)
    with ProcessCluster(tmp_path / "cluster", workers=1) as cluster:
        gpu = cluster.add_worker(args=["--resources", "GPU=1"])
        cluster.wait_for_workers(2)
        proc = _cli(str(dep), "-i", str(inputs), "-o", str(tmp_path / "out"),
                    "--scheduler", cluster.address, "--resources", "GPU=1")  # fmt: skip
        assert proc.returncode == 0, _show(proc, cluster)
    tries = pd.read_csv(tmp_path / "out/logs/sys/job_report/processed_mini-batches.csv")
    assert set(tries["worker"]) == {gpu}
    # the worker without the resources installed nothing: no init(), so no stdout of its own
    assert [p.stem for p in (tmp_path / "out/logs/user/stdout").glob("*.txt")] == [gpu]


@needs_isolation
def test_workers_without_daskscore_are_refused(tmp_path: Path) -> None:
    import daskscore

    source = Path(daskscore.__file__).resolve().parent.parent  # the folder daskscore comes from
    if "site-packages" in source.parts:
        pytest.skip("daskscore is installed into site-packages: hiding it would hide Dask too")
    dep = _driver(tmp_path)
    inputs = write_inputs(tmp_path / "in", 3, width=3)
    with ProcessCluster(tmp_path / "cluster", workers=1, hide=[source]) as cluster:
        proc = _cli(str(dep), "-i", str(inputs), "-o", str(tmp_path / "out"),
                    "--scheduler", cluster.address, timeout=120)  # fmt: skip
        assert proc.returncode == 2, _show(proc, cluster)
        assert "do not have daskscore installed" in proc.stderr, _show(proc, cluster)
        assert "Traceback" not in proc.stderr


def test_an_unreachable_scheduler_is_one_paragraph(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dep = _driver(tmp_path)
    inputs = write_inputs(tmp_path / "in", 2, width=3)
    address = f"tcp://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "daskscore", "run", str(dep), "-i", str(inputs),
           "-o", str(tmp_path / "out"), "--scheduler", address, "--no-progress"]  # fmt: skip
    env = {**os.environ, "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2, proc.stderr
    assert f"cannot connect to the Dask scheduler at {address}" in proc.stderr
    assert "Traceback" not in proc.stderr


def _scheduler_killed_once_scoring(
    cluster: ProcessCluster,
    env: dict[str, str],
    dep: Path,
    inputs: Path,
    out: Path,
    *extra: str,
    timeout: float = 120,
) -> tuple[int | None, str]:
    """``daskscore run`` of the job on ``cluster``, its scheduler killed once a mini-batch is
    in a ledger; the command's exit code and stderr."""
    cmd = [sys.executable, "-m", "daskscore", "run", str(dep), "-i", str(inputs), "-o",
           str(out), "--scheduler", cluster.address, *extra, "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    ledgers = out / ".daskscore"
    deadline = time.monotonic() + 120
    while not any(p.stat().st_size for p in ledgers.glob("ledger/*.log")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    cluster.kill_scheduler()
    try:
        _, err = proc.communicate(timeout=timeout)
    finally:
        proc.kill()
    return proc.returncode, err


def test_a_scheduler_that_goes_away_ends_the_job_which_resumes_on_another(
    tmp_path: Path,
) -> None:
    """The job waited forever on futures no scheduler held; it now ends (exit 1) once the
    client has been without its scheduler for a while, and --resume finishes it."""
    dep = _driver(tmp_path, pause=0.2)
    inputs = write_inputs(tmp_path / "in", 40, width=3)
    out = tmp_path / "out"
    env = {**os.environ, "DASKSCORE_SCHEDULER_LOST_S": "2"}
    with ProcessCluster(tmp_path / "cluster", workers=2) as cluster:
        address = cluster.address
        code, err = _scheduler_killed_once_scoring(cluster, env, dep, inputs, out)
    assert code == 1, err
    assert f"scheduler at {address} has not answered for" in err, err
    assert "--resume finishes the job" in err, err
    assert "Traceback" not in err, err
    with ProcessCluster(tmp_path / "cluster2", workers=2) as cluster:
        again = _cli(str(dep), "-i", str(inputs), "-o", str(out),
                     "--scheduler", cluster.address, "--resume")  # fmt: skip
        assert again.returncode == 0, _show(again, cluster)
    assert (out / "predictions.csv").read_text().splitlines() == _expected(inputs)


def test_a_shipped_job_whose_scheduler_goes_away_ends_without_the_connect_timeout(
    tmp_path: Path,
) -> None:
    """A shipped job (``--no-shared-filesystem``) whose scheduler is killed: the tasks it had
    in flight are lost, and recovering each asked the scheduler what its run() had been (the
    relayed run() in flight), a question that waited out Dask's connect timeout before the
    job began to count the seconds it waits for its scheduler (20 s said, 50 s taken).  With
    that timeout 10 minutes, the job still ends once the client has been without its
    scheduler for DASKSCORE_SCHEDULER_LOST_S, and --resume finishes it."""
    dep = _driver(tmp_path, pause=0.2)
    inputs = write_inputs(tmp_path / "in", 40, width=3)
    out = tmp_path / "out"
    env = {
        **os.environ,
        "DASKSCORE_SCHEDULER_LOST_S": "2",
        "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "600s",
    }
    with ProcessCluster(tmp_path / "cluster", workers=2) as cluster:
        address = cluster.address
        code, err = _scheduler_killed_once_scoring(
            cluster, env, dep, inputs, out, "--no-shared-filesystem", timeout=180
        )  # (held by the connect timeout, 600 s, it would not end in 180 s)
    assert code == 1, err
    assert f"scheduler at {address} has not answered for 2 s" in err, err
    assert "Traceback" not in err, err
    with ProcessCluster(tmp_path / "cluster2", workers=2) as cluster:
        again = _cli(str(dep), "-i", str(inputs), "-o", str(out), "--scheduler",
                     cluster.address, "--no-shared-filesystem", "--resume")  # fmt: skip
        assert again.returncode == 0, _show(again, cluster)
    assert (out / "predictions.csv").read_text().splitlines() == _expected(inputs)


SLOW_INIT = """
    import os, time

    def init():
        open(os.path.join(os.environ["MARK_DIR"], f"init-{os.getpid()}"), "w").close()
        time.sleep(5)

    def run(mini_batch):
        return [os.path.basename(path) for path in mini_batch]
"""


@pytest.mark.parametrize(
    ("when", "shipping"),
    [("install", "--shared-filesystem"), ("start", "--no-shared-filesystem")],
)
def test_a_scheduler_killed_as_the_job_starts_ends_it_as_mid_job(
    tmp_path: Path, when: str, shipping: str
) -> None:
    """The scheduler killed while the script was installed (its init() running) made the job
    fail as a worker process that died in init(), 35 s later; killed just before (the nannies'
    timeout watch registered, the workers listed) it waited out Dask's connect timeout, then
    failed as an internal error ("ConnectionPool is closed").  Both now end as a scheduler lost
    mid-job does: ClusterLost after DASKSCORE_SCHEDULER_LOST_S, and --resume on another cluster
    finishes the job."""
    marks = tmp_path / "marks"
    marks.mkdir()
    dep = write_deployment(tmp_path / "dep", SLOW_INIT, settings={"mini_batch_size": 1})
    inputs = write_inputs(tmp_path / "in", 4, width=3)
    out = tmp_path / "out"
    log = out / "logs" / "sys" / "daskscore.txt"

    def ready() -> bool:
        if when == "install":
            return any(marks.iterdir())
        return log.exists() and "cluster ready" in log.read_text(errors="replace")

    env = {**os.environ, "DASKSCORE_SCHEDULER_LOST_S": "2"}
    with ProcessCluster(tmp_path / "cluster", workers=1, env={"MARK_DIR": str(marks)}) as cluster:
        address = cluster.address
        cmd = [sys.executable, "-m", "daskscore", "run", str(dep), "-i", str(inputs),
               "-o", str(out), "--scheduler", address, shipping, "--no-progress"]  # fmt: skip
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while not ready():
                assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
                time.sleep(0.02)
            cluster.kill_scheduler()
            _, err = proc.communicate(timeout=120)
        finally:
            proc.kill()
    assert proc.returncode == 1, err
    # (2 s: no question waited out the connect timeout before the watch counted)
    assert f"scheduler at {address} has not answered for 2 s" in err, err
    assert "--resume finishes the job" in err, err
    assert "internal error" not in err and "init()" not in err, err
    assert not (out / "job_summary.json").exists()  # (nothing claimed as the job's verdict)
    with ProcessCluster(tmp_path / "cluster2", workers=1, env={"MARK_DIR": str(marks)}) as cluster:
        again = _cli(str(dep), "-i", str(inputs), "-o", str(out), "--scheduler",
                     cluster.address, shipping, "--resume")  # fmt: skip
        assert again.returncode == 0, _show(again, cluster)
    assert (out / "predictions.csv").read_text().splitlines() == sorted(
        p.name for p in inputs.iterdir()
    )
