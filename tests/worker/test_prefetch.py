"""Prefetching a task's inputs (daskscore.worker.prefetch): run() gets the same arguments, in
the same order, each once; the prefetcher stays within its depth and byte budget; a failed
fetch is charged to its own mini-batch at its turn, with the same error as without
prefetching; scratch folders go after each mini-batch and when a task stops early; retries
get their files.  Then whole jobs on a LocalCluster: remote (moto S3) inputs give the same
outputs with prefetching on and off, and tabular mini-batches are what ``read_split`` gives.

The unit tests run tasks in this process, on a :class:`JobRuntime` whose script module is a
stand-in, over ``memory://`` files (fsspec's in-process filesystem: real downloads).
"""

from __future__ import annotations

import os
import pickle
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import fsspec
import numpy as np
import pandas as pd
import pytest
from conftest import run_cli, write_deployment
from helpers import show, worker_job

import daskscore
from daskscore.cluster.local import local_cluster
from daskscore.config.options import JobOptions
from daskscore.errors import UsageError
from daskscore.io import tabular
from daskscore.io.ledger import ledger_path
from daskscore.protocol import Status, WorkerJob
from daskscore.worker import plugin, prefetch, task
from daskscore.worker.prefetch import Fetched, Prefetcher, TaskInputs
from daskscore.worker.runtime import JobRuntime

# --------------------------------------------------------------------------- the Prefetcher


class Recorder:
    """A fetch function that notes, as each fetch starts, how far ahead of the consumer it is
    and what is held; it can fail chosen items and wait on a gate."""

    def __init__(self, nbytes: int = 0, fail: set[int] = frozenset(), root: Path | None = None):
        self.nbytes, self.fail, self.root = nbytes, fail, root
        self.lock = threading.Lock()
        self.taken = 0  # set by the consumer
        self.calls: list[int] = []
        self.ahead: list[int] = []
        self.held: list[int] = []
        self.gate: threading.Event | None = None
        self.started = threading.Event()

    def __call__(self, index: int) -> Fetched:
        with self.lock:
            self.calls.append(index)
            self.ahead.append(index - self.taken)
            self.held.append(self.nbytes * (index - self.taken))
        self.started.set()
        if self.gate is not None:
            self.gate.wait(30)
        if index in self.fail:
            raise FileNotFoundError(f"no such file: item {index}")
        scratch = None
        if self.root is not None:
            scratch = str(self.root / f"item{index}")
            os.makedirs(scratch)
        return Fetched(f"item {index}", scratch, self.nbytes)

    def take(self, pre: Prefetcher, index: int) -> Fetched:
        item = pre.take(index)
        with self.lock:
            self.taken = index + 1
        return item


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_items_come_in_order_each_fetched_once(depth: int) -> None:
    rec = Recorder()
    pre = Prefetcher(rec, 12, depth, 1 << 30)
    got = [rec.take(pre, i).argument for i in range(12)]
    assert got == [f"item {i}" for i in range(12)]
    assert pre.join(10)
    assert rec.calls == list(range(12))
    assert max(rec.ahead) <= depth - 1  # at most `depth` held beyond the one being run


def test_depth_is_reached_and_not_passed() -> None:
    rec = Recorder()
    pre = Prefetcher(rec, 10, 3, 1 << 30)
    rec.take(pre, 0)  # "run()" of item 0 goes on: items 1, 2, 3 are fetched, not 4
    deadline = time.monotonic() + 10
    while len(rec.calls) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)  # room for a wrong fifth fetch to show
    assert rec.calls == [0, 1, 2, 3]
    pre.close()
    assert pre.join(10)


def test_the_byte_budget_stops_fetching_ahead() -> None:
    rec = Recorder(nbytes=100)
    pre = Prefetcher(rec, 10, 8, 250)
    for i in range(10):
        rec.take(pre, i)
        time.sleep(0.02)  # a run() that lets the prefetcher go as far as it may
    assert pre.join(10)
    # a fetch beyond the first one ahead starts only while under 250 bytes are held
    assert all(held < 250 for ahead, held in zip(rec.ahead, rec.held, strict=True) if ahead)
    assert max(rec.ahead) <= 2  # 100 and 200 held: fetch; 300 held: wait


