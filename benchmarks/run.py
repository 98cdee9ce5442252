"""daskscore benchmark harness: daskscore's CLI against the two ways people score without it.

What is measured, and why
-------------------------
For each workload, on the same generated inputs and in one invocation, three ways to score
every file with the same Azure ML scoring script (``workloads/<name>/code/score.py``):

``seq``        one fresh Python process: ``init()``, then ``run()`` per mini-batch of sorted files
               (``baseline.py seq``): what daskscore must beat to be worth using;
``pool``       ``multiprocessing.Pool(2)`` in a fresh process, ``initializer=init``, ``imap`` over
               the mini-batches, one torch thread per process (``baseline.py pool``): a strong
               hand-written baseline, which daskscore should roughly match despite doing more
               (retries, logs, a ledger, a cluster that could be remote);
``daskscore``  ``daskscore run DEPLOYMENT --input ... --output ... --overwrite --no-progress`` as
               a subprocess, end to end: interpreter start, cluster start and shutdown included,
               because that is what a user waits for.

Runs are interleaved (seq, pool, daskscore, seq, ...), so a machine that slows down affects all
three alike, and repeated ``--repeats`` times; the tables show medians of the wall time of the
whole subprocess.  While a run lasts, its process tree is polled every 50 ms with psutil for
peak RSS: the *driver* is the process we started; *workers* are its descendants started by
multiprocessing (daskscore's spawned Dask workers, the Pool's forked workers);
``resource_tracker`` is skipped.  All outputs must be byte-identical (same lines, same order)
to the first run's, or the harness stops with the first differing line.

Workloads: W1 (100,000 tiny CSV files, trivial scorer: per-file overhead), W1H (W1 with twice
the per-file cost), W2 (10,000 images, a small CNN), SCALING (CPU-bound, 1 vs 2 workers),
MEMORY (5,000,000 predicted rows as DataFrames: memory of driver and workers), SKEW (1% of the
files cost 20x: load balancing), REMOTE (the inputs in S3 behind 30 ms of latency per request,
against the same files on local disk), TABULAR-100K (one 1,000,000-row CSV in mini-batches of
10 rows, against a ``read_csv(chunksize=10)`` loop), LIST-1M (1,000,000 empty files: the
driver's memory and listing), WARM (the second job on a warm ``daskscore cluster``: how soon
its first mini-batch starts).
Data is generated deterministically under ``_data/`` (once; a ``.params.json`` marker holds
the parameters); outputs and ``results.json`` go to ``_runs/``.  See ``README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import yaml

HERE = Path(__file__).resolve().parent
WORKLOADS_DIR = HERE / "workloads"
RUNS_DIR = HERE / "_runs"
RESULTS_MD = HERE / "RESULTS.md"
POLL_S = 0.05
MB = 1024 * 1024
FILES_PER_FOLDER = 1000
#: Bump when the generators change, so that old data is regenerated.
DATA_VERSION = 3
RUN_TIMEOUT_S = 3600
METHOD_LABELS = {
    "seq": "sequential",
    "pool": "Pool(2)",
    "pool-tuned": "Pool(2), tuned chunksize",
    "daskscore": "daskscore",
    "daskscore-w1": "daskscore --workers 1",
    "seq-1t": "sequential, 1 torch thread",
    "chunks": "read_csv(chunksize) loop",
    "daskscore-remote": "daskscore, S3 + 30 ms",
    "warm-1": "daskscore, warm, 1st run",
    "warm-2": "daskscore, warm, 2nd run",
}
#: the methods that are a ``daskscore run`` (a job summary, a ledger of mini-batches)
DASKSCORE_METHODS = ("daskscore", "daskscore-w1", "daskscore-remote", "warm-1", "warm-2")


class BenchmarkError(RuntimeError):
    """A run failed, or its output differs from the others'."""


class WorkloadSkipped(Exception):
    """A workload cannot run here (a missing optional package, a daskscore command not there
    yet): reported, not a failure."""


@dataclass(frozen=True)
class Workload:
    """One benchmark: its scoring script, its inputs, the sizes and the methods compared."""

    name: str
    folder: str
    kind: str  # the generator: "csv", "npy", "seed", "table" (rows of one CSV) or "empty"
    full: int
    quick: int
    seed: int
    rows_per_file: int = 1
    slow_fraction: float = 0.0
    methods: tuple[str, ...] = ("seq", "pool", "pool-tuned", "daskscore")
    #: another workload's data folder to share (same generator, same size)
    data: str | None = None
    #: shown in the per-method details table instead of the main timing table
    details: bool = False
    #: what the workload needs around its runs: "s3" (moto and the delaying proxy) or
    #: "cluster" (``daskscore cluster``)
    needs: str | None = None

    @property
    def deployment(self) -> Path:
        return WORKLOADS_DIR / self.folder / "deployment.yml"


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("W1", "w1", "csv", 100_000, 500, seed=101),
        Workload("W1L", "w1-light", "csv", 100_000, 500, seed=101, data="w1"),
        # seq-1t: the sequential loop with one torch thread, for reference (not a target)
        Workload(
            "W2",
            "w2",
            "npy",
            10_000,
            200,
            seed=202,
            methods=("seq", "seq-1t", "pool", "pool-tuned", "daskscore"),
        ),
        Workload(
            "SCALING",
            "scaling",
            "seed",
            4_000,  # ~20 s of one core: start-up (~1.5 s) must not decide the 1-vs-2 ratio
            200,
            seed=303,
            methods=("seq", "pool", "pool-tuned", "daskscore", "daskscore-w1"),
        ),
        Workload("MEMORY", "memory", "seed", 10_000, 200, seed=404, rows_per_file=500),
        Workload("SKEW", "skew", "csv", 20_000, 1_000, seed=505, slow_fraction=0.01),
        # W1's files, a heavier scorer (about twice W1's per-file cost): W1's targets
        Workload("W1H", "w1-heavy", "csv", 100_000, 500, seed=101, data="w1"),
        # the same tiny files on local disk and in S3 (moto) behind a 30 ms-per-request proxy
        Workload(
            "REMOTE",
            "remote",
            "seed",
            2_000,  # 10 s of run() sleeps on two workers
            100,
            seed=606,
            methods=("daskscore", "daskscore-remote"),
            details=True,
            needs="s3",
        ),
        # files = rows of one CSV file; mini_batch_size "10 rows"
        Workload(
            "TABULAR-100K",
            "tabular",
            "table",
            1_000_000,
            10_000,
            seed=707,
            methods=("chunks", "daskscore"),
            details=True,
        ),
        Workload(
            "LIST-1M",
            "list",
            "empty",
            1_000_000,
            10_000,
            seed=808,
            methods=("seq", "daskscore"),
            details=True,
        ),
        Workload(
            "WARM",
            "warm",
            "seed",
            1_000,
            100,
            seed=909,
            methods=("daskscore", "warm-1", "warm-2"),
            details=True,
            needs="cluster",
        ),
    )
}


