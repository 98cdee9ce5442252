"""Dataset outputs: the staged Parquet parts as a Dask DataFrame, written with ``to_parquet`` or
``to_csv`` and configurable partitioning.

While a job runs, workers write the DataFrames that ``run()`` returns into Parquet parts in the
staging folder, each row tagged with its mini-batch.  At the end, the final try of every
mini-batch is known; :func:`plan_groups` turns those into output partitions of about
``rows_per_file`` rows (whole mini-batches, in mini-batch order), :func:`staged_frame` reads them
as a Dask DataFrame with one schema (:mod:`daskscore.io.dataschema`: a column's dtype may differ
between mini-batches), and :func:`write_staged` writes it with deterministic file names
(``part-00000.parquet``, ...) into the staging folder; the writer renames it into place once
whole (:mod:`daskscore.io.inplace`), so a rerun overwrites and never duplicates, a failed write
leaves no dataset, and the dataset of a previous pass stays until the new one is whole.  With
``partition_on``, rows go into hive-style folders ``column=value``; values are percent-encoded
first, so a value such as ``../../etc`` stays one folder name inside the output.  A value whose
folder name would be longer than a file system allows (:data:`MAX_NAME_BYTES`) fails its
mini-batch in the worker (:func:`check_partition_values`): its rows cannot be written under
their own value, and a shortened or hashed name would hand readers a different value.
"""

from __future__ import annotations

import logging
import shutil
import urllib.parse
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from daskscore.errors import UsageError
from daskscore.io import dataschema, nested
from daskscore.io.dataschema import Layout

logger = logging.getLogger("daskscore")

#: The column that tags staged rows with their mini-batch (dropped before writing).
MB_COLUMN = "__daskscore_mini_batch"
#: Output files hold about this many rows unless asked otherwise.
DEFAULT_ROWS_PER_FILE = 1_000_000
FORMATS = ("parquet", "csv")
#: The longest name of one folder, in bytes, that common file systems allow (ext4, XFS, btrfs,
#: APFS; NTFS counts 255 UTF-16 units): a partition folder ``column=value`` must fit.
MAX_NAME_BYTES = 255
#: Characters of a partition value that an error message shows.
SHOWN_VALUE_CHARS = 60
#: The folder in the staging folder a dataset is written into, then renamed to its name once
#: whole: a dataset that failed half-way is never in the output folder.
SCRATCH = "dataset"
#: The partition folder of a null value (``column=__HIVE_DEFAULT_PARTITION__``): Hive's name,
#: which Hive readers (pyarrow, Dask, Spark) read back as null.
NULL_FOLDER = "__HIVE_DEFAULT_PARTITION__"

Piece = tuple[str, tuple[int, ...]]  # (staged part file, mini-batches taken from it)


def plan_groups(
    finals: Sequence[tuple[int, str | None, int]], rows_per_file: int | None
) -> list[list[Piece]]:
    """Group ``(mini_batch, part, rows)`` (sorted by mini-batch) into output partitions.

    Each partition holds whole mini-batches in order and about ``rows_per_file`` rows;
    consecutive mini-batches staged in the same part are read together.

    Examples
    --------
    >>> plan_groups([(0, "a", 5), (1, "a", 5), (2, "b", 5)], 10)
    [[('a', (0, 1))], [('b', (2,))]]
    """
    target = rows_per_file or DEFAULT_ROWS_PER_FILE
    groups: list[list[Piece]] = []
    current: list[list[Any]] = []
    rows = 0
    for mb, part, n in finals:
        if not part or not n:
            continue
        if current and rows + n > target:
            groups.append([(p, tuple(m)) for p, m in current])
            current, rows = [], 0
        if current and current[-1][0] == part:
            current[-1][1].append(mb)
        else:
            current.append([part, [mb]])
        rows += n
    if current:
        groups.append([(p, tuple(m)) for p, m in current])
    return groups


