"""``score()``'s failures: what a partition reports of a failed mini-batch, and whether it
raises (``on_error="raise"``, ``settings.error_threshold``; see :mod:`daskscore.engine.session`).
"""

from __future__ import annotations

from typing import Any

from daskscore.engine.scoredeaths import worker_scheduler
from daskscore.engine.work import describe_work, tries_text
from daskscore.errors import ErrorThresholdExceeded, JobFailed
from daskscore.protocol import MiniBatchRecord

#: ``[COUNTS_ROOT, job_id, partition]`` in the scheduler's metadata: a partition's failed items,
#: summed against ``settings.error_threshold``
COUNTS_ROOT = "daskscore-score"
#: Failures listed in the message of a partition that raises (its first one in full).
SHOWN_FILES = 10


#: What a score() partition reports of a failed mini-batch's last try (and its files)
REPORTED = ("mini_batch", "try", "status", "total", "succeeded", "failed", "error", "final")


def failure_of(rec: MiniBatchRecord, work: Any) -> dict[str, Any] | None:
    """A final try with failed items, as reported: its record's fields and its files."""
    if rec.done and not rec.failed:
        return None
    failure = {k: v for k, v in rec.to_json().items() if k in REPORTED}
    failure["files"] = describe_work(list(work) if isinstance(work, tuple) else work)
    failure["dropped"] = not rec.done  # its rows are not in the frame
    return failure


def raise_if_over(
    job_id: str, partition: int, failures: list[dict[str, Any]], threshold: int
) -> None:
    """``on_error="raise"``: raise for the partition's failures unless ``error_threshold``
    (``>= 0``) still allows the session's failed items, counted over its partitions."""
    if threshold < 0:
        dropped = [f for f in failures if f["dropped"]]
        if dropped:  # (a partial return's rows are all in the frame)
            raise JobFailed(_message(dropped, None), user_traceback=dropped[0]["error"])
        return
    failed = sum(int(f["failed"]) for f in failures)
    total = _count_failed(job_id, partition, failed)
    if total > threshold:
        raise ErrorThresholdExceeded(
            _message(failures, (total, threshold)), user_traceback=failures[0]["error"]
        )


def _count_failed(job_id: str, partition: int, failed: int) -> int:
    """Note this partition's failed items in the scheduler's metadata; the session's sum."""
    rpc = worker_scheduler()
    if rpc is None:  # not on a worker (a test calling the function): this partition alone
        return failed
    scheduler, call = rpc
    call(scheduler.set_metadata, keys=[COUNTS_ROOT, job_id, str(partition)], value=failed)
    counts = call(scheduler.get_metadata, keys=[COUNTS_ROOT, job_id], default={})
    return sum(int(v) for v in (counts or {}).values())


def _message(failures: list[dict[str, Any]], over: tuple[int, int] | None) -> str:
    """One paragraph: which mini-batch failed, its files, the script's traceback, what to do."""
    first = failures[0]
    files = [str(f) for f in first["files"]]
    shown = ", ".join(files[:SHOWN_FILES]) + (
        f" and {len(files) - SHOWN_FILES} more" if len(files) > SHOWN_FILES else ""
    )
    others = [str(f["mini_batch"]) for f in failures[1:]]
    also = f" (and mini-batch(es) {', '.join(others)} of the same partition)" if others else ""
    if over is None:
        head = (
            f"score(): mini-batch {first['mini_batch']} failed ({first['status']}, "
            f"{tries_text(first['try'])}){also}, so its rows would be missing from the result. "
        )
        hint = (
            'Pass on_error="drop" to leave failed mini-batches out (they are listed in the '
            'session\'s failures, ddf.attrs["daskscore"].failures), or allow some with '
            "settings.error_threshold."
        )
    else:
        head = (
            f"score(): error_threshold exceeded: {over[0]} items failed, more than the "
            f"{over[1]} allowed (settings.error_threshold); mini-batch {first['mini_batch']} "
            f"({first['status']}, {tries_text(first['try'])}){also}. "
        )
        hint = 'Pass on_error="drop" to leave failed mini-batches out without raising.'
    error = str(first.get("error") or "").rstrip()
    return f"{head}Its files: {shown}. {hint}\nThe error:\n{error}"
