"""MEMORY scorer: a tabular scorer that returns 500 rows per input file as a pandas DataFrame.

10,000 tiny input files give 5,000,000 predicted rows (about 100 MB of ``predictions.csv``),
which shows whether rows pile up in the driver's or the workers' memory.  Columns: ``file``
(base name), ``row`` (0-499) and ``score`` (a deterministic function of the file's seed).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

ROWS_PER_FILE = 500


def init() -> None:
    """Nothing to load."""


def score_file(path: str) -> pd.DataFrame:
    """500 rows for one file: ``file``, ``row``, ``score`` in [0, 1), rounded to 5 decimals."""
    with open(path, encoding="ascii") as fh:
        seed = int(fh.read().strip())
    rows = np.arange(ROWS_PER_FILE, dtype=np.int64)
    score = np.round(((seed * 7919 + rows * 104729) % 100003) / 100003.0, 5)
    name = os.path.basename(path)
    return pd.DataFrame({"file": [name] * ROWS_PER_FILE, "row": rows, "score": score})


def run(mini_batch: list[str]) -> pd.DataFrame:
    """All files' rows, in the order of the mini-batch."""
    return pd.concat([score_file(p) for p in mini_batch], ignore_index=True)
