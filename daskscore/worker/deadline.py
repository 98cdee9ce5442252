"""Timeouts enforced from outside the worker process: the nanny ends a ``run()`` that overran.

The watchdog of :class:`~daskscore.worker.runtime.JobRuntime` ends its own process when a
``run()`` call overruns ``retry_settings.timeout``; it is quick, and works everywhere, but it is a
Python thread and needs the GIL.  A ``run()`` stuck in C code that keeps the GIL (a C
extension's call, a catastrophic regular expression) never lets it act, and would stall its
worker for ever.  So the deadline of the ``run()`` in flight is also written where the worker's
*nanny*, another process, can read it without the worker's GIL:

* worker side, :class:`DeadlineFile`: one small file per installed job in the worker's local
  directory (``<local_directory>/daskscore-deadlines/``), rewritten in place with one write
  when a ``run()`` call starts, and marked idle with a one-byte write when it returns;
* nanny side, :class:`DeadlineWatch`, a ``NannyPlugin`` registered on every cluster a job runs
  on (:func:`watch_deadlines`): one thread per nanny process looks at its workers' files every
  :data:`POLL_S`.  Past a deadline plus :data:`GRACE_S` (the in-process watchdog had its
  chance) it records the timeout where the driver reads it — a ``T`` line in the attempt's
  ledger, and for a shipped job the scheduler's note (:mod:`daskscore.worker.relay`), each with
  the stack the worker's ``faulthandler`` timer dumped (:mod:`daskscore.worker.stacks`: the
  innermost frames of the code folder in the error text, every thread in the worker's error
  log) — and SIGKILLs the worker process.  The nanny starts a fresh
  one as after any death, and the driver charges the try ``RUN_TIMEOUT`` and runs the task's
  other mini-batches again uncharged, exactly as when the in-process watchdog ends it.

A worker started without a nanny (``dask worker --no-nanny``) has no one outside to do this: the
driver says so in the job log, and only the in-process watchdog guards it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distributed.diagnostics.plugin import NannyPlugin

from daskscore.io.ledger import LedgerWriter
from daskscore.worker.deaths import end_children, unwatch_exits, watch_exits
from daskscore.worker.relay import RelayLedger
from daskscore.worker.stacks import read_dump, timeout_error

logger = logging.getLogger("daskscore")

#: The folder, in a worker's local directory, of its jobs' deadline files.
FOLDER = "daskscore-deadlines"
#: How often a nanny looks at its worker's deadlines.
POLL_S = 0.5
#: How long past a deadline the nanny waits before it acts: the in-process watchdog (every
#: 0.25 s) ends a ``run()`` that lets it run first, and writes the script's error log itself.
GRACE_S = 2.0
#: An overdue record is read again after this long and must not have changed: a file read
#: while the worker rewrites it is never acted on.
CONFIRM_S = 0.05
#: The first byte of a deadline file: a ``run()`` call is in flight, or none is.
ACTIVE, IDLE = b"1", b"0"
#: The nanny plugin's name (one per cluster: registering it again changes nothing).
PLUGIN_NAME = "daskscore-deadlines"
#: Sets a shipped task's note in the scheduler's metadata: ``note(key, entry)``.
Note = Callable[[list[str], dict[str, Any]], Any]


# ------------------------------------------------------------------------------ worker side


def _write_head(fd: int, data: bytes) -> None:
    if hasattr(os, "pwrite"):
        os.pwrite(fd, data, 0)
    else:  # pragma: no cover - Windows
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, data)


class DeadlineFile:
    """The deadline of one job's ``run()`` in flight in this worker process, for its nanny.

    The file holds :data:`ACTIVE` or :data:`IDLE`, then one JSON object: the call's deadline
    (``time.monotonic()``, one clock for every process of a host), mini-batch, try and start,
    and what :meth:`describe` said (the job, the task attempt, where a timeout is recorded).
    """

    def __init__(self, local_directory: str | Path) -> None:
        folder = Path(local_directory) / FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{uuid.uuid4().hex}.json"
        self.fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        self.size = 0
        self._tail = "}"
        _write_head(self.fd, IDLE)

    def describe(self, **fields: Any) -> None:
        """What every record of the next ``run()`` calls carries besides their own deadline,
        mini-batch, try and start (see :func:`record_timeout` for the keys it reads)."""
        self._tail = "," + json.dumps({"pid": os.getpid(), **fields}, default=str)[1:]

    def describe_attempt(
        self, job: Any, worker: str, attempt: str | None, ledger: Any, error_log: str, stack: Any
    ) -> None:
        """:meth:`describe` the task attempt ``attempt`` of ``job`` (a ``WorkerJob``) on
        ``worker`` (None: none, as in ``score()``), and its ``ledger``: where a timeout is
        recorded; ``error_log`` and ``stack`` (the dump's path): the worker's files."""
        self.describe(
            job_id=job.job_id,
            worker=worker,
            timeout=job.timeout,
            staging=job.staging if attempt else None,
            attempt=attempt,
            relay=getattr(ledger, "relay_key", None),  # (a RelayLedger's, a score() task's)
            error_log=error_log,
            stack=stack,
            code=job.code,
            display_code=job.display_code or job.code,
        )

    def started(
        self, deadline: float, mini_batch: int, try_no: int, start: float, thread: int = 0
    ) -> None:
        """A ``run()`` call started in ``thread`` (its ``threading.get_ident()``); it is
        overdue at ``deadline`` (``time.monotonic()``)."""
        if self.fd is None:
            return
        data = (
            f'1{{"deadline":{deadline!r},"mini_batch":{mini_batch},"try":{try_no},'
            f'"start":{start!r},"thread":{thread}{self._tail}'
        ).encode()
        if len(data) < self.size:
            data = data.ljust(self.size)  # spaces over the rest of a longer earlier record
        self.size = len(data)
        _write_head(self.fd, data)

    def finished(self) -> None:
        """The ``run()`` call returned (or raised)."""
        if self.fd is not None:
            _write_head(self.fd, IDLE)

    def close(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)
            self.path.unlink(missing_ok=True)


# ------------------------------------------------------------------------------ nanny side


def read_record(path: Path) -> tuple[bytes, dict[str, Any]] | None:
    """A deadline file's bytes and record, or None when no ``run()`` is in flight there (or
    the file is gone, or being rewritten)."""
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    if raw[:1] != ACTIVE:
        return None
    try:
        record = json.loads(raw[1:])
    except ValueError:
        return None
    return (raw, record) if isinstance(record, dict) else None


def overdue(folder: Path, pid: int, now: float) -> list[tuple[Path, bytes, dict[str, Any]]]:
    """The records in ``folder`` of ``pid``'s ``run()`` calls past deadline + grace."""
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    found = []
    for name in names:
        got = read_record(folder / name)
        if got is None:
            continue
        raw, record = got
        try:
            late = record.get("pid") == pid and now >= float(record["deadline"]) + GRACE_S
        except (KeyError, TypeError, ValueError):
            continue
        if late:
            found.append((folder / name, raw, record))
    return found


