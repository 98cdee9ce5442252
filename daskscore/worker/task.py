"""The Dask task: run several mini-batches through the installed scoring script.

One task carries many mini-batches (the driver's task-sizing policy decides how many).  It
runs them one after another in the worker's task thread, retries a ``run()`` that raises (up to
``retry_settings.max_retries`` more tries), and hands each result to the job's output writer
(:mod:`daskscore.io.writers`), whose sink writes it where the format wants it — append_row bytes
into the attempt's part file, or a Parquet part of a dataset — in flushes of about
:data:`FLUSH_BYTES` or :data:`FLUSH_SECONDS`, each committed in the attempt's ledger
(:mod:`daskscore.io.ledger`).  A failed try is noted in the ledger as it ends, and a mini-batch
that had one is committed as soon as it ends: should the process die later in the task (or in
a retry of that mini-batch), its tries are all in the books and, once it ended, it is not run
again; what dies uncommitted is clean first tries only, which run again uncharged.  Only small
records (:class:`~daskscore.protocol.MiniBatchRecord`) travel back to the driver; how the rows
reach it is the job's hand-off (:mod:`daskscore.worker.handoff`).  What ``run()`` receives
(downloaded files, a split's DataFrame) is fetched ahead on a thread while ``run()`` scores the
mini-batch before (:mod:`daskscore.worker.prefetch`); a failing fetch is still its own
mini-batch's failure.

A task may carry a :class:`~daskscore.protocol.Part` of a mini-batch instead of a whole one
(``--isolate-failures``): its own files, or the rows ``lo:hi`` of its tabular split, with the
part's retry budget; its records carry ``items`` so that the driver knows which part they are.
Each ``run()`` call's peak RSS is measured (:mod:`daskscore.worker.memory`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from daskscore import _compat
from daskscore.errors import InputError
from daskscore.io import datasets, nested, tabular
from daskscore.io.ledger import LedgerWriter
from daskscore.io.writers import Sink
from daskscore.protocol import (
    MiniBatchRecord,
    Part,
    Payload,
    Status,
    TaskResult,
    bounded_error,
    exception_text,
    failed_item_reasons,
    item_counts,
)
from daskscore.worker import script as script_mod
from daskscore.worker.environment import is_newest
from daskscore.worker.memory import rss_bytes
from daskscore.worker.plugin import get_runtime
from daskscore.worker.prefetch import Fetched, MiniBatchInput, TaskInputs
from daskscore.worker.runtime import JobRuntime

#: Rows are written to the part file in flushes of about this size ...
FLUSH_BYTES = 1 << 20
#: ... or at least this often, so that progress is durable and memory stays flat.
FLUSH_SECONDS = 1.0

Work = list[str] | tabular.Split | Part


def run_task(
    job_id: str, attempt: str, batches: Payload | list[tuple[int, int, Work]]
) -> TaskResult:
    """Run ``batches`` — ``(mini_batch_id, tries_used, files or split)`` — return their records."""
    if isinstance(batches, Payload):
        batches = batches.items
    runtime = get_runtime(job_id)
    result = TaskResult(attempt=attempt, worker=runtime.worker_name)
    if runtime.init_error is not None:
        result.init_error = runtime.init_error
        return result
    with runtime.turn():  # another task in this process (of any job) waits for this one
        ledger = runtime.handoff.open_ledger(runtime.job, attempt)
        if ledger is None:
            # Dask ran this task before on a process that died; the driver sorts it out.
            result.interrupted = True
            return result
        sink = runtime.writer.sink(ledger, runtime.job.staging, attempt)
        runtime.watch_attempt(attempt, ledger)  # where the nanny records a timeout
        try:
            ledger.memory(-1, rss_bytes(), os.getpid())  # the process, should it be killed
            runtime.handoff.task_started(runtime)
            _run_batches(runtime, ledger, sink, batches, result)
        finally:
            runtime.watch_attempt(None)
            ledger.close()
        runtime.handoff.pack(runtime, result)
    result.pack()  # (its clean first tries travel in columns)
    return result


def _run_batches(
    runtime: JobRuntime,
    ledger: LedgerWriter,
    sink: Sink,
    batches: list[tuple[int, int, Work]],
    result: TaskResult,
) -> None:
    began = last_flush = time.monotonic()
    produced = 0
    job = runtime.job
    meters = runtime.meters = _compat.TaskMeters()
    inputs = TaskInputs(
        [_fetched(work) for _, _, work in batches],
        job.prefetch,
        job.prefetch_bytes,
        runtime.local_directory,  # (a dead worker's downloads go with its folder)
        job.text_columns,
        job.timeout,  # (a mini-batch's download, as its run(): at most the try's timeout)
    )
    try:
        for position, (mini_batch, tries_used, work) in enumerate(batches):
            if runtime.cancelled:
                result.cancelled = True
                break
            first = inputs.first(position)
            records, output = run_mini_batch(runtime, ledger, mini_batch, tries_used, work, first)
            before, writing = sink.size, time.perf_counter()
            sink.add(records, output)
            produced += sink.size - before
            now = time.monotonic()
            if runtime.handoff.task_full(now - began, produced):
                meters.add("write", time.perf_counter() - writing)
                break  # home with what it has; the driver requeues the rest
            if (
                sink.size >= FLUSH_BYTES
                or now - last_flush >= FLUSH_SECONDS
                or not records[0].done  # (a mini-batch with a failed try: at once)
            ):
                result.records.extend(sink.flush())
                last_flush = now
            meters.add("write", time.perf_counter() - writing)
            runtime.announcer.ended(1, records[-1].total)  # (sent at most every 0.5 s)
    finally:
        inputs.close()  # what was fetched ahead and not run is removed
    writing = time.perf_counter()
    result.records.extend(sink.flush())
    meters.add("write", time.perf_counter() - writing)
    meters.report()  # (Dask's fine-grained metrics: run, fetch, write, once per task)
    runtime.announcer.flush(force=True)  # (before the task's result reaches the driver)


# ----------------------------------------------------------------------------- one mini-batch


def run_mini_batch(
    runtime: JobRuntime,
    ledger: Any,
    mini_batch: int,
    tries_used: int,
    work: Work,
    first: Callable[[], Fetched] | None = None,
) -> tuple[list[MiniBatchRecord], Any]:
    """Run one mini-batch, with retries on exceptions; return its try records and its output
    (what the job's writer stages: append_row bytes, a DataFrame, or None).

    ``first`` gives the first try's input (fetched ahead, see :mod:`daskscore.worker.prefetch`;
    it raises what fetching raised); without it the input is fetched here.  The input (a
    scratch folder of downloaded files) is removed when the mini-batch is done.
    """
    if not is_newest(runtime.saved):  # another job was installed here since: this job's
        runtime.reassert()  # environment, argv and streams again, not that job's
    records: list[MiniBatchRecord] = []
    tries = tries_used
    job = runtime.job
    folder = runtime.local_directory
    source = MiniBatchInput(_fetched(work), first, folder, job.text_columns, job.timeout)
    budget = work.max_retries if isinstance(work, Part) else job.max_retries
    try:
        while True:
            tries += 1
            rec, output = _attempt(runtime, ledger, mini_batch, tries, work, source)
            records.append(rec)
            runtime.handoff.try_ended(runtime, rec.done)  # (a shipped job's files taken)
            if rec.done or tries > budget:
                rec.final = True
            if not rec.done:
                ledger.tried(rec)  # kept should the process die before the commit
            if rec.final:
                return records, output
    finally:
        source.release()


def _attempt(
    runtime: JobRuntime,
    ledger: Any,
    mini_batch: int,
    tries: int,
    work: Work,
    source: MiniBatchInput,
) -> tuple[MiniBatchRecord, Any]:
    planned = _count(work)
    rec = MiniBatchRecord(
        mini_batch=mini_batch,
        try_no=tries,
        worker=runtime.worker_name,
        start=time.time(),
        total=planned,
        failed=planned,
        items=(work.lo, work.hi) if isinstance(work, Part) else None,
    )
    started = time.perf_counter()
    try:
        try:  # (Dask's fine-grained metrics: the prefetch wait)
            argument = source.argument()  # a failed fetch is this try's failure, as run()'s is
        finally:
            runtime.meters.add("fetch", time.perf_counter() - started)
        if isinstance(work, Part) and work.sliced:
            argument = argument.iloc[work.lo : work.hi]  # the part's rows of its split
        rec.total = rec.failed = _count(work, argument)
        items, output, reasons = _call_run(runtime, ledger, work, argument, rec)
    except BaseException as exc:  # noqa: BLE001 - the user's code may raise anything
        rec.elapsed_s = time.perf_counter() - started
        if runtime.overran is not None:  # (past its timeout, left running: see overrun.py)
            return _timed_out(rec, runtime.overran), None
        return _failed(runtime, rec, exc, work), None
    if runtime.overran is not None:
        rec.elapsed_s = time.perf_counter() - started
        return _timed_out(rec, runtime.overran), None
    n, total = len(items), rec.total
    rec.succeeded, rec.failed = item_counts(n, total, reasons)
    rec.rows = n
    rec.status = Status.RUN_DONE
    rec.elapsed_s = time.perf_counter() - started
    if n < total:
        unit = _unit(work) if total != 1 else _unit(work).removesuffix("s")
        rec.error = f"run() returned {n} result{'' if n == 1 else 's'} for {total} {unit}"
    if reasons:  # the script said which items failed (see FAILED_ITEMS_ATTR)
        rec.error = runtime.shown("\n".join(map(str, reasons)))
    return rec, output


def _call_run(
    runtime: JobRuntime, ledger: Any, work: Work, argument: Any, rec: MiniBatchRecord
) -> tuple[Any, Any, list[Any]]:
    """run() under the watchdog's eye; then its result normalized and made into output, and
    the failed items the script named (if any)."""
    ledger.started(rec.mini_batch, rec.try_no, runtime.worker_name, rec.start)
    runtime.memory.start(rec.mini_batch, ledger)
    runtime.run_started(rec.mini_batch, rec.try_no, rec.start or 0.0, ledger)
    started = time.perf_counter()
    try:
        returned = runtime.module.run(argument)
        if isinstance(returned, Iterator):  # (a generator's work is done as it is consumed)
            returned = list(returned)
    finally:
        runtime.run_ended()
        ledger.finished(rec.mini_batch)
        rec.run_s = time.perf_counter() - started
        runtime.meters.add("run", rec.run_s)
        rec.peak_rss_mb = runtime.memory.finish()
    reasons = failed_item_reasons(returned, take=True)
    items = script_mod.normalize_result(returned)
    return items, _output(runtime, items, work, argument, returned), reasons


def _fetched(work: Work) -> list[str] | tabular.Split:
    """What is fetched for ``work``: a part's files, or its whole split."""
    return work.work if isinstance(work, Part) else work