def test_a_failed_fetch_is_raised_at_its_turn_only() -> None:
    rec = Recorder(fail={2})
    pre = Prefetcher(rec, 5, 2, 1 << 30)
    assert rec.take(pre, 0).argument == "item 0"
    assert rec.take(pre, 1).argument == "item 1"
    with pytest.raises(FileNotFoundError, match="item 2"):
        rec.take(pre, 2)
    assert [rec.take(pre, i).argument for i in (3, 4)] == ["item 3", "item 4"]


def test_close_removes_what_was_fetched_ahead_and_a_fetch_under_way(tmp_path: Path) -> None:
    rec = Recorder(root=tmp_path)
    pre = Prefetcher(rec, 10, 3, 1 << 30)
    first = rec.take(pre, 0)
    while len(rec.calls) < 4:
        time.sleep(0.01)
    rec.gate = threading.Event()  # (item 4's fetch will wait here)
    rec.take(pre, 1).release()
    while 4 not in rec.calls:
        time.sleep(0.01)
    pre.close()  # items 2 and 3 were fetched and not taken; item 4 is being fetched
    assert os.listdir(tmp_path) == ["item0"]
    rec.gate.set()
    assert pre.join(10)
    assert os.listdir(tmp_path) == ["item0"]  # the one taken is the consumer's to release
    first.release()
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- tasks, in process


SCRATCH_PREFIX = "daskscore-batch-"


@pytest.fixture
def remote_files() -> dict[str, Any]:
    """Twelve small files on fsspec's memory filesystem."""
    root = f"memory://pf{uuid.uuid4().hex[:8]}"
    fs = fsspec.filesystem("memory")
    urls = [f"{root}/in/f{i:02d}.csv" for i in range(12)]
    fs.pipe({u.removeprefix("memory:/"): f"x\n{i}\n".encode() for i, u in enumerate(urls)})
    yield {"root": root, "urls": urls}
    fs.rm(root.removeprefix("memory:/"), recursive=True)


