"""The Dask task: run several mini-batches through the installed scoring script.

One task carries many mini-batches (see :mod:`daskscore.batching` for why and how many).  It
runs them one after another in the worker's task thread, retries a ``run()`` that raises (up to
``retry_settings.max_retries`` more tries), and writes the rows to its part file itself, in
flushes of about :data:`FLUSH_BYTES` or :data:`FLUSH_SECONDS`, committing each flush in its
ledger (:mod:`daskscore.ledger`).  Only small records travel back to the driver; the rows never
do.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import script as script_mod
from .ledger import LedgerWriter, ledger_path
from .plugin import WorkerState, get_state

#: Rows are written to the part file in flushes of about this size ...
FLUSH_BYTES = 1 << 20
#: ... or at least this often, so that progress is durable and memory stays flat.
FLUSH_SECONDS = 1.0
#: Progress events to the driver at most this often per task.
PROGRESS_SECONDS = 0.5
PROGRESS_TOPIC = "daskscore-progress"

RUN_DONE = "RUN_DONE"
RUN_EXCEPTION = "RUN_EXCEPTION"
RUN_TIMEOUT = "RUN_TIMEOUT"
PROCESS_DIED = "PROCESS_DIED"


@dataclass
class TaskResult:
    """What a task sends back: per mini-batch records, or why it did nothing."""

    attempt: str
    worker: str
    records: list[dict[str, Any]] = field(default_factory=list)
    init_error: str | None = None
    #: the task found its own ledger from an earlier run: its process died; the driver reads it
    interrupted: bool = False
    cancelled: bool = False


def run_task(job_id: str, attempt: str, batches: list[tuple[int, int, list[str]]]) -> TaskResult:
    """Run ``batches`` — ``(mini_batch_id, tries_used, files)`` — and return their records."""
    state = get_state(job_id)
    result = TaskResult(attempt=attempt, worker=state.worker_name)
    if state.init_error is not None:
        result.init_error = state.init_error
        return result
    if ledger_path(state.job.staging, attempt).exists():
        # Dask ran this task before on a process that died; the driver sorts it out.
        result.interrupted = True
        return result
    writer = LedgerWriter(state.job.staging, attempt)
    try:
        _run_batches(state, writer, batches, result)
    finally:
        writer.close()
    return result


def _run_batches(
    state: WorkerState,
    writer: LedgerWriter,
    batches: list[tuple[int, int, list[str]]],
    result: TaskResult,
) -> None:
    job = state.job
    append = job.output_action == "append_row"
    buffer: list[bytes] = []
    pending: list[dict[str, Any]] = []
    size = 0
    last_flush = last_progress = time.monotonic()
    done_items = 0
    for mini_batch, tries_used, files in batches:
        if state.cancelled:
            result.cancelled = True
            break
        records, data = _run_one(state, writer, mini_batch, tries_used, files, append)
        for rec in records[:-1]:
            rec["bytes"] = 0
        final = records[-1]
        final["start_offset"] = writer.offset + size
        final["bytes"] = len(data)
        if data:
            buffer.append(data)
            size += len(data)
        pending.extend(records)
        done_items += len(files)
        now = time.monotonic()
        if size >= FLUSH_BYTES or now - last_flush >= FLUSH_SECONDS:
            _flush(writer, buffer, pending, result)
            buffer, pending, size, last_flush = [], [], 0, now
        if now - last_progress >= PROGRESS_SECONDS:
            _progress(job.job_id, result.attempt, done_items)
            done_items, last_progress = 0, now
    _flush(writer, buffer, pending, result)
    if done_items:
        _progress(job.job_id, result.attempt, done_items)


def _flush(
    writer: LedgerWriter, buffer: list[bytes], pending: list[dict[str, Any]], result: TaskResult
) -> None:
    if not pending:
        return
    writer.commit(b"".join(buffer), pending)
    result.records.extend(pending)


def _run_one(
    state: WorkerState,
    writer: LedgerWriter,
    mini_batch: int,
    tries_used: int,
    files: list[str],
    append: bool,
) -> tuple[list[dict[str, Any]], bytes]:
    """Run one mini-batch, with retries on exceptions; return its attempt records and rows."""
    job = state.job
    records: list[dict[str, Any]] = []
    tries = tries_used
    while True:
        tries += 1
        rec, data = _attempt(state, writer, mini_batch, tries, files, append)
        records.append(rec)
        if rec["status"] == RUN_DONE or tries > job.max_retries:
            rec["final"] = True
            return records, data


def _attempt(
    state: WorkerState,
    writer: LedgerWriter,
    mini_batch: int,
    tries: int,
    files: list[str],
    append: bool,
) -> tuple[dict[str, Any], bytes]:
    job = state.job
    total = len(files)
    rec: dict[str, Any] = {
        "mini_batch": mini_batch,
        "try": tries,
        "worker": state.worker_name,
        "start": time.time(),
        "total": total,
        "succeeded": 0,
        "failed": total,
        "rows": 0,
        "status": RUN_EXCEPTION,
        "error": "",
        "final": False,
    }
    started = time.perf_counter()
    writer.started(mini_batch, tries, state.worker_name, rec["start"])
    state.in_flight = (time.monotonic() + job.timeout, mini_batch, writer)
    try:
        returned = state.module.run(list(files))
    except BaseException as exc:  # noqa: BLE001 - the user's code may raise anything
        state.in_flight = None
        writer.finished(mini_batch)
        rec["run_s"] = rec["elapsed_s"] = time.perf_counter() - started
        return _failed(state, rec, exc, files), b""
    state.in_flight = None
    writer.finished(mini_batch)
    run_s = time.perf_counter() - started
    try:
        items = script_mod.normalize_result(returned)
        data = script_mod.format_rows(items, job.csv_kwargs) if append else b""
    except Exception as exc:  # noqa: BLE001 - unsupported return types, to_csv errors
        rec["run_s"] = run_s
        rec["elapsed_s"] = time.perf_counter() - started
        return _failed(state, rec, exc, files), b""
    n = len(items)
    rec.update(
        succeeded=min(n, total),
        failed=max(total - n, 0),
        rows=n,
        status=RUN_DONE,
        run_s=run_s,
        elapsed_s=time.perf_counter() - started,
    )
    if n < total:
        rec["error"] = f"run() returned {n} results for {total} files"
    return rec, data


def _failed(
    state: WorkerState, rec: dict[str, Any], exc: BaseException, files: list[str]
) -> dict[str, Any]:
    if isinstance(exc, script_mod.ResultError):
        # daskscore raised it about what run() returned: the message is the whole story
        rec["error"] = f"{type(exc).__name__}: {exc}"
    else:
        rec["error"] = script_mod.user_traceback(exc, Path(state.job.code))
    context = (
        f"run() of mini-batch {rec['mini_batch']} (try {rec['try']}, files: "
        f"{', '.join(files[:5])}{' ...' if len(files) > 5 else ''})"
    )
    state.write_error(context, script_mod.full_traceback(exc))
    return rec


def _progress(job_id: str, attempt: str, items: int) -> None:
    try:
        from distributed import get_worker

        get_worker().log_event(f"{PROGRESS_TOPIC}-{job_id}", {"attempt": attempt, "items": items})
    except Exception:  # noqa: BLE001 - progress is best effort; never fail a task for it
        pass
