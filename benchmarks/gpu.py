"""GPU benchmark: ResNet-50 on JPEG files, daskscore against a hand-written DataLoader loop.

Both score the same generated JPEG images (224x224 by default: gradients, noise and a few
shapes, drawn with PIL from fixed seeds) with the same model (``workloads/gpu/code/resnet.py``:
torchvision's ResNet-50 in plain torch, seeded random weights; its classifier bias centred
on 32 other generated images, so that predictions vary between images), the same batch
size, on the same GPU (the first visible one):

``dataloader``  ``gpu_loader.py``: a ``torch.utils.data.DataLoader`` over a Dataset that
                decodes with PIL, ``--loader-workers`` decoder processes, ``pin_memory``,
                fp16 autocast, ``inference_mode``: how people feed a GPU by hand;
``daskscore``   ``daskscore run`` of an Azure-style scoring script (``workloads/gpu/code/
                score.py``: ``init()`` builds the model on the GPU, ``run()`` decodes,
                normalises, stacks and classifies a mini-batch of ``--batch-size`` files),
                ``--workers`` = ``--workers-per-gpu``, ``--resources GPU=1``: the embedded
                cluster gives every worker the GPU's ``CUDA_VISIBLE_DEVICES``.

Each run is a subprocess timed from start to exit (images/s end to end), and its scoring
window (the loop's first to last batch; daskscore's first mini-batch start to its last
mini-batch end) gives the steady-state images/s.  While it runs, ``nvidia-smi
--query-gpu=utilization.gpu --format=csv,noheader,nounits -lms 200`` samples the GPU's
utilisation; the mean over the scoring window is reported.  Runs alternate (DataLoader,
daskscore, DataLoader, ...) ``--repeats`` times; the table shows medians.  Every run's
predicted class per file must equal the first run's (a different class is allowed only
where the top two logits of that file are within rounding of each other, fp16 on CUDA).

Targets (printed beside the figures): daskscore >= 0.9 x DataLoader images/s, and GPU
utilisation >= 85 % during daskscore's scoring.

``--smoke`` is a tiny CPU version (16 images 64x64, a ResNet-50 of width 8, batches of 4)
for the test suite; it never writes RESULTS.md.  See ``README.md``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from run import (
    GPU_BEGIN,
    GPU_END,
    MB,
    RESULTS_MD,
    RUNS_DIR,
    compile_sources,
    daskscore_command,
    fmt,
    gpu_section,
    machine,
    measure,
    table,
    tail,
)

HERE = Path(__file__).resolve().parent
CODE = HERE / "workloads" / "gpu" / "code"
FILES_PER_FOLDER = 1000
SEED = 2024
#: Bump when the image generator changes, so that old data is regenerated.
DATA_VERSION = 1
CALIBRATION_IMAGES = 32
#: a file's class may differ between runs only where its top-1 and top-2 logits are closer
#: than this fraction of the top-1 logit (at least of 1.0): fp16 rounding on CUDA, summation
#: order on the CPU
TIE_CUDA, TIE_CPU = 0.02, 1e-3
TARGET_RATIO, TARGET_UTIL = 0.9, 85.0
METHODS = ("dataloader", "daskscore")

FULL = {
    "images": 50_000,
    "size": 224,
    "width": 64,
    "batch_size": 128,
    "workers_per_gpu": 8,
    "loader_workers": 8,
    "repeats": 3,
}
SMOKE = {
    "images": 16,
    "size": 64,
    "width": 8,
    "batch_size": 4,
    "workers_per_gpu": 2,
    "loader_workers": 1,
    "repeats": 1,
}


class GpuBenchmarkError(RuntimeError):
    """A run failed, or its predictions differ from the first run's."""


# --------------------------------------------------------------------------- inputs