def printable(text: str) -> str:
    """``text`` with what is not valid Unicode (a file name that is not UTF-8, listed as
    ``\\udcff``) written out as backslash escapes, as the logs and append_row write it."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def prediction_frame(items: list[Any]) -> Any:
    """A list run() returned as a DataFrame of one ``prediction`` column (its str items that
    are not valid Unicode escaped, where the column's type refuses them)."""
    import pandas as pd

    try:
        return pd.DataFrame({"prediction": items})
    except UnicodeEncodeError:
        return pd.DataFrame({"prediction": [_printable_item(i) for i in items]})


def _printable_item(item: Any) -> Any:
    return printable(item) if isinstance(item, str) else item


def write_part(frame: Any, path: Path) -> None:
    """Stage ``frame`` as the Parquet file ``path``; a str column holding what is not valid
    Unicode (a file name that is not UTF-8) is written with it escaped, not refused."""
    try:
        nested.write_table(frame, path)
    except UnicodeEncodeError:
        import pandas as pd

        frame = frame.copy(deep=False)
        for column in frame.columns:
            if pd.api.types.is_object_dtype(frame[column]) or pd.api.types.is_string_dtype(
                frame[column]
            ):
                frame[column] = frame[column].map(_printable_item)
        nested.write_table(frame, path)


def runs_of_one_kind(entries: list[tuple[Any, Any]]) -> list[tuple[Any, list[Any]]]:
    """``(frame, records)`` entries (a sink's, in order) as runs of consecutive frames with the
    same columns and dtypes, each concatenated: ``(frame, the run's records)``.  Each run is a
    staged part of its own, so that a part never mixes a column's dtypes (ints and text make a
    column Parquet cannot hold); :mod:`daskscore.io.dataschema` unifies the parts when the
    dataset is written."""
    import pandas as pd

    from daskscore._compat import column_dtypes

    runs: list[tuple[list[Any], list[Any]]] = []
    last = None
    for frame, records in entries:
        kind = (tuple(frame.columns), column_dtypes(frame))
        if runs and kind == last:
            runs[-1][0].append(frame)
            runs[-1][1].extend(records)
        else:
            runs.append(([frame], list(records)))
        last = kind
    return [
        (pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0], records)
        for frames, records in runs
    ]


def read_group(staging: str, group: list[Piece], layout: Layout | None = None) -> Any:
    """Read one output partition from the staged parts, in mini-batch order; with ``layout``,
    with the dataset's columns and dtypes (see :mod:`daskscore.io.dataschema`)."""
    import pandas as pd
    import pyarrow.parquet as pq

    frames = []
    for part, mbs in group:
        table = pq.read_table(
            Path(staging) / "parts" / part, filters=[(MB_COLUMN, "in", list(mbs))]
        )
        if layout is None:
            frames.append(table.to_pandas())
        else:
            frames.append(layout.conform(table))
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    order = frame[MB_COLUMN].to_numpy().argsort(kind="stable")
    return frame.iloc[order].drop(columns=[MB_COLUMN]).reset_index(drop=True)


def layout_of(staging: str | Path, groups: list[list[Piece]]) -> Layout:
    """The one schema the dataset of ``groups`` is written with, from its parts' schemas."""
    import pyarrow.parquet as pq

    schemas: dict[str, Any] = {}

    def pieces() -> Iterator[tuple[Any, int]]:
        for group in groups:
            for part, mbs in group:
                if part not in schemas:
                    schema = pq.read_schema(Path(staging) / "parts" / part)
                    schemas[part] = schema.remove(schema.get_field_index(MB_COLUMN))
                yield schemas[part], mbs[0]

    return dataschema.unify(pieces())


def staged_frame(staging: str, groups: list[list[Piece]], layout: Layout | None = None) -> Any:
    """The staged predictions as a lazy Dask DataFrame, one partition per group, every one
    with the columns and dtypes of ``layout`` (by default, found from the parts, as a Parquet
    dataset is written).  Dask's ``dataframe.convert-string`` is left to ``layout`` (see
    :meth:`Layout.written`): Dask would make nested values text."""
    import dask
    import dask.dataframe as dd

    layout = layout or layout_of(staging, groups).written("parquet")
    with dask.config.set({"dataframe.convert-string": False}):
        return dd.from_map(
            read_group,
            [staging] * len(groups),
            groups,
            args=[layout],
            meta=layout.meta,
            label="daskscore-predictions",
            enforce_metadata=False,
        )


def quote_value(value: Any) -> str:
    """A partition value made safe as one path segment (percent-encoding, as hive readers do)."""
    text = str(value)
    quoted = urllib.parse.quote(text, safe=" ")
    return "%2E%2E" if quoted == ".." else ("%2E" if quoted == "." else quoted)


