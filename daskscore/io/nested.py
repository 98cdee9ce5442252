"""Nested values in a dataset: lists, numpy arrays, dicts, maps, decimals, bytes and dates.

pandas holds such a column as Python objects (``object`` dtype), and Dask's
``dataframe.convert-string`` makes every object column text: ``str()`` of a numpy array is
numpy's repr, cut short with ``...`` past 1,000 values.  A dataset keeps them whole instead:

* in the worker, :func:`arrow_values` finds the one Arrow type of an object column's values
  (``list<double>``, ``struct<...>``, ``map<...>``, ``decimal128``, ``date32``), and
  :func:`staged_frame`
  holds the column as that type (``pandas.ArrowDtype``), so that mini-batches of different
  kinds are staged apart and a map is written as a map;
* the staged parts are written with pandas metadata that any pandas reads back
  (:func:`write_table`);
* the driver writes such a column with its Arrow type in a Parquet dataset
  (:mod:`daskscore.io.dataschema`), and as text in a CSV dataset (:func:`as_text`): JSON for
  lists, structs and maps, ISO 8601 for dates and times, UTF-8 (backslash escapes for what is
  not) for bytes; a column of decimals is staged as each one's exact ``str()`` for a CSV
  dataset (Arrow would give every decimal of the mini-batch its widest scale: ``1.10`` as
  ``1.100``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any


def kept(kind: Any) -> bool:
    """Whether a column of Arrow type ``kind`` is written as that type (pandas holds its values
    as Python objects, which Dask would otherwise make text)."""
    import pyarrow as pa

    t = pa.types
    return (
        t.is_nested(kind)
        or t.is_decimal(kind)
        or t.is_binary(kind)
        or t.is_large_binary(kind)
        or t.is_fixed_size_binary(kind)
        or t.is_date(kind)
        or t.is_time(kind)
    )


class ColumnError(ValueError):
    """A mini-batch's result (a DataFrame) that no dataset can hold as it is."""


#: What ``pandas.api.types.infer_dtype`` calls an object column that Arrow takes as one type
#: without trying (text under pandas 2, say): only the others are tried (ints too: one may be
#: beyond 64 bits).
_ONE_TYPE = frozenset({"string", "empty", "floating", "boolean", "bytes"})
#: Digits of a too large int that an error message shows.
SHOWN_DIGITS = 40
#: The column a list that run() returned is written as in a dataset.
PREDICTION = "prediction"
#: In ``frame.attrs`` of a dataset's frame made from a list run() returned (taken out by
#: :func:`writable`): what run() returned, in words (``a list``), for its errors.
RETURNED_ATTR = "daskscore_returned"


def index_columns(frame: Any) -> Any:
    """``frame`` (a mini-batch's result) with its index made its first column(s) where it holds
    data, as ``DataFrame.to_parquet`` keeps it: a named index, a MultiIndex, any index but a
    RangeIndex.  The columns are named after the index's names (``index``, or ``level_N`` for
    level N of a MultiIndex, where unnamed).  An unnamed RangeIndex is left out: ``0..n-1``, or
    a tabular mini-batch's row numbers (whose first rows would have it, its later ones not).

    Raises
    ------
    ColumnError
        A name the index would be written under is a column's too (or two levels').
    """
    import pandas as pd

    index = frame.index
    if isinstance(index, pd.RangeIndex) and index.name is None:
        return frame
    one = index.nlevels == 1
    names = [
        n if n is not None else ("index" if one else f"level_{i}")
        for i, n in enumerate(index.names)
    ]
    taken = [n for i, n in enumerate(names) if n in frame.columns or n in names[:i]]
    if taken:
        raise ColumnError(
            f"run() returned a DataFrame whose index a dataset keeps as column(s) "
            f"{', '.join(repr(str(n)) for n in names)}, and the name "
            f"{', '.join(repr(str(n)) for n in taken)} is taken by a column (or another index "
            "level); the rows of this mini-batch are not written. Rename the index in run() "
            "(df.rename_axis('new_name')), or drop it (df.reset_index(drop=True)) where it "
            "holds nothing to keep."
        )
    return frame.rename_axis(names).reset_index()


