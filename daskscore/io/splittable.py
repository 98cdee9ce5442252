"""The tabular splits of a job, kept compact: :class:`Cuts` (one file's run of splits) and
:class:`SplitTable` (the job's, by mini-batch id).

A file cut into mini-batches of ``n`` rows is a list of byte offsets: split ``i`` runs from
``edges[i]`` to ``edges[i + 1]``, holds ``n`` rows (the last: the remainder) and starts at row
``i * n``.  That is all :class:`Cuts` keeps for it: 4 bytes a split (8 in a file of 4 GiB or
more), where a row of start, stop, first row and rows took 24-32.  Splits that do not follow
that pattern (cut by bytes, Parquet row groups, splits given one by one) keep their first rows
and row counts too.  A table of a million splits is a few MB, and planning one makes no array
of a row per split.

What a resumed job keeps of an earlier run's mini-batches is matched to this table by mini-batch
id: :meth:`SplitTable.ranges` says, per file, which rows its splits hold (a digest of their
first rows and row counts), so that a resume can tell whether the ids still mean those rows.
"""

from __future__ import annotations

import hashlib
import struct
from bisect import bisect_right
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from daskscore.io.tabular import Split

if TYPE_CHECKING:
    import numpy as np

_U32 = 1 << 32
#: Splits hashed at a time by :meth:`Cuts.digest` (two int64 arrays of that many: 16 MiB).
_DIGEST_CHUNK = 1 << 20
#: Splits of a run :meth:`Cuts.digest` hashes without numpy.
_FEW = 64


def _small(values: Any) -> Any:
    """``values`` (a numpy integer array) as ``uint32`` where every value fits, else
    ``int64``."""
    import numpy as np

    fits = not len(values) or (int(values.min()) >= 0 and int(values.max()) < _U32)
    return values.astype(np.uint32 if fits else np.int64, copy=False)


