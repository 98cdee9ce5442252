"""Part files and ledgers: how workers hand their results to the driver, crash-safely.

Each task attempt writes two files in the job's staging folder, named after the attempt
(``r<run>a<seq>-<job id>``: the job id keeps two jobs from ever writing one file, and a resumed
job, run 2, keeps run 1's files under their names and reads them back by their ledgers):

* ``parts/<attempt>.part``: the append_row bytes of its mini-batches, in the order they ran;
* ``ledger/<attempt>.log``: an append-only log of lines, each one ``os.write`` call:

  - ``S <mini_batch> <try> <start> <worker>`` before a ``run()`` call starts, and
    ``F <mini_batch>`` when it returns;
  - ``T <mini_batch>`` written by the watchdog just before it ends a process whose ``run()``
    overran ``retry_settings.timeout`` (``T <mini_batch> <json>`` with the error text of the
    try: where the hung call was, see :mod:`daskscore.worker.stacks`);
  - ``M <mini_batch> <rss bytes> <pid>``: the worker process's resident memory, sampled
    during that ``run()`` (each new high; ``M -1 ...`` once when the task starts), so that a
    process killed for memory is told apart (see :mod:`daskscore.worker.memory`);
  - ``E <json>`` as soon as a try has failed (``run()`` raised, or what it returned was
    refused): that try's record, so that a process that dies before the mini-batch is
    committed (in a retry of it, or later in the task) does not take the try with it;
  - ``C <json>`` after bytes were appended to the part file: the records of the mini-batches
    they belong to, each with its byte range.  A mini-batch counts as done only once its
    ``C`` line is in the ledger, so a process that dies at any instant leaves either a whole
    mini-batch or none of it.  (A mini-batch with a failed try is committed as soon as it
    ends, see :mod:`daskscore.worker.task`; clean ones are committed in flushes.)
  - ``X`` written by the driver (:func:`abandon_ledger`) when it gives up on a task that is
    still running (``error_threshold`` exceeded): the task ends its ``run()`` call on its own,
    after the job's books were written, so what it writes after this line is never read — the
    job's summary, ``processed_mini-batches.csv`` and predictions say that mini-batch was not
    run, and a ``--retry-failed`` runs it, never keeps it from the ledger too.

When a task does not return (its process died, or it was cancelled), the driver reads its
ledger with :func:`read_ledger`: committed mini-batches are kept, the failed tries of the
others are recorded as they were, the one that was running when the process died is charged
one try, and the rest are simply run again.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daskscore.protocol import MiniBatchRecord

#: The books a finished job with failures leaves in its kept staging folder for
#: ``--retry-failed`` (written by :mod:`daskscore.engine.retry`): every try of the mini-batches
#: that did not go cleanly, which the ledgers alone cannot tell (crashes, timeouts).
BOOK_FILE = "book.jsonl"


def part_path(staging: str | Path, attempt: str) -> Path:
    return Path(staging) / "parts" / f"{attempt}.part"


def ledger_path(staging: str | Path, attempt: str) -> Path:
    return Path(staging) / "ledger" / f"{attempt}.log"


def make_staging(staging: str | Path) -> None:
    for sub in ("parts", "ledger"):
        (Path(staging) / sub).mkdir(parents=True, exist_ok=True)


class LedgerWriter:
    """Appends to one attempt's part file and ledger (worker side)."""

    def __init__(self, staging: str | Path, attempt: str) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        self.part_fd = os.open(part_path(staging, attempt), flags, 0o644)
        self.ledger_fd = os.open(ledger_path(staging, attempt), flags, 0o644)
        self.offset = os.fstat(self.part_fd).st_size
        self._noted: dict[tuple[int, int], str] = {}  # failed tries' errors in E lines

    def started(self, mini_batch: int, attempt: int, worker: str, start: float) -> None:
        os.write(self.ledger_fd, f"S {mini_batch} {attempt} {start:.3f} {worker}\n".encode())

    def finished(self, mini_batch: int) -> None:
        os.write(self.ledger_fd, f"F {mini_batch}\n".encode())

    def memory(self, mini_batch: int, rss: int, pid: int) -> None:
        os.write(self.ledger_fd, f"M {mini_batch} {rss} {pid}\n".encode())

    def tried(self, record: MiniBatchRecord) -> None:
        """Note a failed try at once (it is committed again with its mini-batch)."""
        line = "E " + json.dumps(record.to_json(), separators=(",", ":"), default=str) + "\n"
        os.write(self.ledger_fd, line.encode())
        self._noted[(record.mini_batch, record.try_no)] = record.error

    def timed_out(self, mini_batch: int, error: str = "") -> None:
        detail = f" {json.dumps(error)}" if error else ""
        os.write(self.ledger_fd, f"T {mini_batch}{detail}\n".encode())

    def commit(self, data: bytes, records: list[MiniBatchRecord]) -> None:
        """Append ``data`` (the rows of ``records``, in order) and then their commit line."""
        if data:
            view = memoryview(data)
            while view:
                written = os.write(self.part_fd, view)
                view = view[written:]
        self.offset += len(data)
        rows = [self._committed(rec) for rec in records]
        line = "C " + json.dumps(rows, separators=(",", ":"), default=str) + "\n"
        os.write(self.ledger_fd, line.encode())

    def _committed(self, rec: MiniBatchRecord) -> dict[str, Any]:
        """``rec`` as its commit line has it: a try noted in an E line leaves its error text
        there (:func:`read_ledger` takes it back), not written twice."""
        data = rec.to_json()
        if rec.error and self._noted.get((rec.mini_batch, rec.try_no)) == rec.error:
            del data["error"]
        return data

    def close(self) -> None:
        for fd in (self.part_fd, self.ledger_fd):
            try:
                os.close(fd)
            except OSError:
                pass