def record_timeout(record: dict[str, Any], note: Note) -> None:
    """Record the timeout of ``record``'s ``run()`` where the driver reads it, as the
    in-process watchdog does: ``T`` in the attempt's ledger (``staging``, ``attempt``), the
    scheduler's note of a shipped task (``relay``: ``note(key, entry)`` sets it), and a line
    in the worker's error log (``error_log``); with the stack of the hung call when the worker
    dumped one (``stack``; ``code`` and ``display_code`` tell its frames in the code folder)."""
    mini_batch = int(record["mini_batch"])
    dump, error = hang_stack(record)
    if record.get("staging") and record.get("attempt"):
        try:
            ledger = LedgerWriter(record["staging"], record["attempt"])
        except OSError:
            logger.debug("the ledger of %s is gone", record["attempt"], exc_info=True)
        else:
            try:
                ledger.timed_out(mini_batch, error)
            finally:
                ledger.close()
    if record.get("relay"):
        running = [mini_batch, int(record["try"]), record.get("start"), record.get("worker", "")]
        note(list(record["relay"]), RelayLedger.timeout_entry(running, error))
    if record.get("error_log"):
        path = Path(record["error_log"])
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        text = (
            f"{stamp} run() of mini-batch {mini_batch} failed on {record.get('worker', '')}:\n"
            f"timed out after {float(record.get('timeout', 0)):g} s (retry_settings.timeout) "
            "without letting its process act (C code holding the GIL); the worker's nanny "
            "killed the process, which is restarted.\n"
            + (f"{error}\n" if error else "")
            + (f"Every thread of the process then:\n{dump.rstrip()}\n" if dump else "")
            + "\n"
        )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8", errors="backslashreplace") as fh:
                fh.write(text)
        except OSError:
            logger.debug("cannot write %s", path, exc_info=True)


def hang_stack(record: dict[str, Any]) -> tuple[str, str]:
    """The dump of the hung call's process and the try's error text made from it, the code
    folder named as the user knows it; ("", "") when there is none."""
    try:
        dump = read_dump(record.get("stack"), since=float(record.get("start") or 0))
        code, shown = str(record.get("code") or ""), str(record.get("display_code") or "")
        timeout = float(record.get("timeout", 0))
        # (the source lines are read where the code is, before it is renamed)
        error = timeout_error(dump, record.get("thread"), code, timeout) if dump and code else ""
        if code and shown and shown != code:
            dump, error = dump.replace(code, shown), error.replace(code, shown)
        return dump, error
    except Exception:  # noqa: BLE001 - the timeout is recorded all the same
        logger.debug("reading the stack of a hung run() failed", exc_info=True)
        return "", ""