def writable(frame: Any, fmt: str = "parquet") -> Any:
    """``frame`` (a mini-batch's result) as it is staged: its index as column(s) where it holds
    data (:func:`index_columns`); each object column of nested values
    (lists, numpy arrays, dicts, maps, decimals, dates) held as its one Arrow type
    (:func:`staged_frame`); for a CSV dataset, a column of decimals as each one's ``str()``.
    Refuses what a dataset cannot hold: a column name given twice, or an object column whose
    values Arrow cannot hold as one type (ints and text, dicts and text, an int beyond int64).
    Raised for the mini-batch, before anything is staged, so that it fails alone, naming the
    column (and the dataset's format, ``fmt``: ``parquet`` or ``csv``); the job goes on.

    Raises
    ------
    ColumnError
        Naming the column and the types of its values (or the index's name that a column has).
    """
    import pandas as pd
    import pyarrow as pa

    if isinstance(frame.columns, pd.MultiIndex):  # (a groupby().agg([...]), say)
        example = "_".join(str(level) for level in frame.columns[0]) if len(frame.columns) else ""
        raise ColumnError(
            f"run() returned a DataFrame with {frame.columns.nlevels} levels of column names "
            f"(a MultiIndex, e.g. {frame.columns[0]!r}); a dataset's columns need one name "
            "each, so the rows of this mini-batch are not written. Flatten them in run(), "
            "e.g. df.columns = ['_'.join(map(str, c)) for c in df.columns]"
            + (f" (giving {example!r})." if example else ".")
        )
    twice = list(dict.fromkeys(frame.columns[frame.columns.duplicated()]))
    if twice:
        names = ", ".join(repr(str(c)) for c in twice)
        raise ColumnError(
            f"run() returned a DataFrame with the column name {names} more than once; a "
            "dataset's columns need names of their own, so the rows of this mini-batch are not "
            "written. Rename or drop the repeated columns in run()."
        )
    returned = frame.attrs.pop(RETURNED_ATTR, None)  # (a list run() returned, made a frame)
    refusals = (pa.ArrowException, OverflowError, TypeError, ValueError)  # (Unicode's: escaped)
    frame = index_columns(frame)
    arrays, plain = {}, {}
    for column in frame.columns:
        values = frame[column]
        if values.dtype != object or pd.api.types.infer_dtype(values, skipna=True) in _ONE_TYPE:
            continue
        try:
            array = arrow_values(values)
        except UnicodeError:  # text that is not valid Unicode: written escaped (write_part)
            continue
        except refusals as exc:  # (OverflowError: an int beyond int64's range)
            numbers = numpy_values(values)  # (tensors, 0-d arrays: as a numpy array's items)
            if numbers is None:
                raise _column_error(column, values, fmt, exc, returned) from None
            plain[column] = values = numbers
            if values.dtype != object:  # (a column of numbers)
                continue
            try:
                array = arrow_values(values)
            except refusals as again:
                raise _column_error(column, values, fmt, again, returned) from None
        if fmt == "csv" and pa.types.is_decimal(array.type):  # (each one's own digits)
            valid = array.is_valid().to_pylist()
            texts = [str(v) if ok else None for v, ok in zip(values, valid, strict=True)]
            arrays[column] = pa.array(texts, pa.large_string())
        elif kept(array.type):
            arrays[column] = array
    if plain:
        frame = frame.copy(deep=False)
        for column, values in plain.items():
            frame[column] = values
    return staged_frame(frame, arrays)


def _column_error(
    column: Any, values: Any, fmt: str, exc: Exception, returned: str | None = None
) -> ColumnError:
    """The :class:`ColumnError` of an object column whose values Arrow cannot hold as one type
    (``exc``, Arrow's error: an ``OverflowError`` for an int beyond 64 bits); ``returned``:
    what run() returned where it was not a DataFrame (its items are the ``prediction``
    column)."""
    kinds = sorted({type(v).__name__ for v in values.dropna().head(10_000)})
    containers = {"list", "tuple", "dict", "ndarray", "set", "frozenset"}
    big = next((v for v in values if isinstance(v, int) and not -(2**63) <= v < 2**63), None)
    if big is not None:
        digits = str(big)
        shown = digits if len(digits) <= SHOWN_DIGITS else digits[:SHOWN_DIGITS] + "..."
        held = f"the int {shown}, beyond the range of a 64-bit integer column"
        advice = (
            f"Make the column text in run() (df[{str(column)!r}].astype(str)), which keeps "
            "every digit, or float where the digits need not be exact."
        )
    else:
        if len(kinds) > 1:
            held = f"values of the types {', '.join(kinds[:6])} together"
        elif kinds and kinds[0] in containers:
            held = f"{kinds[0]} values of more than one type inside"
        else:
            held = f"{''.join(kinds) or 'object'} values (a type Arrow cannot convert)"
        advice = (
            f"Make the column one type in run() (e.g. df[{str(column)!r}].astype(str)), or "
            "split it in two."
        )
    holder = "one Parquet column" if fmt == "parquet" else "one column of a CSV dataset"
    where = f"column {str(column)!r} of run()'s DataFrame holds"
    if returned and column == PREDICTION:
        where = f"run() returned {returned} whose items (the dataset's {PREDICTION!r} column) hold"
        advice = (
            "Make the items text in run() ([str(v) for v in items]), which keeps every digit, "
            "or floats where the digits need not be exact; or return a DataFrame."
            if big is not None
            else "Make the items one type in run() (e.g. [str(v) for v in items]), or return "
            "a DataFrame."
        )
    return ColumnError(
        f"{where} {held}, which {holder} cannot hold ({exc}); the rows of this mini-batch are "
        f"not written. {advice}"
    )


def arrow_values(values: Any) -> Any:
    """``values`` (a pandas object column) as one Arrow array, its type inferred by Arrow; a
    column of lists of ``(key, value)`` pairs (how pandas holds a Parquet map) as a map.

    Raises
    ------
    pyarrow.ArrowInvalid, pyarrow.ArrowTypeError
        The values are not of one type.
    """
    import pyarrow as pa

    try:
        return pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        kind = _map_type(values)
        if kind is None:
            raise
        return pa.array(values, type=kind, from_pandas=True)


