"""The columns and dtypes of a ``score()`` frame, inferred from its first mini-batch: scored
once on a worker (:func:`first_rows`) when the caller gives no ``meta=``; a column that
mini-batch 0 holds only nulls in is declared ``object`` and said so (:func:`say_unknown`)."""

from __future__ import annotations

import logging
import warnings
from typing import Any

from daskscore.engine.framemeta import declared, unique_columns
from daskscore.engine.scoredeaths import PartitionWatch
from daskscore.engine.work import describe_work
from daskscore.errors import InitFailed, JobFailed
from daskscore.protocol import error_line
from daskscore.worker.plugin import get_runtime
from daskscore.worker.task import run_mini_batch

logger = logging.getLogger("daskscore")


def first_rows(job_id: str, work: Any, strings: bool = False) -> Any:
    """Score one mini-batch and return its empty frame: the DataFrame's ``meta``
    (``strings``: the caller's Dask makes text columns its string dtype; see ``declared``)."""
    state = get_runtime(job_id)
    if state.init_error is not None:
        raise InitFailed("init() failed", user_traceback=state.init_error)
    watch, frame = PartitionWatch(state.job, "meta"), None
    try:
        recs = [watch.given_up(0, work)]
        if recs[0] is None:
            with state.run_lock:
                recs, frame = run_mini_batch(state, watch, 0, 0, work)
    finally:
        watch.close()
    if not recs[-1].done or frame is None:
        last = recs[-1]
        why = error_line(last.error, empty="?")
        files = [str(f) for f in describe_work(list(work) if isinstance(work, tuple) else work)]
        shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
        raise JobFailed(
            f"score(): cannot infer the predictions' columns: mini-batch 0 ({shown}), which "
            f"score() runs first to see them, failed ({last.status}: {why}). Fix the script, "
            "or pass meta= to score() (an empty DataFrame with the columns and dtypes run() "
            "returns) so that no mini-batch is run before the frame is computed.",
            user_traceback=last.error or None,
        )
    unique_columns(frame, 0)
    # columns whose dtype mini-batch 0 cannot tell: no rows, or only nulls (object)
    unknown = [
        str(c)
        for c in frame.columns
        if frame[c].dtype == object and not frame[c].notna().any()  # noqa: E721
    ]
    return declared(frame, strings), unknown


def say_unknown(columns: list[str], more: bool) -> None:
    """Warn that mini-batch 0 told nothing of ``columns``' dtype (object, for every
    partition: numbers of later mini-batches stay Python objects)."""
    text = (
        f"score(): column(s) {', '.join(map(repr, columns))} held no value but nulls in "
        "mini-batch 0, from which the frame's dtypes are inferred: they are declared object"
        + (", and later mini-batches' values stay Python objects" if more else "")
        + " (Dask's to_parquet cannot write such a column). Pass meta= (an empty DataFrame "
        "with the dtypes run() returns) to declare them."
    )
    logger.warning(text)
    warnings.warn(text, UserWarning, stacklevel=4)