@dataclass
class Run:
    """One measured subprocess."""

    workload: str
    method: str
    repeat: int
    files: int
    wall_s: float
    rc: int
    driver_peak_mb: float
    worker_peak_mb: float | None  # None: no worker seen in two samples (none, or one < 0.1 s)
    workers_seen: int
    output: str = ""
    sha256: str = ""
    lines: int = 0
    #: CPU seconds (user + system) of the process started, its children excluded: the
    #: driver's own CPU (read from /proc after it exited, before it was reaped)
    driver_cpu_s: float | None = None
    #: peak RSS of each worker process (MB), largest first
    worker_peaks_mb: list[float] = field(default_factory=list)
    #: the processes sampled as possible workers (pid, ppid, samples, peak, command)
    sampled: list[dict[str, Any]] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    """How one workload is run: its inputs, how often, where to, with which options."""

    wl: Workload
    inputs: Path
    files: int
    repeats: int
    out: Path
    seq_torch_threads: int | None = None
    #: REMOTE: the inputs' URL, and the environment that reaches them
    remote_input: str | None = None
    env: dict[str, str] | None = None
    #: REMOTE: the proxy in front of S3 (its request count)
    proxy: Any = None
    #: REMOTE: moto's server process (its CPU time is the storage's, on the same cores)
    storage_pid: int | None = None


# --------------------------------------------------------------------------- data generation


def input_path(folder: Path, index: int, name: str) -> Path:
    """``d<index // 1000>/<name>``: subfolders of 1000 files, path order = index order."""
    return folder / f"d{index // FILES_PER_FOLDER:03d}" / name


def gen_csv(folder: Path, n: int, seed: int, slow_fraction: float) -> None:
    """CSV files of 20 rows x 8 floats (header c0..c7); ``slow_fraction`` named ``-slow``."""
    rng = np.random.default_rng(seed)
    slow = set(rng.choice(n, size=round(n * slow_fraction), replace=False).tolist())
    header = ",".join(f"c{j}" for j in range(8)) + "\n"
    row = ",".join(["%.4f"] * 8)
    for start in range(0, n, FILES_PER_FOLDER):
        count = min(FILES_PER_FOLDER, n - start)
        values = np.round(rng.standard_normal((count, 20, 8)) * 10.0, 4).tolist()
        input_path(folder, start, "").mkdir(parents=True, exist_ok=True)
        for k, table in enumerate(values):
            i = start + k
            name = f"{i:06d}-slow.csv" if i in slow else f"{i:06d}.csv"
            body = "\n".join(row % tuple(r) for r in table)
            input_path(folder, i, name).write_text(header + body + "\n", encoding="ascii")


def gen_npy(folder: Path, n: int, seed: int, slow_fraction: float) -> None:
    """float32 images 1x64x64, one ``.npy`` each: noise, scaled and shifted, plus a gradient.

    The random scale, offset and gradient make the CNN's predictions vary between images (plain
    noise would give every image the same class), so that the output comparison means more.
    """
    rng = np.random.default_rng(seed)
    ramp_y, ramp_x = np.mgrid[0:64, 0:64].astype(np.float32) / 63
    for start in range(0, n, FILES_PER_FOLDER):
        count = min(FILES_PER_FOLDER, n - start)
        noise = rng.standard_normal((count, 1, 64, 64), dtype=np.float32)
        scale, offset, gy, gx = (
            rng.uniform(lo, hi, (count, 1, 1, 1)).astype(np.float32)
            for lo, hi in ((0.2, 3.0), (-4.0, 4.0), (-4.0, 4.0), (-4.0, 4.0))
        )
        images = (noise * scale + offset + gy * ramp_y + gx * ramp_x).astype(np.float32)
        input_path(folder, start, "").mkdir(parents=True, exist_ok=True)
        for k in range(count):
            np.save(input_path(folder, start + k, f"{start + k:06d}.npy"), images[k])


def gen_seed(folder: Path, n: int, seed: int, slow_fraction: float) -> None:
    """Tiny text files holding one integer (the scorer's seed)."""
    seeds = np.random.default_rng(seed).integers(0, 2**31 - 1, size=n).tolist()
    for i, value in enumerate(seeds):
        if i % FILES_PER_FOLDER == 0:
            input_path(folder, i, "").mkdir(parents=True, exist_ok=True)
        input_path(folder, i, f"{i:06d}.txt").write_text(f"{value}\n", encoding="ascii")


def gen_table(folder: Path, n: int, seed: int, slow_fraction: float) -> None:
    """One CSV file of ``n`` rows: ``id`` (the row number), ``x`` (a float, 4 decimals),
    ``y`` (an integer), written in blocks of 100,000 rows."""
    rng = np.random.default_rng(seed)
    path = input_path(folder, 0, "table.csv")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="ascii", newline="\n") as fh:
        fh.write("id,x,y\n")
        for start in range(0, n, 100_000):
            count = min(100_000, n - start)
            x = np.round(rng.standard_normal(count) * 100.0, 4).tolist()
            y = rng.integers(0, 1000, count).tolist()
            rows = zip(range(start, start + count), x, y, strict=True)
            fh.write("".join(f"{i},{a:.4f},{b}\n" for i, a, b in rows))


def gen_empty(folder: Path, n: int, seed: int, slow_fraction: float) -> None:
    """``n`` zero-byte files (``000000.txt``, ...)."""
    for i in range(n):
        if i % FILES_PER_FOLDER == 0:
            input_path(folder, i, "").mkdir(parents=True, exist_ok=True)
        os.close(os.open(input_path(folder, i, f"{i:06d}.txt"), os.O_CREAT | os.O_WRONLY, 0o644))


GENERATORS: dict[str, Callable[[Path, int, int, float], None]] = {
    "csv": gen_csv,
    "npy": gen_npy,
    "seed": gen_seed,
    "table": gen_table,
    "empty": gen_empty,
}


def ensure_data(wl: Workload, n: int, data_dir: Path) -> Path:
    """The workload's input folder, generated unless its marker holds the same parameters."""
    folder = data_dir / f"{wl.data or wl.folder}-n{n}"
    marker = folder / ".params.json"  # a dot-file: skipped by daskscore and the baselines
    params = {  # what the files are made of: workloads sharing data (W1, W1L) share it
        "data": wl.data or wl.folder,
        "kind": wl.kind,
        "files": n,
        "seed": wl.seed,
        "slow_fraction": wl.slow_fraction,
        "version": DATA_VERSION,
    }
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == params:
        return folder
    if folder.exists():
        shutil.rmtree(folder)  # an interrupted or outdated generation of this same folder
    started = time.perf_counter()
    GENERATORS[wl.kind](folder, n, wl.seed, wl.slow_fraction)
    marker.write_text(json.dumps(params, indent=1), encoding="utf-8")
    unit = "rows" if wl.kind == "table" else "files"
    print(f"[{wl.name}] generated {n:,} {unit} in {folder} ({time.perf_counter() - started:.1f} s)")
    return folder


# --------------------------------------------------------------------------- measuring