@pytest.fixture
def scratch_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Scratch folders (tempfile.mkdtemp) go here, where the test can count them."""
    root = tmp_path / "scratch"
    root.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(root))
    return root


class Script:
    """A stand-in scoring module: run() notes what it got and can misbehave on cue."""

    def __init__(self, runtime: JobRuntime) -> None:
        self.runtime = runtime
        self.seen: list[Any] = []
        self.scratch_alive: list[bool] = []  # was the last mini-batch's scratch still there?
        self.fail_first_try: set[str] = set()  # basenames whose mini-batch raises once
        self.delete: bool = False  # delete the files before raising
        self.cancel_after: int | None = None
        self._last_scratch: str | None = None
        self._failed: set[str] = set()

    def run(self, mini_batch: Any) -> Any:
        if isinstance(mini_batch, pd.DataFrame):
            self.seen.append(mini_batch.copy())
            if "boom" in self.fail_first_try and len(self.seen) == 1:
                mini_batch.iloc[:, :] = -99  # changed in place, then a failure
                raise RuntimeError("tabular boom")
            return mini_batch.iloc[:, 0].tolist()
        names = [os.path.basename(p) for p in mini_batch]
        assert all(os.path.isfile(p) for p in mini_batch), mini_batch
        values = [Path(p).read_text().split()[1] for p in mini_batch]
        self.seen.append(names)
        scratch = os.path.dirname(mini_batch[0])
        if self._last_scratch is not None and self._last_scratch != scratch:
            self.scratch_alive.append(os.path.exists(self._last_scratch))
        self._last_scratch = scratch
        first = names[0]
        if first in self.fail_first_try and first not in self._failed:
            self._failed.add(first)
            if self.delete:
                for p in mini_batch:
                    os.remove(p)
            raise RuntimeError(f"first try of {first}")
        if self.cancel_after is not None and len(self.seen) > self.cancel_after:
            self.runtime.cancelled = True
        return [f"{n} {v}" for n, v in zip(names, values, strict=True)]


def make_runtime(tmp_path: Path, **job: Any) -> tuple[JobRuntime, Script]:
    runtime = JobRuntime(worker_job(tmp_path, **job), "worker-0")
    script = Script(runtime)
    runtime.module = SimpleNamespace(run=script.run)
    return runtime, script


def run_in_process(
    runtime: JobRuntime, work: list[Any], attempt: str = "a1", monkeypatch: Any = None
) -> Any:
    monkeypatch.setitem(plugin._RUNTIMES, runtime.job.job_id, runtime)
    batches = [(mb, 0, w) for mb, w in enumerate(work)]
    try:
        result = task.run_task(runtime.job.job_id, attempt, batches)
    finally:
        runtime.cwd.close()  # (as an uninstall does: the process's directory count back to 0)
    for thread in threading.enumerate():  # a prefetch still finishing a download
        if thread.name == "daskscore-prefetch":
            thread.join(10)
    return result


def _batches(urls: list[str], size: int) -> list[list[str]]:
    return [urls[i : i + size] for i in range(0, len(urls), size)]


def _summary(records: list[Any]) -> list[tuple[Any, ...]]:
    return [(r.mini_batch, r.try_no, r.status, r.total, r.succeeded, r.error) for r in records]


@pytest.mark.parametrize("depth", [0, 1, 2, 4])
def test_run_gets_each_mini_batch_once_in_order(
    depth: int, tmp_path: Path, remote_files, scratch_root, monkeypatch
) -> None:
    runtime, script = make_runtime(tmp_path, prefetch=depth)
    work = _batches(remote_files["urls"], 2)
    result = run_in_process(runtime, work, monkeypatch=monkeypatch)
    assert script.seen == [[os.path.basename(u) for u in batch] for batch in work]
    assert [r.status for r in result.all_records()] == [Status.RUN_DONE] * len(work)
    assert script.scratch_alive == [False] * (len(work) - 1)  # gone before the next run()
    assert os.listdir(scratch_root) == []


def test_local_files_start_no_thread(tmp_path: Path, monkeypatch) -> None:
    files = []
    for i in range(4):
        (tmp_path / f"l{i}.csv").write_text(f"x\n{i}\n")
        files.append(str(tmp_path / f"l{i}.csv"))
    inputs = TaskInputs(_batches(files, 2), 2, 1 << 20)
    assert inputs.prefetcher is None
    assert inputs.first(1)().argument == files[2:]
    runtime, script = make_runtime(tmp_path)
    run_in_process(runtime, _batches(files, 2), monkeypatch=monkeypatch)
    assert script.seen == [["l0.csv", "l1.csv"], ["l2.csv", "l3.csv"]]


def test_a_failed_download_is_its_own_mini_batch_failure(
    tmp_path: Path, remote_files, scratch_root, monkeypatch
) -> None:
    work = _batches(remote_files["urls"], 2)
    work[2] = [work[2][0], f"{remote_files['root']}/in/missing.csv"]
    outcomes = {}
    for depth in (0, 2):
        runtime, script = make_runtime(tmp_path / f"d{depth}", prefetch=depth, max_retries=1)
        result = run_in_process(runtime, work, monkeypatch=monkeypatch)
        outcomes[depth] = _summary(result.all_records())
        assert len(script.seen) == len(work) - 1  # run() never saw mini-batch 2
        ledger = ledger_path(runtime.job.staging, "a1").read_text().splitlines()
        assert not any(line.startswith("S 2 ") for line in ledger)  # no run() started
        errors = Path(runtime.job.logs, "user", "error", "worker-0.txt").read_text()
        assert "run() of mini-batch 2 (try 1" in errors and "missing.csv" in errors
    assert outcomes[0] == outcomes[2]
    failed = [s for s in outcomes[2] if s[2] is not Status.RUN_DONE]
    assert [(s[0], s[1]) for s in failed] == [(2, 1), (2, 2)]  # tried twice, charged to 2
    assert "FileNotFoundError" in failed[0][5] and "missing.csv" in failed[0][5]
    assert os.listdir(scratch_root) == []


@pytest.mark.parametrize("delete", [False, True])
def test_a_retry_gets_its_files(
    delete: bool, tmp_path: Path, remote_files, scratch_root, monkeypatch
) -> None:
    runtime, script = make_runtime(tmp_path, prefetch=2)
    script.fail_first_try = {"f02.csv"}
    script.delete = delete  # run() removed its files before raising: they are fetched again
    work = _batches(remote_files["urls"], 2)
    result = run_in_process(runtime, work, monkeypatch=monkeypatch)
    tries = [(r.mini_batch, r.try_no, r.status) for r in result.all_records()]
    assert (1, 1, Status.RUN_EXCEPTION) in tries and (1, 2, Status.RUN_DONE) in tries
    assert script.seen.count(["f02.csv", "f03.csv"]) == 2
    assert os.listdir(scratch_root) == []


@pytest.mark.parametrize("depth", [0, 3])
def test_a_cancelled_task_leaves_no_scratch(
    depth: int, tmp_path: Path, remote_files, scratch_root, monkeypatch
) -> None:
    runtime, script = make_runtime(tmp_path, prefetch=depth)
    script.cancel_after = 1
    result = run_in_process(runtime, _batches(remote_files["urls"], 2), monkeypatch=monkeypatch)
    assert result.cancelled and len(script.seen) == 2
    assert os.listdir(scratch_root) == []


def test_an_exception_in_the_task_leaves_no_scratch(
    tmp_path: Path, remote_files, scratch_root, monkeypatch
) -> None:
    runtime, script = make_runtime(tmp_path, prefetch=3)

    def broken(records: Any, output: Any) -> None:
        raise OSError("disk full")

    real_sink = runtime.writer.sink

    def sink(*args: Any) -> Any:
        s = real_sink(*args)
        s.add = broken
        return s

    monkeypatch.setattr(runtime.writer, "sink", sink)
    with pytest.raises(OSError, match="disk full"):
        run_in_process(runtime, _batches(remote_files["urls"], 2), monkeypatch=monkeypatch)
    for thread in threading.enumerate():
        if thread.name == "daskscore-prefetch":
            thread.join(10)
    assert os.listdir(scratch_root) == []


def test_a_tabular_retry_gets_an_unchanged_frame(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "t.csv"
    path.write_text("a,b\n" + "".join(f"{i},{i * 0.5}\n" for i in range(30)))
    splits = tabular.plan_splits([str(path)], ("rows", 10))
    runtime, script = make_runtime(tmp_path, prefetch=2)
    script.fail_first_try = {"boom"}
    result = run_in_process(runtime, list(splits), monkeypatch=monkeypatch)
    assert [(r.mini_batch, r.try_no, r.status) for r in result.all_records()][:2] == [
        (0, 1, Status.RUN_EXCEPTION),
        (0, 2, Status.RUN_DONE),
    ]
    want = [tabular.read_split(s) for s in splits]
    for got, expected in zip(script.seen, [want[0], *want], strict=True):
        pd.testing.assert_frame_equal(got, expected, check_exact=True)


def test_fetch_weighs_files_and_frames(tmp_path: Path, remote_files, scratch_root) -> None:
    got = prefetch.fetch(remote_files["urls"][:3])
    assert got.nbytes == sum(os.path.getsize(p) for p in got.argument) and got.scratch
    assert got.again() is not None
    os.remove(got.argument[0])
    assert got.again() is None  # a file is gone: fetch again
    got.release()
    assert os.listdir(scratch_root) == []
    path = tmp_path / "w.csv"
    path.write_text("a\n" + "".join(f"{i}\n" for i in range(100)))
    (split,) = tabular.plan_splits([str(path)], ("rows", 1000))
    frame = prefetch.fetch(split)
    assert frame.nbytes >= 800 and frame.again() is None  # a DataFrame is never reused


def test_the_options_reach_the_worker_job() -> None:
    from daskscore import cli

    base = ["run", "d.yml", "-i", "in", "-o", "out"]
    args = cli._parser().parse_args([*base, "--prefetch", "0", "--prefetch-mb", "8"])
    assert (args.prefetch, args.prefetch_mb) == (0, 8.0)
    args = cli._parser().parse_args(base)
    assert (args.prefetch, args.prefetch_mb) == (2, 256.0)
    assert (WorkerJob("j", "c", "s", None, "o", "l", "st").prefetch_bytes) == 256 << 20
    for bad in ({"prefetch": -1}, {"prefetch_mb": 0}):
        with pytest.raises(UsageError, match="prefetch"):
            JobOptions(**bad)


# --------------------------------------------------------------------------- whole jobs

REMOTE_SCRIPT = """
    import os
    import threading
    import uuid

    def init():
        pass

    def run(mini_batch):
        if any(t.name == "daskscore-prefetch" for t in threading.enumerate()):
            marker = f"prefetching-{uuid.uuid4().hex}"
            open(os.path.join(os.environ["AZUREML_BI_OUTPUT_PATH"], marker), "w").close()
        out = []
        for path in mini_batch:
            assert os.path.isfile(path), path
            with open(path) as fh:
                value = fh.read().split()[1]
            out.append(f"{os.path.basename(path)} {value}")
        return out
