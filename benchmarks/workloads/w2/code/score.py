"""W2 scorer: a small PyTorch CNN over 1x64x64 float32 ``.npy`` images, one forward per file.

``init()`` builds the network with fixed weights (``torch.manual_seed(0)``), so every process
computes the same predictions without a model file.  ``run()`` loads each file with numpy and
returns ``<basename> <argmax>`` per file.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

model: nn.Module | None = None


def build_model() -> nn.Module:
    """conv 1->8 3x3, relu, maxpool, conv 8->16 3x3, relu, global average pool, linear 16->10."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )
    return net.eval()


def init() -> None:
    """Build the network once per process."""
    global model
    model = build_model()


def run(mini_batch: list[str]) -> list[str]:
    """Classify each image on its own (batch of one): ``<basename> <argmax>``."""
    if model is None:
        raise RuntimeError("init() must be called before run()")
    out = []
    with torch.inference_mode():
        for path in mini_batch:
            image = torch.from_numpy(np.load(path)).unsqueeze(0)
            label = int(model(image).argmax(dim=1).item())
            out.append(f"{os.path.basename(path)} {label}")
    return out
