"""Output writers: one class per output format, behind one small interface, in a registry.

A job's output format (Azure's ``output_action``, or ``--output-format``) names an
:class:`OutputWriter`.  The writer is the one place that knows the format, on both sides of the
process boundary:

* in the worker, :meth:`OutputWriter.encode` turns what ``run()`` returned into the format's
  staged form (append_row bytes, a DataFrame, nothing), and :meth:`OutputWriter.sink` collects
  it into the attempt's part files, committed in its ledger (:mod:`daskscore.io.ledger`);
* in the driver, :meth:`OutputWriter.assemble` turns the staged parts of every mini-batch's
  final try into the output, in mini-batch order, and :meth:`OutputWriter.target` names what
  the writer owns in the output folder (so a second job is refused, or ``--overwrite``
  replaces it).

A new format is one subclass with ``@register``.  The worker side gets a writer by name
(:func:`get_writer`) with default options; the driver's carries the job's dataset options.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from daskscore.errors import UsageError
from daskscore.io import datasets, nested
from daskscore.io.inplace import put_in_place
from daskscore.io.ledger import LedgerWriter
from daskscore.io.outputdir import assemble_append_row
from daskscore.io.rowtext import (
    FormatError,
    Rows,
    defer_rows,
    file_head,
    format_rows,
    formatted,
)
from daskscore.io.setaside import set_aside
from daskscore.protocol import MiniBatchRecord

logger = logging.getLogger("daskscore")


@dataclass
class Assembly:
    """What a writer needs to assemble a job's output on the driver.

    ``finals``: the final try of every mini-batch whose ``run()`` returned, in mini-batch order
    (a mini-batch split by ``--isolate-failures``: the final tries of its parts that returned,
    in item order, each with its own rows: concatenated, they are the mini-batch's rows); the
    books' sequence also offers ``byte_ranges()``, their ``(attempt, start_offset, bytes)``
    made from columns; ``client``: where to compute a dataset (``None``: in this process).
    """

    out_dir: Path
    staging: Path
    output_file_name: str
    finals: list[MiniBatchRecord]
    client: Any = None
    #: what assembling warned about (a file of the output's name the script wrote, set aside)
    warnings: list[str] = field(default_factory=list)


class Sink:
    """Collects the output of finished mini-batches and commits it in flushes (worker side)."""

    def __init__(self, writer: LedgerWriter) -> None:
        self.writer = writer
        self.pending: list[MiniBatchRecord] = []
        self.size = 0

    def add(self, records: list[MiniBatchRecord], output: Any) -> None:
        self.pending.extend(records)

    def flush(self) -> list[MiniBatchRecord]:
        if not self.pending:
            return []
        done, self.pending, self.size = self.pending, [], 0
        self.writer.commit(b"", done)
        return done


class OutputWriter:
    """One output format.  Subclasses set :attr:`name` and override what differs."""

    #: the name users give (``output_action`` or ``--output-format``)
    name: ClassVar[str] = ""
    #: offered to users (the ``frame`` writer of ``score()`` is internal)
    public: ClassVar[bool] = True
    #: run()'s result is made a DataFrame (list returns: one ``prediction`` column) first
    wants_frame: ClassVar[bool] = False
    #: whether rows are kept at all (``summary_only`` only counts them)
    keeps_rows: ClassVar[bool] = True
    #: a dataset folder, written with Dask (partition_on and rows_per_file apply)
    dataset: ClassVar[bool] = False

    def __init__(self, partition_on: Sequence[str] = (), rows_per_file: int | None = None) -> None:
        self.partition_on = tuple(partition_on)
        self.rows_per_file = rows_per_file
        #: the job's append_row ``to_csv`` options (the driver's writer: set by its plan)
        self.csv_kwargs: Mapping[str, Any] = {}

    # ------------------------------------------------------------------ worker side
    def encode(self, items: Any, csv_kwargs: Mapping[str, Any]) -> Any:
        """What a mini-batch's result is staged as (``items``: a list, or a DataFrame)."""
        return items

    def sink(self, ledger: LedgerWriter, staging: str, attempt: str) -> Sink:
        """Where a task's results go until they are committed."""
        return Sink(ledger)

    # ------------------------------------------------------------------ driver side
    def target(self, output_file_name: str) -> str | None:
        """The name this writer owns in the output folder, if any."""
        return None

    def check_staged(self, staging: Path, record: MiniBatchRecord) -> None:
        """Check the first staged result (a dataset's columns against ``partition_on``)."""

    def assemble(self, job: Assembly) -> Path | None:
        """Write the output from the staged parts; return it (None when there is none)."""
        return None


#: Every writer by name; :func:`register` adds one.
REGISTRY: dict[str, type[OutputWriter]] = {}


def register(cls: type[OutputWriter]) -> type[OutputWriter]:
    """Class decorator: make ``cls`` a known output format."""
    REGISTRY[cls.name] = cls
    return cls


def formats() -> tuple[str, ...]:
    """The output formats users may ask for, in the registry's order."""
    return tuple(name for name, cls in REGISTRY.items() if cls.public)


def get_writer(
    name: str, partition_on: Sequence[str] = (), rows_per_file: int | None = None
) -> OutputWriter:
    """The writer of output format ``name``.

    Raises
    ------
    UsageError
        No writer has that name, or dataset options were given to a format without datasets.
    """
    cls = REGISTRY.get(name)
    if cls is None:
        known = formats()
        raise UsageError(
            f"output format '{name}': expected {', '.join(known[:-1])} or {known[-1]}."
        )
    if (partition_on or rows_per_file) and not cls.dataset:
        raise UsageError(
            "partition_on and rows_per_file need a dataset output: --output-format parquet or csv."
        )
    return cls(partition_on, rows_per_file)


def _set_aside(job: Assembly, dest: Path, what: str) -> None:
    """A file or folder the script wrote under the name of the job's output is kept beside it,
    with a warning (see :func:`daskscore.io.setaside.set_aside`)."""
    warning = set_aside(dest, job.staging, what)
    if warning:
        logger.warning("%s", warning)
        job.warnings.append(warning)


# --------------------------------------------------------------------------- append_row


class AppendRowSink(Sink):
    """append_row: the rows as Azure writes them, appended to the attempt's part file.

    A mini-batch's DataFrame of plain columns comes as :class:`Rows` (formatted later): the
    flush formats the frames of consecutive mini-batches with one ``to_csv`` and cuts the text
    back into each one's lines (one ``to_csv`` of ten rows costs as much as of a thousand).
    """

    def __init__(self, writer: LedgerWriter) -> None:
        super().__init__(writer)
        self.buffer: list[tuple[MiniBatchRecord, bytes | Rows]] = []

    def add(self, records: list[MiniBatchRecord], output: Any) -> None:
        if isinstance(output, Rows):
            self.size += output.estimate
        else:
            output = output or b""
            self.size += len(output)
        self.buffer.append((records[-1], output))
        self.pending.extend(records)

    def flush(self) -> list[MiniBatchRecord]:
        if not self.pending:
            return []
        buffer, done = self.buffer, self.pending
        self.buffer, self.pending, self.size = [], [], 0
        offset, chunks = self.writer.offset, []
        for final, data in zip((rec for rec, _ in buffer), formatted(buffer), strict=True):
            final.start_offset, final.bytes = offset, len(data)
            offset += len(data)
            chunks.append(data)
        self.writer.commit(b"".join(chunks), done)
        return done


@register
class AppendRowWriter(OutputWriter):
    """Azure's ``append_row``: one file, space-separated, no header, rows in mini-batch order."""

    name = "append_row"

    def encode(self, items: Any, csv_kwargs: Mapping[str, Any]) -> Any:
        return defer_rows(items, csv_kwargs) or format_rows(items, csv_kwargs)

    def sink(self, ledger: LedgerWriter, staging: str, attempt: str) -> Sink:
        return AppendRowSink(ledger)

    def target(self, output_file_name: str) -> str | None:
        return output_file_name

    def assemble(self, job: Assembly) -> Path | None:
        dest = job.out_dir / job.output_file_name
        _set_aside(job, dest, "append_row file")
        ranges = getattr(job.finals, "byte_ranges", None)  # (the books' own, made from columns)
        if ranges is not None:
            pieces = ranges()
        else:
            pieces = ((rec.attempt, rec.start_offset, rec.bytes) for rec in job.finals)
        size = assemble_append_row(job.staging, pieces, dest, file_head(self.csv_kwargs))
        logger.info("assembled %s (%d bytes)", dest, size)
        return dest


@register
class SummaryOnlyWriter(OutputWriter):
    """Azure's ``summary_only``: results are counted, not written (the script writes its own)."""

    name = "summary_only"
    keeps_rows = False


# --------------------------------------------------------------------------- datasets


class DatasetSink(Sink):
    """parquet / csv datasets: frames tagged with their mini-batch, one Parquet part per flush
    (per run of frames of one kind: a column's dtype may differ between mini-batches)."""

    def __init__(self, writer: LedgerWriter, staging: str, attempt: str) -> None:
        super().__init__(writer)
        self.frames: list[tuple[Any, list[MiniBatchRecord]]] = []
        self.staging = Path(staging) / "parts"
        self.attempt = attempt
        self.count = 0

    def add(self, records: list[MiniBatchRecord], output: Any) -> None:
        if output is not None and len(output):
            frame = output.copy(deep=False)
            frame[datasets.MB_COLUMN] = records[-1].mini_batch
            self.frames.append((frame, records))
            self.size += int(frame.memory_usage(index=False, deep=False).sum())
        self.pending.extend(records)

    def flush(self) -> list[MiniBatchRecord]:
        if not self.pending:
            return []
        for frame, records in datasets.runs_of_one_kind(self.frames):
            self.count += 1
            name = f"{self.attempt}-{self.count:05d}.parquet"
            datasets.write_part(frame, self.staging / name)
            for rec in records:
                if rec.final and rec.done and rec.rows:
                    rec.part = name
        done, self.pending, self.frames, self.size = self.pending, [], [], 0
        self.writer.commit(b"", done)
        return done


class DatasetWriter(OutputWriter):
    """A dataset folder named after ``output_file_name``, written by Dask with configurable
    partitioning (see :mod:`daskscore.io.datasets`)."""

    wants_frame = True
    dataset = True

    def __init__(self, partition_on: Sequence[str] = (), rows_per_file: int | None = None) -> None:
        super().__init__(partition_on, rows_per_file)
        self._checked = not self.partition_on

    def encode(self, items: Any, csv_kwargs: Mapping[str, Any]) -> Any:
        # what the staged Parquet part cannot hold fails this mini-batch, not the job: a
        # column name twice, a column of mixed types, a partition value too long for a folder
        # (nested values held as their Arrow type: see daskscore.io.nested)
        frame = nested.writable(items, self.name)
        datasets.check_partition_values(frame, self.partition_on)
        return frame

    def sink(self, ledger: LedgerWriter, staging: str, attempt: str) -> Sink:
        return DatasetSink(ledger, staging, attempt)

    def target(self, output_file_name: str) -> str | None:
        return Path(output_file_name).stem

    def check_staged(self, staging: Path, record: MiniBatchRecord) -> None:
        if self._checked or not record.part:
            return
        datasets.check_columns(datasets.part_columns(staging, record.part), self.partition_on)
        self._checked = True  # checked once: the first part tells

    def assemble(self, job: Assembly) -> Path | None:
        dest = job.out_dir / Path(job.output_file_name).stem
        finals = [(rec.mini_batch, rec.part, rec.rows) for rec in job.finals]
        groups = datasets.plan_groups(finals, self.rows_per_file)
        _set_aside(job, dest, f"{self.name} dataset folder")
        built = datasets.write_staged(job.client, job.staging, groups, self.name, self.partition_on)
        files = sum(1 for p in built.rglob("*") if p.is_file())
        put_in_place(job.staging, built, dest)  # (noted as the job's own first)
        if files:
            logger.info("wrote %d %s files into %s", files, self.name, dest)
        else:
            logger.info("no rows to write into %s", dest)
        return dest


@register
class ParquetWriter(DatasetWriter):
    """``part-00000.parquet``, ... (``to_parquet``)."""

    name = "parquet"


@register
class CsvWriter(DatasetWriter):
    """``part-00000.csv``, ... with a header (``to_csv``)."""

    name = "csv"


@register
class FrameWriter(OutputWriter):
    """The rows as a DataFrame handed back to the caller: the partitions of ``score()``."""

    name = "frame"
    public = False
    wants_frame = True


__all__ = [
    "Assembly", "AppendRowSink", "AppendRowWriter", "DatasetSink", "DatasetWriter", "FormatError",
    "OutputWriter", "Rows", "Sink", "defer_rows", "format_rows", "formats", "get_writer",
    "register",
]  # fmt: skip
