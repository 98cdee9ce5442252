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
lines in the ledgers (:meth:`MiniBatchRecord.to_json` / :meth:`MiniBatchRecord.from_json`);
a task's clean first tries (most of a job's) travel in columns, :class:`CleanTries`
(:mod:`daskscore.protocol.records`).
"""

from __future__ import annotations

import operator
import pickle
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daskscore.config import Deployment
from daskscore.config.options import DEFAULT_PREFETCH, DEFAULT_PREFETCH_MB
from daskscore.protocol.records import CLEAN_COLUMNS as CLEAN_COLUMNS
from daskscore.protocol.records import PROCESS_DIED as PROCESS_DIED
from daskscore.protocol.records import RUN_DONE as RUN_DONE
from daskscore.protocol.records import RUN_EXCEPTION as RUN_EXCEPTION
from daskscore.protocol.records import RUN_TIMEOUT as RUN_TIMEOUT
from daskscore.protocol.records import CleanTries as CleanTries
from daskscore.protocol.records import MiniBatchRecord as MiniBatchRecord
from daskscore.protocol.records import Status as Status
from daskscore.protocol.records import is_clean_final as is_clean_final

#: Progress events (items scored) go to the driver on this topic, suffixed with the job id.
PROGRESS_TOPIC = "daskscore-progress"
#: A DataFrame returned by run() may list its failed items (one reason each) in
#: ``df.attrs[FAILED_ITEMS_ATTR]``: when a file yields many rows, counting rows cannot tell
#: that a file failed.  The built-in MLflow scorer uses it.
FAILED_ITEMS_ATTR = "daskscore_failed_items"


def failed_item_reasons(returned: Any, *, take: bool = False) -> list[Any]:
    """The failed items (one reason each) that what run() returned names in
    ``attrs[FAILED_ITEMS_ATTR]``; taken out of its attrs when ``take``."""
    attrs = getattr(returned, "attrs", None)
    if not isinstance(attrs, dict) or FAILED_ITEMS_ATTR not in attrs:
        return []
    return list((attrs.pop if take else attrs.get)(FAILED_ITEMS_ATTR) or [])


def item_counts(results: int, items: int, reasons: list[Any]) -> tuple[int, int]:
    """``(succeeded, failed)`` of a run() that returned ``results`` results for ``items``
    items: a result per item succeeded (as Azure counts), unless run() named its failed items
    (:func:`failed_item_reasons`), which then are the failed ones."""
    if reasons:
        failed = min(len(reasons), items)
        return items - failed, failed
    return min(results, items), max(items - results, 0)


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


#: What the first line of the init error of a worker process that died in init() says.
INIT_DIED = "did not return: its worker process died"
#: ... and of an init() given up for ``--init-timeout``.
INIT_TIMED_OUT = "did not return within --init-timeout"


def init_untraced(init_error: str | None) -> bool:
    """Whether a worker's init error is an init() that ended without a traceback (its process
    died, or it was given up for ``--init-timeout``): its first line says what happened."""
    first = (init_error or "").split("\n", 1)[0]
    return INIT_DIED in first or INIT_TIMED_OUT in first


def relay_key(job_id: str, attempt: str) -> list[str]:
    """Where the scheduler's metadata holds the run() in flight of a shipped task attempt."""
    return [RELAY_ROOT, job_id, attempt]


@dataclass(frozen=True)
class Bundle:
    """A folder (or one file) packed as a deterministic zip, named by its contents' hash.

    Packed and unpacked by :mod:`daskscore.io.shipping`; here only the data that travels.
    ``data`` None: a reference to a bundle the scheduler holds under
    ``[BUNDLES_ROOT, "data", digest]`` (and workers that ran it before have in their cache).
    """

    name: str
    digest: str
    data: bytes | None
    is_file: bool = False