@dataclass
class Sampled:
    """A process that looked like a worker: its parent when first seen, how many samples
    saw it, its peak RSS and its command line."""

    ppid: int
    command: str
    samples: int = 0
    peak: int = 0


class PeakSampler(threading.Thread):
    """Polls a process tree's RSS every :data:`POLL_S`: peak of the root, peak of any worker."""

    def __init__(self, root: psutil.Process) -> None:
        super().__init__(daemon=True)
        self.root = root
        #: read again at each sample: right after Popen the child may not have exec'd yet,
        #: and its command line is still this harness's
        self.root_cmdline: list[str] = []
        self.driver = 0
        self.seen: dict[int, Sampled] = {}
        self.kinds: dict[int, str] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.sample()
            self.done.wait(POLL_S)

    def sample(self) -> None:
        try:
            self.driver = max(self.driver, self.root.memory_info().rss)
            self.root_cmdline = self.root.cmdline()
            children = self.root.children(recursive=True)
        except psutil.Error:
            return
        for child in children:
            try:
                if self.kind(child) != "worker":
                    continue
                rss = child.memory_info().rss
                # parent as first seen: at the end a worker may outlive its fork server and
                # be re-parented to init
                proc = self.seen.get(child.pid)
                if proc is None:
                    command = " ".join(child.cmdline())[:120]
                    proc = self.seen[child.pid] = Sampled(child.ppid(), command)
                proc.samples += 1
                proc.peak = max(proc.peak, rss)
            except psutil.Error:
                continue

    @property
    def worker_peaks(self) -> list[int]:
        """Peak RSS of each worker process, largest first.

        A worker is seen in two samples at least: a child caught between its ``fork`` and
        its ``exec`` (``uname -p`` run by ``platform``, say) has its parent's command line
        for a moment.  A process that forked workers (daskscore's fork server) is not one,
        and where there is such a server, the workers are its children: another copy of the
        command beside it is not a worker (the command's own ``uname -p``, forked for Dask's
        version report: seen once for 0.65 s before its ``exec``, in a loaded test run).
        """
        confirmed = {pid for pid, proc in self.seen.items() if proc.samples >= 2}
        forking = {self.seen[pid].ppid for pid in confirmed} & set(self.seen)
        workers = confirmed - forking
        if forking:
            workers = {pid for pid in workers if self.seen[pid].ppid in forking}
        return sorted((self.seen[pid].peak for pid in workers), reverse=True)

    @property
    def processes(self) -> list[dict[str, Any]]:
        """Every process that looked like a worker: what the worker count is made of."""
        return [
            {
                "pid": pid,
                "ppid": proc.ppid,
                "samples": proc.samples,
                "peak_mb": round(proc.peak / MB, 1),
                "command": proc.command,
            }
            for pid, proc in self.seen.items()
        ]

    @property
    def worker(self) -> int:
        return max(self.worker_peaks, default=0)

    def kind(self, proc: psutil.Process) -> str:
        """``worker`` (spawned or forked by multiprocessing) or ``other``; cached by pid."""
        if proc.pid not in self.kinds:
            argv = proc.cmdline()
            cmd = " ".join(argv)
            spawned = "multiprocessing" in cmd and (
                "spawn_main" in cmd or "from multiprocessing" in cmd
            )
            forked = argv == self.root_cmdline
            worker = (spawned or forked) and "resource_tracker" not in cmd
            self.kinds[proc.pid] = "worker" if worker else "other"
        return self.kinds[proc.pid]

    @property
    def workers_seen(self) -> int:
        return len(self.worker_peaks)


def kill_tree(proc: psutil.Process) -> None:
    """Kill a process we started and its descendants, by pid."""
    try:
        family = proc.children(recursive=True) + [proc]
    except psutil.Error:
        family = [proc]
    for member in family:
        try:
            member.kill()
        except psutil.Error:
            pass


@dataclass
class Measured:
    """One subprocess, measured: wall time, exit code, RSS peaks, the driver's own CPU."""

    wall: float
    rc: int
    sampler: PeakSampler
    #: epoch seconds just before the process was started (to place the job's own timestamps)
    started_at: float
    #: user + system CPU seconds of the process itself (its children excluded)
    cpu_s: float | None


