"""The GPU benchmark's baseline: a hand-written ``torch.utils.data.DataLoader`` loop.

Run by ``benchmarks/gpu.py`` in a fresh process, on the same files, model, batch size and
device as daskscore: a ``Dataset`` that decodes each JPEG with PIL and normalises it (the
scoring script's own ``load_image``), ``--workers`` CPU decoder processes, ``pin_memory``
on CUDA, batches of ``--batch-size`` files in sorted path order (so the batches are
daskscore's mini-batches), and the scoring script's ``build_model`` (same seeded weights)
under ``torch.inference_mode()`` and fp16 autocast on CUDA.  It writes one line per file,
formatted as the scoring script's ``run()`` does, and its timings (epoch seconds of the
scoring loop's start and end) as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time

T0 = time.time()


def list_files(folder: str) -> list[str]:
    """Files under ``folder``, recursive, dot-files and dot-folders skipped, sorted."""
    files: list[str] = []
    for root, dirs, names in os.walk(os.path.realpath(folder)):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        files.extend(os.path.join(root, n) for n in names if not n.startswith("."))
    return sorted(files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", required=True, help="the scoring script's folder")
    parser.add_argument("--model-dir", required=True, help="what AZUREML_MODEL_DIR would be")
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--timings", required=True)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=8, help="DataLoader num_workers")
    args = parser.parse_args(argv)

    sys.path.insert(0, os.path.abspath(args.code))
    import torch
    from score import build_model, load_image  # the scoring script's, as daskscore runs it
    from torch.utils.data import DataLoader, Dataset

    class Images(Dataset):
        def __init__(self, files: list[str]) -> None:
            self.files = files

        def __len__(self) -> int:
            return len(self.files)

        def __getitem__(self, i: int) -> torch.Tensor:
            return load_image(self.files[i])

    torch.backends.cudnn.benchmark = True
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"
    model = build_model(args.model_dir).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    files = list_files(args.input)
    loader = DataLoader(
        Images(files),
        batch_size=args.batch_size,
        shuffle=False,
        num_workers=args.workers,
        pin_memory=cuda,
        prefetch_factor=4 if args.workers else None,
    )
    names = [os.path.basename(f) for f in files]
    amp = torch.autocast("cuda", dtype=torch.float16) if cuda else contextlib.nullcontext()
    loop_start = time.time()
    done = 0
    with open(args.output, "w", encoding="utf-8") as out, torch.inference_mode(), amp:
        for x in loader:
            x = x.to(device, non_blocking=True)
            if cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            top = model(x).float().topk(2, dim=1)
            values, classes = top.values.cpu().tolist(), top.indices[:, 0].cpu().tolist()
            for name, c, v in zip(names[done : done + len(classes)], classes, values, strict=True):
                out.write(f"{name} {c} {v[0]:.4f} {v[0] - v[1]:.4f}\n")
            done += len(classes)
    loop_end = time.time()
    timings = {
        "device": f"cuda ({torch.cuda.get_device_name(0)})" if cuda else "cpu",
        "images": done,
        "process_start": T0,
        "loop_start": loop_start,
        "loop_end": loop_end,
        "torch_threads": torch.get_num_threads(),
    }
    with open(args.timings, "w", encoding="utf-8") as fh:
        json.dump(timings, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
