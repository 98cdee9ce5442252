"""SKEW scorer: W1's CSV parsing plus fixed CPU work, 20x more for the 1% of "slow" files.

Every file costs a base of about 0.25 ms of pure-Python work; a file whose name ends in
``-slow.csv`` (1% of them, chosen by a seeded draw when the data is generated) costs 20 times
that.  The work is a fixed number of iterations, not a sleep, so it really takes a core.
"""

from __future__ import annotations

import os

#: Iterations for an ordinary file: about 0.25 ms of one core for CPython 3.11.
BASE_ITERATIONS = 3_500
#: A slow file costs this many times the base.
SLOW_FACTOR = 20


def init() -> None:
    """Nothing to load."""


def burn(iterations: int, seed: int) -> int:
    """Deterministic CPU work: ``iterations`` steps of a 31-bit LCG from ``seed``."""
    x = seed
    for _ in range(iterations):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
    return x


def score_file(path: str) -> str:
    """``<basename> <sum of values> <LCG state>`` for one CSV file."""
    with open(path, encoding="ascii") as fh:
        lines = fh.read().split("\n")[1:]
    total = 0.0
    for line in lines:
        if line:
            total += sum(map(float, line.split(",")))
    name = os.path.basename(path)
    factor = SLOW_FACTOR if name.endswith("-slow.csv") else 1
    seed = round(total * 10_000) & 0x7FFFFFFF
    return f"{name} {total:.4f} {burn(BASE_ITERATIONS * factor, seed)}"


def run(mini_batch: list[str]) -> list[str]:
    """One line per file."""
    return [score_file(p) for p in mini_batch]