"""

TABULAR_SCRIPT = """
    import os
    import pickle

    def init():
        pass

    def run(mini_batch):
        name = f"mb{int(mini_batch.index[0]):06d}.pkl"
        with open(os.path.join(os.environ["AZUREML_BI_OUTPUT_PATH"], name), "wb") as fh:
            pickle.dump(mini_batch, fh)
        return mini_batch.index.tolist()
"""


@pytest.fixture(scope="module")
def s3_client(moto_s3):
    """A LocalCluster of 2 workers started after moto exported its credentials."""
    with local_cluster(2, dashboard=False) as handle:
        yield handle.client


@pytest.mark.slow
def test_a_remote_job_gives_the_same_outputs_with_and_without_prefetch(
    moto_s3, s3_client, tmp_path: Path
) -> None:
    from storage_emulators import make_bucket

    root = make_bucket(moto_s3)
    fs, base = fsspec.core.url_to_fs(root, **moto_s3["storage_options"])
    fs.pipe({f"{base}/in/f{i:03d}.txt": f"v {i}\n".encode() for i in range(40)})
    fs.invalidate_cache()
    dep = write_deployment(tmp_path / "d", REMOTE_SCRIPT, settings={"mini_batch_size": 3})
    outputs = {}
    for depth in (0, 2):
        out = tmp_path / f"out{depth}"
        result = daskscore.run(dep, f"{root}/in", out, client=s3_client, prefetch=depth)
        assert result.status == "Completed" and result.succeeded_items == 40
        outputs[depth] = Path(result.predictions).read_text()
        prefetched = list(out.glob("prefetching-*"))
        assert bool(prefetched) == bool(depth)  # the option reached the workers
    assert outputs[0] == outputs[2]
    assert outputs[2].splitlines()[7] == "f007.txt 7"


@pytest.mark.slow
def test_a_tabular_job_gets_what_read_split_gives(s3_client, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    n = 400
    ints = rng.integers(0, 50, n).astype(object)
    ints[[13, 250]] = ""  # float64 in the splits holding these rows only
    frame = pd.DataFrame(
        {
            "i": ints,
            "f": np.round(rng.normal(size=n), 4),
            "t": rng.choice(["a", "b c", "", "NA"], n),
            "b": rng.choice(["True", "False"], n),
        }
    )
    inputs = tmp_path / "in"
    inputs.mkdir()
    frame.to_csv(inputs / "data.csv", index=False)
    dep = write_deployment(tmp_path / "d", TABULAR_SCRIPT, settings={"mini_batch_size": "9 rows"})
    result = daskscore.run(dep, inputs, tmp_path / "out", client=s3_client)
    assert result.status == "Completed" and result.succeeded_items == n
    splits = tabular.plan_splits([str(inputs / "data.csv")], ("rows", 9))
    for split in splits:
        with open(tmp_path / "out" / f"mb{split.first_row:06d}.pkl", "rb") as fh:
            got = pickle.load(fh)
        pd.testing.assert_frame_equal(got, tabular.read_split(split), check_exact=True)


def test_small_csv_splits_are_cut_in_the_tasks_thread(tmp_path: Path, monkeypatch) -> None:
    """A task of small CSV splits cuts them from its parsed runs in its own thread (a second
    thread doing pandas work would only take the GIL from run()); big splits, Parquet row
    groups and downloads are fetched ahead on a thread.  The frames are the same either way."""
    path = tmp_path / "t.csv"
    path.write_text("a,b\n" + "".join(f"{i},{i / 4}\n" for i in range(300)))
    splits = tabular.plan_splits([str(path)], ("rows", 10))
    inputs = TaskInputs(list(splits), depth=2, max_bytes=1 << 30)
    assert inputs.prefetcher is None
    small = [inputs.first(i)().argument for i in range(len(splits))]
    inputs.close()
    monkeypatch.setattr(prefetch, "MIN_PREFETCH_SPLIT_BYTES", 1)  # (as if they were big)
    inputs = TaskInputs(list(splits), depth=2, max_bytes=1 << 30)
    assert inputs.prefetcher is not None
    big = [inputs.first(i)().argument for i in range(len(splits))]
    inputs.close()
    for a, b, split in zip(small, big, splits, strict=True):
        pd.testing.assert_frame_equal(a, tabular.read_split(split), check_exact=True)
        pd.testing.assert_frame_equal(b, a, check_exact=True)
    remote = TaskInputs([["s3://b/k1"], ["s3://b/k2"]], 0, 1 << 30)  # (depth 0: no thread)
    assert remote.prefetcher is None
    assert prefetch._worth_a_thread([["s3://b/k1"], ["s3://b/k2"]])


#: run() kills its worker process the first time it is called (as the OOM killer would)
DIES_ONCE = """
    import os

    def init():
        pass

    def run(mini_batch):
        if not os.path.exists(os.environ["DIED"]):
            open(os.environ["DIED"], "w").close()
            os._exit(1)
        return [os.path.basename(p) for p in mini_batch]