@dataclass(frozen=True, eq=False)
class Cuts:
    """Consecutive splits of one file: split ``i`` is ``[edges[i], edges[i + 1])``.

    Regular (``every > 0``): split ``i`` holds ``every`` rows, the last ``last``, and starts at
    row ``first0 + i * every``.  Otherwise ``first`` and ``rows`` give each split's first row
    and rows (negative: not counted, ``-1 - lines``, the split's :attr:`Split.lines`).
    ``stamp``: the file's when planned (:attr:`Split.stamp`).
    """

    edges: np.ndarray
    first0: int = 0
    every: int = 0
    last: int = 0
    first: np.ndarray | None = None
    rows: np.ndarray | None = None
    stamp: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return len(self.edges) - 1

    @classmethod
    def of_rows(cls, cuts: Any, stamp: tuple[int, ...] | None = None) -> list[Cuts]:
        """The splits of an ``int64`` array of a row per split (start, stop, first row, rows),
        as runs of :class:`Cuts`: a new run where a split does not start at the last one's
        stop."""
        import numpy as np

        cuts = np.asarray(cuts, np.int64).reshape(-1, 4)
        breaks = np.flatnonzero(cuts[1:, 0] != cuts[:-1, 1]) + 1
        return [cls._run(part, stamp) for part in np.split(cuts, breaks) if len(part)]

    @classmethod
    def _run(cls, cuts: Any, stamp: tuple[int, ...] | None = None) -> Cuts:
        import numpy as np

        edges = _small(np.append(cuts[:, 0], cuts[-1, 1]))
        first, rows = cuts[:, 2], cuts[:, 3]
        every = int(rows[0]) if len(rows) > 1 else max(int(rows[0]), 1)
        regular = (
            every > 0
            and rows[-1] >= 0
            and bool((rows[:-1] == every).all())
            and bool((first == first[0] + every * np.arange(len(first))).all())
        )
        if regular:
            return cls(edges, int(first[0]), every, int(rows[-1]), stamp=stamp)
        return cls(edges, first=_small(first), rows=rows.astype(np.int64), stamp=stamp)

    def columns(self, a: int, b: int) -> tuple[Any, Any, Any, Any]:
        """Splits ``a .. b-1``: their starts, stops, first rows and rows (numpy arrays)."""
        import numpy as np

        start, stop = self.edges[a:b], self.edges[a + 1 : b + 1]
        if self.every:
            first = self.first0 + self.every * np.arange(a, b, dtype=np.int64)
            rows = np.full(b - a, self.every, np.int64)
            if b == len(self):
                rows[-1] = self.last
            return start, stop, first, rows
        assert self.first is not None and self.rows is not None
        return start, stop, self.first[a:b], self.rows[a:b]

    def splits(self, path: str, kind: str, a: int = 0, b: int | None = None) -> Iterator[Split]:
        """Splits ``a .. b-1`` (default: all) as :class:`~daskscore.io.tabular.Split` objects
        of file ``path``."""
        columns = self.columns(a, len(self) if b is None else b)
        for start, stop, first, rows in zip(*(c.tolist() for c in columns), strict=True):
            if rows < 0:  # not counted: its lines (none known for -1)
                lines = -1 - rows if rows < -1 else None
                yield Split(path, kind, start, stop, first, None, lines, self.stamp)
            else:
                yield Split(path, kind, start, stop, first, rows, stamp=self.stamp)

    def slice(self, i: int, j: int) -> Cuts:
        """Splits ``i .. j-1`` of these, as cuts of their own."""
        edges = self.edges[i : j + 1]
        if self.every:
            first0 = self.first0 + i * self.every
            return Cuts(edges, first0, self.every, self.rows_of(j - 1), stamp=self.stamp)
        assert self.first is not None and self.rows is not None
        return Cuts(edges, first=self.first[i:j], rows=self.rows[i:j], stamp=self.stamp)

    def rows_of(self, i: int) -> int:
        """Rows of split ``i`` (negative: not counted, ``-1 - lines``)."""
        if self.every:
            return self.last if i == len(self) - 1 else self.every
        assert self.rows is not None
        return int(self.rows[i])

    def total(self) -> int:
        """Rows of all the splits as counted (the lines of one not counted)."""
        if self.every:
            return self.every * (len(self) - 1) + self.last
        assert self.rows is not None
        return int(self.rows[self.rows > 0].sum() - (self.rows[self.rows < 0] + 1).sum())

    def uncounted(self) -> tuple[int, int]:
        """The splits whose rows are not counted, and their lines."""
        if self.every:
            return 0, 0
        assert self.rows is not None
        lines = self.rows[self.rows < 0]
        return len(lines), int(-(lines + 1).sum())

    def digest(self, into: Any) -> None:
        """Feed ``into`` (a :mod:`hashlib` object) which rows each split holds: its first row
        and row count, little-endian int64 pairs; a split whose rows are not counted (a CSV
        file that is not cut: the whole file) is ``-1`` rows, whatever its lines (whether a
        kept mini-batch of it read the lines it has now is checked apart,
        :func:`daskscore.engine.resume.check_uncut`).  The same
        splits give the same bytes whatever their arrays' types; the byte offsets are not fed
        (a row's length may change, and with it the offsets of those after it, while every
        split holds the same rows)."""
        n = len(self)
        if n <= _FEW:  # (a few splits, as most files have: plain ints, no numpy call)
            if self.every:
                first = [self.first0 + i * self.every for i in range(n)]
            else:
                assert self.first is not None
                first = self.first.tolist()
            pairs = [v for i in range(n) for v in (first[i], max(self.rows_of(i), -1))]
            into.update(struct.pack(f"<{2 * n}q", *pairs))
            return
        import numpy as np

        for a in range(0, n, _DIGEST_CHUNK):
            _, _, first, rows = self.columns(a, min(n, a + _DIGEST_CHUNK))
            pairs = np.empty((len(first), 2), "<i8")
            pairs[:, 0], pairs[:, 1] = first, np.maximum(rows, -1)
            into.update(pairs.tobytes())

    def nbytes(self) -> int:
        extra = (self.first.nbytes if self.first is not None else 0) + (
            self.rows.nbytes if self.rows is not None else 0
        )
        return int(self.edges.nbytes) + extra


