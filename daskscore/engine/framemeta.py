"""A ``score()`` partition's rows made to match the frame's declared columns (its ``meta``).

A lazy DataFrame declares its columns and dtypes before anything runs: given as ``meta=``, or
inferred from the first mini-batch's result.  ``run()`` may return otherwise in a later
mini-batch: another column, a float where the first returned ints, ``None`` first and numbers
after.  Dask trusts the declaration (``to_parquet`` then fails on a partition, or a column
silently goes), so each partition is made to match it here, or fails saying how it differs:

* a column ``run()`` returned that the frame does not have is an error (it would be dropped);
* a declared column a partition lacks is null there (a mini-batch with no such values);
* a column of another dtype is converted when no value changes (ints to floats, text to the
  declared text dtype, anything to ``object``); otherwise it is kept as ``run()`` returned it
  (``compute()`` concatenates it as pandas does: floats where the first mini-batch had ints),
  with a warning naming the column, both dtypes and what to pass as ``meta=`` for writers
  that hold the frame to its declaration (``to_parquet``).

A categorical column is declared with unknown categories where inferred (each partition has
its own, as Dask's ``read_csv`` gives them); declared with known categories (``meta=``), every
partition is given those categories, and one holding a value that is not among them fails
naming it (pandas would make it NaN, and Dask's ``cat.codes`` or ``get_dummies`` trust them).

The declaration is made here too (:func:`declared`), from the first mini-batch's result: its
dtypes, whatever Dask's ``dataframe.convert-string``, categories unknown.  Dask would declare
every object column text and ``str()`` each value (a numpy array becomes a truncated
``'[0. 1. ...]'``, bytes fail to decode), so the frame is built with it off, and where the
caller has it on a column only becomes Dask's string dtype where every value of that mini-batch
is text.
"""

from __future__ import annotations

import logging
from typing import Any

from daskscore.errors import UsageError

logger = logging.getLogger("daskscore")


def declared(frame: Any, strings: bool) -> Any:
    """The empty frame declaring ``frame``'s columns and dtypes (``frame``: the first
    mini-batch's rows); ``strings``: Dask's ``dataframe.convert-string`` is on where the frame
    is made, so a column of text (every value a ``str`` or null, one at least a ``str``) is
    declared with Dask's string dtype, as Dask would; an object column of anything else stays
    ``object``, its values as ``run()`` returned them.  A categorical column (or index) is
    declared with unknown categories: mini-batch 0's are not every partition's."""
    import pandas as pd
    from dask.dataframe.utils import clear_known_categories
    from pandas.api import types

    meta = clear_known_categories(frame.iloc[:0])
    if not strings:
        return meta
    text = pd.StringDtype("pyarrow")  # (Dask's; pandas 3's ``str`` is another StringDtype)
    wanted = {
        column: text
        for column, values in frame.items()
        if values.dtype != text
        and (types.is_object_dtype(values.dtype) or isinstance(values.dtype, pd.StringDtype))
        and bool(values.notna().any())
        and _is_text(values)
    }
    return meta.astype(wanted) if wanted else meta


def unwritable(meta: Any, frame: Any = None) -> tuple[list[str], list[str]]:
    """The object columns of ``meta`` that Dask's ``to_parquet`` cannot write as declared, and
    of those, the ones whose values in ``frame`` (the first mini-batch's rows, where inferred)
    are of no one Arrow type (ints and text, say), which no schema writes as they are.

    Dask infers the Parquet schema from placeholder values of the declared dtypes
    (``meta_nonempty``): for ``object``, an ``object()`` under pandas 3, which Arrow cannot
    type (``ArrowInvalid: ... did not recognize Python value type``), or ``'foo'`` before,
    text that a column of decimals, dicts or arrays is not.  A column of nulls only is left out
    (said with its own warning: see ``sessionmeta.say_unknown``)."""
    import pyarrow as pa
    from dask.dataframe.utils import meta_nonempty

    failed = (pa.ArrowException, TypeError, ValueError, OverflowError)
    columns = [c for c, dtype in meta.dtypes.items() if dtype == object]  # noqa: E721
    if frame is not None:
        columns = [c for c in columns if bool(frame[c].notna().any())]
    if not columns:
        return [], []
    placeholders = meta_nonempty(meta[columns])
    found, mixed = [], []
    for column in columns:
        try:
            kind = pa.array(placeholders[column], from_pandas=True).type
            if frame is not None:
                pa.array(frame[column], type=kind, from_pandas=True)
            continue
        except failed:
            found.append(str(column))
        if frame is not None:
            try:
                pa.array(frame[column], from_pandas=True)
            except failed:
                mixed.append(str(column))
    return found, mixed


def _is_text(values: Any) -> bool:
    """Whether every value of ``values`` is a ``str`` or null (``None``, NaN, ``pd.NA``)."""
    import pandas as pd

    def text(v: Any) -> bool:
        return v is None or v is pd.NA or isinstance(v, str) or (isinstance(v, float) and v != v)

    return bool(values.map(text).all())


