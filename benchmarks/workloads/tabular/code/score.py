"""TABULAR-100K scorer: rows of one big CSV, 10 rows per mini-batch; doubles a column.

Tabular mode (``mini_batch_size: "10 rows"``): ``run()`` gets a ``pandas.DataFrame`` of 10
rows and returns it with ``x`` doubled, so nearly all the cost is per mini-batch (reading,
dispatching, writing), not per row.  The baseline is a plain
``pandas.read_csv(chunksize=10)`` loop over the same file calling the same ``run()``.
"""

from __future__ import annotations

import pandas as pd


def init() -> None:
    """Nothing to load."""


def run(mini_batch: pd.DataFrame) -> pd.DataFrame:
    """The rows with ``x`` doubled (columns ``id``, ``x``, ``y``, in that order)."""
    return mini_batch.assign(x=mini_batch["x"] * 2)
