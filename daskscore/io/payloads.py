"""A task's mini-batches as they travel to the worker: :func:`make_payload`.

A task of consecutive tabular splits (``mini_batch_size: "10 rows"``: 2,000 splits a task) goes
as columns, the slices of the job's :class:`~daskscore.io.inputs.SplitTable` (a few bytes a
split, packed with ``array`` slices), and the worker makes its ``Split`` objects; any other
task goes as its list of ``(mini_batch, tries used, work)``.  Making and pickling one
``Split`` object per mini-batch in the driver cost it ~20 µs a mini-batch.
"""

from __future__ import annotations

import pickle
import zlib
from array import array
from collections.abc import Callable, Sequence
from typing import Any

from daskscore.io.splittable import SplitTable
from daskscore.io.tabular import Split
from daskscore.protocol import Payload


def make_payload(ids: list[int], tries: Callable[[int], int], batches: Sequence[Any]) -> Payload:
    """The payload of mini-batches ``ids`` (``tries``: the tries each has used)."""
    # (consecutive and in order: the worker makes them again as ids[0], ids[0] + 1, ...)
    if isinstance(batches, SplitTable) and ids and ids == list(range(ids[0], ids[-1] + 1)):
        a, b = ids[0], ids[-1] + 1
        files, cols = batches.columns(a, b)
        used = array("H", (tries(mb) for mb in ids))
        used_files = sorted(set(cols[0]))
        packed = (a, [files[i] for i in used_files], array("I", used_files), used, *cols)
        data = zlib.compress(pickle.dumps(packed, protocol=pickle.HIGHEST_PROTOCOL), 1)
        return Payload.packed(unpack_splits, data)
    return Payload([(mb, tries(mb), batches[mb]) for mb in ids])


def unpack_splits(data: bytes) -> list[tuple[int, int, Split]]:
    """Worker side: what :func:`make_payload` packed, as ``(mini_batch, tries, split)``."""
    a, files, file_ids, used, fid, start, stop, first, rows = pickle.loads(zlib.decompress(data))
    where = dict(zip(file_ids, files, strict=True))
    return [
        (a + i, used[i], Split(*where[fid[i]], start[i], stop[i], first[i], _rows(rows[i])))
        for i in range(len(used))
    ]


def _rows(n: int) -> int | None:
    return None if n < 0 else n
