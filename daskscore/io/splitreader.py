"""Reading one task's tabular splits in order, cheaply: :class:`SplitReader`.

A task often carries many consecutive splits of one file (``mini_batch_size: "500 rows"``), and
:func:`~daskscore.io.tabular.read_split` reads and parses each on its own, paying pandas' fixed
costs (opening the file, finding the header, setting up the parser) per split.  A
``SplitReader`` is made for one task, knowing all its splits, and reads them in order:

* **CSV** — a *run* of consecutive splits of one file (each starting where the last stopped)
  is read as one byte range, at most :data:`RUN_BYTES` of input, with the header re-attached,
  and parsed once by ``pyarrow.csv`` (options matching pandas': the same NA strings,
  ``True``/``False`` spellings, no date inference).  Each split's DataFrame is then cut out of
  it **as ``read_split`` would have parsed that split alone**: pandas infers types split by
  split (an ``int64`` column becomes ``float64`` in a split with a missing value, a column
  that is all missing is ``float64``...), and so does the cutting, column by column.  Where it
  cannot be sure pandas would agree — a float column whose values in the split are all whole
  (pandas may have read ``int64`` there), a text column whose values in the split all look like
  numbers or booleans, an infinity or a NaN spelled oddly — that split alone is read with
  ``read_split``.  A run pyarrow cannot parse as pandas would (other column names, a ragged
  row, a ``0x`` anywhere, a row count other than the planner's) is read split by split with
  ``read_split`` too, and so is the rest of that file in this task.  So every split's frame is
  the one ``read_split`` gives: the same rows, index (the file's row numbers), columns and
  dtypes, whatever splits share its task.
* **Parquet** — consecutive splits of one file share one open ``ParquetFile`` (its footer is
  parsed once); each split's row groups are read once, as ``read_split`` reads them.

A reader given ``text_columns`` reads every CSV split with ``read_split(dtype=...)``, those
columns as text (a job's :attr:`~daskscore.protocol.WorkerJob.text_columns`).

Splits bigger than one pandas low-memory block (``2**20 // columns`` rows, rounded down to a
power of two: pandas may infer types per block inside them) and CSV files that could not be
cut (one split, ``n_rows`` unknown) are read with ``read_split``.  Memory stays bounded: one
run (at most :data:`RUN_BYTES` of input, parsed) at a time, dropped after its last split.

The reader is not thread-safe: one thread reads (the task's prefetch thread, see
:mod:`daskscore.worker.prefetch`, or the task's own thread).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any

from daskscore.io import csvscan, filestamp, tabular
from daskscore.io.tabular import Split

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

#: At most this much of a CSV file's input is parsed at a time (one run of splits).
RUN_BYTES = 16 << 20
#: pandas' default NA strings (``pandas._libs.parsers.STR_NA_VALUES``), spelled out.
NA_STRINGS = (
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
)  # fmt: skip
TRUE_STRINGS = ("True", "TRUE", "true")
FALSE_STRINGS = ("False", "FALSE", "false")


def low_memory_rows(columns: int) -> int:
    """Rows pandas' C parser reads (and infers types over) at a time, for ``columns`` columns."""
    heuristic, rows = (1 << 20) // max(columns, 1), 1
    while rows * 2 < heuristic:
        rows *= 2
    return rows


def read_one(split: Split, text_columns: Sequence[str] = ()) -> pd.DataFrame:
    """The DataFrame of ``split`` alone, as a task's :class:`SplitReader` reads it (``text_columns``
    of a CSV file as text): a retry's input, ``score()``'s, ``validate``'s."""
    reader = SplitReader([split], text_columns)
    try:
        return reader.read(0)
    finally:
        reader.close()