#: Where the scheduler's metadata keeps shipped bundles between jobs (``engine.bundles``).
BUNDLES_ROOT = "daskscore-bundles"


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
    #: tabular mode: CSV columns read as text, never typed by inference (the built-in MLflow
    #: scorer's signature ``string`` columns: "007" stays "007")
    text_columns: tuple[str, ...] = ()
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
    #: a warm cluster's job: the driver's storage variables (credentials, endpoints,
    #: ``DASKSCORE_STORAGE_OPTIONS``), set on the workers instead of their own while the job
    #: is installed; None: the workers' own (an embedded cluster's are the driver's already).
    #: Secrets: never shown (``repr``), masked in the job's logs
    storage_env: dict[str, str] | None = field(default=None, repr=False)

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
    """What a task sends back: per mini-batch records, or why it did nothing.

    Its clean first tries travel in columns (``clean``, see :meth:`pack`); ``records`` are
    the others (or all of them, before :meth:`pack`).
    """

    attempt: str
    worker: str
    records: list[MiniBatchRecord] = field(default_factory=list)
    clean: CleanTries | None = None
    init_error: str | None = None
    #: the task found its own ledger from an earlier run: its process died; the driver reads it
    interrupted: bool = False
    cancelled: bool = False
    #: a shipped job's part files (names relative to the staging folder's ``parts``) ...
    files: dict[str, bytes] = field(default_factory=dict)
    #: ... what the worker's log files gained (names relative to ``logs``) ...
    logs: dict[str, bytes] = field(default_factory=dict)
    #: ... and the files the script wrote into ``AZUREML_BI_OUTPUT_PATH`` in the tries that
    #: returned (names relative to the output folder)
    outputs: dict[str, bytes] = field(default_factory=dict)

    def pack(self) -> None:
        """Move the clean first tries out of ``records`` into ``clean`` (columns)."""
        if self.records and self.clean is None:
            self.clean, self.records = CleanTries.split(self.worker, self.records)

    def all_records(self) -> list[MiniBatchRecord]:
        """Every try this task sent, as records, by mini-batch (each one's in try order)."""
        if self.clean is None:
            return list(self.records)
        return sorted(self.clean.records() + self.records, key=_MINI_BATCH)


_MINI_BATCH = operator.attrgetter("mini_batch")


def exception_text(exc: BaseException, with_type: bool = True) -> str:
    """``"Type: message"`` of ``exc`` (its message alone without ``with_type``), whatever its
    ``__str__`` does: a script's exception whose ``__str__`` raises (a field set on some code
    paths only) is shown as Python's traceback shows it, never raised again from our code."""
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - the script's __str__, any failure of it
        text = "<exception str() failed>"
    return f"{type(exc).__name__}: {text}" if with_type else text


#: Characters of an error text a try's record keeps, at most (its summary, ledgers and CSV
#: columns hold it): a longer one keeps its start and its end, the whole text stays in the
#: worker's ``logs/user/error/`` file.
MAX_RECORD_ERROR = 16_000


def bounded_error(text: str, limit: int = MAX_RECORD_ERROR) -> str:
    """``text`` (a try's error) cut in its middle to at most about ``limit`` characters: its
    first quarter (the traceback's frames, the exception's name) and its last three quarters
    (where the message ends), with a line saying how much was cut and where the rest is.

    Examples
    --------
    >>> bounded_error("a" * 10 + "b" * 30, limit=8)
    'aa\\n… 32 characters cut (the whole text: logs/user/error/) …\\nbbbbbb'
    """
    if len(text) <= limit:
        return text
    head, tail = limit // 4, limit - limit // 4
    cut = len(text) - head - tail
    said = f"… {cut:,} characters cut (the whole text: logs/user/error/) …"
    return f"{text[:head]}\n{said}\n{text[-tail:]}"


def error_line(text: Any, limit: int | None = None, empty: str = "") -> str:
    """An error text in one line, for a CSV column, a table cell or a summary: the exception of
    a traceback — its first line after the last frame, with the lines that follow it (a
    message of several lines, as torch's and pandas' often are), joined by spaces — else the
    text's last line.  ``limit``: at most that many characters (cut with "…"); ``empty``: what
    an empty text gives.

    Examples
    --------
    >>> error_line('Traceback (most recent call last):\\n  File "s.py", line 3, in run\\n'
    ...            '    f()\\nRuntimeError: Error(s) in loading:\\n\\tsize mismatch for fc')
    'RuntimeError: Error(s) in loading: size mismatch for fc'
    """
    lines = [line.rstrip() for line in str(text or "").strip().splitlines() if line.strip()]
    if not lines:
        return empty
    frames = [i for i, line in enumerate(lines) if line.lstrip().startswith('File "')]
    start = len(lines) - 1
    if frames:
        # after the last frame: its source line (and carets), indented; then the exception
        start = next(
            (i for i in range(frames[-1] + 1, len(lines)) if not lines[i][:1].isspace()),
            len(lines) - 1,
        )
    line = " ".join(part.strip() for part in lines[start:])
    return line if limit is None or len(line) <= limit else line[: limit - 1] + "…"
