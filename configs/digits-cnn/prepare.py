"""Regenerate ``model/`` and ``sample-inputs/`` for the digits-cnn example.

Uses scikit-learn's bundled 8x8 digits data set (no download), upscales each image to
16x16 grayscale, trains :class:`digits_net.DigitsNet` for a few epochs on a stratified
train split, prints the held-out test accuracy, saves the weights to
``model/digits_net.pt`` and writes the first held-out test images as PNG files to
``sample-inputs/`` (named ``digit_<index>_label<digit>.png``).

Deterministic (fixed seeds, single-threaded training) and idempotent: rerunning
overwrites the outputs. Run from any directory::

    python configs/digits-cnn/prepare.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

HERE = Path(__file__).resolve().parent
CODE_DIR = HERE / "code"
MODEL_PATH = HERE / "model" / "digits_net.pt"
SAMPLES_DIR = HERE / "sample-inputs"

SEED = 0
TEST_SIZE = 0.25
NUM_SAMPLES = 120
EPOCHS = 15
BATCH_SIZE = 64
LEARNING_RATE = 3e-3


def to_images(raw: np.ndarray, size: int) -> np.ndarray:
    """Turn sklearn's 8x8 digits (values 0-16) into ``size`` x ``size`` uint8 images.

    This is the exact pixel pipeline of the PNG files, so the network is trained on what
    the scoring script will read back.

    Args:
        raw: array of shape ``(N, 8, 8)`` with values in ``[0, 16]``.
        size: output height and width.

    Returns:
        A uint8 array of shape ``(N, size, size)``.
    """
    scaled = np.clip(np.rint(raw * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    return np.stack(
        [
            np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR))
            for img in scaled
        ]
    )


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """Convert uint8 images ``(N, H, W)`` to a float tensor ``(N, 1, H, W)`` in ``[0, 1]``."""
    return torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)


def train(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """Train ``net`` in place with Adam and cross-entropy for ``EPOCHS`` epochs.

    Args:
        net: the network to train.
        x: training images, shape ``(N, 1, H, W)``.
        y: training labels, shape ``(N,)``.
    """
    generator = torch.Generator().manual_seed(SEED)
    optimizer = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)
    loss_fn = nn.CrossEntropyLoss()
    net.train()
    for epoch in range(EPOCHS):
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for start in range(0, len(x), BATCH_SIZE):
            idx = order[start : start + BATCH_SIZE]
            optimizer.zero_grad()
            loss = loss_fn(net(x[idx]), y[idx])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        print(f"epoch {epoch + 1:2d}/{EPOCHS}  train loss {total / len(x):.4f}")


def main() -> None:
    """Train the model and write ``model/`` and ``sample-inputs/``."""
    sys.path.insert(0, str(CODE_DIR))
    from digits_net import IMAGE_SIZE, DigitsNet

    started = time.perf_counter()
    torch.manual_seed(SEED)
    torch.set_num_threads(1)  # bitwise-reproducible training; the network is tiny anyway

    digits = load_digits()
    images = to_images(digits.images, IMAGE_SIZE)
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=TEST_SIZE, random_state=SEED, stratify=labels
    )

    net = DigitsNet()
    train(net, to_tensor(x_train), torch.from_numpy(y_train))

    net.eval()
    with torch.no_grad():
        predicted = net(to_tensor(x_test)).argmax(dim=1).numpy()
    accuracy = float((predicted == y_test).mean())
    print(f"test accuracy: {accuracy:.4f} ({len(y_test)} held-out images)")

    MODEL_PATH.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), MODEL_PATH)

    SAMPLES_DIR.mkdir(parents=True, exist_ok=True)
    for old in SAMPLES_DIR.glob("*.png"):
        old.unlink()
    for i, (img, label) in enumerate(zip(x_test[:NUM_SAMPLES], y_test[:NUM_SAMPLES], strict=True)):
        Image.fromarray(img).save(SAMPLES_DIR / f"digit_{i:04d}_label{label}.png")

    print(
        f"wrote {MODEL_PATH.relative_to(HERE)} ({MODEL_PATH.stat().st_size} bytes) and "
        f"{min(NUM_SAMPLES, len(x_test))} images to {SAMPLES_DIR.relative_to(HERE)}/ "
        f"in {time.perf_counter() - started:.1f}s"
    )


if __name__ == "__main__":
    main()
