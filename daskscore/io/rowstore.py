"""Fixed-width records by id: in memory while they are few, in a temporary file past that.

The driver keeps a few dozen bytes for each mini-batch a job settles cleanly (its worker,
times, rows, byte range: :class:`daskscore.engine.columns.CleanFinals`), for the per-try CSV
and the assembly at the job's end.  Kept in memory, that grows with the job: 54 MB at a
million mini-batches, half a GB at ten million.  :class:`RowStore` keeps them in memory up to
:data:`IN_MEMORY_BYTES` and beyond that in an unnamed temporary file (``TMPDIR``; removed by
the system when the process ends, however it ends), written where they land and read back a
slice at a time: the process's memory no longer grows with the job, and the operating system's
page cache keeps the file's recent pages at hand.  The file's room on disk is taken when it is
made; where there is none, the records stay in memory and the job log says so.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

logger = logging.getLogger("daskscore")

#: Records kept in memory up to this many bytes; a bigger store is a file.
IN_MEMORY_BYTES = 8 << 20
#: Ids this close together are read and written as one span (fewer system calls).
_GAP = 64


class RowStore:
    """``n`` records of ``dtype`` (a numpy structured type), all zeros until written."""

    def __init__(self, n: int, dtype: Any, budget: int | None = None) -> None:
        import numpy as np

        self.n, self.dtype = n, np.dtype(dtype)
        self._size = self.dtype.itemsize
        self._lock = threading.Lock()
        limit = IN_MEMORY_BYTES if budget is None else budget
        self._mem: np.ndarray | None = None
        self._fd = -1
        if n * self._size > limit and hasattr(os, "preadv"):  # (POSIX; elsewhere: memory)
            self._fd = self._file(n * self._size)
        if self._fd < 0:
            self._mem = np.zeros(n, self.dtype)
        else:
            self._close = weakref.finalize(self, os.close, self._fd)

    @staticmethod
    def _file(size: int) -> int:
        """A new unnamed temporary file of ``size`` bytes of zeros, its room taken on the
        disk now (not met full halfway through the job); -1 where that cannot be done (the
        records then stay in memory, and the job log says why)."""
        fd = -1
        try:
            with tempfile.TemporaryFile(prefix="daskscore-books-") as f:  # (no name: unlinked)
                fd = os.dup(f.fileno())
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(fd, 0, size)
            else:  # (macOS: a sparse file)
                os.ftruncate(fd, size)
            return fd
        except OSError as exc:
            if fd >= 0:
                os.close(fd)
            logger.warning(
                "the driver keeps %.0f MB of its books in memory: no room for them in a "
                "temporary file in %s (%s); set TMPDIR to a folder with room to keep them on "
                "disk", size / 1e6, tempfile.gettempdir(), exc.strerror or exc,
            )  # fmt: skip
            return -1

    @property
    def on_disk(self) -> bool:
        """Whether the records are in a file."""
        return self._fd >= 0

    def write(self, ids: Any, rows: Any) -> None:
        """Records ``rows`` (an array of :attr:`dtype`) at ``ids`` (distinct)."""
        import numpy as np

        ids = np.asarray(ids, np.int64)
        if not len(ids):
            return
        if self._mem is not None:
            self._mem[ids] = rows
            return
        if len(ids) > 1 and not bool((ids[1:] > ids[:-1]).all()):
            order = np.argsort(ids, kind="stable")
            ids, rows = ids[order], rows[order]
        with self._lock:
            for a, b in _groups(ids):
                lo, hi = int(ids[a]), int(ids[b - 1]) + 1
                if hi - lo == b - a:  # consecutive: written as they are
                    self._pwrite(np.ascontiguousarray(rows[a:b]), lo)
                else:
                    span = self.span(lo, hi)
                    span[ids[a:b] - lo] = rows[a:b]
                    self._pwrite(span, lo)

    def put(self, i: int, row: tuple[Any, ...]) -> None:
        """One record, as a tuple of the fields' values, at ``i``."""
        import numpy as np

        if self._mem is not None:
            self._mem[i] = row
        else:
            with self._lock:
                self._pwrite(np.array([row], self.dtype), i)

    def read(self, ids: Any) -> np.ndarray:
        """The records at ``ids`` (a new array, in the order of ``ids``)."""
        import numpy as np

        ids = np.asarray(ids, np.int64)
        if self._mem is not None:
            return self._mem[ids]
        if len(ids) > 1 and not bool((ids[1:] >= ids[:-1]).all()):
            order = np.argsort(ids, kind="stable")
            out = np.empty(len(ids), self.dtype)
            out[order] = self.read(ids[order])
            return out
        parts = []
        for a, b in _groups(ids):
            lo, hi = int(ids[a]), int(ids[b - 1]) + 1
            parts.append(self.span(lo, hi)[ids[a:b] - lo])
        return np.concatenate(parts) if parts else np.empty(0, self.dtype)

    def get(self, i: int) -> tuple[Any, ...]:
        """Record ``i`` as a tuple of Python values."""
        row = self._mem[i] if self._mem is not None else self.span(i, i + 1)[0]
        return row.tolist()  # type: ignore[no-any-return]

    def span(self, lo: int, hi: int) -> np.ndarray:
        """Records ``lo .. hi-1`` (a new, writable array)."""
        import numpy as np

        if self._mem is not None:
            return self._mem[lo:hi].copy()
        if not 0 <= lo <= hi <= self.n:
            raise IndexError(f"records {lo}..{hi} of {self.n}")
        buf = bytearray((hi - lo) * self._size)
        view, at, fd = memoryview(buf), 0, self._fd
        while at < len(buf):
            got = os.preadv(fd, [view[at:]], lo * self._size + at)
            if not got:
                raise OSError(f"the books' file ended at record {lo + at // self._size}")
            at += got
        return np.frombuffer(buf, self.dtype)

    def _pwrite(self, rows: np.ndarray, lo: int) -> None:
        data, fd, at = memoryview(rows.tobytes()), self._fd, 0
        while at < len(data):
            at += os.pwrite(fd, data[at:], lo * self._size + at)

    def close(self) -> None:
        """Give the file back (the records are gone); also done when the store is collected."""
        if self._fd >= 0:
            self._close()


def _groups(ids: np.ndarray) -> list[tuple[int, int]]:
    """Runs ``[a, b)`` of sorted ``ids`` whose neighbours are at most :data:`_GAP` apart."""
    import numpy as np

    if not len(ids):
        return []
    cuts = np.flatnonzero(np.diff(ids) > _GAP) + 1
    bounds = [0, *cuts.tolist(), len(ids)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))