def _count(work: Work, argument: Any = None) -> int:
    if isinstance(work, Part):
        return len(argument) if argument is not None else work.hi - work.lo
    if isinstance(work, tabular.Split):
        if argument is not None:
            return len(argument)
        return work.n_rows or 0
    return len(work)


def _unit(work: Work) -> str:
    return "rows" if isinstance(_fetched(work), tabular.Split) else "files"


def _output(runtime: JobRuntime, items: Any, work: Work, argument: Any, returned: Any) -> Any:
    writer, job = runtime.writer, runtime.job
    if not writer.keeps_rows:
        return None
    work = _fetched(work)
    if job.carry_columns or writer.wants_frame:
        what = _what(returned) if writer.dataset else ""  # (only a dataset's errors say it)
        items = to_frame(items, argument, work, job.carry_columns, writer.dataset, what)
    return writer.encode(items, job.csv_kwargs)


def _what(returned: Any) -> str:
    """What run() returned, in words: ``a list``, ``a Tensor``, ``an ndarray``."""
    name = type(returned).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def to_frame(
    items: Any,
    argument: Any,
    work: Work,
    carry: tuple[str, ...],
    dataset: bool = False,
    what: str = "",
) -> Any:
    """run()'s result as a DataFrame (a list becomes one ``prediction`` column), with the
    chosen input columns carried through in tabular mode (in front of its index where a
    ``dataset`` keeps that as column(s): :func:`daskscore.io.nested.index_columns`).
    ``what``: what run() returned, in words, which a dataset's errors about a list's items say
    (``frame.attrs``: :data:`daskscore.io.nested.RETURNED_ATTR`)."""
    import pandas as pd

    frame = items if isinstance(items, pd.DataFrame) else datasets.prediction_frame(items)
    listed = frame is not items
    if carry and isinstance(work, tabular.Split):
        returned = frame.index  # (by label where it holds the input's, in another order)
        if dataset:
            frame = nested.index_columns(frame)
        source = argument.copy(deep=False)
        source["file"] = datasets.printable(work.path)  # a name not UTF-8: \udcff, not refused
        source["row"] = argument.index
        # (the result keeps the index run() gave it, as without carried columns)
        frame = tabular.carry_columns(source, frame, list(carry), index=returned)
    if dataset and what and listed:
        frame.attrs[nested.RETURNED_ATTR] = what
    return frame