class SplitReader:
    """Read a task's splits, by position in the task, in order (see the module notes)."""

    def __init__(self, splits: Sequence[Split | None], text_columns: Sequence[str] = ()) -> None:
        self._splits = list(splits)
        #: CSV columns read as text (``read_split(dtype=...)``, split by split, no pyarrow run)
        self._text = dict.fromkeys(text_columns, str)
        #: position -> the positions of its CSV run (runs of one split are not listed)
        self._run_of: dict[int, list[int]] = {}
        for run in _plan_runs(self._splits):
            if len(run) > 1:
                self._run_of.update(dict.fromkeys(run, run))
        self._run: tuple[int, _Parsed | None] | None = None  # (first position, parsed)
        self._headers: dict[str, _Header | None] = {}
        self._pandas_only: set[str] = set()
        self._parquet: tuple[str, Any] | None = None

    def read(self, position: int) -> pd.DataFrame:
        """The DataFrame of the split at ``position``, exactly as ``read_split`` reads it."""
        split = self._splits[position]
        if split is None:
            raise ValueError(f"position {position} of the task is not a tabular split")
        if split.kind == "parquet":
            try:
                pf = self._parquet_file(split)
            except FileNotFoundError as exc:
                raise filestamp.gone(split.path) from exc
            return tabular.read_split(split, parquet_file=pf)
        if self._text:
            return tabular.read_split(split, dtype=self._text)
        run = self._run_of.get(position)
        if run is None or split.path in self._pandas_only:
            return tabular.read_split(split)
        if self._run is None or self._run[0] != run[0]:
            self._run = None  # the last run's memory goes first
            self._run = (run[0], self._parse(run))
        parsed = self._run[1]
        frame = parsed.cut(position, split) if parsed is not None else None
        if position == run[-1]:
            self._run = None
            if parsed is not None and parsed.misses * 2 > len(run):
                self._pandas_only.add(split.path)  # pyarrow's parse was wasted; stop trying
        return frame if frame is not None else tabular.read_split(split)

    def close(self) -> None:
        self._run = None
        self._set_parquet(None)

    # ------------------------------------------------------------------ CSV runs
    def _parse(self, run: list[int]) -> _Parsed | None:
        splits = [self._splits[p] for p in run]
        path = splits[0].path  # type: ignore[union-attr]
        try:
            header = self._header(path, splits[0].stamp)  # type: ignore[union-attr]
            parsed = _parse_run(path, header, splits, run) if header is not None else None
        except Exception:  # noqa: BLE001 - read_split then reads (and fails) split by split
            parsed = None
        if parsed is None:
            self._pandas_only.add(path)
        return parsed

    def _header(self, path: str, stamp: filestamp.Stamp | None) -> _Header | None:
        if path not in self._headers:
            self._headers[path] = _Header.of(path, stamp)
        return self._headers[path]

    # ------------------------------------------------------------------ Parquet
    def _parquet_file(self, split: Split) -> Any:
        path = split.path
        if self._parquet is None or self._parquet[0] != path:
            import pyarrow.parquet as pq

            self._set_parquet(None)
            filestamp.stat_planned(path, split.stamp)  # (not a pipe, nor written again)
            self._set_parquet((path, pq.ParquetFile(path)))
        return self._parquet[1]  # type: ignore[index]

    def _set_parquet(self, value: tuple[str, Any] | None) -> None:
        if self._parquet is not None:
            self._parquet[1].close()
        self._parquet = value


def _plan_runs(splits: list[Split | None]) -> list[list[int]]:
    """Positions of consecutive CSV splits that can be parsed together."""
    runs: list[list[int]] = []
    last: Split | None = None
    size = 0
    for pos, s in enumerate(splits):
        if s is None or s.kind != "csv" or s.n_rows is None:
            last = None
            continue
        length = s.stop - s.start
        joins = last is not None and last.path == s.path and last.stop == s.start
        if joins and size + length <= RUN_BYTES:
            runs[-1].append(pos)
            size += length
        else:
            runs.append([pos])
            size = length
        last = s
    return runs


class _Header:
    """A CSV file's header line, and the columns pandas makes of it."""

    def __init__(self, raw: bytes, columns: pd.Index) -> None:
        self.raw = raw
        self.columns = columns

    @classmethod
    def of(cls, path: str, stamp: filestamp.Stamp | None = None) -> _Header | None:
        raw = _header_line(path, stamp)
        columns = _header_columns(raw).copy()  # (a frame's own: its name may be set)
        return cls(raw, columns) if len(columns) else None


def _header_line(path: str, stamp: filestamp.Stamp | None) -> bytes:
    """A CSV file's bytes up to the end of its header line (see :func:`csvscan.data_start`)."""
    with filestamp.open_planned(path, stamp) as f:
        length = csvscan.data_start(f)
        f.seek(0)
        return f.read(length)


