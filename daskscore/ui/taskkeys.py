"""Dask task keys that say what a daskscore task holds, and span tags for Dask's own views.

A task of mini-batches 120 to 149 is ``daskscore-mb-120-149-r01a000007-<job id>``: Dask names
a key's *prefix* by its leading words up to the first number (``daskscore-mb``), so the task
stream, the progress panel and the fine-grained metrics group every daskscore task under
one name, while the key itself reads as the mini-batches it runs.  The attempt at the end
(``r<run>a<seq>-<job id>``, new for every submission: a retry, a requeue, a resumed run) keeps
each key unique on the scheduler.  A part of a split mini-batch (``--isolate-failures``) is
``daskscore-mb-120-120-i40-80-...``: its items (or rows) after its mini-batch.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

#: The prefix of every daskscore task in Dask's dashboard (``key_split`` of its keys).
PREFIX = "daskscore-mb"


def task_key(ids: Sequence[int], attempt: str, part: tuple[int, ...] | None = None) -> str:
    """The key of the task running mini-batches ``ids`` (in the order given) as ``attempt``.

    Parameters
    ----------
    ids : sequence of int
        The task's mini-batches; the key names the lowest and the highest.
    attempt : str
        The task attempt, unique per submission (``r<run>a<seq>-<job id>``).
    part : tuple, optional
        The part of a split mini-batch the task runs, ``(mini_batch, lo, hi)``.
    """
    lo, hi = (min(ids), max(ids)) if ids else (0, 0)
    tail = f"-i{part[1]}-{part[2]}" if part is not None else ""
    return f"{PREFIX}-{lo}-{hi}{tail}-{attempt}"


_KEY = re.compile(rf"^{PREFIX}-(\d+)-(\d+)(?:-i(\d+)-(\d+))?-(r\d+a\d+-.+)$")


def parse_key(key: object) -> tuple[int, int, str] | None:
    """``(first mini-batch, last mini-batch, attempt)`` of a daskscore task's key; None for
    any other key."""
    found = _KEY.match(key) if isinstance(key, str) else None
    if found is None:
        return None
    return int(found.group(1)), int(found.group(2)), found.group(5)