def conform(frame: Any, meta: Any, mini_batch: int, origin: str) -> Any:
    """``frame`` (a partition's rows, its first mini-batch ``mini_batch``) with ``meta``'s
    columns, in order, and dtypes; ``origin`` says where ``meta`` came from."""
    unique_columns(frame, mini_batch)
    extra = [c for c in frame.columns if c not in meta.columns]
    if extra:
        raise UsageError(
            f"score(): run() returned the column(s) {_names(extra)} in the partition from "
            f"mini-batch {mini_batch}, which the frame does not have (its columns "
            f"{_names(meta.columns)} were {origin}); their values would be dropped. Pass "
            "meta= to score() with every column run() returns (a mini-batch without one has "
            "nulls there), or return the same columns from every mini-batch."
        )
    if list(frame.columns) != list(meta.columns):
        frame = frame.reindex(columns=meta.columns)
    for column in meta.columns:
        want, got = meta[column].dtype, frame[column].dtype
        if got != want:
            frame[column] = _converted(frame[column], want, column, mini_batch, origin)
    return frame


def unique_columns(frame: Any, mini_batch: Any) -> None:
    """Refuse a frame whose column names are not unique: a column of a Dask DataFrame is one
    name, and ``frame[name]`` of a repeated one is a DataFrame."""
    columns = frame.columns
    if columns.has_duplicates:
        twice = list(dict.fromkeys(columns[columns.duplicated()]))
        raise UsageError(
            f"score(): run() returned the column(s) {_names(twice)} more than once in the "
            f"partition from mini-batch {mini_batch}; a Dask DataFrame's column names must be "
            "unique. Rename them in run() (or return them under one name)."
        )


def _converted(values: Any, want: Any, column: Any, mini_batch: int, origin: str) -> Any:
    import pandas as pd
    from pandas.api import types

    if types.is_object_dtype(want):
        return values.astype(object)
    if isinstance(want, pd.CategoricalDtype):
        return _categorical(values, want, column, mini_batch, origin)
    text = types.is_string_dtype(want) and not isinstance(want, pd.CategoricalDtype)
    try:
        if text and (types.is_object_dtype(values.dtype) or types.is_string_dtype(values.dtype)):
            if _is_text(values):
                return values.astype(want)
        elif not text:
            cast = values.astype(want)
            same = (cast == values) | (cast.isna() & values.isna())
            if bool(same.all()) and _round_trips(values, cast):
                return cast
    except (TypeError, ValueError, OverflowError):
        pass
    return _mismatch(values, want, column, mini_batch, origin)


def _categorical(values: Any, want: Any, column: Any, mini_batch: int, origin: str) -> Any:
    """``values`` as the declared categorical ``want``: with unknown categories (Dask's
    ``UNKNOWN_CATEGORIES``), the partition's own; with known ones, those (their codes), where
    every value is one of them, else refused: a value not declared would become NaN."""
    import pandas as pd
    from dask.dataframe.utils import UNKNOWN_CATEGORIES

    if UNKNOWN_CATEGORIES in want.categories:
        if isinstance(values.dtype, pd.CategoricalDtype) and values.dtype.ordered == want.ordered:
            return values  # (each partition's own categories, as a Dask categorical has)
        return values.astype(pd.CategoricalDtype(ordered=want.ordered))
    undeclared = values[values.notna() & ~values.isin(want.categories)]
    if len(undeclared):
        shown = list(dict.fromkeys(undeclared.astype(object)))
        raise UsageError(
            f"score(): column {str(column)!r} holds {_names(shown)}, not among the categories "
            f"{_names(want.categories)} the frame declares ({origin}), in the partition from "
            f"mini-batch {mini_batch}; as that categorical dtype they would become NaN. Pass "
            "meta= to score() with every category run() returns, or with unknown categories "
            "(dask.dataframe.utils.clear_known_categories(meta)): each partition then keeps "
            "its own."
        )
    return values.astype(want)


def _round_trips(values: Any, cast: Any) -> bool:
    """Whether ``cast`` converted back gives ``values``: ``cast == values`` compares an int64
    with a float64 as floats, so ``2**53 + 1`` and its float ``2**53`` compare equal."""
    import numpy as np

    if values.dtype == object:  # (Python compares its ints and floats exactly)
        return True
    try:
        with np.errstate(all="ignore"):
            back = cast.astype(values.dtype)
    except (TypeError, ValueError, OverflowError):
        return False
    same = (back == values) | values.isna()
    return bool(same.all())


def _mismatch(values: Any, want: Any, column: Any, mini_batch: int, origin: str) -> Any:
    null = bool(values.isna().all())
    what = "only nulls (it was not returned there)" if null else f"{values.dtype} values"
    logger.warning(
        "score(): column %r holds %s in the partition from mini-batch %s, which the frame's "
        "dtype %s (%s) cannot hold without changing them: kept as they are. Writers that hold "
        "the frame to its dtypes (to_parquet) will refuse them; pass meta= to score() with a "
        "dtype every mini-batch's values fit (float64 for numbers with gaps, object for "
        "mixed ones).",
        str(column), what, mini_batch, want, origin,
    )  # fmt: skip
    return values


def _names(columns: Any) -> str:
    shown = [str(c) for c in list(columns)[:10]]
    more = f" and {len(columns) - 10} more" if len(columns) > 10 else ""
    return "[" + ", ".join(repr(c) for c in shown) + "]" + more
