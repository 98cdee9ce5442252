"""W1L scorer: trivial work per file, so that per-file and per-mini-batch overhead dominates.

Each input is a small CSV (a header and 20 rows of 8 floats).  It is parsed with the standard
library on purpose: ``pandas.read_csv`` costs about 0.5 ms per tiny file, which would turn this
into a pandas benchmark.  One output line per file: ``<basename> <sum of its values>``.
"""

from __future__ import annotations

import os


def init() -> None:
    """Nothing to load."""


def score_file(path: str) -> float:
    """The sum of all values of one CSV file (its header skipped)."""
    with open(path, encoding="ascii") as fh:
        lines = fh.read().split("\n")[1:]
    total = 0.0
    for line in lines:
        if line:
            total += sum(map(float, line.split(",")))
    return total


def run(mini_batch: list[str]) -> list[str]:
    """One line per file: ``<basename> <score>``."""
    return [f"{os.path.basename(p)} {score_file(p):.4f}" for p in mini_batch]
