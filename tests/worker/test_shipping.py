"""Shipped jobs on a LocalCluster: ``shared_filesystem=False`` makes workers run from the code
and model the plugin carried, in worker-local folders, and send their results home in their
task replies — the same rows, logs and failures as a job whose workers share the disk."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import dask
import pandas as pd
import pytest
from conftest import write_deployment, write_inputs
from helpers import summary_of

import daskscore
from daskscore.cluster.local import local_cluster, parse_resources, tls_security
from daskscore.config import redact, secret_values
from daskscore.errors import InitFailed, JobFailed, UsageError
from daskscore.io.shipping import pack, unpack

SCRIPT = """
    import os
    import helper

    def init():
        global weight
        with open(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model", "w.txt")) as fh:
            weight = int(fh.read())
        print("init on", os.getpid())

    def run(mini_batch):
        out = []
        for path in mini_batch:
            value = int(open(path).read().split()[1])
            out.append(f"{os.path.basename(path)} {value * weight + helper.OFFSET} {__file__}")
        return out
"""


def _deployment(root: Path, offset: int = 0, **settings) -> Path:
    return write_deployment(
        root,
        SCRIPT,
        extra_code={"helper.py": f"OFFSET = {offset}\n"},
        model_files={"w.txt": "3"},
        settings={"mini_batch_size": 2, **settings},
    )


def _rows(path: Path) -> list[list[str]]:
    return [line.split(" ") for line in path.read_text().splitlines()]


def test_shipped_job_gives_the_shared_jobs_rows(tmp_path: Path, client) -> None:
    dep = _deployment(tmp_path / "dep")
    inputs = write_inputs(tmp_path / "in", 9, width=3)
    shared = daskscore.run(dep, inputs, tmp_path / "a", client=client, shared_filesystem=True)
    shipped = daskscore.run(dep, inputs, tmp_path / "b", client=client, shared_filesystem=False)
    a, b = _rows(shared.predictions), _rows(shipped.predictions)
    assert [r[:2] for r in a] == [r[:2] for r in b]
    assert len(b) == 9 and b[0][1] == str(3 * int(Path(inputs, b[0][0]).read_text().split()[1]))
    code = str(dep.parent / "code")
    assert all(r[2].startswith(code) for r in a)  # shared: the driver's own files
    assert not any(r[2].startswith(code) for r in b)  # shipped: the workers' unpacked copy
    stdout = list((tmp_path / "b" / "logs" / "user" / "stdout").glob("*.txt"))
    assert stdout and all("init on" in p.read_text() for p in stdout)  # worker logs came home
    assert not (tmp_path / "b" / ".daskscore").exists()


def test_two_jobs_with_different_code_on_one_cluster_never_mix(tmp_path: Path, client) -> None:
    inputs = write_inputs(tmp_path / "in", 4, width=3)
    first = _deployment(tmp_path / "one", offset=1000)
    second = _deployment(tmp_path / "two", offset=2000)
    r1 = daskscore.run(first, inputs, tmp_path / "o1", client=client, shared_filesystem=False)
    r2 = daskscore.run(second, inputs, tmp_path / "o2", client=client, shared_filesystem=False)
    v1 = {int(r[1]) // 1000 for r in _rows(r1.predictions)}
    v2 = {int(r[1]) // 1000 for r in _rows(r2.predictions)}
    assert (v1, v2) == ({1}, {2})


def test_bundles_are_named_by_their_contents(tmp_path: Path) -> None:
    folder = tmp_path / "code"
    (folder / "__pycache__").mkdir(parents=True)
    (folder / "a.py").write_text("x = 1\n")
    (folder / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"junk")
    first = pack(folder)
    assert pack(folder).digest == first.digest  # deterministic
    (folder / "a.py").write_text("x = 2\n")
    second = pack(folder)
    assert second.digest != first.digest
    unpacked = unpack(second, tmp_path / "cache")
    assert unpacked.name == "code" and (unpacked / "a.py").read_text() == "x = 2\n"
    assert not (unpacked / "__pycache__").exists()
    assert unpack(second, tmp_path / "cache") == unpacked  # once per cache


FAILING = """
    import os, sys, time

    def init():
        pass

    def run(mini_batch):
        out = []
        for path in mini_batch:
            name = os.path.basename(path)
            if name == "f001.csv":
                raise ValueError(f"cannot score {name}")
            if name == "f003.csv":
                time.sleep(60)
            if name == "f005.csv":
                os._exit(3)
            out.append(name)
        return out
"""


@pytest.mark.slow
def test_shipped_failures_are_charged_like_shared_ones(tmp_path: Path, client) -> None:
    dep = write_deployment(
        tmp_path / "dep",
        FAILING,
        settings={"mini_batch_size": 1, "retry_settings": {"max_retries": 1, "timeout": 3}},
    )
    inputs = write_inputs(tmp_path / "in", 8, width=3)
    result = daskscore.run(dep, inputs, tmp_path / "out", client=client, shared_filesystem=False)
    summary = result.summary
    assert summary["succeeded_items"] == 5 and summary["failed_items"] == 3
    failures = {Path(f["files"][0]).name: f for f in summary["failures"]}
    assert set(failures) == {"f001.csv", "f003.csv", "f005.csv"}
    assert failures["f003.csv"]["status"] == "RUN_TIMEOUT"
    assert failures["f005.csv"]["status"] == "PROCESS_DIED"
    assert failures["f001.csv"]["tries"] == 2
    error = failures["f001.csv"]["error"]
    assert "ValueError: cannot score f001.csv" in error
    assert str(dep.parent / "code" / "score.py") in error  # the user's path, not the cache's
    names = [line.split()[0] for line in result.predictions.read_text().splitlines()]
    assert names == ["f000.csv", "f002.csv", "f004.csv", "f006.csv", "f007.csv"]  # once each
    errors = "".join(p.read_text() for p in (result.output / "logs/user/error").glob("*.txt"))
    assert "cannot score f001.csv" in errors


def test_shipped_parquet_dataset(tmp_path: Path, client) -> None:
    dep = write_deployment(
        tmp_path / "dep",
        """
        import os
        import pandas as pd

        def run(mini_batch):
            return pd.DataFrame({"file": [os.path.basename(p) for p in mini_batch],
                                 "size": [os.path.getsize(p) for p in mini_batch]})
        """,
        settings={"mini_batch_size": 3},
    )
    inputs = write_inputs(tmp_path / "in", 10, width=3)
    result = daskscore.run(
        dep,
        inputs,
        tmp_path / "out",
        client=client,
        shared_filesystem=False,
        output_format="parquet",
        rows_per_file=4,
    )
    frame = pd.read_parquet(result.predictions)
    assert sorted(frame["file"]) == [f"f{i:03d}.csv" for i in range(10)]


BI_OUTPUT = """
    import os

    def run(mini_batch):
        out = os.environ["AZUREML_BI_OUTPUT_PATH"]
        for path in mini_batch:
            with open(os.path.join(out, os.path.basename(path) + ".done"), "w") as fh:
                fh.write("ok")
        return [os.path.basename(p) for p in mini_batch]
"""


def test_files_the_script_writes_come_home(tmp_path: Path, client) -> None:
    dep = write_deployment(tmp_path / "dep", BI_OUTPUT, settings={"mini_batch_size": 2})
    inputs = write_inputs(tmp_path / "in", 5, width=3)
    result = daskscore.run(dep, inputs, tmp_path / "out", client=client, shared_filesystem=False)
    assert sorted(p.name for p in result.output.glob("*.done")) == [
        f"f{i:03d}.csv.done" for i in range(5)
    ]


SECRETS = """
    import logging, os

    def init():
        print("the key is", os.environ["API_KEY"])
        logging.getLogger("score").warning("token=%s", os.environ["SERVICE_TOKEN"])

    def run(mini_batch):
        raise RuntimeError("login failed with " + os.environ["API_KEY"])
"""


@pytest.mark.parametrize("shared", [True, False])
def test_secret_values_never_reach_the_logs(tmp_path: Path, client, shared: bool) -> None:
    env = {"API_KEY": "sk-live-4242-abcd", "SERVICE_TOKEN": "tok-9876-zyx", "REGION": "west"}
    dep = write_deployment(
        tmp_path / "dep",
        SECRETS,
        settings={
            "mini_batch_size": 2,
            "environment_variables": env,
            "retry_settings": {"max_retries": 0},
        },
    )
    inputs = write_inputs(tmp_path / "in", 3, width=3)
    with pytest.raises(JobFailed) as failed:
        daskscore.run(
            dep,
            inputs,
            tmp_path / "out",
            client=client,
            shared_filesystem=shared,
            error_threshold=0,
        )
    texts = {p: p.read_text(errors="replace") for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert texts, "the job wrote no files"
    for path, text in texts.items():
        assert "sk-live-4242-abcd" not in text and "tok-9876-zyx" not in text, path
    logs = "".join(t for p, t in texts.items() if "logs" in p.parts)
    assert "the key is ***" in logs and "token=***" in logs and "login failed with ***" in logs
    assert "sk-live-4242-abcd" not in str(failed.value)


def test_redaction_helpers() -> None:
    env = {"DB_PASSWORD": "hunter22", "my_secret": "abcdef", "PATH_KEY": "on", "USER": "bob"}
    secrets = secret_values(env)
    assert set(secrets) == {"hunter22", "abcdef"}  # "on" is too short to mask
    assert redact("pw hunter22 and abcdef, user bob", secrets) == "pw *** and ***, user bob"


def test_resources_parse_and_refuse() -> None:
    assert parse_resources("GPU=1, MEM=2e9") == {"GPU": 1.0, "MEM": 2e9}
    assert parse_resources({"GPU": 2}) == {"GPU": 2.0}
    with pytest.raises(UsageError, match="'GPU' is not NAME=AMOUNT"):
        parse_resources("GPU")
    assert tls_security(None, None, None) is None


def test_a_job_needing_resources_no_worker_offers_is_refused(tmp_path: Path, client) -> None:
    dep = write_deployment(tmp_path / "dep", BI_OUTPUT)
    inputs = write_inputs(tmp_path / "in", 2, width=3)
    with pytest.raises(UsageError, match=r"resources GPU=1: no worker of the cluster offers"):
        daskscore.run(dep, inputs, tmp_path / "out", client=client, resources={"GPU": 1})
    assert not (tmp_path / "out" / "predictions.csv").exists()


DEVICES = """
    import os

    def run(mini_batch):
        return [f"{os.path.basename(p)} {os.environ.get('CUDA_VISIBLE_DEVICES')}"
                for p in mini_batch]
"""


def test_embedded_workers_get_their_own_gpu_and_resources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")  # two GPUs, as the driver sees them
    dep = write_deployment(tmp_path / "dep", DEVICES, settings={"mini_batch_size": 1})
    inputs = write_inputs(tmp_path / "in", 6, width=3)
    result = daskscore.run(dep, inputs, tmp_path / "out", workers=2, resources="GPU=1")
    report = pd.read_csv(result.output / "logs/sys/job_report/processed_mini-batches.csv")
    devices = dict(line.split() for line in result.predictions.read_text().splitlines())
    by_worker: dict[str, set[str]] = {}
    for _, row in report.iterrows():  # mini-batch i holds f{i:03d}.csv alone
        by_worker.setdefault(row["worker"], set()).add(devices[f"f{row['mini_batch_id']:03d}.csv"])
    assert set(devices.values()) <= {"3", "5"}
    assert all(len(v) == 1 for v in by_worker.values())  # one device per worker process


def test_model_path_may_be_a_url(tmp_path: Path, moto_s3) -> None:
    import fsspec
    from storage_emulators import make_bucket

    bucket = make_bucket(moto_s3)
    fs, base = fsspec.core.url_to_fs(bucket, **moto_s3["storage_options"])
    fs.pipe({f"{base}/models/model/w.txt": b"7", f"{base}/models/model/sub/extra.bin": b"x"})
    dep = _deployment(tmp_path / "dep")
    inputs = write_inputs(tmp_path / "in", 3, width=3)
    with local_cluster(2, dashboard=False) as handle:  # started with the emulator's credentials
        result = daskscore.run(
            dep,
            inputs,
            tmp_path / "out",
            client=handle.client,
            shared_filesystem=False,
            set={"model.path": f"{bucket}/models/model"},
        )
    for name, value, _ in _rows(result.predictions):
        assert int(value) == 7 * int((inputs / name).read_text().split()[1])
    summary = summary_of(result.output)
    assert summary["status"] == "Completed"
    with pytest.raises(UsageError, match="does not exist"):
        daskscore.run(dep, inputs, tmp_path / "o2", set={"model.path": f"{bucket}/models/nope"})
    assert os.environ.get("AZUREML_MODEL_DIR") is None


def test_start_method_of_the_embedded_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    import multiprocessing

    from daskscore.cluster.local import start_method

    monkeypatch.delenv("DASKSCORE_START_METHOD", raising=False)
    has_forkserver = "forkserver" in multiprocessing.get_all_start_methods()
    assert start_method() == ("forkserver" if has_forkserver else "spawn")
    monkeypatch.setenv("DASKSCORE_START_METHOD", "spawn")
    assert start_method() == "spawn"


THREADS = """
    import os
    from threadpoolctl import threadpool_info

    def run(mini_batch):
        blas = max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")
        return [f"{os.path.basename(p)} {blas} {os.environ['OMP_NUM_THREADS']}"
                for p in mini_batch]
"""


@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_workers_get_their_thread_caps_however_they_start(tmp_path: Path, method: str) -> None:
    """The command forks its workers from a copy of itself, whose numpy was loaded before the
    caps were set: the workers' BLAS must still get cores // workers threads."""
    pytest.importorskip("threadpoolctl")
    from conftest import run_cli

    from daskscore.worker.threads import intra_op_threads

    dep = write_deployment(tmp_path / "dep", THREADS, settings={"mini_batch_size": 2})
    inputs = write_inputs(tmp_path / "in", 6, width=3)
    proc = run_cli(
        "run", str(dep), "-i", str(inputs), "-o", str(tmp_path / "out"), "--workers", "2",
        "--no-progress", "--no-dashboard", env={"DASKSCORE_START_METHOD": method},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = (tmp_path / "out/predictions.csv").read_text().splitlines()
    caps = {tuple(line.split()[1:]) for line in lines}
    assert caps == {(str(intra_op_threads(2)), str(intra_op_threads(2)))}


FORKED = """
    import gc
    import os
    try:
        from distributed.versions import _version_cached
    except ImportError:  # an older distributed caches no version report: -1, nothing to check
        _version_cached = None

    def run(mini_batch):
        # the worker made Dask's version report when it registered: from the cache it was
        # forked with (hits), or by scanning the packages itself (misses only)
        hits = _version_cached.cache_info().hits if _version_cached else -1
        return [f"{os.path.basename(p)} {hits} {gc.get_freeze_count()}" for p in mini_batch]
"""


def _forked_rows(out: Path) -> list[tuple[int, int]]:
    rows = [line.split() for line in (out / "predictions.csv").read_text().splitlines()]
    assert len(rows) == 6
    return [(int(hits), int(frozen)) for _, hits, frozen in rows]


def test_workers_are_forked_ready(tmp_path: Path) -> None:
    """The fork server readies itself before it forks the workers, from the command and from
    Python (a notebook): Dask's version report is made (each worker sends one when it
    registers: package scans and a `uname -p` subprocess, ~20 ms on the way to a ready
    cluster), and what it imported is frozen out of the garbage collector's walks (a full
    collection in a worker with torch loaded took 0.1 s)."""
    from conftest import run_cli

    dep = write_deployment(tmp_path / "dep", FORKED, settings={"mini_batch_size": 1})
    inputs = write_inputs(tmp_path / "in", 6, width=3)
    proc = run_cli(
        "run", str(dep), "-i", str(inputs), "-o", str(tmp_path / "out"), "--workers", "2",
        "--no-progress", "--no-dashboard", env={"DASKSCORE_START_METHOD": "forkserver"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = _forked_rows(tmp_path / "out")
    assert all((hits > 0 or hits == -1) and frozen > 10_000 for hits, frozen in rows)
    # from Python, in a fresh interpreter (this one's fork server may predate the test)
    api = tmp_path / "api"
    code = f"import daskscore; daskscore.run({str(dep)!r}, {str(inputs)!r}, {str(api)!r})"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert all(frozen > 10_000 for _, frozen in _forked_rows(api))


def test_embedded_workers_get_the_quiet_settings() -> None:
    """What the embedded cluster tunes reaches its worker processes: the event-loop health
    check every TICK_INTERVAL (not every 20 ms), no statistical profiler without a dashboard,
    and no MALLOC_TRIM_THRESHOLD_ (glibc's own mmap threshold).  Its nannies look for their
    worker's start-up message every HANDSHAKE_POLL_S, not every 50 ms."""
    from distributed.nanny import WorkerProcess

    from daskscore.cluster.local import HANDSHAKE_POLL_S, TICK_INTERVAL

    def settings(dask_worker: Any) -> tuple[Any, Any, Any]:
        return (
            dask_worker.periodic_callbacks["tick"].callback_time,
            dask.config.get("distributed.worker.profile.enabled"),
            os.environ.get("MALLOC_TRIM_THRESHOLD_"),
        )

    with local_cluster(2, dashboard=False) as handle:
        seen = set(handle.client.run(settings).values())
        assert WorkerProcess._init_msg_interval <= HANDSHAKE_POLL_S
    tick_ms = dask.utils.parse_timedelta(TICK_INTERVAL, default="ms") * 1000
    assert seen == {(tick_ms, False, None)}


def test_the_early_cluster_is_closed_when_the_job_is_refused(tmp_path: Path) -> None:
    """The embedded cluster starts on a thread while the inputs are listed: a job refused
    then (its output exists) leaves no cluster, worker process or thread behind, and a
    cluster that fails to start fails the job in the caller's thread."""
    import threading

    import psutil

    from daskscore.cluster.local import EarlyCluster

    dep = write_deployment(tmp_path / "dep", "def run(mini_batch):\n    return mini_batch\n")
    inputs = write_inputs(tmp_path / "in", 3)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "predictions.csv").write_text("kept\n")
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    with pytest.raises(UsageError, match="already holds a job's results"):
        daskscore.run(dep, inputs, tmp_path / "out", workers=2)
    assert (tmp_path / "out" / "predictions.csv").read_text() == "kept\n"
    assert not [t for t in threading.enumerate() if t.name == "daskscore-cluster-start"]
    from multiprocessing import forkserver, resource_tracker

    helpers = {forkserver._forkserver._forkserver_pid, resource_tracker._resource_tracker._pid}
    left = [p for p in me.children(recursive=True) if p.pid not in before | helpers]
    _, alive = psutil.wait_procs(left, timeout=10)
    assert alive == [], [p.cmdline() for p in alive]

    class Broken:
        def __enter__(self) -> None:
            raise OSError("no port")

        def __exit__(self, *exc: Any) -> None:
            raise AssertionError("never entered, never left")

    early = EarlyCluster(Broken())
    with pytest.raises(OSError, match="no port"), early:
        pass
    early.discard()  # a cluster that never started has nothing to close


def test_a_model_url_the_workers_cannot_fetch_fails_init_naming_url_and_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The driver sees the model (``memory://`` lives in its own process) but the workers do
    not: the job fails as an init() failure whose message names the URL, the worker and the
    error, with nothing scored and no predictions file."""
    import fsspec

    monkeypatch.setenv("DASKSCORE_START_METHOD", "spawn")  # forked workers would inherit it

    fs = fsspec.filesystem("memory")
    fs.pipe({"/daskscore-test/model/w.txt": b"7"})
    dep = write_deployment(tmp_path / "dep", "def run(mini_batch):\n    return mini_batch\n")
    inputs = write_inputs(tmp_path / "in", 4)
    try:
        with pytest.raises(JobFailed) as info:
            daskscore.run(
                dep, inputs, tmp_path / "out", workers=2,
                set={"model.path": "memory://daskscore-test/model"},
            )  # fmt: skip
    finally:
        fs.rm("/daskscore-test", recursive=True)
    message = str(info.value)
    assert isinstance(info.value, InitFailed)
    assert "could not be prepared on a worker (before init()); nothing was scored" in message
    assert "First error (preparing):" in message
    assert "preparing the model memory://daskscore-test/model on worker" in message
    assert "FileNotFoundError" in message
    summary = summary_of(tmp_path / "out")
    assert summary["status"] == "Failed" and summary["succeeded_items"] == 0
    assert not (tmp_path / "out" / "predictions.csv").exists()


ODD_CODE_SCRIPT = """
    import os, sys
    HERE = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.join(HERE, "lib"))

    def init():
        global helper
        import helper

    def run(mini_batch):
        raw = os.path.exists(os.path.join(os.fsencode(HERE), b"caf\\xe9.txt"))
        return [f"{os.path.basename(p)} {helper.f()} {raw}" for p in mini_batch]
"""


def test_shipped_code_folder_follows_symlinked_folders_and_keeps_odd_names(
    tmp_path: Path, client
) -> None:
    """A symlinked folder travels (Python's import follows it), a loop is walked once, a
    symlink to nothing is left out, and a name that is not UTF-8 travels as its bytes."""
    dep = write_deployment(tmp_path / "dep", ODD_CODE_SCRIPT, settings={"mini_batch_size": 2})
    code = dep.parent / "code"
    shared = tmp_path / "shared" / "lib"
    shared.mkdir(parents=True)
    (shared / "helper.py").write_text("def f():\n    return 'helper-ok'\n")
    (code / "lib").symlink_to(os.path.relpath(shared, code))
    (shared / "loop").symlink_to("..")  # a loop back to lib's parent
    (code / "dangling").symlink_to(tmp_path / "nonexistent")
    with open(os.path.join(os.fsencode(code), b"caf\xe9.txt"), "wb") as fh:
        fh.write(b"x")
    inputs = write_inputs(tmp_path / "in", 4, width=3)
    result = daskscore.run(dep, inputs, tmp_path / "out", client=client, shared_filesystem=False)
    rows = _rows(result.predictions)
    assert len(rows) == 4 and {tuple(r[1:]) for r in rows} == {("helper-ok", "True")}
    log = (tmp_path / "out" / "logs" / "sys" / "daskscore.txt").read_text()
    assert "left out" in log and "dangling" in log and "already in the code" in log


def test_a_code_file_a_shipped_job_cannot_read_is_named_before_the_claim(
    tmp_path: Path, client
) -> None:
    dep = _deployment(tmp_path / "dep")
    sock = socket.socket(socket.AF_UNIX)  # (a socket file: open() refuses it, even as root)
    sock.bind(str(dep.parent / "code" / "agent.sock"))
    inputs = write_inputs(tmp_path / "in", 2, width=3)
    try:
        with pytest.raises(UsageError, match="agent.sock"):
            daskscore.run(dep, inputs, tmp_path / "out", client=client, shared_filesystem=False)
    finally:
        sock.close()
    (dep.parent / "code" / "agent.sock").unlink()
    assert not (tmp_path / "out").exists()  # refused before the output folder was claimed
    result = daskscore.run(dep, inputs, tmp_path / "out", client=client, shared_filesystem=False)
    assert len(_rows(result.predictions)) == 2


HOLDS = """
    import os
    from distributed import get_worker

    def run(mini_batch):
        held = 0
        for plugin in get_worker().plugins.values():
            job = getattr(plugin, "job", None)
            for bundle in (getattr(job, "code_bundle", None), getattr(job, "model_bundle", None)):
                held += len(bundle.data) if bundle is not None else 0
        return [f"{os.path.basename(p)} {held}" for p in mini_batch]
"""


def test_workers_do_not_keep_the_packed_code_and_model(tmp_path: Path, client) -> None:
    """A shipped job's plugin stays on each worker until the job ends: it must not keep the
    packed code and model (a model of gigabytes, held twice: packed and unpacked)."""
    dep = write_deployment(
        tmp_path / "dep",
        HOLDS,
        model_files={"weights.bin": os.urandom(1 << 20).hex()},
        settings={"mini_batch_size": 1},
    )
    inputs = write_inputs(tmp_path / "in", 4, width=3)
    result = daskscore.run(dep, inputs, tmp_path / "out", client=client, shared_filesystem=False)
    held = {line.split()[1] for line in result.predictions.read_text().splitlines()}
    assert held == {"0"}


def test_incompressible_files_travel_stored(tmp_path: Path) -> None:
    """A model's weights barely deflate: they travel stored (deflating a 50 MB model cost
    the driver seconds per job), the code deflated, and both unpack as they were."""
    import zipfile
    from io import BytesIO

    folder = tmp_path / "model"
    folder.mkdir()
    weights = os.urandom(300_000)
    (folder / "weights.bin").write_bytes(weights)
    (folder / "config.json").write_text('{"layers": [64, 64, 10]}\n' * 200)
    bundle = pack(folder)
    kinds = {i.filename: i.compress_type for i in zipfile.ZipFile(BytesIO(bundle.data)).infolist()}
    assert kinds == {"config.json": zipfile.ZIP_DEFLATED, "weights.bin": zipfile.ZIP_STORED}
    assert pack(folder).digest == bundle.digest  # the same bytes, the same bundle
    unpacked = unpack(bundle, tmp_path / "cache")
    assert (unpacked / "weights.bin").read_bytes() == weights
    assert (unpacked / "config.json").read_text() == (folder / "config.json").read_text()


def _held_bundles(client) -> list[str]:
    def held(dask_scheduler: Any = None) -> list[str]:
        return sorted(dask_scheduler.task_metadata.get("daskscore-bundles", {}).get("data", {}))

    return client.run_on_scheduler(held)


def test_the_cluster_keeps_shipped_bundles_between_jobs(tmp_path: Path, client) -> None:
    """A second shipped job of an unchanged deployment sends neither its code nor its model
    again (the scheduler keeps them; the workers have them unpacked); a changed model is sent
    and used."""
    offset = int.from_bytes(os.urandom(3), "big")  # (code no earlier test shipped)
    dep = _deployment(tmp_path / "dep", offset=offset)
    (dep.parent / "model" / "salt.bin").write_bytes(os.urandom(8))  # (a model no test shipped)
    inputs = write_inputs(tmp_path / "in", 4, width=3)

    def job(out: str) -> tuple[dict[str, Any], dict[str, int]]:
        result = daskscore.run(dep, inputs, tmp_path / out, client=client, shared_filesystem=False)
        rows = {r[0]: int(r[1]) for r in _rows(result.predictions)}
        return summary_of(result.output)["shipped"], rows

    first, rows = job("o1")
    assert first["code"]["sent_bytes"] > 0 and first["model"]["sent_bytes"] > 0
    assert {first["code"]["digest"], first["model"]["digest"]} <= set(_held_bundles(client))
    second, again = job("o2")
    assert second == {kind: {**first[kind], "sent_bytes": 0} for kind in ("code", "model")}
    assert again == rows and rows["f000.csv"] % 1000 != 0
    (dep.parent / "model" / "w.txt").write_text("5")
    third, changed = job("o3")
    assert third["code"]["sent_bytes"] == 0 and third["model"]["sent_bytes"] > 0
    assert third["model"]["digest"] != first["model"]["digest"]
    assert all(changed[name] - offset == (rows[name] - offset) // 3 * 5 for name in rows)


RESTARTED = """
    import os

    def init():
        global weight
        with open(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model", "w.txt")) as fh:
            weight = int(fh.read().split()[0])

    def run(mini_batch):
        marker = os.path.join(os.environ["MARKERS"], "died")
        if not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(3)  # the nanny starts the worker again, with an empty cache
        return [f"{os.path.basename(p)} {weight} {os.getpid()}" for p in mini_batch]
"""


def test_a_restarted_worker_takes_the_bundles_from_the_scheduler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker started during a shipped job (here: started again after run() ended its
    process) has none of the job's bundles in its cache: it takes them from the scheduler.
    With DASKSCORE_BUNDLE_CACHE_MB=0 the scheduler keeps none once the job is over."""
    monkeypatch.setenv("DASKSCORE_BUNDLE_CACHE_MB", "0")
    markers = tmp_path / "markers"
    markers.mkdir()
    dep = write_deployment(
        tmp_path / "dep",
        RESTARTED,
        model_files={"w.txt": "7\n" + os.urandom(8).hex()},
        settings={"mini_batch_size": 2, "environment_variables": {"MARKERS": str(markers)}},
    )
    inputs = write_inputs(tmp_path / "in", 4, width=3)
    with local_cluster(1, dashboard=False) as handle:
        result = daskscore.run(
            dep, inputs, tmp_path / "out", client=handle.client, shared_filesystem=False
        )
        assert _held_bundles(handle.client) == []
    rows = _rows(result.predictions)
    assert sorted(r[0] for r in rows) == [f"f{i:03d}.csv" for i in range(4)]
    assert {r[1] for r in rows} == {"7"}
    summary = summary_of(result.output)
    assert summary["status"] == "Completed" and summary["shipped"]["model"]["sent_bytes"] > 0


def test_a_renamed_model_folder_with_the_same_files_is_found_under_its_new_name(
    tmp_path: Path, client
) -> None:
    """The bundle's digest is of the files alone, so a model folder copied or renamed with
    unchanged files is the bundle the workers hold already: it is unpacked there under its
    new name too (it was looked for there and missing)."""
    salt = os.urandom(8).hex()  # (a model no earlier test shipped)
    script = """
        import os

        def run(mini_batch):
            text = open(os.path.join(os.environ["AZUREML_MODEL_DIR"], NAME, "w.txt")).read()
            return [f"{os.path.basename(p)} {text}" for p in mini_batch]
    """
    inputs = write_inputs(tmp_path / "in", 2)
    for name in ("weights", "weights-v2"):
        dep = write_deployment(
            tmp_path / name,
            f"NAME = {name!r}\n" + textwrap.dedent(script),
            model_files={"w.txt": salt},
            model_path=name,
        )
        result = daskscore.run(
            dep, inputs, tmp_path / f"out-{name}", client=client, shared_filesystem=False
        )
        assert [r[1] for r in _rows(result.predictions)] == [salt, salt], name
    assert summary_of(result.output)["shipped"]["model"]["sent_bytes"] == 0


def test_unpacking_a_bundle_under_a_second_name(tmp_path: Path) -> None:
    first, second = tmp_path / "a" / "model", tmp_path / "b" / "model-copy"
    for folder in (first, second):
        folder.mkdir(parents=True)
        (folder / "w.txt").write_text("7")
    assert pack(first).digest == pack(second).digest
    assert (unpack(pack(first), tmp_path / "cache") / "w.txt").read_text() == "7"
    assert (unpack(pack(second), tmp_path / "cache") / "w.txt").read_text() == "7"


MODES = """
    import os, stat, subprocess

    HERE = os.path.dirname(os.path.abspath(__file__))

    def init():
        global said
        said = subprocess.run([os.path.join(HERE, "tool.sh")], capture_output=True, text=True,
                              check=True).stdout.strip()

    def run(mini_batch):
        model = os.path.join(os.environ["AZUREML_MODEL_DIR"], "model", "w.txt")
        modes = [oct(stat.S_IMODE(os.stat(p).st_mode)) for p in (os.path.join(HERE, "tool.sh"),
                                                               model)]
        return [f"{os.path.basename(p)} {said} {' '.join(modes)}" for p in mini_batch]
"""


def test_shipped_files_keep_their_permission_bits(tmp_path: Path, client) -> None:
    """A program in the code folder that init() runs keeps its executable bit when shipped,
    and every file (code and model) the permission bits it has on the driver."""
    salt = os.urandom(8).hex()  # (code no earlier test shipped)
    dep = write_deployment(
        tmp_path / "dep",
        MODES,
        extra_code={"tool.sh": f"#!/bin/sh\necho tool-{salt}\n"},
        model_files={"w.txt": salt},
        settings={"mini_batch_size": 2},
    )
    (dep.parent / "code" / "tool.sh").chmod(0o755)
    (dep.parent / "model" / "w.txt").chmod(0o640)
    inputs = write_inputs(tmp_path / "in", 3, width=3)
    result = daskscore.run(dep, inputs, tmp_path / "out", client=client, shared_filesystem=False)
    rows = _rows(result.predictions)
    assert len(rows) == 3 and {tuple(r[1:]) for r in rows} == {(f"tool-{salt}", "0o755", "0o640")}


def test_unpacked_bundles_have_the_files_permission_bits(tmp_path: Path) -> None:
    """Each file unpacked as it was packed: rwx of user, group and others (a set-user-ID
    bit is not carried), names that are not UTF-8 and a single-file model too."""
    folder = tmp_path / "code"
    folder.mkdir()
    modes = {b"run.sh": 0o755, b"data.txt": 0o640, b"ro.txt": 0o444, b"caf\xe9.sh": 0o750}
    for name, mode in modes.items():
        path = os.path.join(os.fsencode(folder), name)
        with open(path, "wb") as fh:
            fh.write(name)
        os.chmod(path, mode)
    suid = folder / "suid.sh"
    suid.write_text("#!/bin/sh\n")
    suid.chmod(0o4755)
    unpacked = os.fsencode(unpack(pack(folder), tmp_path / "cache"))
    for name, mode in {**modes, b"suid.sh": 0o755}.items():
        assert os.stat(os.path.join(unpacked, name)).st_mode & 0o7777 == mode, name
    single = tmp_path / "model.bin"
    single.write_bytes(b"weights")
    single.chmod(0o600)
    assert unpack(pack(single), tmp_path / "models").stat().st_mode & 0o7777 == 0o600


@pytest.mark.timeout(90)  # (before: the driver waited forever for a writer on the pipe)
@pytest.mark.parametrize("folder", ["code", "model"])
def test_a_named_pipe_in_a_shipped_folder_is_refused_unopened(
    tmp_path: Path, client, folder: str
) -> None:
    """A named pipe (FIFO) in the code or model folder is refused, named, before the output
    folder is claimed, as a socket is: opening it would wait for a writer that never comes."""
    dep = _deployment(tmp_path / "dep")
    pipe = dep.parent / folder / "pipe"
    os.mkfifo(pipe)
    inputs = write_inputs(tmp_path / "in", 2, width=3)
    with pytest.raises(UsageError) as refused:
        daskscore.run(dep, inputs, tmp_path / "out", client=client, shared_filesystem=False)
    assert repr(str(pipe)) in str(refused.value)
    assert "named pipe (FIFO), not a regular file" in str(refused.value)
    assert not (tmp_path / "out").exists()  # refused before the output folder was claimed
    pipe.unlink()
    result = daskscore.run(dep, inputs, tmp_path / "out", client=client, shared_filesystem=False)
    assert len(_rows(result.predictions)) == 2


@pytest.mark.parametrize("value", ["inf", "nan", "1e400", "abc", "-1"])
def test_a_bundle_cache_size_that_is_not_one_is_refused_before_the_claim(
    tmp_path: Path, client, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """``DASKSCORE_BUNDLE_CACHE_MB`` that is not a finite number of 0 or more is a usage error
    naming the variable, before the output folder is claimed (it was taken for the default,
    or broke the end-of-job trim, which left the job's bundles pinned on the scheduler)."""
    monkeypatch.setenv("DASKSCORE_BUNDLE_CACHE_MB", value)
    dep = _deployment(tmp_path / "dep")
    inputs = write_inputs(tmp_path / "in", 2, width=3)
    with pytest.raises(UsageError, match=f"DASKSCORE_BUNDLE_CACHE_MB='{value}' is not a size"):
        daskscore.run(dep, inputs, tmp_path / "out", client=client, shared_filesystem=False)
    assert not (tmp_path / "out").exists()


def test_a_bundle_cache_size_set_wrong_during_the_job_still_ends_it(
    client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A value set wrong after the job started (from Python) is warned of at the end, and the
    default used: the scheduler forgets the job's use of its bundles all the same."""
    from daskscore.engine.bundles import DEFAULT_CACHE_MB, note_bundles, release

    def noted(dask_scheduler: Any = None) -> list[str]:
        return sorted(dask_scheduler.task_metadata["daskscore-bundles"]["jobs"])

    job_id = f"cache-size-{os.urandom(4).hex()}"
    client.run_on_scheduler(note_bundles, job_id, [os.urandom(12).hex()])
    assert job_id in client.run_on_scheduler(noted)
    monkeypatch.setenv("DASKSCORE_BUNDLE_CACHE_MB", "inf")
    with caplog.at_level("WARNING", logger="daskscore"):
        release(client, job_id)
    assert job_id not in client.run_on_scheduler(noted)
    assert "DASKSCORE_BUNDLE_CACHE_MB='inf' is not a size in MB" in caplog.text
    assert f"The default, {DEFAULT_CACHE_MB} MB, is used." in caplog.text
