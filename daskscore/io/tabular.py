"""Tabular mode: CSV and Parquet files cut into DataFrame mini-batches of about
``mini_batch_size`` bytes or rows.  Pure functions, no Dask.  A split (a mini-batch) never
crosses a file boundary and knows the index of its first row within its file, so every row
keeps its row number (the DataFrame's index); big files are split.

CSV splitting works on byte ranges cut at line ends, like Dask's ``read_csv(blocksize=...)``,
and has the same limits, documented here once:

* A quoted field holding a line break cannot be cut safely.  The planner scans the whole file
  and, when any line holds an odd number of ``"``, or a line holding ``"`` is not one whole
  record as :mod:`csv` parses it (a ``"`` inside an unquoted field is a plain character, so
  ``1,x"y,"abc`` opens a quoted field though its quotes are even), or a lone ``\\r`` (which
  pandas takes for a line end), it falls back to ONE split for that file, whose rows are not
  counted: its non-blank lines stand for them until it is read.  Other quote characters
  (``quotechar=``) and other separators (``sep=``) are not looked for.
* A job reads CSV files as UTF-8, with or without a byte-order mark: a UTF-16/32 file is
  refused when planned, a byte that is not UTF-8 fails its mini-batch naming its line.
  (``read_split(..., encoding=...)`` reads an ASCII-compatible one; a job names none.)
* Rows are numbered as pandas counts them by default: blank lines (only spaces, tabs, ``\\r``)
  are not rows; the header is the first non-blank line (a UTF-8 byte-order mark before it is
  not part of it).  ``read_split`` therefore refuses keyword arguments that change which lines
  are rows (``header``, ``skiprows``, ``comment``...).
* Column types are inferred split by split, so a column may come back as ``int64`` in one split
  and ``float64`` in another (missing values); pass ``dtype=`` to ``read_split`` to pin them.
"""

from __future__ import annotations

import io
import os
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from daskscore.errors import InputError
from daskscore.io import csvscan, filestamp

if TYPE_CHECKING:  # imported where used: a file-mode job's driver never needs them
    import numpy as np
    import pandas as pd

    from daskscore.io.splittable import Cuts

#: Suffixes (case-insensitive) of the files tabular mode reads.
TABULAR_SUFFIXES = (".csv", ".parquet", ".pq", ".pqt")

#: read_csv arguments that would change which lines are rows, and so break the row numbers
_REFUSED_CSV_KWARGS = frozenset(
    ("header", "skiprows", "skipfooter", "nrows", "chunksize", "iterator", "index_col")
    + ("comment", "skip_blank_lines", "lineterminator")
)


@dataclass(frozen=True)
class Split:
    """One tabular mini-batch: a part of one file.

    Attributes
    ----------
    path, kind : str
        The file, and ``'csv'`` or ``'parquet'``.
    start, stop : int
        CSV: the byte range ``[start, stop)`` of whole lines (the header line is never in it; it
        is re-attached when reading).  Parquet: the row groups ``range(start, stop)``.
    first_row : int
        Index (0-based, within the file, header excluded) of the split's first row.
    n_rows : int or None
        Rows in the split as counted by the planner (Parquet: from the metadata; CSV: non-blank
        lines), or None when not counted (a CSV file that could not be cut).
    lines : int or None
        A split whose rows are not counted: its non-blank lines, what its rows are taken to be
        until it is read (a failure to read it counts them).
    stamp : tuple of (int, int) or None
        The file's size and modification time (ns) when planned; a read checks them (None: not).
    """

    path: str
    kind: str
    start: int
    stop: int
    first_row: int
    n_rows: int | None
    lines: int | None = None
    stamp: filestamp.Stamp | None = None


def plan_splits(paths: list[str], size: tuple[str, int]) -> list[Split]:
    """Cut each file into splits; splits never cross a file and keep the order of ``paths``.

    ``('bytes', n)``: a CSV split holds whole lines, at least ``n`` bytes of them (the last of a
    file excepted) and less than one line more; a Parquet split holds consecutive row groups of
    at most ``n`` compressed bytes together, or one row group when that alone is bigger.
    ``('rows', n)``: a CSV split holds ``n`` rows (the last of a file: the remainder); a Parquet
    split holds consecutive row groups of at most ``n`` rows together, or one row group.
    CSV files are scanned once, in binary chunks (no pandas), to find line ends and count rows;
    a CSV file that cannot be cut safely (see the module notes) gives one split.  A file with no
    data rows (empty, header only, zero-row Parquet) gives no split.

    Parameters
    ----------
    paths : list of str
        The input files, in the order wanted (normally sorted by path).
    size : tuple of (str, int)
        What :meth:`daskscore.config.sizes.MiniBatchSize.tabular` gives.

    Returns
    -------
    list of Split
        The splits of the first file, then of the second, and so on.

    Raises
    ------
    InputError
        A file's suffix is not one of :data:`TABULAR_SUFFIXES`, or a file cannot be read.
    """
    return [
        split for path, kind, cuts in plan_cuts(paths, size) for split in cuts.splits(path, kind)
    ]


