"""WARM scorer: trivial; the workload measures how soon a job's first mini-batch starts.

One output line per file: ``<basename> <content>``.
"""

from __future__ import annotations

import os


def init() -> None:
    """Nothing to load."""


def run(mini_batch: list[str]) -> list[str]:
    """One line per file: ``<basename> <its content>``."""
    out = []
    for path in mini_batch:
        with open(path, encoding="ascii") as fh:
            out.append(f"{os.path.basename(path)} {fh.read().strip()}")
    return out