def measure(
    cmd: list[str], log: Path, env: dict[str, str] | None = None, timeout: float = RUN_TIMEOUT_S
) -> Measured:
    """Run ``cmd`` (output to ``log``, ``env`` added to the environment) and measure it.

    The process's own CPU time is read once it has exited but before it is reaped
    (``waitid(WNOWAIT)``: a zombie's ``/proc/<pid>/stat`` still holds it), so it is exact and
    excludes its children (daskscore's workers), unlike ``RUSAGE_CHILDREN``, which would add
    every descendant the process waited for.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **env} if env else None
    with open(log, "wb") as fh:
        started_at = time.time()
        started = time.perf_counter()
        proc = psutil.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=HERE, env=full_env)
        sampler = PeakSampler(proc)
        sampler.start()
        timer = threading.Timer(timeout, kill_tree, (proc,))
        timer.start()
        cpu_s = None
        try:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
            wall = time.perf_counter() - started
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                cpu_s = round(times.user + times.system, 3)
            rc = proc.wait()
        finally:
            timer.cancel()
    sampler.done.set()
    sampler.join()
    return Measured(wall, rc, sampler, started_at, cpu_s)


def file_digest(path: Path) -> tuple[str, int]:
    """sha256 and line count of a file."""
    digest, lines = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
            lines += chunk.count(b"\n")
    return digest.hexdigest(), lines


# --------------------------------------------------------------------------- the three methods


def daskscore_command() -> list[str]:
    """The ``daskscore`` console script next to this interpreter (no pyenv shim), or ``-m``."""
    script = Path(sys.executable).with_name("daskscore")
    if script.is_file():
        return [str(script)]
    found = shutil.which("daskscore")
    return [found] if found else [sys.executable, "-m", "daskscore"]


def deployment_settings(wl: Workload) -> tuple[Path, int, int]:
    """The scoring script, ``mini_batch_size`` (files, or rows: ``"10 rows"``) and
    ``max_concurrency_per_instance``."""
    doc = yaml.safe_load(wl.deployment.read_text(encoding="utf-8"))
    code = doc["code_configuration"]
    settings = doc.get("settings", {})
    script = wl.deployment.parent / code["code"] / code["scoring_script"]
    size = str(settings["mini_batch_size"]).split()[0]
    return script, int(size), int(settings["max_concurrency_per_instance"])


def command(plan: Plan, method: str, out: Path) -> tuple[list[str], Path]:
    """The command line of one method, and the append_row file it writes."""
    wl = plan.wl
    if method in DASKSCORE_METHODS:
        inputs = plan.remote_input if method == "daskscore-remote" else str(plan.inputs)
        cmd = [*daskscore_command(), "run", str(wl.deployment), "--input", str(inputs)]
        cmd += ["--output", str(out), "--overwrite", "--no-progress"]
        if method == "daskscore-w1":
            cmd += ["--workers", "1"]
        return cmd, out / "predictions.csv"
    script, mini_batch_size, processes = deployment_settings(wl)
    out.mkdir(parents=True, exist_ok=True)
    mode = {"pool": "pool", "chunks": "chunks"}.get(method.split("-")[0], "seq")
    cmd = [sys.executable, str(HERE / "baseline.py"), mode, "--script", str(script)]
    if method == "pool-tuned":
        cmd += ["--chunksize", "auto"]
    cmd += ["--input", str(plan.inputs), "--output", str(out / "predictions.csv")]
    cmd += ["--mini-batch-size", str(mini_batch_size), "--processes", str(processes)]
    cmd += ["--timings", str(out / "timings.json")]
    if method == "seq" and plan.seq_torch_threads:
        cmd += ["--torch-threads", str(plan.seq_torch_threads)]
    if method == "seq-1t":
        cmd += ["--torch-threads", "1"]
    return cmd, out / "predictions.csv"


def run_method(plan: Plan, method: str, k: int) -> Run:
    """Measure one method once; fail on a non-zero exit or a job that did not complete."""
    name, out = plan.wl.name, plan.out / plan.wl.name / f"r{k}"
    # (WARM's two runs write one output folder, as a user runs a deployment again: the warm
    # key holds the output folder, which init() may keep)
    job = "warm" if method.startswith("warm-") else method
    cmd, predictions = command(plan, method, out / job)
    log = out / f"{method}.log"
    remote = method == "daskscore-remote"
    requests = plan.proxy.requests if remote and plan.proxy else 0
    env = (plan.env if remote else None) or {}
    if method in DASKSCORE_METHODS:
        env = {**env, **cluster_env(plan)}
    busy, storage = machine_cpu_s(), storage_cpu_s(plan) if remote else None
    measured = measure(cmd, log, env)
    busy, storage = machine_cpu_s() - busy, storage_cpu_s(plan) - storage if remote else None
    sampler, rc = measured.sampler, measured.rc
    driver = round(sampler.driver / MB, 1)
    worker = round(sampler.worker / MB, 1) if sampler.worker else None
    run = Run(name, method, k, plan.files, round(measured.wall, 3), rc, driver, worker, 0)
    run.output = str(predictions)
    run.driver_cpu_s = measured.cpu_s
    run.workers_seen = sampler.workers_seen
    run.worker_peaks_mb = [round(rss / MB, 1) for rss in sampler.worker_peaks]
    run.sampled = sampler.processes
    if rc != 0:
        raise BenchmarkError(f"{name}/{method} exited with {rc}; see {log}:\n{tail(log)}")
    run.detail = run_detail(method, out / job, measured.started_at)
    if method in DASKSCORE_METHODS and not method.startswith("warm"):
        if run.detail.get("warm_workers"):
            raise BenchmarkError(
                f"{name}/{method} ran on a warm cluster (its summary says warm_workers): "
                f"not the cold run it should measure; see {out / job}"
            )
    if remote and plan.proxy:
        run.detail["proxy_requests"] = plan.proxy.requests - requests
    run.detail["machine_cpu_s"] = round(busy, 2)  # (every process: the run's, and the rest)
    if storage is not None:
        run.detail["storage_cpu_s"] = round(storage, 2)
    status = run.detail.get("status", "Completed")
    if status != "Completed":
        raise BenchmarkError(f"{name}/{method}: job status {status}; see {out / job}")
    run.sha256, run.lines = file_digest(predictions)
    return run


def machine_cpu_s() -> float:
    """CPU seconds this machine has been busy so far, all cores and processes together
    (``/proc/stat``: user, nice, system, irq, softirq, steal); 0.0 where it cannot say."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = [int(v) for v in fh.readline().split()[1:9]]
    except (OSError, ValueError):
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def storage_cpu_s(plan: Plan) -> float:
    """REMOTE: CPU seconds used so far by moto's server and by this harness (whose threads are
    the latency proxy): the storage's share of the machine's two cores."""
    own = os.times()
    total = own.user + own.system
    if plan.storage_pid is not None:  # (psutil.Process(None) would be this process again)
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(plan.storage_pid).cpu_times()
            total += times.user + times.system
    return total


def run_detail(method: str, out: Path, started_at: float) -> dict[str, Any]:
    """daskscore's job_summary.json figures, or a baseline's own phase timings.

    For daskscore, also ``first_batch_s``: from the command's start to the start of its
    first mini-batch (the earliest ``start`` in ``processed_mini-batches.csv``, written by
    the workers, in milliseconds; same machine, same clock).
    """
    if method in DASKSCORE_METHODS:
        summary = json.loads((out / "job_summary.json").read_text(encoding="utf-8"))
        keys = ("status", "duration_s", "total_items", "succeeded_items", "rows_written")
        keys += ("total_mini_batches", "phases", "warm_workers")
        detail = {key: summary.get(key) for key in keys}
        detail["score_s"] = (summary.get("phases") or {}).get("score")
        first = first_mini_batch_start(out / "logs" / "sys" / "job_report")
        detail["first_batch_s"] = None if first is None else round(first - started_at, 3)
        return detail
    timings = out / "timings.json"
    return json.loads(timings.read_text(encoding="utf-8")) if timings.is_file() else {}


def first_mini_batch_start(report_dir: Path) -> float | None:
    """Epoch seconds of the earliest mini-batch ``start`` in the job's processed-mini-batches
    report, or None without one."""
    path = report_dir / "processed_mini-batches.csv"
    if not path.is_file():
        return None
    with open(path, newline="", encoding="utf-8") as fh:
        starts = [row["start"] for row in csv.DictReader(fh) if row.get("start")]
    if not starts:
        return None
    return min(dt.datetime.fromisoformat(s).timestamp() for s in starts)


def tail(path: Path, lines: int = 25) -> str:
    """The last lines of a log file."""
    text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(text[-lines:])


# --------------------------------------------------------------------------- one workload


def check_same(ref: Run, run: Run, expected_lines: int) -> None:
    """Fail loudly unless ``run``'s output is byte-identical to ``ref``'s and has every row."""
    if run.lines != expected_lines:
        raise BenchmarkError(
            f"{run.workload}/{run.method}: {run.lines:,} output lines, expected "
            f"{expected_lines:,} ({run.output})"
        )
    if run.sha256 == ref.sha256:
        return
    where = first_difference(Path(ref.output), Path(run.output))
    raise BenchmarkError(
        f"{run.workload}: outputs differ: {run.method} (repeat {run.repeat}) {run.output} vs "
        f"{ref.method} (repeat {ref.repeat}) {ref.output}: {where}"
    )


def first_difference(a: Path, b: Path) -> str:
    """Where two text files first differ, for the error message."""
    with open(a, encoding="utf-8") as fa, open(b, encoding="utf-8") as fb:
        for number, (la, lb) in enumerate(zip(fa, fb, strict=False), start=1):
            if la != lb:
                return f"line {number}: {la.rstrip()!r} != {lb.rstrip()!r}"
    return "one file is a prefix of the other (different line counts)"