def plan_cuts(paths: list[str], size: tuple[str, int]) -> Iterator[tuple[str, str, Cuts]]:
    """:func:`plan_splits` compactly: for each file with splits, its path, its kind and its
    splits as :class:`~daskscore.io.splittable.Cuts` (a file cut by rows: its byte offsets
    only).  A million splits of a file are cut in a few array operations, with no object and
    no array row per split."""
    kind, n = size
    if kind not in ("bytes", "rows") or n < 1:
        raise ValueError(f"size must be ('bytes' | 'rows', n >= 1), not {size!r}")
    for path in (p for p in paths if _kind_of(p) is None):
        raise InputError(
            f"input file '{path}' is not a tabular file: tabular mode reads files ending in "
            f"{', '.join(TABULAR_SUFFIXES)} (case-insensitive)."
        )
    from dataclasses import replace

    for path in paths:
        file_kind = _kind_of(path)
        planner = _plan_csv if file_kind == "csv" else _plan_parquet
        try:
            stamp, runs = planner(path, kind, n)
        except (OSError, ValueError) as exc:  # pyarrow.ArrowInvalid is a ValueError
            raise InputError(f"cannot plan the splits of input file '{path}': {exc}") from exc
        for cuts in runs:  # (each split carries the file's stamp: a read checks it)
            yield path, file_kind or "csv", replace(cuts, stamp=stamp)


def read_split(split: Split, *, parquet_file: Any = None, **read_kwargs: Any) -> pd.DataFrame:
    """Read one split into a DataFrame indexed by file row number.

    CSV: the header line and the byte range go to ``pandas.read_csv(..., header=0,
    **read_kwargs)`` (``dtype``, ``usecols``, ``sep``, ``names``...; arguments that change which
    lines are rows are refused).  Parquet: ``ParquetFile.read_row_groups(range(start, stop),
    **read_kwargs).to_pandas()`` (``columns``...); an index the file's pandas metadata records
    (index columns; a RangeIndex named or not 0, 1, 2...) comes back as column(s) in front, as
    with ``DataFrame.reset_index``, whatever its values.

    Parameters
    ----------
    split : Split
        One split from :func:`plan_splits`.
    parquet_file : pyarrow.parquet.ParquetFile, optional
        The split's Parquet file, already open (a reader of many splits of one file keeps it
        open, see :mod:`daskscore.io.splitreader`); left open.
    **read_kwargs
        Passed to the reader.

    Returns
    -------
    pandas.DataFrame
        The split's rows; the index is a RangeIndex starting at ``split.first_row``.

    Raises
    ------
    ValueError
        A refused CSV keyword argument.
    InputError
        pandas cannot parse the CSV split (the message names the file's line), or read another
        number of rows than the planner counted; the file changed since it was planned.
    """
    try:
        if split.kind == "csv":
            df = _read_csv(split, read_kwargs)
        else:
            from daskscore.io.parquetsplit import read_parquet

            df = read_parquet(split, read_kwargs, parquet_file)
    except FileNotFoundError as exc:
        raise filestamp.gone(split.path) from exc
    return with_row_index(split, df)


@cache
def _copy_on_write_always() -> bool:
    import pandas as pd

    return int(pd.__version__.split(".")[0]) >= 3


def copy_on_write() -> bool:
    """Whether pandas copies shared data before changing it (always from pandas 3 on; in
    pandas 2, when ``mode.copy_on_write`` is set, perhaps by the scoring script)."""
    if _copy_on_write_always():
        return True
    import pandas as pd

    return pd.get_option("mode.copy_on_write") is True


def detached(frame: pd.DataFrame) -> pd.DataFrame:
    """A frame with ``frame``'s values that no later change to ``frame`` reaches, nor a change
    to it ``frame``: with copy-on-write, a new frame sharing the values (a copy is made only by
    whichever of the two is changed first); else a copy of the values."""
    return frame.copy(deep=not copy_on_write())


def with_row_index(split: Split, df: pd.DataFrame) -> pd.DataFrame:
    """``df`` (the rows of ``split``) indexed by file row number, from ``split.first_row``."""
    import pandas as pd

    df.index = pd.RangeIndex(split.first_row, split.first_row + len(df))
    return df


