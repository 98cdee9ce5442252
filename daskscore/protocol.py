"""The plain data that crosses the boundary between the driver and the worker processes.

Everything here is picklable and free of behaviour that needs Dask, a file system or a running
job, so both sides import it and neither imports the other's internals::

    driver (daskscore.engine)                    worker process (daskscore.worker)
    ─────────────────────────                    ─────────────────────────────────
    WorkerJob   ── in the ScoringPlugin ──────▶  installed once per process, init()
    Payload     ── with each task ────────────▶  (mini-batch id, tries used, files or split)
    TaskResult  ◀── each task's reply ─────────  a MiniBatchRecord per try of each mini-batch
                ◀── or the attempt's ledger ───  (the same records, when the process died)

A :class:`MiniBatchRecord` is one try of one mini-batch; its :class:`Status` is one of Azure's
``processed_mini-batches.csv`` statuses.  Records travel pickled in task replies and as JSON
lines in the ledgers (:meth:`MiniBatchRecord.to_json` / :meth:`MiniBatchRecord.from_json`).
"""

from __future__ import annotations

import enum
import operator
import pickle
import zlib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from daskscore.config import Deployment
from daskscore.config.options import DEFAULT_PREFETCH, DEFAULT_PREFETCH_MB

#: Progress events (items scored) go to the driver on this topic, suffixed with the job id.
PROGRESS_TOPIC = "daskscore-progress"
#: A DataFrame returned by run() may list its failed items (one reason each) in
#: ``df.attrs[FAILED_ITEMS_ATTR]``: when a file yields many rows, counting rows cannot tell
#: that a file failed.  The built-in MLflow scorer uses it.
FAILED_ITEMS_ATTR = "daskscore_failed_items"
#: A shipped job's run() in flight is noted in the scheduler's metadata under
#: ``[RELAY_ROOT, job_id, attempt]`` (see :func:`relay_key`).
RELAY_ROOT = "daskscore"
#: How an init error that came before init() (fetching the model or the code) begins.
SETUP_FAILED = "preparing"


def failed_before_init(init_error: str | None) -> bool:
    """Whether a worker's init error is about preparing the job, not the script's init()."""
    return init_error is not None and init_error.startswith(SETUP_FAILED)


#: How an init error that came from importing the scoring script (before init()) begins.
IMPORT_FAILED = "importing the scoring script"


def failed_at_import(init_error: str | None) -> bool:
    """Whether a worker's init error is the scoring script's import, not its init()."""
    return init_error is not None and init_error.startswith(IMPORT_FAILED)


def relay_key(job_id: str, attempt: str) -> list[str]:
    """Where the scheduler's metadata holds the run() in flight of a shipped task attempt."""
    return [RELAY_ROOT, job_id, attempt]


class Status(str, enum.Enum):
    """How one try of a mini-batch ended (Azure's names; compares equal to the plain string)."""

    RUN_DONE = "RUN_DONE"
    RUN_EXCEPTION = "RUN_EXCEPTION"
    RUN_TIMEOUT = "RUN_TIMEOUT"
    PROCESS_DIED = "PROCESS_DIED"

    def __str__(self) -> str:
        return self.value


RUN_DONE = Status.RUN_DONE
RUN_EXCEPTION = Status.RUN_EXCEPTION
RUN_TIMEOUT = Status.RUN_TIMEOUT
PROCESS_DIED = Status.PROCESS_DIED