def make_jpeg(rng: np.random.Generator, size: int) -> bytes:
    """One RGB JPEG: a colour gradient, noise, and one to five filled shapes."""
    import io

    from PIL import Image, ImageDraw

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    pixels = np.empty((size, size, 3), np.float32)
    for c in range(3):
        gy, gx = rng.uniform(-200, 200, 2)
        pixels[..., c] = rng.uniform(0, 255) + gy * yy + gx * xx
    pixels += rng.normal(0.0, rng.uniform(2, 30), pixels.shape)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(1, 6))):
        x0, y0 = (int(v) for v in rng.integers(0, size, 2))
        w, h = (int(v) for v in rng.integers(max(size // 8, 1), max(size // 2, 2), 2))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x0, y0, x0 + w, y0 + h], fill=colour)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def gen_folder(job: tuple[str, int, int, int, int]) -> None:
    """Images ``start .. start+count-1`` into ``folder/d<k>/``; each from its own seed."""
    folder, start, count, size, seed = job
    sub = Path(folder) / f"d{start // FILES_PER_FOLDER:03d}"
    sub.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + count):
        rng = np.random.default_rng([seed, i])
        (sub / f"{i:06d}.jpg").write_bytes(make_jpeg(rng, size))


def ensure_images(data_dir: Path, n: int, size: int) -> Path:
    """The input folder of ``n`` JPEGs of ``size`` px, generated (in parallel) unless its
    ``.params.json`` marker says it already holds them."""
    folder = data_dir / f"gpu-jpeg-n{n}-s{size}"
    marker = folder / ".params.json"
    params = {"images": n, "size": size, "seed": SEED, "version": DATA_VERSION}
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == params:
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    started = time.perf_counter()
    jobs = [
        (str(folder), s, min(FILES_PER_FOLDER, n - s), size, SEED)
        for s in range(0, n, FILES_PER_FOLDER)
    ]
    if len(jobs) > 1:
        with multiprocessing.get_context("fork").Pool(min(len(jobs), os.cpu_count() or 1)) as p:
            p.map(gen_folder, jobs)
    else:
        gen_folder(jobs[0])
    marker.write_text(json.dumps(params, indent=1), encoding="utf-8")
    took = time.perf_counter() - started
    print(f"generated {n:,} JPEGs of {size}x{size} in {folder} ({took:.1f} s)", flush=True)
    return folder


# --------------------------------------------------------------------------- the deployment


def write_deployment(root: Path, cfg: dict[str, Any]) -> Path:
    """The deployment folder: ``code/`` (the scoring script and the model's code), ``model/
    head.pt`` (the seed, the width and the centred classifier bias) and ``deployment.yml``."""
    if root.exists():
        shutil.rmtree(root)
    shutil.copytree(CODE, root / "code", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "model").mkdir(parents=True)
    head = calibrate_head(cfg)
    import torch

    torch.save(head, root / "model" / "head.pt")
    deployment = root / "deployment.yml"
    deployment.write_text(
        f"""# Written by benchmarks/gpu.py: ResNet-50 on JPEG files (Azure ML batch deployment).
name: bench-gpu-resnet50
type: model
model:
  name: resnet50-random
  path: model
code_configuration:
  code: code
  scoring_script: score.py
resources:
  instance_count: 1
settings:
  max_concurrency_per_instance: {cfg["workers_per_gpu"]}
  mini_batch_size: {cfg["batch_size"]}
  output_action: append_row
  output_file_name: predictions.csv
  retry_settings:
    max_retries: 1
    timeout: 600
  error_threshold: 0
  logging_level: info
""",
        encoding="utf-8",
    )
    return deployment


def calibrate_head(cfg: dict[str, Any]) -> dict[str, Any]:
    """The classifier bias that centres the logits on 32 generated images (not the inputs).

    A randomly initialised ResNet gives nearly every image the same class (the pooled
    features share a large positive mean); subtracting that mean's logits makes the class
    depend on the image, so that comparing the two methods' classes means something.
    Computed once here, on the CPU in fp32, and loaded by both methods.
    """
    import io

    import torch
    from PIL import Image

    sys.path.insert(0, str(CODE))
    try:
        from resnet import resnet50
        from score import MEAN, STD
    finally:
        sys.path.remove(str(CODE))
    net = resnet50(width=cfg["width"], seed=0).eval()
    rng = np.random.default_rng([SEED + 1])  # not an input image's seed
    images = []
    for _ in range(CALIBRATION_IMAGES):
        with Image.open(io.BytesIO(make_jpeg(rng, cfg["size"]))) as img:
            pixels = np.array(img.convert("RGB"), dtype=np.uint8)
        x = torch.from_numpy(pixels).permute(2, 0, 1).float().div_(255.0)
        images.append(x.sub_(MEAN).div_(STD))
    pooled: list[torch.Tensor] = []
    hook = net.avgpool.register_forward_hook(lambda m, i, o: pooled.append(o.flatten(1)))
    with torch.inference_mode():
        for start in range(0, len(images), 8):
            net(torch.stack(images[start : start + 8]))
    hook.remove()
    mean = torch.cat(pooled).mean(0)
    bias = -(net.fc.weight.detach() @ mean)
    return {"width": cfg["width"], "seed": 0, "fc_bias": bias.clone()}


# --------------------------------------------------------------------------- GPUs


def find_gpu() -> dict[str, str] | None:
    """The GPU both methods use: the first visible one (``CUDA_VISIBLE_DEVICES``, else
    ``nvidia-smi``'s first), as ``{"index", "uuid", "name"}``; None without one."""
    try:
        proc = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,uuid,name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    gpus = []
    for line in proc.stdout.strip().splitlines() if proc.returncode == 0 else []:
        index, uuid, name = (part.strip() for part in line.split(",", 2))
        gpus.append({"index": index, "uuid": uuid, "name": name})
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")]
    visible = [v for v in visible if v]
    if "CUDA_VISIBLE_DEVICES" in os.environ and not visible:
        return None  # CUDA_VISIBLE_DEVICES="" hides every GPU
    for wanted in visible[:1]:
        for gpu in gpus:
            if wanted in (gpu["index"], gpu["uuid"]) or gpu["uuid"].startswith(wanted):
                return gpu
        return None
    return gpus[0] if gpus else None


class UtilSampler:
    """``nvidia-smi -i <gpu> --query-gpu=utilization.gpu --format=csv,noheader,nounits
    -lms 200`` in the background: (epoch seconds, utilisation %) per line it prints."""

    def __init__(self, gpu: dict[str, str]) -> None:
        cmd = ["nvidia-smi", "-i", gpu["index"], "--query-gpu=utilization.gpu"]
        cmd += ["--format=csv,noheader,nounits", "-lms", "200"]
        self.samples: list[tuple[float, float]] = []
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.samples.append((time.time(), float(line.strip())))
            except ValueError:
                continue

    def stop(self) -> list[tuple[float, float]]:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.thread.join(10)
        return self.samples


def mean_util(
    samples: list[tuple[float, float]], window: tuple[float, float] | None
) -> float | None:
    """The mean utilisation of the samples inside ``window`` (epoch seconds)."""
    if window is None:
        return None
    inside = [u for t, u in samples if window[0] <= t <= window[1]]
    return statistics.fmean(inside) if inside else None


# --------------------------------------------------------------------------- one run


@dataclass
class GpuRun:
    method: str
    repeat: int
    images: int
    wall_s: float
    rc: int
    output: str
    driver_peak_mb: float
    worker_peak_mb: float | None
    #: the scoring window: first batch start to last batch end (epoch seconds)
    window: tuple[float, float] | None = None
    device: str = ""
    gpu_util: float | None = None
    util_samples: int = 0
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def scoring_s(self) -> float | None:
        return None if self.window is None else self.window[1] - self.window[0]


def command(
    method: str, cfg: dict[str, Any], deployment: Path, inputs: Path, out: Path
) -> tuple[list[str], Path]:
    """The command line of one method, and the predictions file it writes."""
    if method == "daskscore":
        cmd = [*daskscore_command(), "run", str(deployment), "--input", str(inputs)]
        cmd += ["--output", str(out), "--overwrite", "--no-progress"]
        cmd += ["--workers", str(cfg["workers_per_gpu"]), "--resources", "GPU=1"]
        return cmd, out / "predictions.csv"
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(HERE / "gpu_loader.py"), "--code", str(deployment.parent / "code")]
    cmd += ["--model-dir", str(deployment.parent / "model"), "--input", str(inputs)]
    cmd += ["--output", str(out / "predictions.csv"), "--timings", str(out / "timings.json")]
    cmd += ["--batch-size", str(cfg["batch_size"]), "--workers", str(cfg["loader_workers"])]
    return cmd, out / "predictions.csv"


def mini_batch_window(report: Path) -> tuple[float, float] | None:
    """daskscore's scoring window: the first mini-batch's start to the last one's end."""
    if not report.is_file():
        return None
    first, last = None, None
    with open(report, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            start = dt.datetime.fromisoformat(row["start"]).timestamp()
            end = start + float(row.get("elapsed_s") or 0.0)
            first = start if first is None else min(first, start)
            last = end if last is None else max(last, end)
    return None if first is None else (first, last)


def worker_device(out: Path) -> str:
    """What daskscore's workers scored on, from the line init() prints in their logs."""
    for log in sorted((out / "logs" / "user" / "stdout").glob("*.txt")):
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("scoring on "):
                return line.removeprefix("scoring on ").strip()
    return "unknown"


def run_method(
    method: str, k: int, cfg: dict[str, Any], paths: dict[str, Path], gpu: dict[str, str] | None
) -> GpuRun:
    """Measure one method once (with the GPU sampled, if there is one)."""
    base = paths["runs"] / f"r{k}"
    cmd, predictions = command(method, cfg, paths["deployment"], paths["inputs"], base / method)
    env = {"DASKSCORE_CLUSTER_STATE": str(paths["runs"] / "no-warm-cluster.json")}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu["uuid"]
    sampler = UtilSampler(gpu) if gpu is not None else None
    log = base / f"{method}.log"
    try:
        measured = measure(cmd, log, env, timeout=3600)
    finally:
        samples = sampler.stop() if sampler is not None else []
    peaks = measured.sampler
    run = GpuRun(
        method,
        k,
        cfg["images"],
        round(measured.wall, 3),
        measured.rc,
        str(predictions),
        round(peaks.driver / MB, 1),
        round(peaks.worker / MB, 1) if peaks.worker else None,
    )
    if measured.rc != 0:
        raise GpuBenchmarkError(f"{method} exited with {measured.rc}; see {log}:\n{tail(log)}")
    if method == "daskscore":
        summary = json.loads((base / method / "job_summary.json").read_text(encoding="utf-8"))
        if summary.get("status") != "Completed":
            raise GpuBenchmarkError(f"daskscore: job status {summary.get('status')}; see {base}")
        run.detail = {k: summary.get(k) for k in ("duration_s", "phases", "total_mini_batches")}
        run.window = mini_batch_window(
            base / method / "logs" / "sys" / "job_report" / "processed_mini-batches.csv"
        )
        run.device = worker_device(base / method)
    else:
        timings = json.loads((base / method / "timings.json").read_text(encoding="utf-8"))
        run.detail = timings
        run.window = (timings["loop_start"], timings["loop_end"])
        run.device = timings["device"]
    if sampler is not None:
        run.gpu_util = mean_util(samples, run.window)
        run.util_samples = len(samples)
        run.detail["util_samples"] = [(round(t, 3), u) for t, u in samples]
    return run


# --------------------------------------------------------------------------- outputs


def read_predictions(path: Path) -> list[tuple[str, int, float, float]]:
    """``(file, class, top-1 logit, top-1 minus top-2)`` per line."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            name, cls, top1, margin = line.split()
            rows.append((name, int(cls), float(top1), float(margin)))
    return rows


def compare(ref: GpuRun, run: GpuRun, tie: float) -> dict[str, int]:
    """Check ``run``'s classes against ``ref``'s, file by file; return the counts of files,
    of equal classes and of near-ties that differ.  Raise on anything else."""
    a, b = read_predictions(Path(ref.output)), read_predictions(Path(run.output))
    if len(a) != ref.images or len(b) != run.images:
        raise GpuBenchmarkError(
            f"{run.method} (repeat {run.repeat}): {len(b):,} predictions, {ref.method}: "
            f"{len(a):,}; expected {ref.images:,}"
        )
    same, ties = 0, 0
    for (na, ca, ta, ma), (nb, cb, tb, mb) in zip(a, b, strict=True):
        if na != nb:
            raise GpuBenchmarkError(f"{run.method}: file {nb} where {ref.method} has {na}")
        if ca == cb:
            same += 1
        elif min(ma, mb) <= tie * max(1.0, abs(ta), abs(tb)):
            ties += 1
        else:
            raise GpuBenchmarkError(
                f"{run.method} (repeat {run.repeat}) predicts class {cb} for {nb}, "
                f"{ref.method} (repeat {ref.repeat}) class {ca} (top-1 logits {tb} and {ta}, "
                f"margins {mb} and {ma}): not a near-tie"
            )
    return {"files": len(a), "same_class": same, "near_ties": ties}


# --------------------------------------------------------------------------- report


def summarize(runs: list[GpuRun]) -> dict[str, dict[str, float | None]]:
    """Per method: medians of wall time, scoring time, images/s and GPU utilisation."""

    def med(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return statistics.median(known) if known else None

    out: dict[str, dict[str, float | None]] = {}
    for method in METHODS:
        mine = [r for r in runs if r.method == method]
        if not mine:
            continue
        wall = med([r.wall_s for r in mine])
        scoring = med([r.scoring_s for r in mine])
        images = mine[0].images
        out[method] = {
            "wall_s": wall,
            "scoring_s": scoring,
            "images_per_s": images / wall if wall else None,
            "scoring_images_per_s": images / scoring if scoring else None,
            "gpu_util": med([r.gpu_util for r in mine]),
            "driver_peak_mb": max(r.driver_peak_mb for r in mine),
            "worker_peak_mb": med([r.worker_peak_mb for r in mine]),
        }
    return out


def checks(summary: dict[str, dict[str, float | None]]) -> list[dict[str, Any]]:
    """The two targets, measured."""
    ds, dl = summary.get("daskscore", {}), summary.get("dataloader", {})
    ratio = None
    if ds.get("images_per_s") and dl.get("images_per_s"):
        ratio = ds["images_per_s"] / dl["images_per_s"]
    found = [
        ("daskscore / DataLoader images/s (end to end)", ratio, ">=", TARGET_RATIO),
        ("GPU utilisation during daskscore's scoring (%)", ds.get("gpu_util"), ">=", TARGET_UTIL),
    ]
    return [
        {
            "metric": name,
            "value": value,
            "op": op,
            "bound": bound,
            "verdict": "n/a" if value is None else ("PASS" if value >= bound else "MISS"),
        }
        for name, value, op, bound in found
    ]


def report(
    summary: dict[str, dict[str, float | None]],
    cfg: dict[str, Any],
    gpu: dict[str, str] | None,
    devices: dict[str, str],
    matched: dict[str, int],
) -> list[str]:
    """The results as Markdown lines: the table, the ratios, the targets, the check."""
    labels = {
        "dataloader": f"DataLoader ({cfg['loader_workers']} decoders)",
        "daskscore": f"daskscore ({cfg['workers_per_gpu']} workers/GPU)",
    }
    header = ["method", "device", "wall (s)", "images/s", "scoring (s)", "images/s scoring"]
    header += ["GPU util (%)", "driver peak (MB)", "worker peak (MB)"]
    rows = [
        [labels[m], devices.get(m, "?"), fmt(s["wall_s"]), fmt(s["images_per_s"], 0)]
        + [fmt(s["scoring_s"]), fmt(s["scoring_images_per_s"], 0), fmt(s["gpu_util"], 0)]
        + [fmt(s["driver_peak_mb"], 0), fmt(s["worker_peak_mb"], 0)]
        for m, s in summary.items()
    ]
    ds, dl = summary.get("daskscore", {}), summary.get("dataloader", {})

    def ratio(key: str) -> str:
        return fmt(ds[key] / dl[key]) if ds.get(key) and dl.get(key) else "-"

    lines = [
        f"{cfg['images']:,} JPEGs of {cfg['size']}x{cfg['size']}, ResNet-50"
        + (f" (width {cfg['width']})" if cfg["width"] != 64 else "")
        + f", batches of {cfg['batch_size']}, medians of {cfg['repeats']} runs each; "
        + (f"GPU: {gpu['name']}" if gpu else "no GPU (CPU only)"),
        "",
        *table(header, rows),
        "",
        f"daskscore / DataLoader images/s: {ratio('images_per_s')} end to end (start-up "
        f"included), {ratio('scoring_images_per_s')} while scoring.",
        "",
        *table(
            ["metric", "value", "target", "result"],
            [
                [c["metric"], fmt(c["value"]), f"{c['op']} {c['bound']:g}", c["verdict"]]
                for c in checks(summary)
            ],
        ),
        "",
        f"Predictions: every run's class per file equals the first run's for "
        f"{matched.get('same_class', 0):,} of {matched.get('files', 0):,} file comparisons; "
        f"{matched.get('near_ties', 0)} near-ties (top two logits within rounding) differ.",
    ]
    return lines


def write_results_section(lines: list[str], env: dict[str, Any], argv: list[str]) -> None:
    """Put the GPU section into RESULTS.md (replacing an earlier one; run.py keeps it)."""
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    section = "\n".join(
        [
            GPU_BEGIN,
            "## GPU",
            "",
            f"- date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
            f"- command: `python benchmarks/gpu.py {' '.join(argv)}`".rstrip(),
            f"- machine: {env['cpu']}, {env['cores']} cores, {env['ram_gb']} GB RAM",
            f"- versions: {versions}",
            "",
            *lines,
            GPU_END,
        ]
    )
    text = RESULTS_MD.read_text(encoding="utf-8") if RESULTS_MD.is_file() else ""
    old = gpu_section(text)
    text = text.replace(old, section) if old else text.rstrip("\n") + "\n\n" + section
    RESULTS_MD.write_text(text.rstrip("\n") + "\n", encoding="utf-8")
    print(f"wrote the GPU section of {RESULTS_MD}")


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="ResNet-50 on JPEGs: daskscore against a DataLoader loop, on one GPU."
    )
    parser.add_argument("--images", type=int, help=f"input images (default {FULL['images']:,})")
    parser.add_argument("--size", type=int, help="image side in pixels (default 224)")
    parser.add_argument("--batch-size", type=int, help="images per batch / mini-batch (128)")
    parser.add_argument(
        "--workers-per-gpu", type=int, help="daskscore worker processes on the GPU (default 8)"
    )
    parser.add_argument(
        "--loader-workers", type=int, help="the DataLoader's decoder processes (default 8)"
    )
    parser.add_argument("--repeats", type=int, help="runs of each method (default 3)")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny CPU version: 16 images 64x64, a narrow ResNet"
    )
    parser.add_argument("--data-dir", type=Path, default=HERE / "_data", help="generated inputs")
    parser.add_argument("--runs-dir", type=Path, default=RUNS_DIR, help="outputs and JSON")
    parser.add_argument(
        "--write-results",
        action="store_true",
        help="add/replace the GPU section of benchmarks/RESULTS.md (on a GPU, not --smoke)",
    )
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    defaults = SMOKE if args.smoke else FULL
    cfg = {key: getattr(args, key, None) or value for key, value in defaults.items()}
    if min(cfg.values()) < 1:
        parser.error("sizes, workers and repeats must be at least 1")
    args.cfg = cfg
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 1 if a run failed or predictions differ."""
    args = parse_args(argv)
    cfg = args.cfg
    env = machine()
    gpu = find_gpu()
    compile_sources()
    runs_dir = args.runs_dir.resolve()
    paths = {"runs": runs_dir / ("gpu-smoke" if args.smoke else "gpu")}
    print(
        f"{env['cpu']}, {env['cores']} cores; GPU: {gpu['name'] if gpu else 'none'}; "
        f"outputs in {paths['runs']}",
        flush=True,
    )
    paths["inputs"] = ensure_images(args.data_dir.resolve(), cfg["images"], cfg["size"])
    paths["deployment"] = write_deployment(paths["runs"] / "deployment", cfg)
    runs: list[GpuRun] = []
    matched = {"files": 0, "same_class": 0, "near_ties": 0}
    failure = None
    try:
        for k in range(cfg["repeats"]):
            for method in METHODS:
                run = run_method(method, k, cfg, paths, gpu)
                tie = TIE_CUDA if "cpu" not in run.device else TIE_CPU
                counts = compare(runs[0] if runs else run, run, tie)
                if runs:
                    for key, value in counts.items():
                        matched[key] += value
                runs.append(run)
                print(
                    f"[gpu] repeat {k + 1}/{cfg['repeats']} {method:<10} on {run.device}: "
                    f"{run.wall_s:7.2f} s, {run.images / run.wall_s:8.1f} images/s, scoring "
                    f"{fmt(run.scoring_s)} s, GPU {fmt(run.gpu_util, 0)} %; predictions ok",
                    flush=True,
                )
    except GpuBenchmarkError as exc:
        failure = str(exc)
        print(f"\n[gpu] FAILED: {exc}\n", file=sys.stderr, flush=True)
    summary = summarize(runs)
    devices = {r.method: r.device for r in runs}
    lines = report(summary, cfg, gpu, devices, matched) if runs else ["(no completed runs)"]
    print("\n" + "\n".join(lines))
    doc = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "argv": args.argv,
        "smoke": args.smoke,
        "config": cfg,
        "machine": env,
        "gpu": gpu,
        "summary": summary,
        "checks": checks(summary),
        "predictions": matched,
        "failure": failure,
        "runs": [asdict(r) for r in runs],
    }
    out = runs_dir / ("gpu-results-smoke.json" if args.smoke else "gpu-results.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    if args.write_results:
        on_gpu = gpu is not None and runs and all("cpu" not in r.device for r in runs)
        if args.smoke or not on_gpu or failure:
            print("not writing RESULTS.md: only a complete GPU run (not --smoke) is recorded")
        else:
            write_results_section(lines, env, args.argv)
    return 1 if failure else 0


if __name__ == "__main__":
    sys.exit(main())