class PartitionValueError(ValueError):
    """A mini-batch's result holds a partition value whose folder name is too long."""


def check_partition_values(frame: Any, partition_on: Sequence[str]) -> None:
    """Refuse a mini-batch's result (a DataFrame) holding a value of a ``partition_on`` column
    whose folder name ``column=value`` (percent-encoded) is over :data:`MAX_NAME_BYTES`, or
    that is the text :data:`NULL_FOLDER` (read back as null).

    Raises
    ------
    PartitionValueError
        Naming the column and the value (cut to :data:`SHOWN_VALUE_CHARS` characters).
    """
    for column in partition_on:
        if column not in frame.columns:
            continue  # the driver names the missing columns (check_columns)
        for value in frame[column].dropna().drop_duplicates().astype(str):
            if value == NULL_FOLDER:
                raise PartitionValueError(
                    f"partition_on column '{column}': the value {NULL_FOLDER!r} is the folder "
                    "name of a null value, and hive readers would read it back as null; the "
                    "rows of this mini-batch are not written. Give it another value in run()."
                )
            size = len(f"{column}={quote_value(value)}".encode())
            if size <= MAX_NAME_BYTES:
                continue
            shown = value if len(value) <= SHOWN_VALUE_CHARS else value[:SHOWN_VALUE_CHARS] + "..."
            raise PartitionValueError(
                f"partition_on column '{column}': the value {shown!r} ({len(value)} characters) "
                f"makes a folder name '{column}=...' of {size} bytes, more than the "
                f"{MAX_NAME_BYTES} a file system allows; the rows of this mini-batch are not "
                f"written. Shorten or hash the values of '{column}' in run(), or partition on "
                "another column."
            )


def check_columns(columns: Sequence[str], partition_on: Sequence[str]) -> None:
    """Refuse partition columns that run()'s results do not have."""
    missing = [c for c in partition_on if c not in columns and c != MB_COLUMN]
    if missing:
        shown = ", ".join(str(c) for c in columns if c != MB_COLUMN)
        raise UsageError(
            f"partition_on: column(s) {', '.join(missing)} not in the predictions; run() "
            f"returned columns {shown}."
        )
    data = [c for c in columns if c != MB_COLUMN]
    if partition_on and data and all(c in partition_on for c in data):
        raise UsageError(
            f"partition_on: {', '.join(str(c) for c in partition_on)} names every column run() "
            "returns, and a dataset needs one column outside its partition folders (they hold "
            "the values of the columns partitioned on); partition on fewer columns."
        )


def part_columns(staging: str | Path, part: str) -> list[str]:
    """The columns of a staged part (its schema only is read)."""
    import pyarrow.parquet as pq

    return list(pq.read_schema(Path(staging) / "parts" / part).names)


def _sanitise(ddf: Any, partition_on: Sequence[str]) -> Any:
    check_columns(list(ddf.columns), partition_on)
    return ddf.assign(
        **{c: ddf[c].map_partitions(folder_names, meta=(c, "str")) for c in partition_on}
    )


def folder_names(values: Any) -> Any:
    """The partition folder names of ``values`` (a pandas Series): each value as text,
    percent-encoded (:func:`quote_value`); a null as Hive's :data:`NULL_FOLDER`."""
    return values.astype(str).map(quote_value).mask(values.isna(), NULL_FOLDER)


def write_staged(
    client: Any,
    staging: str | Path,
    groups: list[list[Piece]],
    fmt: str,
    partition_on: Sequence[str] = (),
) -> Path:
    """Write the staged rows of ``groups`` as a dataset folder in the staging folder
    (:data:`SCRATCH`, replaced if it is there; an empty folder when there are no rows), with
    one schema (:func:`layout_of`); return it.  The caller renames it into place
    (:func:`daskscore.io.inplace.put_in_place`): the dataset is there whole, or not at all,
    and one there before stays until it is.

    Raises
    ------
    SchemaConflict
        A column whose types in different mini-batches could not be written as one; nothing
        is left in the staging folder.
    """
    scratch = Path(staging) / SCRATCH
    if not groups:
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        return scratch
    layout = layout_of(staging, groups)
    for level, line in layout.describe():
        logger.log(level, line)
    layout = layout.written(fmt)
    try:
        ddf = staged_frame(str(staging), groups, layout)
        schema = layout.schema(ddf.dtypes, partition_on) if fmt == "parquet" else None
        write_dataset(client, ddf, scratch, fmt, partition_on, schema)
    except (ValueError, TypeError, NotImplementedError) as exc:  # (Arrow's errors among them)
        shutil.rmtree(scratch, ignore_errors=True)
        conflict = layout.conflict(exc)
        if conflict is None:
            raise
        logger.error("%s (%s: %s)", conflict, type(exc).__name__, str(exc).strip()[:500])
        raise conflict from exc
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return scratch