def run_workload(plan: Plan) -> list[Run]:
    """All methods, interleaved, ``repeats`` times; every output checked against the first.

    WARM's ``warm-1`` and ``warm-2`` run on a ``daskscore cluster`` started just before the
    first and stopped just after the second, in each repeat (its other methods run before, with
    no cluster up).
    """
    runs: list[Run] = []
    for k in range(plan.repeats):
        with contextlib.ExitStack() as cluster:
            for method in plan.wl.methods:
                started_s = None
                if method == "warm-1":
                    started_s = cluster.enter_context(warm_cluster(plan, k))
                run = run_method(plan, method, k)
                if started_s is not None:
                    run.detail["cluster_start_s"] = started_s
                if method == "warm-2":
                    cluster.close()
                    if run.detail.get("warm_workers") is not True:
                        raise BenchmarkError(
                            f"{plan.wl.name}/{method}: the job summary does not say "
                            f'"warm_workers": true (it says {run.detail.get("warm_workers")!r}): '
                            "the run did not use the warm cluster"
                        )
                check_same(runs[0] if runs else run, run, plan.files * plan.wl.rows_per_file)
                runs.append(run)
                show_run(run, k, plan.repeats)
    return runs


def show_run(run: Run, k: int, repeats: int) -> None:
    """One line per measured run."""
    extra = ""
    if run.detail.get("first_batch_s") is not None:
        extra = f"  first mini-batch at {run.detail['first_batch_s']:.3f} s"
    if run.detail.get("proxy_requests") is not None:
        extra += f"  {run.detail['proxy_requests']:,} requests via the proxy"
    if run.detail.get("storage_cpu_s") is not None:
        extra += (
            f"  storage + proxy CPU {run.detail['storage_cpu_s']:.1f} s, machine CPU "
            f"{run.detail['machine_cpu_s']:.1f} s"
        )
    print(
        f"[{run.workload}] repeat {k + 1}/{repeats} {METHOD_LABELS[run.method]:<26} "
        f"{run.wall_s:8.2f} s  driver {run.driver_peak_mb:7.1f} MB  "
        f"workers {fmt(run.worker_peak_mb, 1):>7} MB  output ok ({run.lines:,} lines){extra}",
        flush=True,
    )


# --------------------------------------------------------------------------- WARM: a warm cluster


def cluster_env(plan: Plan) -> dict[str, str]:
    """Where ``daskscore cluster`` keeps its state, for every daskscore command the harness
    runs: a file of this run's own, so that only WARM's cluster is ever found, never a warm
    cluster someone else started on this machine."""
    return {"DASKSCORE_CLUSTER_STATE": str(plan.out / "warm-cluster.json")}


def cluster_command_missing() -> str | None:
    """Why ``daskscore cluster`` cannot be used here, or None when it can."""
    try:
        proc = subprocess.run(
            [*daskscore_command(), "cluster", "--help"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if proc.returncode == 0:
        return None
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit code {proc.returncode}"


@contextlib.contextmanager
def warm_cluster(plan: Plan, k: int) -> Iterator[float]:
    """``daskscore cluster start --workers 2`` until the ``with`` ends, then ``cluster stop``;
    yields the seconds the start command took."""
    base = plan.out / plan.wl.name / f"r{k}"
    start = [*daskscore_command(), "cluster", "start", "--workers", "2"]
    measured = measure(start, base / "cluster-start.log", cluster_env(plan), timeout=300)
    try:
        if measured.rc != 0:
            log = base / "cluster-start.log"
            raise BenchmarkError(
                f"{plan.wl.name}: `daskscore cluster start` exited with {measured.rc}; see "
                f"{log}:\n{tail(log)}"
            )
        yield round(measured.wall, 3)
    finally:
        stop = [*daskscore_command(), "cluster", "stop"]
        stopped = measure(stop, base / "cluster-stop.log", cluster_env(plan), timeout=120)
        if stopped.rc != 0:
            print(
                f"[{plan.wl.name}] warning: `daskscore cluster stop` exited with {stopped.rc}; "
                f"see {base / 'cluster-stop.log'}",
                file=sys.stderr,
                flush=True,
            )


# --------------------------------------------------------------------------- REMOTE: S3 + latency

#: the latency the proxy adds to every request
REMOTE_DELAY_S = 0.030
S3_KEY = S3_SECRET = "testing"
S3_REGION = "us-east-1"
#: moto's S3 server on a port of its choosing (printed on the first line), as
#: tests/storage_emulators.py runs it: less moto's own ``Server`` header (werkzeug sends one
#: too, and aiohttp's strict parser rejects a response with two: getmoto/moto#9930)
MOTO_SERVER = """
import signal, sys
from werkzeug.serving import make_server
from moto.server import DomainDispatcherApplication, create_backend_app

moto_app = DomainDispatcherApplication(create_backend_app)

def app(environ, start_response):
    def start(status, headers, exc_info=None):
        headers = [h for h in headers if h[0].lower() != "server"]
        return start_response(status, headers, exc_info)
    return moto_app(environ, start)

server = make_server(sys.argv[1], 0, app, threaded=True)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print(server.server_port, flush=True)
server.serve_forever()
"""


class DelayProxy:
    """A tiny threaded TCP proxy to ``upstream`` that holds each HTTP request ``delay_s``
    seconds before passing it on: network latency, added to a local S3 server.

    A new request is the first bytes from the client on a connection, or the first after the
    server has answered (HTTP/1.1 clients send the next request on a kept-alive connection
    only once the previous answer is in).  Used as a context manager; ``url`` is its address.
    """

    def __init__(self, upstream: tuple[str, int], delay_s: float) -> None:
        self.upstream, self.delay_s = upstream, delay_s
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.requests = 0
        self._closed = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True, name="delay-proxy").start()

    def __enter__(self) -> DelayProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed.set()
        self.server.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream)
        except OSError:
            client.close()
            return
        with self._lock:
            self._sockets.update((client, upstream))
        answered = threading.Event()
        answered.set()  # the first bytes from the client start a request
        back = threading.Thread(target=self._pump_back, args=(upstream, client, answered))
        back.daemon = True
        back.start()
        try:
            while data := client.recv(1 << 16):
                if answered.is_set():
                    answered.clear()
                    with self._lock:
                        self.requests += 1
                    time.sleep(self.delay_s)
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                upstream.shutdown(socket.SHUT_WR)
            back.join()
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.close()
            with self._lock:
                self._sockets.difference_update((client, upstream))

    @staticmethod
    def _pump_back(
        upstream: socket.socket, client: socket.socket, answered: threading.Event
    ) -> None:
        try:
            while data := upstream.recv(1 << 16):
                answered.set()
                client.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_WR)