def carry_columns(
    split_df: pd.DataFrame, result: pd.DataFrame, columns: list[str], index: Any = None
) -> pd.DataFrame:
    """Put chosen input columns in front of ``run()``'s result, row by row (join-with-input).

    ``result`` must have one row per input row.  Rows are matched by label where the index
    ``run()`` gave its result (``index``, by default ``result.index``) holds exactly the
    labels of ``split_df``'s index, each once, in another order (a result sorted, its index
    kept): each row gets its own input values.  Otherwise (the same index, or any other: a
    fresh ``0..n-1``, labels of its own) they are matched by position.  A carried column whose
    name ``result`` already uses, as a column or as its index's name (a ``score()`` frame
    keeps that index; a dataset has made it column(s) already), is renamed ``input_<name>``.
    The result keeps its own index and columns; the row number (the input's index) is left to
    the caller.

    Parameters
    ----------
    split_df : pandas.DataFrame
        The mini-batch given to ``run()``, with its index (unique labels: row numbers).
    result : pandas.DataFrame
        What ``run()`` returned for it.
    columns : list of str
        Input columns to carry, in the order wanted.
    index : pandas.Index, optional
        The index ``run()`` gave ``result``, where ``result`` no longer has it (a dataset makes
        it columns).

    Returns
    -------
    pandas.DataFrame
        A new frame: the carried columns, then the result's columns.

    Raises
    ------
    ValueError
        The lengths differ, a column is not in the input, or a renamed column still clashes.
    """
    if len(result) != len(split_df):
        raise ValueError(
            f"cannot carry input columns: run() returned {len(result)} rows for a mini-batch of "
            f"{len(split_df)} rows; it must return one row per input row (in input order, or "
            "keeping the input's index)."
        )
    missing = [c for c in columns if c not in split_df.columns]
    if missing:
        raise ValueError(
            f"cannot carry input column(s) {missing}: the input has {list(split_df.columns)}."
        )
    order = input_order(split_df.index, result.index if index is None else index)
    out, taken = detached(result), [n for n in result.index.names if n is not None]
    for pos, name in enumerate(columns):
        new = f"input_{name}" if name in result.columns or name in taken else name
        if new in out.columns or new in taken:
            raise ValueError(f"cannot carry input column {name!r}: {new!r} is already taken.")
        values = split_df[name].array
        out.insert(pos, new, values if order is None else values.take(order))
    return out


def input_order(given: pd.Index, returned: pd.Index) -> np.ndarray | None:
    """The position in ``given`` (the index of the rows ``run()`` got) of each row ``run()``
    returned, where ``returned`` (its result's index) holds exactly ``given``'s labels, each
    once, in another order; else None: rows are matched by position."""
    if len(given) != len(returned) or returned.nlevels != 1 or given.nlevels != 1:
        return None
    if returned.equals(given) or not (given.is_unique and returned.is_unique):
        return None
    try:
        order = given.get_indexer(returned)
    except (TypeError, ValueError):  # (labels that cannot be compared with the row numbers)
        return None
    return order if len(order) and (order >= 0).all() else None


#: Name prefixes that leave a file out of tabular mode, as pyarrow's ``ignore_prefixes``: its
#: name's (``_SUCCESS``, ``_metadata``) or a folder's below the input folder (``_temporary/``).
IGNORED_PREFIXES = ("_", ".")


def is_tabular(path: str) -> bool:
    """Whether tabular mode reads ``path`` (by its suffix)."""
    return _kind_of(path) is not None


def _kind_of(path: str) -> str | None:
    suffix = os.path.splitext(path)[1].lower()
    return {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".pqt": "parquet"}.get(suffix)


def _cut_rows(blocks: Iterable[np.ndarray], start: int, size: int, kind: str, n: int) -> list[Cuts]:
    """The splits of a CSV file from its row end offsets: split ``i`` runs from
    ``edges[i]`` to ``edges[i + 1]``.  The last split runs to the end of the file (``size``),
    trailing blank lines included."""
    import numpy as np

    from daskscore.io.splittable import Cuts

    if kind == "rows":  # every n-th row ends a split: array operations, no loop over splits
        # (one buffer grown in place: a list of pieces joined at the end took twice the
        # memory, and left the heap holding it)
        code, dtype = ("I", np.uint32) if size < 1 << 32 else ("q", np.int64)
        stops, row = array(code, [start]), 0
        for ends in blocks:
            stops.frombytes(ends[(n - 1 - row) % n :: n].astype(dtype).tobytes())
            row += len(ends)
        if not row:
            return []
        if row > (len(stops) - 1) * n:  # the last split: the rest of the file
            stops.append(size)
        stops[-1] = size
        last = row - (len(stops) - 2) * n
        return [Cuts(np.frombuffer(stops, dtype), 0, n, last)]
    found: list[tuple[int, int, int, int]] = []
    first = row = 0  # the split's first row; rows seen so far
    for ends in blocks:
        i = 0
        while i < len(ends):
            j = i + int(np.searchsorted(ends[i:], start + n))  # first end >= start + n
            if j >= len(ends):
                row += len(ends) - i
                break
            row += j - i + 1
            found.append((start, int(ends[j]), first, row - first))
            start, first, i = int(ends[j]), row, j + 1
    if row > first:
        found.append((start, size, first, row - first))
    elif found:
        found[-1] = (found[-1][0], size, found[-1][2], found[-1][3])
    return Cuts.of_rows(found)