@dataclass
class MiniBatchRecord:
    """One try of one mini-batch: who ran it, when, and how it ended.

    ``final`` marks the try whose outcome (and rows) counts; a mini-batch has exactly one.
    Where its rows are: ``attempt`` (the task attempt that wrote them, set by the driver),
    ``start_offset``/``bytes`` in that attempt's append_row part file, or ``part`` (a staged
    Parquet file of a dataset output).
    """

    mini_batch: int
    try_no: int
    worker: str = ""
    start: float | None = None
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    rows: int = 0
    status: Status = Status.RUN_EXCEPTION
    error: str = ""
    final: bool = False
    run_s: float = 0.0
    elapsed_s: float = 0.0
    start_offset: int = 0
    bytes: int = 0
    part: str | None = None
    attempt: str | None = None
    #: a part of the mini-batch run on its own (``--isolate-failures``): its items
    #: ``[lo, hi)``, by position in the mini-batch; None for the whole mini-batch
    items: tuple[int, int] | None = None
    #: the worker process's peak resident memory during run(), in MiB (0: not measured; see
    #: :mod:`daskscore.worker.memory` for what the number means)
    peak_rss_mb: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.status, Status):
            self.status = Status(self.status)  # a plain string, as Azure writes it
        if self.items is not None and not isinstance(self.items, tuple):
            self.items = (int(self.items[0]), int(self.items[1]))  # a JSON list

    @property
    def done(self) -> bool:
        """Whether ``run()`` returned (its rows, possibly fewer than its items, are kept)."""
        return self.status is Status.RUN_DONE

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the ledger's format; ``try_no`` is written as ``try``)."""
        out = {f: getattr(self, f) for f in _FIELDS}
        out["try"] = out.pop("try_no")
        out["status"] = self.status.value
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MiniBatchRecord:
        """The record of a dict written by :meth:`to_json` (unknown keys are ignored)."""
        values = {k: data[k] for k in _FIELDS if k in data}
        values["try_no"] = int(data["try"])
        values["status"] = Status(data.get("status", Status.RUN_EXCEPTION.value))
        return cls(**values)

    def __reduce__(self) -> tuple[Any, ...]:
        # the values in field order, not the attribute dict: a task's reply of thousands of
        # records unpickles 2.5x quicker on the driver, in 40% fewer bytes
        return (MiniBatchRecord, _values(self))


_FIELDS = tuple(f.name for f in fields(MiniBatchRecord))
_values = operator.attrgetter(*_FIELDS)


@dataclass(frozen=True)
class Bundle:
    """A folder (or one file) packed as a deterministic zip, named by its contents' hash.

    Packed and unpacked by :mod:`daskscore.io.shipping`; here only the data that travels.
    """

    name: str
    digest: str
    data: bytes
    is_file: bool = False


@dataclass(frozen=True)
class WorkerJob:
    """Everything a worker needs to run a job's mini-batches; plain, picklable data."""

    job_id: str
    code: str
    script: str
    model_path: str | None
    output: str
    logs: str
    staging: str
    env: dict[str, str] = field(default_factory=dict)
    timeout: float = 30.0
    max_retries: int = 3
    output_action: str = "append_row"
    #: the name of the job's output writer (daskscore.io.writers): append_row, summary_only,
    #: parquet, csv, or frame (the rows returned to the caller, for score())
    output_format: str = "append_row"
    csv_kwargs: dict[str, Any] = field(default_factory=dict)
    #: tabular mode: input columns to carry into the output (``file`` and ``row`` included)
    carry_columns: tuple[str, ...] = ()
    #: dataset outputs: the columns partitioned on (a value too long for a folder name fails
    #: its mini-batch in the worker)
    partition_on: tuple[str, ...] = ()
    logging_level: str = "info"
    intra_op_threads: int | None = None
    #: workers do not share the driver's disk: code (and model) travel in the bundles, outputs
    #: come back with each task's result
    shipped: bool = False
    code_bundle: Bundle | None = None
    model_bundle: Bundle | None = None
    #: model.path given as a URL: every worker fetches it into its cache
    model_url: str | None = None
    #: the code folder as the user knows it (tracebacks name it, wherever the code was unpacked)
    display_code: str = ""
    #: worker resources every task needs (Dask's ``resources=``); workers without them idle
    resources: dict[str, float] = field(default_factory=dict)
    #: GPUs of an embedded cluster, shared out round-robin as CUDA_VISIBLE_DEVICES
    gpu_ids: tuple[str, ...] = ()
    #: mini-batches a task fetches ahead of the one run() scores (0: none), while what it
    #: holds fetched is under ``prefetch_bytes`` (see daskscore.worker.prefetch)
    prefetch: int = DEFAULT_PREFETCH
    prefetch_bytes: int = int(DEFAULT_PREFETCH_MB * (1 << 20))
    #: set on a cluster that outlives the job: the hash of what init() depends on (code,
    #: model, environment variables, init-time settings); the script stays initialised after
    #: the job, and the next job with the same key reuses it without init()
    warm_key: str | None = None

    @classmethod
    def for_deployment(
        cls, deployment: Deployment, job_id: str, output: Path, staging: Path, **options: Any
    ) -> WorkerJob:
        """The worker's view of ``deployment``: paths as strings, settings unpacked.

        ``options`` are the job's own fields (``output_format``, ``csv_kwargs``,
        ``carry_columns``, ``intra_op_threads``).
        """
        settings = deployment.settings
        model = deployment.model
        return cls(
            job_id=job_id,
            code=str(deployment.code),
            script=str(deployment.scoring_script),
            model_path=str(model.path) if model and not model.is_url else None,
            model_url=str(model.path) if model and model.is_url else None,
            display_code=str(deployment.code),
            output=str(output),
            logs=str(output / "logs"),
            staging=str(staging),
            env=dict(settings.environment_variables),
            timeout=settings.retry_settings.timeout,
            max_retries=settings.retry_settings.max_retries,
            output_action=settings.output_action,
            logging_level=settings.logging_level,
            **options,
        )

    @property
    def needs_localizing(self) -> bool:
        """Whether a worker must unpack or fetch something before it can run the job."""
        return self.shipped or self.model_url is not None


