"""REMOTE scorer: small files and a fixed 10 ms wait per file (a sleep: the GIL is released).

The same script scores the files from a local folder and from S3 (moto behind a proxy that
delays every request by 30 ms; see benchmarks/README.md): daskscore downloads each
mini-batch's files into a scratch folder and hands ``run()`` local paths, so the only
difference is where the bytes come from.  One output line per file: ``<basename> <content>``.
"""

from __future__ import annotations

import os
import time

#: seconds of (GIL-free) waiting per file: a model served elsewhere, say
WAIT_S = 0.010


def init() -> None:
    """Nothing to load."""


def run(mini_batch: list[str]) -> list[str]:
    """One line per file: ``<basename> <its content>``, after ``WAIT_S`` per file."""
    out = []
    for path in mini_batch:
        with open(path, encoding="ascii") as fh:
            value = fh.read().strip()
        time.sleep(WAIT_S)
        out.append(f"{os.path.basename(path)} {value}")
    return out
