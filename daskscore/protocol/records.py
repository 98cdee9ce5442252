"""The records of tries, as they cross from the worker processes to the driver: a
:class:`MiniBatchRecord` per try (pickled in task replies, JSON lines in the ledgers), and
:class:`CleanTries`, the clean first tries of a task in columns."""

from __future__ import annotations

import enum
import operator
from array import array
from dataclasses import MISSING, dataclass, fields
from typing import Any


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
        out = dict(zip(_FIELDS, _values(self), strict=True))
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


#: The numeric columns of :class:`CleanTries`: (name, MiniBatchRecord field, array typecode).
CLEAN_COLUMNS = (
    ("ids", "mini_batch", "q"), ("total", "total", "q"), ("rows", "rows", "q"),
    ("start", "start", "d"), ("elapsed", "elapsed_s", "d"), ("run", "run_s", "d"),
    ("peak", "peak_rss_mb", "d"), ("offset", "start_offset", "q"), ("size", "bytes", "q"),
)  # fmt: skip
#: Fields :meth:`CleanTries.fits` checks itself, beside the columns.
_CHECKED = {"try_no", "worker", "succeeded", "failed", "status", "error", "final", "part"}
#: Fields a clean try leaves at their defaults (a newer field too, whatever it is).
_CLEAN_DEFAULTS = {
    f.name: f.default
    for f in fields(MiniBatchRecord)
    if f.name not in {c[1] for c in CLEAN_COLUMNS}
    and f.name not in _CHECKED
    and f.default is not MISSING
}


def is_clean_final(rec: MiniBatchRecord) -> bool:
    """Whether ``rec`` is a final try whose run() returned every result, with nothing that
    columns of its numbers would lose (no attempt named yet, not a part of a mini-batch, any
    newer field at its default)."""
    return bool(
        rec.final
        and rec.status is Status.RUN_DONE
        and not rec.failed
        and rec.succeeded == rec.total
        and not rec.error
        and all(getattr(rec, k) == v for k, v in _CLEAN_DEFAULTS.items())
    )


class CleanTries:
    """A task's clean tries in columns: the first try of each of its mini-batches whose run()
    returned every result, with nothing else to say (most of a job's).  A task of thousands
    of mini-batches sends a few arrays instead of thousands of records, and the driver folds
    them in with a few array operations (:meth:`daskscore.engine.outcomes.Outcomes.record`).

    Columns are ``array.array`` by :data:`CLEAN_COLUMNS`; ``start`` is NaN where a try has
    none; ``part`` indexes ``part_names`` (0: no part file).  :meth:`records` makes the
    records again.
    """

    __slots__ = ("worker", "part_names", "part", *(c[0] for c in CLEAN_COLUMNS))

    def __init__(self, worker: str) -> None:
        self.worker = worker
        self.part_names: list[str] = []
        self.part: array[int] | None = None
        for name, _, code in CLEAN_COLUMNS:
            setattr(self, name, array(code))

    @staticmethod
    def fits(rec: MiniBatchRecord, worker: str) -> bool:
        """Whether ``rec`` is a clean first try (:func:`is_clean_final`) of ``worker``."""
        return rec.try_no == 1 and rec.worker == worker and is_clean_final(rec)

    @classmethod
    def split(
        cls, worker: str, records: list[MiniBatchRecord]
    ) -> tuple[CleanTries | None, list[MiniBatchRecord]]:
        """The clean tries among ``records`` in columns (None if there are none), and the
        other records, in their order."""
        block, rest, fits = cls(worker), [], cls.fits
        parts: dict[str, int] = {}
        for rec in records:
            if not fits(rec, worker):
                rest.append(rec)
                continue
            try:
                block._append(rec, parts)
            except (OverflowError, TypeError, ValueError):
                block._drop_last()
                rest.append(rec)
        return (block if len(block) else None), rest

    def _append(self, rec: MiniBatchRecord, parts: dict[str, int]) -> None:
        for name, attr, _ in CLEAN_COLUMNS:
            value = getattr(rec, attr)
            getattr(self, name).append(float("nan") if value is None else value)
        if rec.part is not None:
            pid = parts.get(rec.part)
            if pid is None:
                pid = parts[rec.part] = len(self.part_names) + 1
                self.part_names.append(rec.part)
            if self.part is None:
                self.part = array("I", bytes(4 * (len(self.ids) - 1)))
            self.part.append(pid)
        elif self.part is not None:
            self.part.append(0)

    def _drop_last(self) -> None:
        """Undo a half-made row (a value that did not fit its column)."""
        n = min(len(getattr(self, c[0])) for c in CLEAN_COLUMNS)
        for name, _, _ in CLEAN_COLUMNS:
            del getattr(self, name)[n:]
        if self.part is not None:
            del self.part[n:]

    def __len__(self) -> int:
        return len(self.ids)

    def ids_array(self) -> Any:
        """The mini-batch ids, a numpy array (a view of the column)."""
        import numpy as np

        return np.frombuffer(self.ids, self.ids.typecode).astype(np.int64)

    def elapsed_sum(self) -> float:
        """Seconds of all the tries, added up."""
        import numpy as np

        return float(np.frombuffer(self.elapsed, np.float64).sum())

    def sums(self, mask: Any) -> tuple[int, int]:
        """Items and rows of the tries picked by ``mask`` (a numpy boolean array)."""
        import numpy as np

        total = np.frombuffer(self.total, self.total.typecode)[mask].sum(dtype=np.int64)
        rows = np.frombuffer(self.rows, self.rows.typecode)[mask].sum(dtype=np.int64)
        return int(total), int(rows)

    def records(self) -> list[MiniBatchRecord]:
        """The tries as records, in their order (as the worker made them)."""
        names, part = self.part_names, self.part
        out = []
        for i in range(len(self)):
            start = self.start[i]
            out.append(
                MiniBatchRecord(
                    mini_batch=self.ids[i],
                    try_no=1,
                    worker=self.worker,
                    start=None if start != start else start,
                    total=self.total[i],
                    succeeded=self.total[i],
                    rows=self.rows[i],
                    status=Status.RUN_DONE,
                    final=True,
                    run_s=self.run[i],
                    elapsed_s=self.elapsed[i],
                    start_offset=self.offset[i],
                    bytes=self.size[i],
                    part=names[part[i] - 1] if part is not None and part[i] else None,
                    peak_rss_mb=self.peak[i],
                )
            )
        return out

    def __reduce__(self) -> tuple[Any, ...]:
        columns = (_narrow(getattr(self, c[0])) for c in CLEAN_COLUMNS)
        return (_clean_tries, (self.worker, (self.part_names, self.part, *columns)))


def _narrow(column: array[Any]) -> array[Any]:
    """A column of 64-bit integers as 32-bit unsigned ones where they fit (half the bytes)."""
    if column.typecode == "q" and (not column or (min(column) >= 0 and max(column) < 1 << 32)):
        return array("I", column)
    return column


def _clean_tries(worker: str, state: tuple[Any, ...]) -> CleanTries:
    block = CleanTries.__new__(CleanTries)
    block.worker, block.part_names, block.part = worker, state[0], state[1]
    for (name, _, _), column in zip(CLEAN_COLUMNS, state[2:], strict=True):
        setattr(block, name, column)
    return block