@lru_cache(maxsize=8)
def _header_columns(raw: bytes) -> pd.Index:
    """The columns pandas makes of a CSV header line (files of one layout share it)."""
    import pandas as pd

    return pd.read_csv(io.BytesIO(raw), header=0, nrows=0).columns


def columns_of(split: Split) -> pd.Index:
    """The columns of the frames the splits of ``split``'s file are read into, as
    :func:`~daskscore.io.tabular.read_split` gives them, from a CSV file's header line or a
    Parquet file's schema: no row is read."""
    if split.kind == "parquet":
        from daskscore.io.parquetsplit import columns_of as parquet_columns

        return parquet_columns(split.path, split.stamp)
    return _header_columns(_header_line(split.path, split.stamp))


def _parse_run(path: str, header: _Header, splits: list[Any], run: list[int]) -> _Parsed | None:
    """The run's rows parsed by pyarrow, or None where pyarrow would not read them as pandas."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    names = [str(c) for c in header.columns]
    rows = [s.n_rows for s in splits]
    if max(rows) > low_memory_rows(len(names)):
        return None  # pandas may have typed such a split block by block
    first, last = splits[0], splits[-1]
    with filestamp.open_planned(path, first.stamp) as f:
        f.seek(first.start)
        body = f.read(last.stop - first.start)
    if b"0x" in body or b"0X" in body:
        return None  # pyarrow reads 0x1f as an integer; pandas does not
    data = header.raw + body
    forced: dict[str, Any] = {}
    for _ in range(2):
        convert = pacsv.ConvertOptions(
            null_values=list(NA_STRINGS),
            true_values=list(TRUE_STRINGS),
            false_values=list(FALSE_STRINGS),
            strings_can_be_null=True,
            quoted_strings_can_be_null=True,
            column_types=forced,
        )
        read = pacsv.ReadOptions(use_threads=False, block_size=len(data) + 1)
        # (a ragged row, bad UTF-8... raise: the caller then reads split by split)
        table = pacsv.read_csv(io.BytesIO(data), read_options=read, convert_options=convert)
        if table.column_names != names:
            return None
        other = [f.name for f in table.schema if _kind(f.type) is None]
        if not other:
            break
        forced.update(dict.fromkeys(other, pa.string()))  # dates, times: text, as pandas has it
    else:
        return None
    if table.num_rows != sum(rows):
        return None
    return _Parsed(table, header.columns, run, rows, [s.first_row for s in splits])


def _kind(dtype: pa.DataType) -> str | None:
    import pyarrow as pa

    if pa.types.is_int64(dtype):
        return "int"
    if pa.types.is_float64(dtype):
        return "float"
    if pa.types.is_boolean(dtype):
        return "bool"
    if pa.types.is_null(dtype):
        return "null"
    if pa.types.is_string(dtype):
        return "str"
    return None


@cache
def _pandas_text_dtype() -> Any:
    """The dtype pandas' ``read_csv`` gives a text column (``object``, or ``str`` in pandas 3)."""
    import pandas as pd

    return pd.read_csv(io.BytesIO(b"a\nx\n"))["a"].dtype


class _Parsed:
    """A parsed run as one DataFrame (typed as pandas types the whole run), cut split by split
    and retyped where pandas, reading the split alone, would have typed a column otherwise."""

    def __init__(
        self,
        table: pa.Table,
        columns: pd.Index,
        run: list[int],
        rows: list[int],
        first_rows: list[int] | None = None,
    ):
        import numpy as np
        import pandas as pd

        self.misses = 0
        offsets = np.cumsum([0, *rows[:-1]]).tolist()
        self._offsets = dict(zip(run, offsets, strict=True))
        self._cols = [_Column(table.column(i)) for i in range(table.num_columns)]
        self._frame = pd.DataFrame({i: col.whole for i, col in enumerate(self._cols)})
        self._frame.columns = columns
        # the file's row numbers, when the run's splits number their rows on from each other:
        # a split's slice then has its index already (setting it cost a third of a cut)
        starts = first_rows or []
        self._indexed = bool(starts) and all(
            f == starts[0] + o for f, o in zip(starts, offsets, strict=True)
        )
        if self._indexed:
            self._frame.index = pd.RangeIndex(starts[0], starts[0] + sum(rows))

    def cut(self, position: int, split: Split) -> pd.DataFrame | None:
        a = self._offsets[position]
        b = a + (split.n_rows or 0)
        changes = []
        for i, col in enumerate(self._cols):
            change = col.retype(a, b)
            if change is _MISS:
                self.misses += 1
                return None
            if change is not None:
                changes.append((i, change))
        frame = self._frame.iloc[a:b]
        if not tabular.copy_on_write():  # (with it, a change run() makes copies its part first)
            frame = frame.copy()
        for i, values in changes:
            frame.isetitem(i, values)
        return frame if self._indexed else tabular.with_row_index(split, frame)