def _map_type(values: Any) -> Any:
    """The map type of ``values`` when each is a sequence of ``(key, value)`` pairs (else
    None)."""
    import pyarrow as pa

    keys, items = [], []
    for value in values:
        if value is None or value is pa.NA or (isinstance(value, float) and value != value):
            continue
        if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__"):
            return None
        try:
            pairs = list(value)
        except Exception:  # noqa: BLE001 - a 0-d array or tensor, say: not iterable after all
            return None
        for pair in pairs:
            if not isinstance(pair, tuple) or len(pair) != 2:
                return None
            keys.append(pair[0])
            items.append(pair[1])
    if not keys:
        return None
    try:
        key_type = pa.array(keys, from_pandas=True).type
        item_type = pa.array(items, from_pandas=True).type
        return pa.map_(key_type, item_type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None


def numpy_values(values: Any) -> Any:
    """``values`` (a pandas object column) with each array-like value that Arrow does not take
    made numpy's: a 0-d array or tensor (``torch.argmax(logits, 1)``'s items, a list of
    ``np.array(0.5)``) its number, as a 1-D numpy array's items are, and a tensor of more
    dimensions a numpy array (a list in the dataset); a column of numbers then has their dtype,
    as for a numpy array.  Duck-typed (``__array__``, ``numpy()``): no library is imported.
    None when no value is such an array-like, or one cannot be converted."""
    import numpy as np
    import pandas as pd

    converted, changed = [], False
    for value in values:
        if isinstance(value, np.generic) or not hasattr(value, "__array__"):
            converted.append(value)
            continue
        if isinstance(value, np.ndarray) and value.ndim:  # (Arrow takes it: a list)
            converted.append(value)
            continue
        array = _as_numpy(value)
        if array is None:
            return None
        converted.append(array[()] if array.ndim == 0 else array)
        changed = True
    return pd.Series(converted, index=values.index, name=values.name) if changed else None


def _as_numpy(value: Any) -> Any:
    """``value`` (an array-like: a numpy array, a torch tensor...) as a numpy array; a tensor
    on a GPU or that requires grad through its ``numpy(force=True)``; None when it will not."""
    import numpy as np

    try:
        return np.asarray(value)
    except Exception:  # noqa: BLE001 - a tensor numpy cannot read as it is
        pass
    to_numpy = getattr(value, "numpy", None)
    for kwargs in ({"force": True}, {}):
        try:
            return np.asarray(to_numpy(**kwargs))  # type: ignore[misc]
        except Exception:  # noqa: BLE001 - not a torch tensor's numpy(), or none at all
            continue
    return None


def staged_frame(frame: Any, arrays: dict[Any, Any]) -> Any:
    """``frame`` with the columns of ``arrays`` (Arrow arrays of a type :func:`kept`) held as
    those arrays."""
    import pandas as pd

    if not arrays:
        return frame
    frame = frame.copy(deep=False)
    for column, array in arrays.items():
        frame[column] = pd.arrays.ArrowExtensionArray(array)
    return frame


def write_table(frame: Any, path: Any) -> None:
    """Write ``frame`` as the Parquet file ``path``, its pandas metadata readable by any
    pandas: a nested ``ArrowDtype`` column is recorded as an object column (pandas cannot
    parse the name of a nested ``ArrowDtype`` back, and would refuse the file)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    meta = table.schema.pandas_metadata
    if meta is not None:
        fixed = False
        for column in meta.get("columns", []):
            if str(column.get("numpy_type", "")).endswith("[pyarrow]"):
                column["numpy_type"], fixed = "object", True
        if fixed:
            metadata = dict(table.schema.metadata or {})
            metadata[b"pandas"] = json.dumps(meta).encode()
            table = table.replace_schema_metadata(metadata)
    pq.write_table(table, path)


def unified(kinds: Iterable[Any]) -> Any:
    """The one Arrow type that every type of ``kinds`` (all :func:`kept`) widens to: list<int64>
    and list<double> make list<double>, two structs one with the fields of both; None when
    there is none (a list and a struct)."""
    import pyarrow as pa

    kinds = list(kinds)
    if not kinds or not all(kept(k) for k in kinds):
        return None
    try:
        schema = pa.unify_schemas(
            [pa.schema([("v", k)]) for k in kinds], promote_options="permissive"
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None
    kind = schema.field("v").type
    return kind if kept(kind) else None


def as_text(column: Any) -> Any:
    """A column of a type :func:`kept` (an Arrow array) as text for a CSV file, every value
    whole: JSON for lists, structs and maps (a map as a list of ``[key, value]``), the exact
    ``str()`` of a decimal, and bytes as UTF-8 with backslash escapes for what is not."""
    import pyarrow as pa

    scalar = not pa.types.is_nested(column.type)
    texts = [
        None if v is None else (_scalar_text(v) if scalar else _json(v)) for v in column.to_pylist()
    ]
    return pa.array(texts, pa.large_string())


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=_scalar_text)


def _scalar_text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)
