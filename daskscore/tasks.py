"""The Dask task: run several mini-batches through the installed scoring script.

One task carries many mini-batches (see :mod:`daskscore.batching` for why and how many).  It
runs them one after another in the worker's task thread, retries a ``run()`` that raises (up to
``retry_settings.max_retries`` more tries), and hands each result to a *sink* that writes it
where the job's output format wants it — append_row bytes into the attempt's part file, or a
Parquet part of a dataset — in flushes of about :data:`FLUSH_BYTES` or :data:`FLUSH_SECONDS`,
each committed in the attempt's ledger (:mod:`daskscore.ledger`).  Only small records travel
back to the driver; the rows never do — except for a *shipped* job, whose workers do not share
the driver's disk: there a task returns its part files with its records, and stops after
about :data:`SHIPPED_TASK_SECONDS` so that results come home often (the driver requeues the
rest of its mini-batches).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import script as script_mod
from . import storage, tabular
from .datasets import FORMATS as DATASET_FORMATS
from .datasets import MB_COLUMN
from .ledger import LedgerWriter, ledger_path
from .plugin import WorkerState, get_state
from .shipping import RelayLedger, take_files

#: Rows are written to the part file in flushes of about this size ...
FLUSH_BYTES = 1 << 20
#: ... or at least this often, so that progress is durable and memory stays flat.
FLUSH_SECONDS = 1.0
#: Progress events to the driver at most this often per task.
PROGRESS_SECONDS = 0.5
PROGRESS_TOPIC = "daskscore-progress"
#: A shipped job's task returns after this much work ...
SHIPPED_TASK_SECONDS = 5.0
#: ... or this much output, whichever comes first: what it ran is lost if its worker dies
#: before it returns, and its output travels in one message.
SHIPPED_TASK_BYTES = 64 << 20

#: A DataFrame returned by run() may list its failed items (one reason each) in
#: ``df.attrs[FAILED_ITEMS_ATTR]``: when a file yields many rows, counting rows cannot tell
#: that a file failed.  The built-in MLflow scorer uses it.
FAILED_ITEMS_ATTR = "daskscore_failed_items"

RUN_DONE = "RUN_DONE"
RUN_EXCEPTION = "RUN_EXCEPTION"
RUN_TIMEOUT = "RUN_TIMEOUT"
PROCESS_DIED = "PROCESS_DIED"

Work = list[str] | tabular.Split


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
    #: a shipped job's part files (names relative to the staging folder's ``parts``) ...
    files: dict[str, bytes] = field(default_factory=dict)
    #: ... and what the worker's log files gained (names relative to ``logs``)
    logs: dict[str, bytes] = field(default_factory=dict)


class Payload:
    """A task's mini-batches, opaque to Dask: ``client.submit`` walks nested lists and tuples
    in its arguments item by item looking for keys, which costs the driver ~5% of a core for
    tasks of thousands of file names."""

    __slots__ = ("items",)

    def __init__(self, items: list[tuple[int, int, Work]]) -> None:
        self.items = items

    def __reduce__(self) -> tuple[Any, ...]:
        return (Payload, (self.items,))


def run_task(
    job_id: str, attempt: str, batches: Payload | list[tuple[int, int, Work]]
) -> TaskResult:
    """Run ``batches`` — ``(mini_batch_id, tries_used, files or split)`` — return their records."""
    if isinstance(batches, Payload):
        batches = batches.items
    state = get_state(job_id)
    result = TaskResult(attempt=attempt, worker=state.worker_name)
    if state.init_error is not None:
        result.init_error = state.init_error
        return result
    with state.run_lock:  # a second task on a multi-threaded worker waits for this one
        writer = _open_ledger(state, attempt)
        if writer is None:
            # Dask ran this task before on a process that died; the driver sorts it out.
            result.interrupted = True
            return result
        sink = make_sink(state, writer, attempt)
        try:
            _run_batches(state, writer, sink, batches, result)
        finally:
            writer.close()
        if state.job.shipped:  # (the log files' read offsets are the process's, too)
            staging = Path(state.job.staging)
            result.files = take_files(staging / "parts", attempt)
            take_files(staging / "ledger", attempt)
            result.logs = state.drain_logs()
    return result


def _open_ledger(state: WorkerState, attempt: str) -> LedgerWriter | None:
    """The attempt's ledger; None when the attempt ran before (on a process that died)."""
    job = state.job
    if job.shipped:
        relay = RelayLedger(job.staging, attempt, job.job_id)
        if relay.claim():
            return relay
        relay.close()
        return None
    if ledger_path(job.staging, attempt).exists():
        return None
    return LedgerWriter(job.staging, attempt)


