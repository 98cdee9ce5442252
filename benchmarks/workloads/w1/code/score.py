"""W1 scorer: a trivial numpy model per small CSV file.

Each input is a small CSV (a header and 20 rows of 8 floats), read with ``numpy.loadtxt`` and
scored with a fixed linear model: about 65 us per file here, the same order as the issue's
W1 (12.3 s sequential for 100,000 files).  ``W1L`` runs the same files through a lighter
scorer (standard-library parsing, about 33 us per file) to show where fixed costs dominate.
One output line per file: ``<basename> <score>``.
"""

from __future__ import annotations

import os

import numpy as np

WEIGHTS: np.ndarray | None = None


def init() -> None:
    """The "model": fixed weights for the 8 columns."""
    global WEIGHTS
    WEIGHTS = np.linspace(-1.0, 1.0, 8)


def run(mini_batch: list[str]) -> list[str]:
    """One line per file: ``<basename> <mean of the linear scores of its rows>``."""
    out = []
    for path in mini_batch:
        values = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
        out.append(f"{os.path.basename(path)} {float((values @ WEIGHTS).mean()):.6f}")
    return out