def note_charged(staging: str | Path, attempt: str, records: list[MiniBatchRecord]) -> None:
    """Append a ``D`` line to a dead attempt's ledger (driver side): the tries the driver
    counted for it beyond its commits (:attr:`LedgerState.charged` reads them back).  Made
    when missing (a shipped task's ledger is written only by the tasks that returned)."""
    rows = [rec.to_json() for rec in records]
    line = "D " + json.dumps(rows, separators=(",", ":"), default=str) + "\n"
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    fd = os.open(ledger_path(staging, attempt), flags, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def abandon_ledger(staging: str | Path, attempt: str) -> None:
    """End an attempt's ledger with an ``X`` line (driver side): the task is given up, what it
    writes after this line is not read.  Made when missing: a task that had not started finds
    it, and runs nothing (see :meth:`daskscore.worker.handoff.SharedDisk.open_ledger`)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    fd = os.open(ledger_path(staging, attempt), flags, 0o644)
    try:
        os.write(fd, b"X\n")
    finally:
        os.close(fd)


@dataclass
class LedgerState:
    """What a ledger says about an attempt that did not return."""

    committed: list[MiniBatchRecord] = field(default_factory=list)
    #: the tries the driver counted once the attempt's process died (``D`` lines)
    charged: list[MiniBatchRecord] = field(default_factory=list)
    #: the failed tries of mini-batches that were not committed, in the order they ran
    tried: list[MiniBatchRecord] = field(default_factory=list)
    #: (mini_batch, try) of the run() call in flight when the process ended, if any
    running: tuple[int, int] | None = None
    #: when and where that call started
    running_start: float | None = None
    running_worker: str = ""
    timed_out: bool = False
    exists: bool = False
    #: the error text the process left for that call (a timeout's: where it hung), if any
    error: str = ""
    #: the attempt's worker process, and the highest RSS sampled during that call (bytes)
    pid: int | None = None
    running_rss: int = 0


def read_ledger(staging: str | Path, attempt: str) -> LedgerState:
    """Parse an attempt's ledger, up to its ``X`` line if any; a torn last line (the process
    died mid-write) is ignored."""
    path = ledger_path(staging, attempt)
    state = LedgerState()
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return state
    state.exists = True
    done: set[int] = set()
    started: tuple[int, int] | None = None
    where: tuple[float | None, str] = (None, "")
    timed: set[int] = set()
    errors: dict[int, str] = {}
    rss: dict[int, int] = {}
    tried: list[MiniBatchRecord] = []
    noted: dict[tuple[int, int], str] = {}  # the error texts of the E lines
    for line in text.split("\n")[:-1]:  # the last piece is "" or a torn line
        kind, _, rest = line.partition(" ")
        if kind == "X":  # given up by the driver: the rest came after the job's books
            break
        try:
            if kind == "S":
                parts = rest.split(" ", 3)
                started = (int(parts[0]), int(parts[1]))
                where = (float(parts[2]), parts[3]) if len(parts) == 4 else (None, "")
            elif kind == "F":
                if started is not None and started[0] == int(rest):
                    started = None
            elif kind == "T":
                mb, _, detail = rest.partition(" ")
                timed.add(int(mb))
                if detail:
                    errors[int(mb)] = str(json.loads(detail))
            elif kind == "M":
                mb, size, pid = (int(v) for v in rest.split(" "))
                rss[mb], state.pid = max(rss.get(mb, 0), size), pid
            elif kind == "E":
                tried.append(MiniBatchRecord.from_json(json.loads(rest)))
                noted[(tried[-1].mini_batch, tried[-1].try_no)] = tried[-1].error
            elif kind == "D":
                state.charged.extend(_record(r) for r in json.loads(rest))
            elif kind == "C":
                records = [_committed(r, noted) for r in json.loads(rest)]
                state.committed.extend(records)
                done.update(r.mini_batch for r in records)
        except (ValueError, KeyError):
            continue
    state.tried = [rec for rec in tried if rec.mini_batch not in done]
    if started is not None and started[0] not in done:
        state.running = started
        state.running_start, state.running_worker = where
        state.timed_out = started[0] in timed
        state.error = errors.get(started[0], "")
        state.running_rss = rss.get(started[0], 0)
    return state


def _record(data: dict[str, Any]) -> MiniBatchRecord:
    """A record of a ``D`` line (a part's items back as a tuple, as the driver had them)."""
    if isinstance(data.get("items"), list):
        data = {**data, "items": tuple(data["items"])}
    return MiniBatchRecord.from_json(data)


def _committed(data: dict[str, Any], noted: dict[tuple[int, int], str]) -> MiniBatchRecord:
    """A commit line's record, its error text taken from the try's E line where the commit
    left it out (:meth:`LedgerWriter._committed`)."""
    rec = MiniBatchRecord.from_json(data)
    if "error" not in data:
        rec.error = noted.get((rec.mini_batch, rec.try_no), "")
    return rec