def write_dataset(
    client: Any,
    ddf: Any,
    dest: Path,
    fmt: str,
    partition_on: Sequence[str] = (),
    schema: Any = None,
) -> list[Path]:
    """Write ``ddf`` into the folder ``dest`` (replaced if it exists); return the files.

    ``client`` None computes in this process (a shipped job's parts are on the driver's disk).
    ``schema``: the Parquet files' Arrow schema, rather than the one inferred from ``ddf``.
    """
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    if partition_on:
        ddf = _sanitise(ddf, partition_on)
    if fmt == "parquet":
        task = ddf.to_parquet(
            str(dest),
            partition_on=list(partition_on) or None,
            name_function=lambda i: f"part-{i:05d}.parquet",
            write_index=False,
            schema=schema or "infer",
            compute=False,
        )
        _compute(client, task)
    else:
        parts = ddf.map_partitions(
            _write_csv_partitioned, str(dest), list(partition_on), meta=(None, "int64")
        )
        _compute(client, parts)
    return sorted(p for p in dest.rglob("*") if p.is_file())


def _compute(client: Any, task: Any) -> None:
    """Compute on the cluster, or (``client`` None: the staged parts are on this machine's disk
    only) in this process's threads."""
    if client is None:
        import dask

        dask.compute(task, scheduler="threads")
    else:
        future = client.compute(task)
        try:
            client.gather(future)
        except BaseException:
            client.cancel(future)  # (the partitions not written yet are not)
            raise


def _write_csv_partitioned(
    frame: Any, dest: str, partition_on: list[str], partition_info: dict[str, Any] | None = None
) -> Any:
    """Write partition ``frame`` as ``part-<number>.csv`` under ``dest``, in a folder per value
    of the ``partition_on`` columns (none: ``dest`` itself)."""
    import pandas as pd

    number = partition_info["number"] if partition_info else 0
    if not partition_on:
        Path(dest).mkdir(parents=True, exist_ok=True)
        _to_csv(frame, Path(dest) / f"part-{number:05d}.csv")
        return pd.Series([len(frame)])
    for key, sub in frame.groupby(partition_on, sort=True, dropna=False):
        values = key if isinstance(key, tuple) else (key,)
        folder = Path(dest).joinpath(
            *(f"{c}={v}" for c, v in zip(partition_on, values, strict=True))
        )
        folder.mkdir(parents=True, exist_ok=True)
        _to_csv(sub.drop(columns=partition_on), folder / f"part-{number:05d}.csv")
    return pd.Series([len(frame)])


def _to_csv(frame: Any, path: Path) -> None:
    """``frame`` as a CSV file that reads back as it was.  Python's csv writer quotes a value
    holding a line break of its line terminator (``\\n``) but not a lone carriage return, which
    readers take as the end of a line (text split on ``\\n`` from CRLF lines ends in one):
    a file with such values quotes every text value."""
    import csv

    frame.to_csv(
        path,
        index=False,
        quoting=csv.QUOTE_NONNUMERIC if _holds_cr(frame) else csv.QUOTE_MINIMAL,
    )


def _holds_cr(frame: Any) -> bool:
    """Whether a text value (or a column name) of ``frame`` holds a carriage return."""
    import pandas as pd

    if any("\r" in str(c) for c in frame.columns):
        return True
    for column in range(frame.shape[1]):
        values = frame.iloc[:, column]
        if values.dtype == object:
            text = values[values.map(lambda v: isinstance(v, str))]
        elif pd.api.types.is_string_dtype(values.dtype):
            text = values.dropna()
        else:
            continue
        if len(text) and text.astype("string").str.contains("\r", regex=False).any():
            return True
    return False
