"""One schema for a dataset: the columns and dtypes every one of its files is written with.

``run()`` may return a column with one dtype in a mini-batch and another in the next (ints in
one, floats in another; a tabular input's dtypes are inferred for each mini-batch on its own),
and the staged parts keep what each returned.  A dataset is written with one schema whatever
its partitioning (``rows_per_file``, ``partition_on``): :func:`unify` finds it from the staged
parts' schemas alone (their Arrow types and the pandas dtypes recorded with them), with
``pandas.concat``'s rules for the dtypes a column has in the mini-batches that hold values in
it (int64 and float64 make float64; numbers and text make object, which Dask writes as text),
and :meth:`Layout.conform` gives it to each output partition before it is written.  A column
that holds nothing but nulls in a mini-batch (Arrow's ``null`` type), or is missing there,
takes the other mini-batches' dtype; where that is numpy's int or bool, which hold no nulls,
or a part's column of it may hold nulls (ints or bools with ``None`` among them, pandas'
``Int64``), the column is pandas' nullable one (``Int64``, ``boolean``: Arrow's int64 and bool
with nulls), and :meth:`Layout.conform` converts its values from Arrow, so that no value
changes (never through float64 or numpy's bool).  A categorical column stays categorical: each
file has its own categories, as a dictionary with 32-bit indices (:attr:`Layout.arrow`),
whatever their number.

A column that still cannot be written with one type (numbers and text in one column with
Dask's conversion of object columns to text turned off) is a :class:`SchemaConflict` naming the
column, its types and a mini-batch of each (:meth:`Layout.conflict`).
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from daskscore.io import nested

logger = logging.getLogger("daskscore")

#: Types of a column that a conflict's message lists, at most.
SHOWN_TYPES = 4
#: Columns named by a conflict that does not say which column failed, at most.
SHOWN_COLUMNS = 3
#: pandas' nullable dtypes of ints, floats and bools (numpy's hold no nulls, or only NaN).
_MASKED = frozenset(
    [f"{sign}Int{bits}" for sign in ("", "U") for bits in (8, 16, 32, 64)]
    + ["Float32", "Float64", "boolean"]
)


class SchemaConflict(ValueError):
    """A dataset column whose types in different mini-batches cannot be written as one."""


@dataclass
class Layout:
    """A dataset's schema and where its columns' types came from."""

    #: an empty DataFrame: the dataset's columns, in order, and their dtypes
    meta: Any
    #: ``column -> [(type, first mini-batch with it), ...]`` for every column whose staged type
    #: differs between mini-batches (Arrow's names: ``int64``, ``double``, ``large_string``)
    varying: dict[str, list[tuple[str, int]]]
    #: the Arrow type of each categorical column in Parquet files: a dictionary with 32-bit
    #: indices, whatever number of categories each file has
    arrow: dict[str, Any]

    #: the Arrow type of each column staged with one type in every mini-batch (null aside)
    staged: dict[str, Any] = field(default_factory=dict)

    def written(self, fmt: str) -> Layout:
        """This layout as a ``fmt`` dataset is written: a CSV file holds nested values as text
        (:meth:`prepare`), and, where Dask's ``dataframe.convert-string`` is on, the object
        columns not written as their Arrow type are made text here (Dask would make nested
        values text too, with numpy's repr cut short)."""
        import pandas as pd

        arrow = dict(self.arrow)
        if fmt == "csv":
            arrow = {c: kind for c, kind in arrow.items() if not nested.kept(kind)}
        meta = self.meta.copy()
        if _strings_enabled():
            for column in meta.columns:
                if column not in arrow and str(meta[column].dtype) == "object":
                    meta[column] = meta[column].astype(pd.StringDtype("pyarrow"))
        return Layout(meta, self.varying, arrow, self.staged)

    def prepare(self, table: Any) -> Any:
        """``table`` (one staged part) with each column of nested values of the dataset's
        Arrow type, or as text (:func:`nested.as_text`: JSON, never numpy's repr) where the
        dataset holds the column as text."""
        for at, column in enumerate(table.column_names):
            values, kind = table.column(at), self.arrow.get(column)
            if kind is not None and nested.kept(kind):
                if values.type != kind:
                    table = table.set_column(at, column, _cast(values, kind))
            elif nested.kept(values.type):
                table = table.set_column(at, column, nested.as_text(values))
        return table

    def schema(self, dtypes: Any, text: Iterable[str] = ()) -> Any:
        """The Arrow schema of a Parquet file of columns of ``dtypes`` (a Series: column ->
        dtype), the columns ``text`` (partition folders) as text.  Dask would infer it from
        sample values, and cannot for a column of Python objects."""
        import pandas as pd
        import pyarrow as pa

        text, fields = set(text), []
        for column, dtype in dtypes.items():
            if column in text:
                kind = pa.large_string()
            elif column in self.arrow:
                kind = self.arrow[column]
            elif str(dtype) == "object":
                kind = self.staged.get(column)
                kind = pa.large_string() if kind is None or pa.types.is_null(kind) else kind
            else:
                empty = pd.DataFrame({"v": pd.Series([], dtype=dtype)})
                kind = pa.Schema.from_pandas(empty, preserve_index=False).field("v").type
            fields.append(pa.field(str(column), kind))
        return pa.schema(fields)

    def conform(self, table: Any) -> Any:
        """``table`` (one staged part's rows, an Arrow table) as a pandas frame with the
        dataset's columns and dtypes; its other columns (the mini-batch tag) are kept after
        them.  A column of a nullable dtype is made from its Arrow values (:func:`_nullable`);
        an int column with nulls of another is made of Python ints, never float64."""
        import pandas as pd

        table = self.prepare(table)
        direct = {
            c: _nullable(table, c, dtype) for c, dtype in self.meta.dtypes.items() if _masked(dtype)
        }
        rest = table.drop_columns([c for c in direct if c in table.column_names])
        frame = rest.to_pandas(integer_object_nulls=True)
        for column, values in direct.items():
            frame[column] = pd.Series(values, index=frame.index)
        columns = list(self.meta.columns)
        columns += [c for c in frame.columns if c not in self.meta.columns]
        if list(frame.columns) != columns:
            frame = frame.reindex(columns=columns)
        casts = {}
        for column, dtype in self.meta.dtypes.items():
            have = frame[column].dtype
            if have == dtype:
                continue
            if _categorical(dtype):  # its categories are each part's own (not in the schema)
                if not _categorical(have):
                    casts[column] = "category"
                continue
            casts[column] = dtype
        return frame.astype(casts) if casts else frame

    def describe(self) -> list[tuple[int, str]]:
        """``(logging level, line)`` for each column whose type differs between mini-batches,
        for the job log: a warning where its values are written as text."""
        lines = []
        for column, types in self.varying.items():
            dtype = self.arrow.get(column, self.meta[column].dtype)
            text = str(dtype) == "object" and _strings_enabled()
            lines.append(
                (
                    logging.WARNING if text else logging.INFO,
                    f"dataset column '{column}' is {_shown(types)}: written as "
                    f"{'text (str() of each value)' if text else dtype} in every file",
                )
            )
        return lines

    def conflict(self, exc: BaseException) -> SchemaConflict | None:
        """The :class:`SchemaConflict` that ``exc`` (raised writing the dataset) comes from: a
        column whose types in different mini-batches are only one as Python objects (the one
        ``exc`` names, if it names one); None when there is none (``exc`` is another problem).
        """
        mixed = [c for c in self.varying if str(self.meta[c].dtype) == "object"]
        named = [c for c in self.meta.columns if _names(str(exc), c)]
        if named:
            mixed = [c for c in mixed if c in named[:1]]
        if not mixed:
            return _unwritable(exc, named)
        parts = [f"column '{c}' is {_shown(self.varying[c])}" for c in mixed[:SHOWN_COLUMNS]]
        these = "this column" if len(parts) == 1 else "these columns"
        return SchemaConflict(
            f"the dataset cannot be written with one type per column: {'; '.join(parts)}, "
            f"which Parquet cannot hold as one type. Nothing was written to the dataset "
            f"folder; return one type for {these} from every run() (convert it there, e.g. "
            "with astype) and run the job again with --overwrite"
        )


def _cast(values: Any, kind: Any) -> Any:
    """``values`` (an Arrow array) as type ``kind``: Arrow's cast, or (a struct given fields it
    lacks, which older Arrow does not cast) made again from the values."""
    import pyarrow as pa

    try:
        return values.cast(kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return pa.array(values.to_pylist(), type=kind)


def _masked(dtype: Any) -> bool:
    """Whether ``dtype`` is one of pandas' nullable ints, floats or bools (``Int64``,
    ``boolean``): made from a column's Arrow values (:func:`_nullable`)."""
    import numpy as np

    return not isinstance(dtype, np.dtype) and str(dtype) in _MASKED


def _nullable(table: Any, column: Any, dtype: Any) -> Any:
    """Column ``column`` of ``table`` (nulls where it has none) as a pandas array of ``dtype``
    (:func:`_masked`), made from its Arrow values: ints over 2**53 and nulls kept.  Ints made
    floats (a dataset column of ints in some mini-batches, floats in others) are cast as
    ``pandas.concat`` casts them."""
    import pyarrow as pa

    kind = pa.from_numpy_dtype(dtype.numpy_dtype)
    names = table.column_names
    if column not in names:
        return dtype.__from_arrow__(pa.chunked_array([pa.nulls(table.num_rows, kind)]))
    values = table.column(names.index(column))
    if values.type != kind:
        values = values.cast(kind, safe=not pa.types.is_floating(kind))
    return dtype.__from_arrow__(values)


def _unwritable(exc: BaseException, named: list[Any]) -> SchemaConflict | None:
    """A :class:`SchemaConflict` for an error of Arrow's (values it cannot write as the
    dataset's type): the job's verdict, with its summary, rather than an internal error."""
    import pyarrow as pa

    # (Dask's to_parquet raises Arrow's error as a ValueError of its own, its repr inside)
    if not isinstance(exc, pa.ArrowException) and "pyarrow schema" not in str(exc):
        return None
    what = f"column '{named[0]}'" if named else "a column"
    text = " ".join(str(exc).split())[:300]
    return SchemaConflict(
        f"the dataset cannot be written: {what} holds values Arrow cannot write as the "
        f"dataset's type ({type(exc).__name__}: {text}). Nothing was written to the dataset "
        "folder; return one type for it from every run() and run the job again with --overwrite"
    )


def _names(text: str, column: Any) -> bool:
    """Whether an error's ``text`` names ``column`` (as Arrow's do: ``column x with type``)."""
    return re.search(rf"\bcolumn '?{re.escape(str(column))}\b", text) is not None


def _shown(types: list[tuple[str, int]]) -> str:
    """``int64 in mini-batch 0, double in mini-batch 5`` (the first :data:`SHOWN_TYPES`)."""
    shown = ", ".join(f"{t} in mini-batch {mb}" for t, mb in types[:SHOWN_TYPES])
    return shown + (f" and {len(types) - SHOWN_TYPES} more" if len(types) > SHOWN_TYPES else "")


def _strings_enabled() -> bool:
    """Whether Dask writes object columns as text (``dataframe.convert-string``)."""
    from dask.dataframe.utils import pyarrow_strings_enabled

    return bool(pyarrow_strings_enabled())


def unify(pieces: Iterable[tuple[Any, int]]) -> Layout:
    """The :class:`Layout` of a dataset whose staged parts have the Arrow schemas of
    ``pieces``, ``(schema, first mini-batch read from it)`` in mini-batch order."""
    import pandas as pd
    import pyarrow as pa

    types: dict[str, dict[str, int]] = {}  # (column -> type name -> first mini-batch: in order)
    kinds: dict[str, dict[str, Any]] = {}  # (the Arrow types themselves, but null)
    dtypes: dict[str, dict[str, Any]] = {}  # (the pandas dtypes of the parts with values)
    holds: dict[str, int] = {}  # (column -> the number of pieces that have it)
    nulls: set[str] = set()  # (columns null, or that may hold nulls, in some part)
    values = {}  # (dictionary columns: their Arrow type)
    schemas: set[bytes] = set()  # (each distinct schema once, its pandas metadata too)
    count = 0
    for schema, mini_batch in pieces:
        count += 1
        for name, kind in zip(schema.names, schema.types, strict=True):
            types.setdefault(name, {}).setdefault(_type_name(kind), mini_batch)
            holds[name] = holds.get(name, 0) + 1
            if not pa.types.is_null(kind):
                kinds.setdefault(name, {}).setdefault(str(kind), kind)
        key = schema.serialize().to_pybytes()
        if key in schemas:
            continue
        schemas.add(key)
        empty, recorded = schema.empty_table().to_pandas(), _recorded(schema)
        for name, kind in zip(schema.names, schema.types, strict=True):
            if pa.types.is_null(kind):
                nulls.add(name)
                continue
            if pa.types.is_dictionary(kind):  # categories: as their values for now
                values[name] = kind
                dtype = pa.array([], kind.value_type).to_pandas().dtype
            else:
                dtype = empty[name].dtype
                if _may_hold_nulls(dtype, recorded.get(name)):
                    nulls.add(name)
            dtypes.setdefault(name, {}).setdefault(str(dtype), dtype)
    nulls.update(c for c, n in holds.items() if n < count)  # (missing from some parts)
    meta = pd.DataFrame(
        {c: pd.Series([], dtype=_common(dtypes.get(c, {}), c in nulls)) for c in types}
    )
    varying = {
        c: [(t, mb) for t, mb in seen.items() if t != "null"]
        for c, seen in types.items()
        if len(set(seen) - {"null"}) > 1
    }
    arrow = {}
    for name, seen in kinds.items():  # nested values: written as their Arrow type
        kind = nested.unified(seen.values())
        if kind is not None and str(meta[name].dtype) == "object":
            arrow[name] = kind
    for name, kind in values.items():  # categorical in every mini-batch: stays categorical
        if name not in varying:
            categories = pd.Index(pa.array([], kind.value_type).to_pandas())
            meta[name] = pd.Categorical([], categories=categories, ordered=kind.ordered)
            arrow[name] = pa.dictionary(pa.int32(), kind.value_type, kind.ordered)
    staged = {c: next(iter(seen.values())) for c, seen in kinds.items() if len(seen) == 1}
    return Layout(meta, varying, arrow, staged=staged)


def _recorded(schema: Any) -> dict[str, str]:
    """``column -> the dtype pandas had`` as a staged part's pandas metadata records it."""
    meta = schema.pandas_metadata or {}
    return {
        str(c.get("field_name", c.get("name"))): str(c.get("numpy_type"))
        for c in meta.get("columns", [])
    }


def _may_hold_nulls(dtype: Any, recorded: str | None) -> bool:
    """Whether a part's column read as numpy's int or bool ``dtype`` (of an empty table) may
    hold nulls: pandas had it as another dtype (``object`` of ints and None, ``Int64``)."""
    import numpy as np

    return isinstance(dtype, np.dtype) and dtype.kind in "iub" and recorded != str(dtype)


def _common(dtypes: dict[str, Any], nulls: bool) -> Any:
    """The one dtype of a column that has ``dtypes`` in the parts with values in it
    (``pandas.concat``'s rules; ``object`` where none has); with ``nulls``, numpy's int or
    bool made pandas' nullable one (``Int64``, ``boolean``), which holds them."""
    import numpy as np
    import pandas as pd

    if not dtypes:
        return np.dtype(object)
    found = list(dtypes.values())
    if len(found) > 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # (pandas < 3 on empty Series)
            empties = [pd.Series([], dtype=d) for d in found]
            found = [pd.concat(empties, ignore_index=True).dtype]
    dtype = found[0]
    if nulls and isinstance(dtype, np.dtype) and dtype.kind in "iub":
        return pd.array(np.array([], dtype=dtype)).dtype
    return dtype


def _type_name(kind: Any) -> str:
    """An Arrow type's name; a dictionary's without its indices' width (which follows the
    number of categories)."""
    if hasattr(kind, "value_type") and hasattr(kind, "index_type"):
        return f"dictionary<values={kind.value_type}{', ordered' if kind.ordered else ''}>"
    return str(kind)


def _categorical(dtype: Any) -> bool:
    return str(dtype) == "category"
