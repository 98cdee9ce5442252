"""W1H scorer: W1's files through a heavier model, about twice W1's per-file cost.

Each input is W1's small CSV (a header and 20 rows of 8 floats), read with ``numpy.loadtxt``
as in W1, then scored by a small fixed MLP (8 -> 64 -> 64 -> 64 -> 1, tanh; seeded weights)
instead of one dot product: about 2x W1's per-file cost (the matrices are small enough that
BLAS never starts threads, so the cost is the same under every method).
One output line per file: ``<basename> <mean score of its rows>``.
"""

from __future__ import annotations

import os

import numpy as np

LAYERS: list[np.ndarray] = []
HIDDEN = 64


def init() -> None:
    """The "model": fixed, seeded weights."""
    rng = np.random.default_rng(0)
    sizes = [8, HIDDEN, HIDDEN, HIDDEN]
    pairs = zip(sizes[:-1], sizes[1:], strict=True)
    LAYERS[:] = [rng.standard_normal((a, b)) / np.sqrt(a) for a, b in pairs]
    LAYERS.append(rng.standard_normal(HIDDEN) / np.sqrt(HIDDEN))


def run(mini_batch: list[str]) -> list[str]:
    """One line per file: ``<basename> <mean of the MLP's scores of its rows>``."""
    out = []
    for path in mini_batch:
        h = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
        for weights in LAYERS[:-1]:
            h = np.tanh(h @ weights)
        out.append(f"{os.path.basename(path)} {float((h @ LAYERS[-1]).mean()):.6f}")
    return out
