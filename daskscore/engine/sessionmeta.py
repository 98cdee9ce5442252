"""The columns and dtypes of a ``score()`` frame, inferred from its first mini-batch that does
not fail: scored once on a worker (:func:`first_rows`) when the caller gives no ``meta=``; a
column that mini-batch holds only nulls in is declared ``object`` and said so
(:func:`say_unknown`)."""

from __future__ import annotations

import logging
import warnings
from typing import Any

from daskscore.engine.framemeta import declared, unique_columns, unwritable
from daskscore.engine.scoredeaths import PartitionWatch
from daskscore.engine.work import charged, describe_work
from daskscore.errors import InitFailed, JobFailed
from daskscore.protocol import error_line
from daskscore.worker.plugin import get_runtime
from daskscore.worker.task import run_mini_batch

logger = logging.getLogger("daskscore")


def first_rows(
    job_id: str, items: list[tuple[int, Any]], strings: bool = False, allowed: int | None = -1
) -> Any:
    """Score mini-batches in order until one has rows to show; return its empty frame, the
    frame's ``meta`` (``strings``: the caller's Dask makes text columns its string dtype; see
    ``declared``), the columns it cannot tell a dtype of, those Dask's ``to_parquet`` cannot
    write as declared (:func:`~daskscore.engine.framemeta.unwritable`), and its mini-batch.

    A mini-batch whose every try failed has no rows: the next one is scored where the session
    leaves failed mini-batches out (its partition runs it again, and reports it), that is,
    ``allowed``: None for ``on_error="drop"`` (any number), else ``settings.error_threshold``
    (``-1``, Azure's "any number", raises at the first: such a frame's compute would). Raises
    :class:`~daskscore.errors.JobFailed` naming the first failure when none is left to try.
    """
    state = get_runtime(job_id)
    if state.init_error is not None:
        raise InitFailed("init() failed", user_traceback=state.init_error)
    watch, failed, first = PartitionWatch(state.job, "meta"), 0, None
    try:
        for mb, work in items:
            recs, frame = [watch.given_up(mb, work)], None
            if recs[0] is None:
                with state.turn():
                    recs, frame = run_mini_batch(state, watch, mb, 0, work)
            if recs[-1].done and frame is not None:
                break
            last = charged(recs[-1], work)
            first = first or (mb, work, last)
            failed += last.failed
            if allowed is not None and (allowed < 0 or failed > allowed):
                raise _no_meta(first, len(items), mb, allowed)
        else:
            raise _no_meta(first, len(items), items[-1][0] if items else 0, None)
    finally:
        watch.close()
    unique_columns(frame, mb)
    # columns whose dtype the mini-batch cannot tell: no rows, or only nulls (object)
    unknown = [
        str(c)
        for c in frame.columns
        if frame[c].dtype == object and not frame[c].notna().any()  # noqa: E721
    ]
    meta = declared(frame, strings)
    return meta, unknown, unwritable(meta, frame), mb


def _no_meta(first: Any, n: int, last: int, allowed: int | None) -> JobFailed:
    """The error of a frame none of whose mini-batches tried could give its columns."""
    mb, work, rec = first
    why = error_line(rec.error, empty="?")
    files = [str(f) for f in describe_work(list(work) if isinstance(work, tuple) else work)]
    shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
    failed = f"mini-batch {mb} ({shown}) failed ({rec.status}: {why})"
    if allowed is None:
        head = f"every one of the {n} mini-batch(es) failed; the first, {failed}"
        hint = "Fix the script or its input"
    elif allowed < 0:
        head = f"{failed}, and its rows would be missing from the result"
        hint = (
            'Fix the script, pass on_error="drop" (the columns are then inferred from the '
            "first mini-batch that does not fail)"
        )
    else:
        span = f"mini-batch {mb}" if mb == last else f"mini-batches {mb} to {last}"
        head = (
            f"{span} failed, more items than settings.error_threshold "
            f"({allowed}) allows; the first, {failed}"
        )
        hint = "Fix the script or its input"
    return JobFailed(
        f"score(): cannot infer the predictions' columns, which score() reads from the first "
        f"mini-batch that does not fail: {head}. {hint}, or pass meta= to score() (an empty "
        "DataFrame with the columns and dtypes run() returns) so that no mini-batch is run "
        "before the frame is computed.",
        user_traceback=rec.error or None,
    )


def say_unwritable(meta: Any, found: tuple[list[str], list[str]] | None = None) -> None:
    """Warn of the object columns with which ``ddf.to_parquet(path)`` fails (``found``: as
    :func:`~daskscore.engine.framemeta.unwritable` gives them; ``None``: ``meta`` was given,
    and its object columns are checked here), and say how to write them."""
    columns, mixed = found if found is not None else unwritable(meta)
    if not columns:
        return
    names = ", ".join(map(repr, columns))
    text = (
        f"score(): column(s) {names} are declared object (Python values: decimals, dicts, "
        "lists, arrays...), of which Dask's to_parquet cannot infer a Parquet type: it infers "
        "the schema from placeholder values of the declared dtypes, so ddf.to_parquet(path) "
        "fails with an ArrowInvalid. Write it with ddf.to_parquet(path, schema=None) (each "
        "partition's Arrow types, taken from its values) or with a whole pyarrow schema "
        "(schema=pa.schema([...]); a dict of some columns is not enough); compute() and "
        "other Dask operations keep the values as run() returned them."
    )
    if mixed:
        text += (
            f" Column(s) {', '.join(map(repr, mixed))} hold values of no one Arrow type in "
            "mini-batch 0 (ints and text, say): no schema writes them as they are; convert "
            f"them to one type first (ddf[{mixed[0]!r}].astype(str), say)."
        )
    logger.warning(text)


def say_unknown(columns: list[str], more: bool, mb: int = 0) -> None:
    """Warn that mini-batch ``mb`` told nothing of ``columns``' dtype (object, for every
    partition: numbers of later mini-batches stay Python objects)."""
    text = (
        f"score(): column(s) {', '.join(map(repr, columns))} held no value but nulls in "
        f"mini-batch {mb}, from which the frame's dtypes are inferred: they are declared object"
        + (", and later mini-batches' values stay Python objects" if more else "")
        + " (Dask's to_parquet cannot write such a column). Pass meta= (an empty DataFrame "
        "with the dtypes run() returns) to declare them."
    )
    logger.warning(text)
    warnings.warn(text, UserWarning, stacklevel=4)
