"""How to run one job, beside the deployment's own settings: :class:`JobOptions`.

The command's flags and the Python API's keyword arguments both become a ``JobOptions``; the
engine reads nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class JobOptions:
    """How to run a job, beside the deployment's own settings."""

    overwrite: bool = False
    #: worker processes of the embedded cluster (default: the deployment's instances × processes)
    workers: int | None = None
    #: the address of a running scheduler to use instead of an embedded cluster
    scheduler: str | None = None
    #: a ``distributed.Client`` to use instead of an embedded cluster
    client: Any = None
    progress: bool = True
    dashboard: bool = True
    #: where one-line messages for the user go (the command prints them on stderr)
    notify: Callable[[str], None] | None = None
    #: None: the deployment's output_action; or a dataset format, "parquet" / "csv"
    output_format: str | None = None
    partition_on: tuple[str, ...] = ()
    rows_per_file: int | None = None
    #: tabular mode: run() gets a DataFrame; None: on when mini_batch_size is a byte size
    tabular: bool | None = None
    carry_columns: tuple[str, ...] = ()
    #: finish an interrupted job in the same output folder
    resume: bool = False
    #: whether the workers see the driver's files: None finds out (an embedded cluster does);
    #: False ships code and model to them and brings results home in the tasks' replies
    shared_filesystem: bool | None = None
    #: a ``distributed.security.Security`` for a TLS-secured scheduler
    security: Any = None
    #: worker resources each task needs (Dask's ``resources=``), e.g. ``{"GPU": 1}``
    resources: dict[str, float] = field(default_factory=dict)