def _run_batches(
    state: WorkerState,
    writer: LedgerWriter,
    sink: Sink,
    batches: list[tuple[int, int, Work]],
    result: TaskResult,
) -> None:
    began = last_flush = last_progress = time.monotonic()
    done_items = produced = 0
    for mini_batch, tries_used, work in batches:
        if state.cancelled:
            result.cancelled = True
            break
        records, output = run_mini_batch(state, writer, mini_batch, tries_used, work)
        before = sink.size
        sink.add(records, output)
        produced += sink.size - before
        done_items += records[-1]["total"]
        now = time.monotonic()
        if state.job.shipped and (
            now - began >= SHIPPED_TASK_SECONDS or produced >= SHIPPED_TASK_BYTES
        ):
            break  # home with what it has; the driver requeues the rest
        if sink.size >= FLUSH_BYTES or now - last_flush >= FLUSH_SECONDS:
            result.records.extend(sink.flush())
            last_flush = now
        if now - last_progress >= PROGRESS_SECONDS:
            _progress(state.job.job_id, result.attempt, done_items)
            done_items, last_progress = 0, now
    result.records.extend(sink.flush())
    if done_items:
        _progress(state.job.job_id, result.attempt, done_items)


# ----------------------------------------------------------------------------- sinks


class Sink:
    """Collects the output of finished mini-batches and commits it in flushes."""

    def __init__(self, writer: LedgerWriter) -> None:
        self.writer = writer
        self.pending: list[dict[str, Any]] = []
        self.size = 0

    def add(self, records: list[dict[str, Any]], output: Any) -> None:
        self.pending.extend(records)

    def flush(self) -> list[dict[str, Any]]:
        if not self.pending:
            return []
        done, self.pending, self.size = self.pending, [], 0
        self.writer.commit(b"", done)
        return done


class AppendRowSink(Sink):
    """append_row: the rows as Azure writes them, appended to the attempt's part file."""

    def __init__(self, writer: LedgerWriter) -> None:
        super().__init__(writer)
        self.buffer: list[bytes] = []

    def add(self, records: list[dict[str, Any]], output: Any) -> None:
        final = records[-1]
        final["start_offset"] = self.writer.offset + self.size
        final["bytes"] = len(output or b"")
        if output:
            self.buffer.append(output)
            self.size += len(output)
        self.pending.extend(records)

    def flush(self) -> list[dict[str, Any]]:
        if not self.pending:
            return []
        data, done = b"".join(self.buffer), self.pending
        self.buffer, self.pending, self.size = [], [], 0
        self.writer.commit(data, done)
        return done


class DatasetSink(Sink):
    """parquet / csv datasets: frames tagged with their mini-batch, one Parquet part per flush."""

    def __init__(self, writer: LedgerWriter, staging: str, attempt: str) -> None:
        super().__init__(writer)
        self.frames: list[Any] = []
        self.staging = Path(staging) / "parts"
        self.attempt = attempt
        self.count = 0

    def add(self, records: list[dict[str, Any]], output: Any) -> None:
        if output is not None and len(output):
            frame = output.copy(deep=False)
            frame[MB_COLUMN] = records[-1]["mini_batch"]
            self.frames.append(frame)
            self.size += int(frame.memory_usage(index=False, deep=False).sum())
        self.pending.extend(records)

    def flush(self) -> list[dict[str, Any]]:
        if not self.pending:
            return []
        name = None
        if self.frames:
            import pandas as pd

            self.count += 1
            name = f"{self.attempt}-{self.count:05d}.parquet"
            pd.concat(self.frames, ignore_index=True).to_parquet(self.staging / name, index=False)
        for rec in self.pending:
            if rec.get("final") and rec["status"] == RUN_DONE and rec["rows"]:
                rec["part"] = name
        done, self.pending, self.frames, self.size = self.pending, [], [], 0
        self.writer.commit(b"", done)
        return done


def make_sink(state: WorkerState, writer: LedgerWriter, attempt: str) -> Sink:
    fmt = state.job.output_format
    if fmt == "append_row":
        return AppendRowSink(writer)
    if fmt in DATASET_FORMATS:
        return DatasetSink(writer, state.job.staging, attempt)
    return Sink(writer)


# ----------------------------------------------------------------------------- one mini-batch


def run_mini_batch(
    state: WorkerState, writer: Any, mini_batch: int, tries_used: int, work: Work
) -> tuple[list[dict[str, Any]], Any]:
    """Run one mini-batch, with retries on exceptions; return its try records and its output
    (append_row bytes, a DataFrame for datasets, or None)."""
    records: list[dict[str, Any]] = []
    tries = tries_used
    while True:
        tries += 1
        rec, output = _attempt(state, writer, mini_batch, tries, work)
        records.append(rec)
        if rec["status"] == RUN_DONE or tries > state.job.max_retries:
            rec["final"] = True
            return records, output