@contextlib.contextmanager
def moto_server(log: Path) -> Iterator[tuple[str, int, int]]:
    """moto's S3 server on 127.0.0.1 (a port it picks); yields its address and process id;
    stopped after."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", MOTO_SERVER, "127.0.0.1"],
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            if not line.isdigit():
                proc.wait(10)
                raise BenchmarkError(f"moto's server did not start; see {log}:\n{tail(log)}")
            yield "127.0.0.1", int(line), proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def upload(folder: Path, endpoint: str, bucket: str) -> int:
    """Put every file under ``folder`` (dot-files excepted) into a new ``bucket``, keyed by
    its path relative to ``folder``; return how many."""
    from concurrent.futures import ThreadPoolExecutor

    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=S3_KEY,
        aws_secret_access_key=S3_SECRET,
        region_name=S3_REGION,
    )
    client.create_bucket(Bucket=bucket)
    files = [f for f in folder.rglob("*") if f.is_file() and not f.name.startswith(".")]

    def put(path: Path) -> None:
        key = path.relative_to(folder).as_posix()
        client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, files))
    return len(files)


@contextlib.contextmanager
def s3_inputs(plan: Plan) -> Iterator[Plan]:
    """REMOTE: the plan's inputs uploaded to moto's S3 server, reached through a
    :class:`DelayProxy`; yields the plan with the ``s3://`` URL and the ``AWS_*`` variables
    that reach it (given to the remote method's process only)."""
    from importlib.util import find_spec

    missing = [m for m in ("moto", "flask", "boto3", "s3fs") if find_spec(m) is None]
    if missing:
        raise WorkloadSkipped(
            f"needs moto[server] and s3fs (pip install 'moto[server]' s3fs); missing: "
            f"{', '.join(missing)}"
        )
    with moto_server(plan.out / plan.wl.name / "moto.log") as (host, port, pid):
        bucket = f"bench{uuid.uuid4().hex[:12]}"
        started = time.perf_counter()
        count = upload(plan.inputs, f"http://{host}:{port}", bucket)
        print(
            f"[{plan.wl.name}] uploaded {count:,} files to moto's S3 "
            f"({time.perf_counter() - started:.1f} s); every request delayed "
            f"{REMOTE_DELAY_S * 1000:.0f} ms",
            flush=True,
        )
        with DelayProxy((host, port), REMOTE_DELAY_S) as proxy:
            env = {
                "AWS_ACCESS_KEY_ID": S3_KEY,
                "AWS_SECRET_ACCESS_KEY": S3_SECRET,
                "AWS_DEFAULT_REGION": S3_REGION,
                "AWS_ENDPOINT_URL": proxy.url,
                "AWS_EC2_METADATA_DISABLED": "true",
            }
            yield replace(
                plan, remote_input=f"s3://{bucket}", env=env, proxy=proxy, storage_pid=pid
            )


# --------------------------------------------------------------------------- summary


@dataclass
class Check:
    """One target: a metric of a workload compared with a bound."""

    workload: str
    metric: str
    op: str
    bound: float
    value: float | None = None

    @property
    def verdict(self) -> str:
        if self.value is None:
            return "n/a"
        ok = {"<=": self.value <= self.bound, "<": self.value < self.bound}.get(
            self.op, self.value >= self.bound
        )
        return "PASS" if ok else "MISS"


TARGETS = (
    ("W1", "daskscore / sequential", "<=", 0.65),
    ("W1", "daskscore / Pool", "<=", 0.9),
    ("W2", "daskscore / sequential", "<=", 0.62),
    ("W2", "daskscore / Pool", "<=", 1.0),
    ("SCALING", "t1 / t2 (daskscore)", ">=", 1.8),
    ("MEMORY", "driver peak RSS (MB)", "<", 300),
    ("MEMORY", "worker peak RSS (MB)", "<", 500),
    ("SKEW", "daskscore / (sequential / 2)", "<=", 1.2),
    # the balancing alone: daskscore's scoring phase against the sequential loop's scoring
    # phase shared by two workers (start-up and shutdown of both left out)
    ("SKEW", "scoring phase / (sequential scoring / 2)", "<=", 1.2),
    ("W1H", "daskscore / sequential", "<=", 0.65),
    ("W1H", "daskscore / Pool", "<=", 0.9),
    ("REMOTE", "remote / local (daskscore)", "<=", 1.25),
    ("TABULAR-100K", "daskscore / read_csv loop", "<=", 0.3),
    ("TABULAR-100K", "driver CPU per mini-batch (us)", "<=", 20),
    ("TABULAR-100K", "driver peak RSS (MB)", "<=", 150),
    ("LIST-1M", "driver peak RSS (MB)", "<=", 400),
    # (from the job's start, as the target is worded; from the command's start it is the
    # table's "1st mini-batch at": the interpreter and the imports come first)
    ("WARM", "2nd warm run: job start to scoring (s)", "<=", 0.1),
)


def summarize(runs: list[Run]) -> dict[str, dict[str, Any]]:
    """Per workload: files, median wall time per method, peak RSS per method (max over runs)."""
    summary: dict[str, dict[str, Any]] = {}
    for run in runs:
        entry = summary.setdefault(
            run.workload, {"files": run.files, "walls": {}, "peaks": {}, "runs": {}}
        )
        entry["walls"].setdefault(run.method, []).append(run.wall_s)
        entry["runs"].setdefault(run.method, []).append(run)
        driver, worker = entry["peaks"].get(run.method, (0.0, None))
        if run.worker_peak_mb is not None and run.worker_peak_mb > (worker or 0.0):
            worker = run.worker_peak_mb
            entry.setdefault("each", {})[run.method] = run.worker_peaks_mb
        entry["peaks"][run.method] = (max(driver, run.driver_peak_mb), worker)
        if run.method == "daskscore" and run.detail.get("duration_s") is not None:
            entry.setdefault("job_s", []).append(run.detail["duration_s"])
        if run.method in ("daskscore", "seq") and run.detail.get("score_s") is not None:
            entry.setdefault("score_s", {}).setdefault(run.method, []).append(run.detail["score_s"])
    for entry in summary.values():
        entry["median_s"] = {m: statistics.median(w) for m, w in entry["walls"].items()}
        entry["job_median_s"] = statistics.median(entry["job_s"]) if "job_s" in entry else None
        entry["score_median_s"] = {
            m: statistics.median(v) for m, v in entry.get("score_s", {}).items()
        }
    return summary


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def median_of(runs: list[Run], value: Callable[[Run], float | None]) -> float | None:
    """The median of ``value(run)`` over the runs where it is known, or None."""
    values = [v for v in map(value, runs) if v is not None]
    return statistics.median(values) if values else None


def cpu_per_mini_batch_us(run: Run) -> float | None:
    """The driver's CPU time divided by the job's mini-batches, in microseconds."""
    batches = run.detail.get("total_mini_batches")
    if run.driver_cpu_s is None or not batches:
        return None
    return run.driver_cpu_s / batches * 1e6


def job_start_to_scoring_s(run: Run) -> float | None:
    """From the job's start to its scoring phase: the summary's ``start_cluster`` and
    ``init`` phases (connecting to the cluster, installing the script, ``init()``)."""
    phases = run.detail.get("phases") or {}
    if "start_cluster" not in phases:
        return None
    return phases["start_cluster"] + phases.get("init", 0.0)


def listing_s(run: Run) -> float | None:
    """The job summary's listing phase (a ``phases`` key starting with ``list``), if any."""
    phases = run.detail.get("phases") or {}
    found = [v for k, v in phases.items() if k.startswith("list")]
    return sum(found) if found else None


def outside_job_s(run: Run) -> float | None:
    """Wall time of the command outside the job's ``duration_s``: interpreter start, imports,
    listing and planning (before the job's clock starts), the report and exit."""
    duration = run.detail.get("duration_s")
    return None if duration is None else run.wall_s - duration


def metric(summary: dict[str, dict[str, Any]], workload: str, name: str) -> float | None:
    """The value of one target metric, or None when its workload did not run."""
    entry = summary.get(workload)
    if entry is None:
        return None
    med = entry["median_s"]
    scored = entry.get("score_median_s", {})
    ds = med.get("daskscore")
    values = {
        "daskscore / sequential": ratio(ds, med.get("seq")),
        "daskscore / Pool": ratio(ds, med.get("pool")),
        "t1 / t2 (daskscore)": ratio(med.get("daskscore-w1"), ds),
        "driver peak RSS (MB)": entry["peaks"].get("daskscore", (None, None))[0],
        "worker peak RSS (MB)": entry["peaks"].get("daskscore", (None, None))[1],
        "daskscore / (sequential / 2)": ratio(ds, med["seq"] / 2 if "seq" in med else None),
        "scoring phase / (sequential scoring / 2)": ratio(
            scored.get("daskscore"), scored["seq"] / 2 if "seq" in scored else None
        ),
        "remote / local (daskscore)": ratio(med.get("daskscore-remote"), ds),
        "daskscore / read_csv loop": ratio(ds, med.get("chunks")),
        "driver CPU per mini-batch (us)": median_of(
            entry["runs"].get("daskscore", []), cpu_per_mini_batch_us
        ),
        "2nd warm run: job start to scoring (s)": median_of(
            entry["runs"].get("warm-2", []), job_start_to_scoring_s
        ),
    }
    return values[name]


def checks(summary: dict[str, dict[str, Any]]) -> list[Check]:
    """The targets of the workloads that ran, with their measured values."""
    out = []
    for workload, name, op, bound in TARGETS:
        if workload in summary:
            out.append(Check(workload, name, op, bound, metric(summary, workload, name)))
    return out


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    """A Markdown table, columns padded for the terminal."""
    rows = [header, *rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return lines


def timing_table(summary: dict[str, dict[str, Any]]) -> list[str]:
    """Medians of the wall times, and daskscore's ratios to the baselines."""
    header = ["workload", "files", "sequential (s)", "Pool(2) (s)", "Pool tuned (s)"]
    header += ["daskscore (s)", "daskscore job (s)", "daskscore/seq", "daskscore/Pool"]
    header += ["daskscore/Pool tuned", "daskscore -w1 (s)"]
    rows = []
    for name, entry in summary.items():
        if WORKLOADS[name].details:
            continue
        med = entry["median_s"]
        rows.append(
            [name, f"{entry['files']:,}", fmt(med.get("seq")), fmt(med.get("pool"))]
            + [fmt(med.get("pool-tuned")), fmt(med.get("daskscore")), fmt(entry["job_median_s"])]
            + [fmt(metric(summary, name, "daskscore / sequential"))]
            + [fmt(metric(summary, name, "daskscore / Pool"))]
            + [fmt(ratio(med.get("daskscore"), med.get("pool-tuned")))]
            + [fmt(med.get("daskscore-w1"))]
        )
    return table(header, rows)


def details_table(summary: dict[str, dict[str, Any]]) -> list[str]:
    """The workloads measured by more than wall time (REMOTE, TABULAR-100K, LIST-1M, WARM):
    per method, medians of the wall time, the job's own duration, the driver's CPU (in all,
    and per mini-batch), the start of the first mini-batch, and the listing."""
    header = ["workload", "method", "wall (s)", "job (s)", "driver CPU (s)"]
    header += ["CPU/mini-batch (us)", "1st mini-batch at (s)", "listing (s)", "outside job (s)"]
    rows = []
    for name, entry in summary.items():
        if not WORKLOADS[name].details:
            continue
        for method, runs in entry["runs"].items():
            rows.append(
                [name, METHOD_LABELS[method], fmt(entry["median_s"][method])]
                + [fmt(median_of(runs, lambda r: r.detail.get("duration_s")))]
                + [fmt(median_of(runs, lambda r: r.driver_cpu_s))]
                + [fmt(median_of(runs, cpu_per_mini_batch_us), 1)]
                + [fmt(median_of(runs, lambda r: r.detail.get("first_batch_s")), 3)]
                + [fmt(median_of(runs, listing_s), 3)]
                + [fmt(median_of(runs, outside_job_s))]
            )
    return table(header, rows)


def memory_table(summary: dict[str, dict[str, Any]]) -> list[str]:
    """Peak RSS of the driver, of the largest worker and of each worker (in the run with the
    largest), per workload and method."""
    rows = []
    for name, entry in summary.items():
        for method, (driver, worker) in entry["peaks"].items():
            each = entry.get("each", {}).get(method) or []
            rows.append(
                [
                    name,
                    METHOD_LABELS[method],
                    fmt(driver, 0),
                    fmt(worker, 0),
                    " / ".join(fmt(mb, 0) for mb in each) or "-",
                ]
            )
    header = ["workload", "method", "driver peak (MB)", "worker peak (MB)", "each worker (MB)"]
    return table(header, rows)


def target_table(found: list[Check]) -> list[str]:
    rows = [[c.workload, c.metric, fmt(c.value), f"{c.op} {c.bound:g}", c.verdict] for c in found]
    return table(["workload", "metric", "value", "target", "result"], rows)


def report(summary: dict[str, dict[str, Any]], quick: bool) -> list[str]:
    """The whole report: timings, targets, memory."""
    lines = []
    if not all(WORKLOADS[name].details for name in summary):
        lines += ["### Wall time, medians (whole subprocess, start-up included)", ""]
        lines += timing_table(summary) + [""]
    if any(WORKLOADS[name].details for name in summary):
        lines += ["### Other workloads, medians", ""]
        lines += details_table(summary)
        lines += [
            "",
            "`1st mini-batch at`: from the command's start to its first mini-batch's start. "
            "`listing`: the job summary's listing phase, where it has one. `outside job`: "
            "the wall time outside the job's own `duration_s` (interpreter start, imports, "
            "listing and planning, the report, exit).",
            "",
        ]
    lines += ["### Targets", ""]
    if quick:
        lines += ["(--quick: sizes far too small for the targets to mean anything)", ""]
    lines += target_table(checks(summary))
    w2 = summary.get("W2", {}).get("median_s", {})
    if "seq-1t" in w2 and "daskscore" in w2:
        lines += [
            "",
            f"For reference, not a target: W2 daskscore / sequential with one torch thread = "
            f"{fmt(ratio(w2['daskscore'], w2['seq-1t']))} (the default sequential loop uses "
            f"torch's intra-op threads on every core: {fmt(w2.get('seq'))} s against "
            f"{fmt(w2['seq-1t'])} s with one).",
        ]
    lines += ["", "### Peak RSS (max over repeats; each worker: in the run of the largest)", ""]
    lines += memory_table(summary)
    return lines


# --------------------------------------------------------------------------- environment


def machine() -> dict[str, Any]:
    """CPU model, cores, RAM, load, and the versions of what is being measured."""
    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {"python": platform.python_version()}
    for package in ("daskscore", "dask", "distributed", "pandas", "numpy", "torch"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "ram_gb": round(psutil.virtual_memory().total / 1024**3, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "versions": versions,
    }


def write_markdown(path: Path, lines: list[str], env: dict[str, Any], args: Any) -> None:
    """RESULTS.md: the date, the machine, the versions and the report."""
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    head = [
        "# daskscore benchmark results",
        "",
        f"- date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- command: `python benchmarks/run.py {' '.join(args.argv)}`".rstrip(),
        f"- repeats: {args.repeats}{' (--quick sizes)' if args.quick else ''}",
        f"- machine: {env['cpu']}, {env['cores']} cores ({env['usable_cores']} usable), "
        f"{env['ram_gb']} GB RAM; load average at start {env['load_average']}",
        f"- platform: {env['platform']}",
        f"- versions: {versions}",
        "",
    ]
    kept = gpu_section(path.read_text(encoding="utf-8")) if path.is_file() else None
    tail_lines = ["", kept] if kept else []  # benchmarks/gpu.py's section stays
    path.write_text("\n".join(head + lines + tail_lines) + "\n", encoding="utf-8")
    print(f"wrote {path}")


#: the markers around the "GPU" section of RESULTS.md, written by ``benchmarks/gpu.py``
GPU_BEGIN = "<!-- gpu.py: begin -->"
GPU_END = "<!-- gpu.py: end -->"


def gpu_section(text: str) -> str | None:
    """The GPU section of a RESULTS.md text, markers included, or None."""
    start, end = text.find(GPU_BEGIN), text.find(GPU_END)
    if start < 0 or end < start:
        return None
    return text[start : end + len(GPU_END)]


def save_json(
    path: Path, runs: list[Run], env: dict[str, Any], args: Any, skipped: dict[str, str]
) -> None:
    """The raw timings of every run, with the machine, the options and what was skipped."""
    summary = summarize(runs)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "argv": args.argv,
        "quick": args.quick,
        "repeats": args.repeats,
        "machine": env,
        "checks": [asdict(c) | {"verdict": c.verdict} for c in checks(summary)],
        "skipped": skipped,
        "runs": [asdict(r) for r in runs],
    }
    path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path}")


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark daskscore against a sequential loop and multiprocessing.Pool.",
    )
    parser.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help="comma-separated, from %(default)s (default: all)",
    )
    parser.add_argument("--repeats", type=int, help="runs of each method (default 3; 1 --quick)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 1 repeat (CI smoke)")
    parser.add_argument("--data-dir", type=Path, default=HERE / "_data", help="generated inputs")
    parser.add_argument(
        "--runs-dir", type=Path, default=RUNS_DIR, help="outputs, logs and results.json"
    )
    parser.add_argument(
        "--seq-torch-threads",
        type=int,
        help="torch threads of the sequential baseline (default: torch's own default)",
    )
    parser.add_argument("--keep-going", action="store_true", help="go on after a failed workload")
    parser.add_argument("--write-results", action="store_true", help="write benchmarks/RESULTS.md")
    parser.add_argument(
        "--generate-only", action="store_true", help="generate the data, run nothing"
    )
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    names = [n.strip().upper() for n in args.workloads.split(",") if n.strip()]
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown or not names:
        parser.error(f"unknown workload(s) {unknown}; choose from {', '.join(WORKLOADS)}")
    args.names = names
    return args