def _plan_csv(path: str, kind: str, n: int) -> tuple[filestamp.Stamp, list[Cuts]]:
    from daskscore.io.splittable import Cuts

    with filestamp.open_planned(path, None) as f:
        stamp = filestamp.stamp_of(os.fstat(f.fileno()), f.fileno())
        size = stamp[0]
        data_start = csvscan.data_start(f)
        csvscan.refuse_compressed(f, path)
        csvscan.refuse_wide(f, path, data_start)
        try:
            blocks = csvscan.row_end_blocks(f, data_start, size)
            return stamp, _cut_rows(blocks, data_start, size, kind, n)
        except csvscan.Unsplittable:  # one split; its rows, not counted, are taken to be its lines
            lines = sum(len(ends) for ends in csvscan.row_end_blocks(f, data_start, size, False))
            return stamp, Cuts.of_rows([[data_start, size, 0, -1 - lines]] if lines else [])


def _plan_parquet(path: str, kind: str, n: int) -> tuple[filestamp.Stamp, list[Cuts]]:
    import pyarrow.parquet as pq

    from daskscore.io.splittable import Cuts

    stamp = filestamp.stamp_of(os.stat(path))
    if stamp[0] == 0:
        return stamp, []  # (an empty file holds no rows, as an empty CSV file does)
    meta = pq.read_metadata(path)
    splits: list[tuple[int, int, int, int]] = []
    start = first = rows = weight = 0
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        if kind == "rows":
            w = group.num_rows
        else:
            w = sum(group.column(c).total_compressed_size for c in range(group.num_columns))
        if rows and group.num_rows and weight + w > n:  # empty groups join the current split
            splits.append((start, i, first, rows))
            start, first, rows, weight = i, first + rows, 0, 0
        rows, weight = rows + group.num_rows, weight + w
    if rows:
        splits.append((start, meta.num_row_groups, first, rows))
    return stamp, Cuts.of_rows(splits)


def _read_csv(split: Split, read_kwargs: dict[str, Any]) -> pd.DataFrame:
    refused = sorted(_REFUSED_CSV_KWARGS.intersection(read_kwargs))
    if refused:
        raise ValueError(
            f"read_split cannot take {refused} for a CSV split: they change which lines are rows."
        )
    with filestamp.open_planned(split.path, split.stamp) as f:
        size = os.fstat(f.fileno()).st_size
        head_len = csvscan.data_start(f)
        f.seek(0)
        head = f.read(head_len)
        f.seek(split.start)
        body = f.read(split.stop - split.start)
    if len(body) < split.stop - split.start or (split.stop < size and body[-1:] not in b"\r\n"):
        where = f"this mini-batch's rows ran to byte {split.stop}, which ends no line now"
        raise filestamp.changed(split.path, f"it is {size} bytes now; {where}")
    import pandas as pd

    try:
        df = pd.read_csv(io.BytesIO(head + body), header=0, **read_kwargs)
    except ValueError as exc:  # (pandas' ParserError, a bad byte for the encoding...)
        from daskscore.io.csvlines import read_error

        raise read_error(split, head, body, exc) from exc
    if split.n_rows is not None and len(df) != split.n_rows:
        why = (
            f"the file changed since the job listed its inputs (it is {size} bytes now; this "
            f"mini-batch's rows ran to byte {split.stop})"
            if size < split.stop
            else "its quoting or line ends defeat byte-range splitting (use one mini-batch per "
            "file or Parquet), or it changed since the job listed its inputs"
        )
        raise InputError(
            f"input file '{split.path}', bytes {split.start}-{split.stop}: pandas read "
            f"{len(df)} rows where the planner counted {split.n_rows}; {why}."
        )
    index = df.index  # (pandas' implicit index column: a RangeIndex too where evenly spaced)
    if not (isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1):
        from daskscore.io.csvlines import extra_fields

        raise extra_fields(split, head, body, len(df.columns))
    return df