class SplitTable(Sequence[Split]):
    """Tabular splits as :class:`Cuts`, runs of one file each; split ``i`` is made when asked
    for."""

    def __init__(self, splits: Iterable[Split]) -> None:
        runs: list[tuple[str, str, Any, list[tuple[int, int, int, int]]]] = []
        for split in splits:  # (runs of splits of one file, as plan_cuts gives them)
            if not runs or runs[-1][:3] != (split.path, split.kind, split.stamp):
                runs.append((split.path, split.kind, split.stamp, []))
            rows = -1 - (split.lines or 0) if split.n_rows is None else split.n_rows
            runs[-1][3].append((split.start, split.stop, split.first_row, rows))
        self._fill(
            (path, kind, cuts) for path, kind, st, rows in runs for cuts in Cuts.of_rows(rows, st)
        )

    @classmethod
    def from_cuts(cls, planned: Iterable[tuple[str, str, Cuts]]) -> SplitTable:
        """The table of :func:`daskscore.io.tabular.plan_cuts`' runs (no object a split)."""
        table = cls.__new__(cls)
        table._fill(planned)
        return table

    def _fill(self, runs: Iterable[tuple[str, str, Cuts]]) -> None:
        self._files: list[tuple[str, str]] = []
        self._file_ids: dict[tuple[str, str], int] = {}
        #: each run's file (an index into _files), its cuts, and the id of its first split
        self._run_file: list[int] = []
        self._runs: list[Cuts] = []
        self._heads: list[int] = []
        total = 0
        for path, kind, cuts in runs:
            if not len(cuts):
                continue
            fid = self._file_ids.setdefault((path, kind), len(self._files))
            if fid == len(self._files):
                self._files.append((path, kind))
            self._run_file.append(fid)
            self._runs.append(cuts)
            self._heads.append(total)
            total += len(cuts)
        self._len = total

    def __len__(self) -> int:
        return self._len

    def _locate(self, i: int) -> tuple[int, int]:
        """Split ``i``'s run, and its place in the run."""
        if not 0 <= i < self._len:
            raise IndexError("split index out of range")
        r = bisect_right(self._heads, i) - 1
        return r, i - self._heads[r]

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        r, at = self._locate(index + self._len if index < 0 else index)
        return next(self._runs[r].splits(*self._files[self._run_file[r]], at, at + 1))

    def runs(self, a: int, b: int) -> Iterator[tuple[str, str, Cuts]]:
        """Splits ``a .. b-1`` as runs of one file each: path, kind and cuts."""
        while a < b:
            r, i = self._locate(a)
            cuts = self._runs[r]
            j = min(len(cuts), i + b - a)
            yield (*self._files[self._run_file[r]], cuts.slice(i, j))
            a += j - i

    def heads(self) -> Iterator[Split]:
        """The first split of each file that has splits, in the files' order."""
        seen: set[int] = set()
        for fid, cuts in zip(self._run_file, self._runs, strict=True):
            if fid not in seen:
                seen.add(fid)
                yield next(cuts.splits(*self._files[fid], 0, 1))

    def ids_of(self, paths: Collection[str]) -> Iterator[tuple[str, range]]:
        """The split ids of the files ``paths``: a file's path and the ids of each run of it."""
        for fid, cuts, head in zip(self._run_file, self._runs, self._heads, strict=True):
            if self._files[fid][0] in paths:
                yield self._files[fid][0], range(head, head + len(cuts))

    def planned(self, i: int) -> int:
        """Rows of split ``i`` as the planner counted them (not counted: its lines)."""
        r, at = self._locate(i)
        rows = self._runs[r].rows_of(at)
        return rows if rows >= 0 else -1 - rows

    def planned_total(self) -> int:
        return sum(cuts.total() for cuts in self._runs)

    def uncounted(self) -> tuple[int, int]:
        """The splits whose rows are not counted (CSV files that could not be cut), and their
        lines."""
        found = [cuts.uncounted() for cuts in self._runs if not cuts.every]
        return sum(n for n, _ in found), sum(lines for _, lines in found)

    def ranges(self) -> dict[str, tuple[int, int, str]]:
        """Per file with splits: their number, its rows (:meth:`Cuts.total`), and a digest of
        the rows each split holds (:meth:`Cuts.digest`).  Two tables of the same files, in the
        same order, whose files all give the same digests hold the same rows under every
        split id; a file with no rows has no entry."""
        found: dict[str, list[Any]] = {}
        for fid, cuts in zip(self._run_file, self._runs, strict=True):
            path, kind = self._files[fid]
            entry = found.get(path)
            if entry is None:
                entry = found[path] = [0, 0, hashlib.blake2b(kind.encode(), digest_size=16)]
            entry[0] += len(cuts)
            entry[1] += cuts.total()
            cuts.digest(entry[2])
        return {path: (n, rows, h.hexdigest()) for path, (n, rows, h) in found.items()}

    def nbytes(self) -> int:
        """The bytes of the table's arrays (what grows with the splits)."""
        return sum(cuts.nbytes() for cuts in self._runs)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]
