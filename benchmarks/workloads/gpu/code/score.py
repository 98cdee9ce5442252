"""GPU benchmark scorer: ResNet-50 on JPEG files, in Azure ML's batch-deployment style.

``init()`` builds the model (``resnet.py``: seeded random weights, plus the classifier bias
found in ``$AZUREML_MODEL_DIR/model/head.pt``, written by ``benchmarks/gpu.py``), puts it in
eval mode and on the GPU when there is one (``cudnn.benchmark``, channels-last).
``run(mini_batch)`` decodes the files with PIL, normalises them (ImageNet's mean and std),
stacks them into one batch and classifies it under ``torch.inference_mode()`` (and fp16
autocast on CUDA).  One output line per file:
``<basename> <class> <top-1 logit> <top-1 minus top-2 logit>``.

The DataLoader baseline (``benchmarks/gpu_loader.py``) uses the same ``build_model`` and
``load_image``, so both methods score the same model on the same tensors.
"""

from __future__ import annotations

import contextlib
import glob
import os

import numpy as np
import torch
from PIL import Image
from resnet import resnet50

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)

model: torch.nn.Module | None = None
device = torch.device("cpu")


def build_model(model_dir: str) -> torch.nn.Module:
    """ResNet-50 with the seeded weights and the bias saved in ``<model_dir>/*/head.pt``
    (or ``<model_dir>/head.pt``), in eval mode, on the CPU."""
    found = glob.glob(os.path.join(model_dir, "*", "head.pt"))
    found += glob.glob(os.path.join(model_dir, "head.pt"))
    head = torch.load(found[0], map_location="cpu", weights_only=True)
    net = resnet50(width=int(head["width"]), seed=int(head["seed"]))
    with torch.no_grad():
        net.fc.bias.copy_(head["fc_bias"])
    return net.eval()


def load_image(path: str) -> torch.Tensor:
    """One file as a normalised float32 tensor (3, H, W)."""
    with Image.open(path) as img:
        pixels = np.array(img.convert("RGB"), dtype=np.uint8)
    x = torch.from_numpy(pixels).permute(2, 0, 1).float().div_(255.0)
    return x.sub_(MEAN).div_(STD)


def autocast() -> contextlib.AbstractContextManager:
    """fp16 autocast on CUDA; nothing on the CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def init() -> None:
    """Build the model once per worker process; on the GPU if there is one."""
    global model, device
    torch.backends.cudnn.benchmark = True
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = build_model(os.environ["AZUREML_MODEL_DIR"]).to(device)
    if device.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    model = net
    name = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    print(f"scoring on {device.type}{name}", flush=True)


def run(mini_batch: list[str]) -> list[str]:
    """Classify the mini-batch's images as one batch; one line per file."""
    assert model is not None, "init() was not called"
    x = torch.stack([load_image(path) for path in mini_batch])
    with torch.inference_mode(), autocast():
        x = x.to(device, non_blocking=True)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        top = model(x).float().topk(2, dim=1)
    values, classes = top.values.cpu().tolist(), top.indices[:, 0].cpu().tolist()
    return [
        f"{os.path.basename(path)} {c} {v[0]:.4f} {v[0] - v[1]:.4f}"
        for path, c, v in zip(mini_batch, classes, values, strict=True)
    ]
