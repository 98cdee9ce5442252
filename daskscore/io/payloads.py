"""A task's mini-batches as they travel to the worker: :func:`make_payload`.

A task of consecutive tabular splits (``mini_batch_size: "10 rows"``: 2,000 splits a task) goes
as the runs of the job's :class:`~daskscore.io.splittable.SplitTable` it covers: per file, its
planned stamp, the first byte offset and the splits' lengths in bytes (one or two bytes a
split, in the smallest unsigned type that holds them), and the rows (a file cut by rows: the
same for every split); the worker makes its ``Split`` objects.  Any other task goes as its list of
``(mini_batch, tries used, work)``.  Making and pickling one ``Split`` object per mini-batch in
the driver cost it ~20 µs a mini-batch; and the embedded scheduler keeps the last 1,000
messages it sent (``distributed.admin.low-level-log-length``) in the driver's memory, so a
payload's bytes a split are the driver's too (about 1 byte a split after zlib, where start,
stop, first row and rows took about 10).
"""

from __future__ import annotations

import pickle
import zlib
from array import array
from collections.abc import Callable, Sequence
from typing import Any

from daskscore.io.splittable import Cuts, SplitTable
from daskscore.io.tabular import Split
from daskscore.protocol import Payload


def make_payload(ids: list[int], tries: Callable[[int], int], batches: Sequence[Any]) -> Payload:
    """The payload of mini-batches ``ids`` (``tries``: the tries each has used)."""
    # (consecutive and in order: the worker makes them again as ids[0], ids[0] + 1, ...)
    if isinstance(batches, SplitTable) and ids and ids == list(range(ids[0], ids[-1] + 1)):
        a, b = ids[0], ids[-1] + 1
        used = array("H", (tries(mb) for mb in ids))
        runs = [(path, kind, cuts.stamp, *_packed(cuts)) for path, kind, cuts in batches.runs(a, b)]
        data = zlib.compress(pickle.dumps((a, used, runs), protocol=pickle.HIGHEST_PROTOCOL), 1)
        return Payload.packed(unpack_splits, data)
    return Payload([(mb, tries(mb), batches[mb]) for mb in ids])


def _narrow(values: Any) -> tuple[str, bytes]:
    """Non-negative integers (a numpy array) in the smallest unsigned type that holds them;
    any other integers as int64: the type's code and the bytes."""
    import numpy as np

    top = int(values.max()) if len(values) else 0
    low = int(values.min()) if len(values) else 0
    dtype = np.int64
    if low >= 0:
        dtype = next(
            t for t in (np.uint8, np.uint16, np.uint32, np.int64) if top <= np.iinfo(t).max
        )
    return np.dtype(dtype).str, values.astype(dtype).tobytes()


def _widen(packed: tuple[str, bytes]) -> Any:
    import numpy as np

    return np.frombuffer(packed[1], packed[0]).astype(np.int64)


def _packed(cuts: Cuts) -> tuple[Any, ...]:
    """A run's cuts as plain values: the first edge, the lengths, and the rows."""
    import numpy as np

    edges = cuts.edges.astype(np.int64)
    lengths = _narrow(np.diff(edges))
    if cuts.every:
        return int(edges[0]), lengths, cuts.first0, cuts.every, cuts.last, None, None
    assert cuts.first is not None and cuts.rows is not None
    first, rows = _narrow(cuts.first.astype(np.int64)), _narrow(cuts.rows)
    return int(edges[0]), lengths, 0, 0, 0, first, rows


def unpack_splits(data: bytes) -> list[tuple[int, int, Split]]:
    """Worker side: what :func:`make_payload` packed, as ``(mini_batch, tries, split)``."""
    import numpy as np

    a, used, runs = pickle.loads(zlib.decompress(data))
    out: list[tuple[int, int, Split]] = []
    for path, kind, stamp, edge0, lengths, first0, every, last, first, rows in runs:
        edges = np.concatenate(([edge0], edge0 + np.cumsum(_widen(lengths))))
        if every:
            cuts = Cuts(edges, first0, every, last, stamp=stamp)
        else:
            cuts = Cuts(edges, first=_widen(first), rows=_widen(rows), stamp=stamp)
        for split in cuts.splits(path, kind):
            mb = a + len(out)
            out.append((mb, used[mb - a], split))
    return out