def _failed(
    runtime: JobRuntime, rec: MiniBatchRecord, exc: BaseException, work: Work
) -> MiniBatchRecord:
    if isinstance(exc, (*script_mod.RESULT_ERRORS, InputError)):
        # daskscore raised it about what run() returned, or about an input it could not read
        # (naming the file and the line): the message is the whole story
        rec.error = bounded_error(runtime.shown(exception_text(exc)))
    else:
        rec.error = bounded_error(runtime.user_traceback(exc))
    context = f"run() of mini-batch {rec.mini_batch} (try {rec.try_no}, {_describe(work)})"
    runtime.write_error(context, script_mod.full_traceback(exc))
    return rec


def _timed_out(rec: MiniBatchRecord, error: str) -> MiniBatchRecord:
    """A try whose run() returned past its timeout, where the process could not be ended."""
    rec.status, rec.error = Status.RUN_TIMEOUT, error
    rec.succeeded, rec.failed = 0, rec.total
    return rec


def _describe(work: Work) -> str:
    if isinstance(work, Part):
        last = "" if work.hi - work.lo == 1 else f"-{work.hi - 1}"
        return f"its items {work.lo}{last} on their own, {_describe(work.work)}"
    if isinstance(work, tabular.Split):
        return f"rows from {work.first_row} of {work.path}"
    more = " ..." if len(work) > 5 else ""
    return f"files: {', '.join(work[:5])}{more}"
