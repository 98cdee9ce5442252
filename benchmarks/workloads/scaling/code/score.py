"""SCALING scorer: a fixed amount of pure-Python CPU work per file (about 5 ms), no I/O to speak of.

The work is deterministic (a fixed number of iterations of a linear congruential generator
seeded by the file's content), not a sleep, so that two workers can only finish twice as fast
if they really run on two cores at once.
"""

from __future__ import annotations

import os

#: Iterations per file: about 5 ms of one core for CPython 3.11 on a current x86 server.
ITERATIONS = 70_000


def init() -> None:
    """Nothing to load."""


def burn(iterations: int, seed: int) -> int:
    """Deterministic CPU work: ``iterations`` steps of a 31-bit LCG from ``seed``."""
    x = seed
    for _ in range(iterations):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
    return x


def run(mini_batch: list[str]) -> list[str]:
    """One line per file: ``<basename> <final LCG state>``."""
    out = []
    for path in mini_batch:
        with open(path, encoding="ascii") as fh:
            seed = int(fh.read().strip())
        out.append(f"{os.path.basename(path)} {burn(ITERATIONS, seed)}")
    return out
