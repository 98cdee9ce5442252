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

Workloads: W1 (100,000 tiny CSV files, trivial scorer: per-file overhead), W2 (10,000 images,
a small CNN), SCALING (CPU-bound, 1 vs 2 workers), MEMORY (5,000,000 predicted rows as
DataFrames: memory of driver and workers), SKEW (1% of the files cost 20x: load balancing).
Data is generated deterministically under ``_data/`` (once; a ``.params.json`` marker holds
the parameters); outputs and ``results.json`` go to ``_runs/``.  See ``README.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
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
}


class BenchmarkError(RuntimeError):
    """A run failed, or its output differs from the others'."""


@dataclass(frozen=True)
class Workload:
    """One benchmark: its scoring script, its inputs, the sizes and the methods compared."""

    name: str
    folder: str
    kind: str  # the generator: "csv", "npy" or "seed"
    full: int
    quick: int
    seed: int
    rows_per_file: int = 1
    slow_fraction: float = 0.0
    methods: tuple[str, ...] = ("seq", "pool", "pool-tuned", "daskscore")
    #: another workload's data folder to share (same generator, same size)
    data: str | None = None

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
    output: str
    sha256: str = ""
    lines: int = 0
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


GENERATORS: dict[str, Callable[[Path, int, int, float], None]] = {
    "csv": gen_csv,
    "npy": gen_npy,
    "seed": gen_seed,
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
    print(f"[{wl.name}] generated {n:,} files in {folder} ({time.perf_counter() - started:.1f} s)")
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


def measure(cmd: list[str], log: Path) -> tuple[float, int, PeakSampler]:
    """Run ``cmd`` (output to ``log``); return its wall time, exit code and RSS sampler."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as fh:
        started = time.perf_counter()
        proc = psutil.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=HERE)
        sampler = PeakSampler(proc)
        sampler.start()
        try:
            rc = proc.wait(timeout=RUN_TIMEOUT_S)
        except psutil.TimeoutExpired:
            kill_tree(proc)
            rc = proc.wait()
        wall = time.perf_counter() - started
    sampler.done.set()
    sampler.join()
    return wall, rc, sampler


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
    """The scoring script, ``mini_batch_size`` and ``max_concurrency_per_instance``."""
    doc = yaml.safe_load(wl.deployment.read_text(encoding="utf-8"))
    code = doc["code_configuration"]
    settings = doc.get("settings", {})
    script = wl.deployment.parent / code["code"] / code["scoring_script"]
    return script, int(settings["mini_batch_size"]), int(settings["max_concurrency_per_instance"])


def command(plan: Plan, method: str, out: Path) -> tuple[list[str], Path]:
    """The command line of one method, and the append_row file it writes."""
    wl = plan.wl
    if method.startswith("daskscore"):
        cmd = [*daskscore_command(), "run", str(wl.deployment), "--input", str(plan.inputs)]
        cmd += ["--output", str(out), "--overwrite", "--no-progress"]
        if method == "daskscore-w1":
            cmd += ["--workers", "1"]
        return cmd, out / "predictions.csv"
    script, mini_batch_size, processes = deployment_settings(wl)
    out.mkdir(parents=True, exist_ok=True)
    mode = "pool" if method.startswith("pool") else "seq"
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
    cmd, predictions = command(plan, method, out / method)
    log = out / f"{method}.log"
    wall, rc, sampler = measure(cmd, log)
    driver = round(sampler.driver / MB, 1)
    worker = round(sampler.worker / MB, 1) if sampler.worker else None
    run = Run(name, method, k, plan.files, round(wall, 3), rc, driver, worker, 0, str(predictions))
    run.workers_seen = sampler.workers_seen
    run.worker_peaks_mb = [round(rss / MB, 1) for rss in sampler.worker_peaks]
    run.sampled = sampler.processes
    if rc != 0:
        raise BenchmarkError(f"{name}/{method} exited with {rc}; see {log}:\n{tail(log)}")
    run.detail = run_detail(method, out / method)
    status = run.detail.get("status", "Completed")
    if status != "Completed":
        raise BenchmarkError(f"{name}/{method}: job status {status}; see {out / method}")
    run.sha256, run.lines = file_digest(predictions)
    return run


def run_detail(method: str, out: Path) -> dict[str, Any]:
    """daskscore's job_summary.json figures, or a baseline's own phase timings."""
    if method.startswith("daskscore"):
        summary = json.loads((out / "job_summary.json").read_text(encoding="utf-8"))
        keys = ("status", "duration_s", "total_items", "succeeded_items", "rows_written")
        detail = {key: summary.get(key) for key in keys}
        detail["score_s"] = (summary.get("phases") or {}).get("score")
        return detail
    timings = out / "timings.json"
    return json.loads(timings.read_text(encoding="utf-8")) if timings.is_file() else {}


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
    """All methods, interleaved, ``repeats`` times; every output checked against the first."""
    runs: list[Run] = []
    for k in range(plan.repeats):
        for method in plan.wl.methods:
            run = run_method(plan, method, k)
            check_same(runs[0] if runs else run, run, plan.files * plan.wl.rows_per_file)
            runs.append(run)
            print(
                f"[{run.workload}] repeat {k + 1}/{plan.repeats} {METHOD_LABELS[method]:<22} "
                f"{run.wall_s:8.2f} s  driver {run.driver_peak_mb:7.1f} MB  "
                f"workers {fmt(run.worker_peak_mb, 1):>7} MB  output ok ({run.lines:,} lines)",
                flush=True,
            )
    return runs


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
)


def summarize(runs: list[Run]) -> dict[str, dict[str, Any]]:
    """Per workload: files, median wall time per method, peak RSS per method (max over runs)."""
    summary: dict[str, dict[str, Any]] = {}
    for run in runs:
        entry = summary.setdefault(run.workload, {"files": run.files, "walls": {}, "peaks": {}})
        entry["walls"].setdefault(run.method, []).append(run.wall_s)
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
    lines = ["### Wall time, medians (whole subprocess, start-up included)", ""]
    lines += timing_table(summary)
    lines += ["", "### Targets", ""]
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
    path.write_text("\n".join(head + lines) + "\n", encoding="utf-8")
    print(f"wrote {path}")


def save_json(path: Path, runs: list[Run], env: dict[str, Any], args: Any) -> None:
    """The raw timings of every run, with the machine and the options."""
    summary = summarize(runs)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "argv": args.argv,
        "quick": args.quick,
        "repeats": args.repeats,
        "machine": env,
        "checks": [asdict(c) | {"verdict": c.verdict} for c in checks(summary)],
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


def run_all(args: argparse.Namespace, out: Path) -> tuple[list[Run], list[str]]:
    """Generate and run every selected workload; return the runs and the failures."""
    runs: list[Run] = []
    failures: list[str] = []
    for name in args.names:
        wl = WORKLOADS[name]
        files = wl.quick if args.quick else wl.full
        try:
            inputs = ensure_data(wl, files, args.data_dir.resolve())
            if not args.generate_only:
                plan = Plan(wl, inputs, files, args.repeats, out, args.seq_torch_threads)
                runs += run_workload(plan)
        except BenchmarkError as exc:
            failures.append(f"{name}: {exc}")
            print(f"\n[{name}] FAILED: {exc}\n", file=sys.stderr, flush=True)
            if not args.keep_going:
                break
    return runs, failures


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
    runs, failures = run_all(args, out)
    if args.generate_only:
        return 1 if failures else 0
    lines = report(summarize(runs), args.quick) if runs else ["(no completed runs)"]
    print("\n" + "\n".join(lines))
    save_json(runs_dir / ("results-quick.json" if args.quick else "results.json"), runs, env, args)
    if args.write_results:
        target = runs_dir / "RESULTS-quick.md" if args.quick else RESULTS_MD
        write_markdown(target, lines, env, args)
    for failure in failures:
        print(f"FAILED {failure.splitlines()[0]}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