_MISS = object()  # pandas, reading the split alone, may have typed the column otherwise


class _Column:
    """One column of a run: :attr:`whole` as pandas would type the whole run, and what a split's
    part of it must become to be typed as pandas types that split alone (:meth:`retype`)."""

    def __init__(self, chunked: pa.ChunkedArray) -> None:
        import numpy as np

        self.kind = _kind(chunked.type)
        self.valid: np.ndarray | None = None
        if chunked.null_count and self.kind != "null":
            self.valid = chunked.is_valid().to_numpy(zero_copy_only=False)
        self.filled: Any = None  # int and bool columns with missing values: the values, filled
        if self.kind == "null":
            self.whole: Any = np.full(len(chunked), np.nan)  # pandas: all missing is float64
        elif self.kind == "float":
            self.whole = chunked.to_numpy()  # missing values are NaN
        elif self.kind in ("int", "bool"):
            values = chunked.fill_null(0 if self.kind == "int" else False).to_numpy()
            if self.valid is None:
                self.whole = values
            elif self.kind == "int":
                self.filled, self.whole = values, np.where(self.valid, values, np.nan)
            else:  # pandas: True/False with missing values are objects, NaN for the missing
                self.filled, self.whole = values, values.astype(object)
                self.whole[~self.valid] = np.nan
        else:
            series = chunked.to_pandas()
            text = _pandas_text_dtype()
            if series.dtype != text:
                series = series.astype(text)
            if series.dtype == object:
                series = series.where(series.notna(), np.nan)
            self.whole = series.array

    def retype(self, a: int, b: int) -> Any:
        """None (the part of :attr:`whole` is right), the part's values, or :data:`_MISS`."""
        import numpy as np

        valid = None if self.valid is None else self.valid[a:b]
        if self.kind == "null":
            return None
        if valid is not None and not valid.any():
            return np.full(b - a, np.nan)  # all missing: float64
        complete = valid is None or bool(valid.all())
        if self.kind in ("int", "bool"):
            return self.filled[a:b].copy() if complete and valid is not None else None
        if self.kind == "float":
            part = self.whole[a:b]
            present = part if complete else part[valid]
            if not np.isfinite(present).all():
                return _MISS  # pandas reads " inf" or "+nan" as text
            if (present == np.floor(present)).all() and (
                complete or np.abs(present).max(initial=0) >= 2**53
            ):
                return _MISS  # whole numbers only: pandas may have read int64, uint64, text
            return None
        first = a if valid is None else a + int(valid.argmax())
        if _plainly_text(self.whole[first]):
            return None  # one value that is neither a number nor a boolean: text
        return None if _text(self.whole[a:b], valid) else _MISS


def _plainly_text(value: str) -> bool:
    """Whether pandas reads neither a number nor a boolean in ``value`` (a quick, sure no)."""
    if value in TRUE_STRINGS or value in FALSE_STRINGS:
        return False
    try:
        float(value)  # accepts all that pandas reads as a number, and more
    except ValueError:
        return True
    return False


def _text(part: Any, valid: np.ndarray | None) -> bool:
    """Whether pandas reads the text values ``part`` (``valid`` marks the present ones) as
    text, rather than as numbers or booleans."""
    import numpy as np
    import pandas as pd

    present = np.asarray(part if valid is None else part[valid], dtype=object)
    if np.isin(present, TRUE_STRINGS + FALSE_STRINGS).all():
        return False
    try:
        pd.to_numeric(present)
    except (ValueError, TypeError):
        return True
    return False
