"""LIST-1M scorer: trivial; the workload measures listing 1,000,000 (empty) input files.

One output line per file: its base name.
"""

from __future__ import annotations

import os


def init() -> None:
    """Nothing to load."""


def run(mini_batch: list[str]) -> list[str]:
    """One line per file: ``<basename>``."""
    return [os.path.basename(path) for path in mini_batch]