"""


@pytest.mark.slow
def test_a_killed_worker_leaves_no_downloaded_inputs(moto_s3, tmp_path: Path) -> None:
    """The downloads of a mini-batch whose worker process died in run() are in that worker's
    local directory, which goes with it: none is left anywhere under TMPDIR after the job."""
    from storage_emulators import make_bucket

    root = make_bucket(moto_s3)
    fs, base = fsspec.core.url_to_fs(root, **moto_s3["storage_options"])
    fs.pipe({f"{base}/in/f{i:03d}.txt": f"v {i}\n".encode() for i in range(6)})
    fs.invalidate_cache()
    settings = {"mini_batch_size": 2, "environment_variables": {"DIED": str(tmp_path / "died")}}
    dep = write_deployment(tmp_path / "d", DIES_ONCE, settings=settings)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    out = tmp_path / "out"
    proc = run_cli(
        *("run", str(dep), "-i", f"{root}/in", "-o", str(out), "--workers", "2"),
        *("--no-progress", "--no-dashboard"),
        env={"TMPDIR": str(scratch)},
    )
    assert proc.returncode == 0, show(proc)
    assert (tmp_path / "died").exists()  # (a worker process did die in run())
    rows = (out / "predictions.csv").read_text().split()
    assert sorted(rows) == [f"f{i:03d}.txt" for i in range(6)], show(proc)
    assert not list(scratch.rglob(f"{SCRATCH_PREFIX}*")), show(proc)