def run_all(args: argparse.Namespace, out: Path) -> tuple[list[Run], list[str], dict[str, str]]:
    """Generate and run every selected workload; return the runs, the failures and the
    workloads skipped (with why)."""
    runs: list[Run] = []
    failures: list[str] = []
    skipped: dict[str, str] = {}
    for name in args.names:
        wl = WORKLOADS[name]
        files = wl.quick if args.quick else wl.full
        try:
            if wl.needs == "cluster" and not args.generate_only:
                missing = cluster_command_missing()
                if missing:
                    raise WorkloadSkipped(
                        f"`daskscore cluster` is not available in this daskscore ({missing})"
                    )
            inputs = ensure_data(wl, files, args.data_dir.resolve())
            if not args.generate_only:
                plan = Plan(wl, inputs, files, args.repeats, out, args.seq_torch_threads)
                with contextlib.ExitStack() as stack:
                    if wl.needs == "s3":
                        plan = stack.enter_context(s3_inputs(plan))
                    runs += run_workload(plan)
        except WorkloadSkipped as exc:
            skipped[name] = str(exc)
            print(f"[{name}] SKIPPED: {exc}", flush=True)
        except BenchmarkError as exc:
            failures.append(f"{name}: {exc}")
            print(f"\n[{name}] FAILED: {exc}\n", file=sys.stderr, flush=True)
            if not args.keep_going:
                break
    return runs, failures, skipped