#: What a task runs: ``(mini_batch_id, tries_used, files or tabular split)`` per mini-batch
#: (or a :class:`Part` of one).
Work = Any


@dataclass(frozen=True)
class Part:
    """Items ``lo`` to ``hi`` (exclusive) of a mini-batch, run on their own: with
    ``--isolate-failures`` a mini-batch that failed every try is split into parts, and a part
    that fails is split again, down to single items.

    ``work`` is what the worker fetches: the part's own files, or the whole tabular split
    (whose DataFrame is then cut to rows ``lo:hi``).  ``max_retries``: the part's retry budget
    (a part of several items gets none, a single item the deployment's).
    """

    work: Any
    lo: int
    hi: int
    max_retries: int = 0

    @property
    def sliced(self) -> bool:
        """Whether the fetched input is cut to the part's rows (a tabular split)."""
        return not isinstance(self.work, list)


class Payload:
    """A task's mini-batches, opaque to Dask: ``client.submit`` walks nested lists and tuples
    in its arguments item by item looking for keys, which costs the driver ~5% of a core for
    tasks of thousands of file names.

    It travels packed (pickled, then zlib level 1: a mini-batch of 10 paths in ~30 bytes, a
    tabular split in ~10) and is unpacked where :attr:`items` is first read, in the worker.
    The scheduler, which keeps the messages it sent last (``distributed.admin.
    low-level-log-length``, 1,000 by default: a whole job's tasks) and runs in the driver on
    the embedded cluster, holds them as bytes, not as thousands of objects a task.
    """

    __slots__ = ("_items", "_packed", "_unpack")

    def __init__(self, items: list[tuple[int, int, Work]]) -> None:
        self._items: list[tuple[int, int, Work]] | None = items
        self._packed: bytes | None = None
        #: how ``_packed`` becomes the items (a module-level function): by default, unpickled
        self._unpack: Any = None

    @classmethod
    def packed(cls, unpack: Any, data: bytes) -> Payload:
        """A payload packed by its maker: ``unpack(data)`` gives its items, in the worker
        (see :mod:`daskscore.io.payloads`)."""
        return _packed_payload(data, unpack)

    @property
    def items(self) -> list[tuple[int, int, Work]]:
        if self._items is None:
            data = self._packed or b""
            if self._unpack is None:
                self._items = pickle.loads(zlib.decompress(data))
            else:
                self._items = self._unpack(data)
            self._packed = None
        return self._items

    def __reduce__(self) -> tuple[Any, ...]:
        packed = self._packed
        if packed is None:
            packed = zlib.compress(pickle.dumps(self._items, protocol=pickle.HIGHEST_PROTOCOL), 1)
            return (_packed_payload, (packed,))
        return (_packed_payload, (packed, self._unpack))


def _packed_payload(packed: bytes, unpack: Any = None) -> Payload:
    """A payload as it arrives: unpacked when its items are read."""
    payload = Payload.__new__(Payload)
    payload._items, payload._packed, payload._unpack = None, packed, unpack
    return payload


@dataclass
class TaskResult:
    """What a task sends back: per mini-batch records, or why it did nothing."""

    attempt: str
    worker: str
    records: list[MiniBatchRecord] = field(default_factory=list)
    init_error: str | None = None
    #: the task found its own ledger from an earlier run: its process died; the driver reads it
    interrupted: bool = False
    cancelled: bool = False
    #: a shipped job's part files (names relative to the staging folder's ``parts``) ...
    files: dict[str, bytes] = field(default_factory=dict)
    #: ... and what the worker's log files gained (names relative to ``logs``)
    logs: dict[str, bytes] = field(default_factory=dict)