def _attempt(
    state: WorkerState, writer: Any, mini_batch: int, tries: int, work: Work
) -> tuple[dict[str, Any], Any]:
    planned = _count(work)
    rec: dict[str, Any] = {
        "mini_batch": mini_batch,
        "try": tries,
        "worker": state.worker_name,
        "start": time.time(),
        "total": planned,
        "succeeded": 0,
        "failed": planned,
        "rows": 0,
        "status": RUN_EXCEPTION,
        "error": "",
        "final": False,
        "run_s": 0.0,
        "elapsed_s": 0.0,
    }
    started = time.perf_counter()
    scratch = None
    try:
        argument, scratch = _materialize(work)
        rec["total"] = rec["failed"] = _count(work, argument)
        items, output = _call_run(state, writer, mini_batch, tries, work, argument, rec)
    except BaseException as exc:  # noqa: BLE001 - the user's code may raise anything
        rec["elapsed_s"] = time.perf_counter() - started
        return _failed(state, rec, exc, work), None
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    n, total = len(items), rec["total"]
    rec.update(
        succeeded=min(n, total),
        failed=max(total - n, 0),
        rows=n,
        status=RUN_DONE,
        elapsed_s=time.perf_counter() - started,
    )
    if n < total:
        rec["error"] = f"run() returned {n} results for {total} {_unit(work)}"
    reasons = rec.pop("failed_items", None)
    if reasons:  # the script said which items failed (see FAILED_ITEMS_ATTR)
        failed = min(len(reasons), total)
        error = state.shown("\n".join(map(str, reasons)))
        rec.update(succeeded=total - failed, failed=failed, error=error)
    return rec, output


def _call_run(
    state: WorkerState,
    writer: Any,
    mini_batch: int,
    tries: int,
    work: Work,
    argument: Any,
    rec: dict[str, Any],
) -> tuple[Any, Any]:
    """run() under the watchdog's eye; then its result normalized and made into output."""
    writer.started(mini_batch, tries, state.worker_name, rec["start"])
    state.in_flight = (time.monotonic() + state.job.timeout, mini_batch, writer)
    started = time.perf_counter()
    try:
        returned = state.module.run(argument)
    finally:
        state.in_flight = None
        writer.finished(mini_batch)
        rec["run_s"] = time.perf_counter() - started
    attrs = getattr(returned, "attrs", None)
    if isinstance(attrs, dict) and FAILED_ITEMS_ATTR in attrs:
        rec["failed_items"] = list(attrs.pop(FAILED_ITEMS_ATTR) or [])
    items = script_mod.normalize_result(returned)
    return items, _output(state, items, work, argument)


def _count(work: Work, argument: Any = None) -> int:
    if isinstance(work, tabular.Split):
        if argument is not None:
            return len(argument)
        return work.n_rows or 0
    return len(work)


def _unit(work: Work) -> str:
    return "rows" if isinstance(work, tabular.Split) else "files"


def _materialize(work: Work) -> tuple[Any, str | None]:
    """What run() receives — a list of local paths (remote files are downloaded into a
    scratch folder, removed after the try), or in tabular mode a DataFrame — and the folder."""
    if isinstance(work, tabular.Split):
        return tabular.read_split(work), None
    if work and storage.is_remote(work[0]):
        scratch = tempfile.mkdtemp(prefix="daskscore-batch-")
        return storage.download(list(work), scratch), scratch
    return list(work), None


def _output(state: WorkerState, items: Any, work: Work, argument: Any) -> Any:
    job = state.job
    if job.output_format == "summary_only":
        return None
    if job.carry_columns or job.output_format in (*DATASET_FORMATS, "frame"):
        items = to_frame(items, argument, work, job.carry_columns)
    if job.output_format == "append_row":
        return script_mod.format_rows(items, job.csv_kwargs)
    return items


def to_frame(items: Any, argument: Any, work: Work, carry: tuple[str, ...]) -> Any:
    """run()'s result as a DataFrame (a list becomes one ``prediction`` column), with the
    chosen input columns carried through in tabular mode."""
    import pandas as pd

    frame = items if isinstance(items, pd.DataFrame) else pd.DataFrame({"prediction": items})
    if carry and isinstance(work, tabular.Split):
        source = argument.copy(deep=False)
        source["file"] = work.path
        source["row"] = argument.index
        frame = tabular.carry_columns(
            source.reset_index(drop=True), frame.reset_index(drop=True), list(carry)
        )
    return frame


def _failed(
    state: WorkerState, rec: dict[str, Any], exc: BaseException, work: Work
) -> dict[str, Any]:
    if isinstance(exc, script_mod.ResultError):
        # daskscore raised it about what run() returned: the message is the whole story
        rec["error"] = state.shown(f"{type(exc).__name__}: {exc}")
    else:
        rec["error"] = state.user_traceback(exc)
    context = f"run() of mini-batch {rec['mini_batch']} (try {rec['try']}, {_describe(work)})"
    state.write_error(context, script_mod.full_traceback(exc))
    return rec


def _describe(work: Work) -> str:
    if isinstance(work, tabular.Split):
        return f"rows from {work.first_row} of {work.path}"
    more = " ..." if len(work) > 5 else ""
    return f"files: {', '.join(work[:5])}{more}"


def _progress(job_id: str, attempt: str, items: int) -> None:
    try:
        from distributed import get_worker

        get_worker().log_event(f"{PROGRESS_TOPIC}-{job_id}", {"attempt": attempt, "items": items})
    except Exception:  # noqa: BLE001 - progress is best effort; never fail a task for it
        pass