def kill(pid: int) -> None:
    """End a worker process at once (SIGKILL; TerminateProcess on Windows), and the processes
    it started: a ``subprocess`` of the ``run()`` that hung, or a server ``init()`` started,
    would outlive it (its new process's ``init()`` would then find the port or the device
    taken)."""
    end_children(pid)
    try:
        os.kill(pid, getattr(signal, "SIGKILL", signal.SIGTERM))
    except (ProcessLookupError, PermissionError):
        pass


def check(nanny: Any, killed: dict[int, int] | None = None) -> bool:
    """Look at ``nanny``'s worker: if one of its ``run()`` calls is past deadline + grace,
    record the timeout and kill the process; return whether it did.  ``killed`` (by
    ``id(nanny)``, the pid it killed last) keeps a process that is dying from being killed
    twice."""
    pid, folder = nanny.pid, nanny.worker_dir
    if not pid or not folder or (killed is not None and killed.get(id(nanny)) == pid):
        return False
    for path, raw, record in overdue(Path(folder) / FOLDER, pid, time.monotonic()):
        time.sleep(CONFIRM_S)
        again = read_record(path)
        if again is None or again[0] != raw or nanny.pid != pid:
            continue  # it returned (or is being rewritten): not overdue after all
        logger.warning(
            "run() of mini-batch %s (try %s) of job %s on %s overran retry_settings.timeout "
            "(%g s) without letting its process act; its nanny kills worker process %d",
            record.get("mini_batch"), record.get("try"), record.get("job_id"),
            record.get("worker"), float(record.get("timeout", 0)), pid,
        )  # fmt: skip
        try:
            record_timeout(record, _scheduler_note(nanny))
        finally:
            if killed is not None:
                killed[id(nanny)] = pid
            kill(pid)
        return True
    return False


def _scheduler_note(nanny: Any) -> Note:
    def note(key: list[str], entry: dict[str, Any]) -> Any:
        from distributed.utils import sync

        return sync(
            nanny.loop, nanny.scheduler.set_metadata, keys=key, value=entry, callback_timeout=10
        )

    return note


class _Watcher:
    """One thread per process watches the nannies of that process (a LocalCluster's are all in
    the driver; a ``dask worker`` has one); it ends when none is left."""

    def __init__(self) -> None:
        self.nannies: weakref.WeakSet[Any] = weakref.WeakSet()
        self.killed: dict[int, int] = {}
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def add(self, nanny: Any) -> None:
        with self.lock:
            self.nannies.add(nanny)
            if self.thread is None:
                self.thread = threading.Thread(
                    target=self._run, name="daskscore-deadline-watch", daemon=True
                )
                self.thread.start()

    def discard(self, nanny: Any) -> None:
        with self.lock:
            self.nannies.discard(nanny)
            self.killed.pop(id(nanny), None)

    def _run(self) -> None:
        while True:
            time.sleep(POLL_S)
            with self.lock:
                nannies = list(self.nannies)
                if not nannies:
                    self.thread = None
                    return
            for nanny in nannies:
                try:
                    check(nanny, self.killed)
                except Exception:  # noqa: BLE001 - the watch must outlive any one failure
                    logger.debug("checking the deadlines of %r failed", nanny, exc_info=True)


_WATCHER = _Watcher()


class DeadlineWatch(NannyPlugin):
    """Kills a worker process whose ``run()`` overran its deadline (see the module's doc).
    It also keeps how its worker processes ended, for the driver to tell a death during
    ``init()`` (:mod:`daskscore.worker.deaths`)."""

    idempotent = True
    name = PLUGIN_NAME

    def setup(self, nanny: Any) -> None:
        _WATCHER.add(nanny)
        watch_exits()

    def teardown(self, nanny: Any) -> None:
        _WATCHER.discard(nanny)
        unwatch_exits()


def watch_deadlines(client: Any) -> None:
    """Register :class:`DeadlineWatch` on ``client``'s cluster (its nannies, and nannies that
    join later); once is enough."""
    try:
        client.register_plugin(DeadlineWatch())
    except Exception:  # noqa: BLE001 - the in-process watchdog still guards every run()
        logger.warning(
            "could not register the nanny-side timeout watch; a run() that holds the GIL past "
            "retry_settings.timeout cannot be stopped",
            exc_info=True,
        )


def unwatched_workers(workers: dict[str, Any]) -> list[str]:
    """The workers of ``scheduler_info()['workers']`` that run without a nanny."""
    return sorted(addr for addr, info in workers.items() if not info.get("nanny"))
