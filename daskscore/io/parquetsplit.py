"""Reading one Parquet split (:func:`read_parquet`, what
:func:`daskscore.io.tabular.read_split` calls): its row groups checked against the plan (a file
written again since the job listed it fails, naming it), and the index the file's pandas
metadata records brought back as column(s)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from daskscore.errors import InputError
from daskscore.io import filestamp

if TYPE_CHECKING:
    import pandas as pd

    from daskscore.io.tabular import Split


def read_parquet(split: Split, read_kwargs: dict[str, Any], pf: Any = None) -> pd.DataFrame:
    import pyarrow.parquet as pq

    if pf is None:
        filestamp.stat_planned(split.path, split.stamp)
        with pq.ParquetFile(split.path) as pf:
            return read_parquet(split, read_kwargs, pf)
    groups, meta = range(split.start, split.stop), pf.metadata
    rows = sum(meta.row_group(i).num_rows for i in groups if i < meta.num_row_groups)
    if split.stop > meta.num_row_groups or (split.n_rows is not None and rows != split.n_rows):
        why = f"row groups {split.start}-{split.stop - 1} held {split.n_rows} rows, now {rows}"
        raise filestamp.changed(split.path, f"{why} of {meta.num_row_groups} group(s)")
    table = pf.read_row_groups(groups, **read_kwargs)
    return _frame(split.path, pf, table, split.first_row, read_kwargs.get("columns"))


def columns_of(path: str, stamp: filestamp.Stamp | None = None) -> pd.Index:
    """The columns of the frames :func:`read_parquet` reads of the file at ``path`` (its stored
    index's included), from its schema alone: no row is read."""
    import pyarrow.parquet as pq

    filestamp.stat_planned(path, stamp)
    with pq.ParquetFile(path) as pf:
        return _frame(path, pf, pf.schema_arrow.empty_table(), 0, None).columns


def _frame(path: str, pf: Any, table: Any, first: int, columns: Any) -> pd.DataFrame:
    """``table`` (rows of ``pf`` from its row ``first``) as a frame, the index the file's
    pandas metadata records made its first column(s)."""
    df = table.to_pandas()
    descriptors = (pf.schema_arrow.pandas_metadata or {}).get("index_columns") or []
    if not any(isinstance(d, str) and d in table.column_names for d in descriptors):
        ranged = _range_index(descriptors, pf.metadata.num_rows, first, len(df))
        if ranged is None or (columns is not None and ranged.name not in columns):
            return df
        df.index = ranged
    try:
        return df.reset_index()
    except ValueError as exc:  # (a column has the name the index comes back under)
        names = [str(n) for n in df.index.names]
        raise InputError(
            f"input file '{path}': its stored index ({', '.join(names)}) comes back as "
            f"column(s) of the mini-batch, and a column has that name already ({exc}); rename "
            "the index or the column where the file is written."
        ) from exc


def _range_index(descriptors: list[Any], rows: int, first: int, n: int) -> pd.RangeIndex | None:
    """The rows ``first`` to ``first + n`` of the file's RangeIndex stored as pandas metadata
    alone, where it holds data (named, or not the row numbers 0, 1, 2...); else None.  pyarrow
    rebuilds it only when the whole file is read, and as a RangeIndex, which looked like none."""
    import pandas as pd

    found = [d for d in descriptors if isinstance(d, dict) and d.get("kind") == "range"]
    if len(found) != 1:
        return None
    whole, name = range(found[0]["start"], found[0]["stop"], found[0]["step"]), found[0]["name"]
    if len(whole) != rows or (name is None and whole.start == 0 and whole.step == 1):
        return None  # (metadata of another frame, as pyarrow judges it; or the row numbers)
    part = whole[first : first + n]
    return pd.RangeIndex(part.start, part.stop, part.step, name=name)