def compile_sources() -> None:
    """Byte-compile daskscore and the workloads' scoring scripts, as an installed package is.

    An editable install under ``PYTHONDONTWRITEBYTECODE`` (or a read-only checkout) would
    otherwise compile daskscore's sources again in every run: 0.1-0.2 s of each daskscore
    run that a user with an installed package never pays.  Existing ``.pyc`` files are read
    even where Python may not write them.
    """
    import compileall

    import daskscore

    for folder in (Path(daskscore.__file__).parent, WORKLOADS_DIR):
        compileall.compile_dir(str(folder), quiet=1)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 1 if a run failed or outputs differ (missed targets do not)."""
    args = parse_args(argv)
    env = machine()
    compile_sources()
    runs_dir = args.runs_dir.resolve()
    out = runs_dir / ("quick" if args.quick else "full")
    print(f"{env['cpu']}, {env['cores']} cores, load {env['load_average']}; outputs in {out}")
    runs, failures, skipped = run_all(args, out)
    if args.generate_only:
        return 1 if failures else 0
    lines = report(summarize(runs), args.quick) if runs else ["(no completed runs)"]
    lines += [f"Skipped: {name}: {why}" for name, why in skipped.items()]
    print("\n" + "\n".join(lines))
    results = runs_dir / ("results-quick.json" if args.quick else "results.json")
    save_json(results, runs, env, args, skipped)
    if args.write_results:
        target = runs_dir / "RESULTS-quick.md" if args.quick else RESULTS_MD
        write_markdown(target, lines, env, args)
    for failure in failures:
        print(f"FAILED {failure.splitlines()[0]}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
