"""How to run one job, beside the deployment's own settings: :class:`JobOptions`.

The command's flags and the Python API's keyword arguments both become a ``JobOptions``; the
engine reads nothing else.
"""

from __future__ import annotations

import difflib
import inspect
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from daskscore.config.settings import (
    CLOUD_ONLY_KEYS,
    RENAMED_KEYS,
    TOP_KEYS,
    RetrySettings,
    Settings,
)
from daskscore.errors import UsageError

#: mini-batches a worker fetches ahead of the one run() scores (downloads, tabular reads) ...
DEFAULT_PREFETCH = 2
#: ... while what it holds fetched is under this many MB (file sizes, DataFrame memory)
DEFAULT_PREFETCH_MB = 256.0


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
    #: run again the failed, partial and unrun mini-batches of a finished job in the output
    #: folder, and assemble the whole output anew (the code and model may have changed)
    retry_failed: bool = False
    #: whether the workers see the driver's files: None finds out (an embedded cluster does);
    #: False ships code and model to them and brings results home in the tasks' replies
    shared_filesystem: bool | None = None
    #: a ``distributed.security.Security`` for a TLS-secured scheduler
    security: Any = None
    #: worker resources each task needs (Dask's ``resources=``), e.g. ``{"GPU": 1}``
    resources: dict[str, float] = field(default_factory=dict)
    #: mini-batches each worker fetches ahead while run() scores one (0: off)
    prefetch: int = DEFAULT_PREFETCH
    #: ... while what it holds fetched is under this many MB
    prefetch_mb: float = DEFAULT_PREFETCH_MB
    #: use the warm cluster (``daskscore cluster start``) when one runs, and keep the script
    #: initialised on a warm cluster's or a ``client``'s workers for the next job; False: a
    #: fresh embedded cluster, and the script installed for this job only
    warm: bool = True
    #: a mini-batch that fails every try is split, down to single items, so that only the
    #: items that fail on their own are counted failed (Azure counts the whole mini-batch)
    isolate_failures: bool = False
    #: each embedded worker's memory limit (Dask's ``memory_limit``), e.g. ``"4GB"``
    worker_memory: str | int | None = None
    #: seconds the scoring script's install (its import and init()) may take on a worker
    #: before the job gives it up and fails; None: as long as it takes (Azure's YAML has no
    #: such limit), with a note in the log after a minute
    init_timeout: float | None = None

    def __post_init__(self) -> None:
        """Refuse what cannot be meant, naming the option and the value (nothing has run)."""
        for name in FLAGS:  # (overwrite="no" is a true string: it replaced earlier results)
            value = getattr(self, name)
            if not isinstance(value, bool) and type(value).__name__ != "bool_":
                raise UsageError(f"{name}={value!r}: expected True or False.")
        if self.overwrite and self.resume:
            raise UsageError(
                "overwrite and resume cannot be used together: resume finishes the interrupted "
                "job in the output folder where it stopped, overwrite discards it and starts "
                "again; choose one."
            )
        if self.retry_failed and (self.overwrite or self.resume):
            other = "overwrite" if self.overwrite else "resume"
            raise UsageError(
                f"retry_failed and {other} cannot be used together: retry_failed runs again "
                "the failed mini-batches of a finished job in the output folder and keeps the "
                "rest, "
                + (
                    "overwrite discards the job and starts again"
                    if self.overwrite
                    else "resume finishes an interrupted one"
                )
                + "; choose one."
            )
        _at_least("workers", self.workers, 1, "worker processes")
        _at_least("rows_per_file", self.rows_per_file, 1, "rows per file")
        _at_least("prefetch", self.prefetch, 0, "mini-batches fetched ahead; 0: off", needed=True)
        if not (_is_number(self.prefetch_mb) and self.prefetch_mb > 0):
            raise UsageError(
                f"prefetch_mb={self.prefetch_mb!r}: expected a number of megabytes above 0."
            )
        if self.init_timeout is not None and not (
            _is_number(self.init_timeout) and self.init_timeout > 0
        ):
            raise UsageError(
                f"init_timeout={self.init_timeout!r}: expected a number of seconds above 0 "
                "(how long init() may run on a worker before the job gives it up)."
            )
        for name, amount in self.resources.items():
            if not (_is_number(amount) and amount > 0):
                raise UsageError(f"resources: {name}={amount!r}: expected an amount above 0.")
        _check_worker_memory(self.worker_memory, self.scheduler, self.client)
        _check_cluster(self.workers, self.scheduler, self.client)


#: The options that are True or False.
FLAGS = ("overwrite", "resume", "retry_failed", "warm", "isolate_failures", "progress")


def _check_cluster(workers: Any, scheduler: Any, client: Any) -> None:
    """One cluster is named, in a form that can be meant."""
    if isinstance(client, str):
        raise UsageError(
            f"client={client!r}: expected a distributed.Client; to use the scheduler at an "
            "address, pass scheduler= (--scheduler) instead."
        )
    if client is not None and scheduler:
        raise UsageError(
            f"client= and scheduler={scheduler!r} name two clusters: pass one of them."
        )
    if workers is not None and (client is not None or scheduler):
        where = f"the Dask scheduler at {scheduler}" if scheduler else "the given client"
        raise UsageError(
            f"workers={workers!r} (--workers) sets the worker processes of the embedded "
            f"cluster; the workers of {where} are started where that cluster starts. Leave it "
            "out with --scheduler or client=."
        )


#: A memory size as Dask's ``memory_limit`` reads it: ``4GB``, ``512 MiB``, ``2.5e9``.
_MEMORY = re.compile(r"\s*[0-9]+(\.[0-9]+)?(e[0-9]+)?\s*([kmgtp]i?)?b?\s*", re.IGNORECASE)


def _check_worker_memory(value: Any, scheduler: str | None, client: Any) -> None:
    """``worker_memory`` is a size above 0, and only for the embedded cluster."""
    if value is None:
        return
    if scheduler or client is not None:
        where = f"the Dask scheduler at {scheduler}" if scheduler else "the given client"
        raise UsageError(
            f"worker_memory (--worker-memory) sets the memory limit of the embedded cluster's "
            f"workers; the workers of {where} have their own, set where they start (e.g. "
            "dask worker --memory-limit 4GB). Leave it out with --scheduler or client=."
        )
    number = _is_number(value) and value > 0
    if not number and not (isinstance(value, str) and _MEMORY.fullmatch(value)):
        raise UsageError(
            f"worker_memory={value!r}: expected a memory size such as 4GB, 512MiB or a number "
            "of bytes."
        )
    if isinstance(value, str) and not any(c in "123456789" for c in value.split("e")[0]):
        raise UsageError(f"worker_memory={value!r}: expected a memory size above 0.")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _at_least(name: str, value: Any, minimum: int, meaning: str, needed: bool = False) -> None:
    """``value`` is a whole number of at least ``minimum`` (or None, unless ``needed``); else a
    :class:`UsageError`."""
    if value is None and not needed:
        return
    if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
        return
    expected = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    raise UsageError(f"{name}={value!r}: expected {expected} ({meaning}).")


# --------------------------------------------------------------------------- settings by name

#: The settings the Python API takes by name, as keyword arguments (``mini_batch_size=5``)
SETTING_KWARGS = frozenset(f.name for f in fields(Settings)) | {
    f.name for f in fields(RetrySettings)
}
#: How settings are given to the Python API (``%s``: an example of ``set=``'s keys)
_HOW = (
    "a setting is given by its own name (mini_batch_size='10MB', timeout=60), or any key of "
    "the deployment file dotted in set= (set={%s})."
)
#: The example of ``set=`` for a section of the deployment file given as a keyword argument
_EXAMPLES = {
    "model": "model.path",
    "code_configuration": "code_configuration.scoring_script",
    "resources": "resources.instance_count",
}
_EXAMPLE = "settings.mini_batch_size"


def merge_setting_kwargs(
    set_: dict[str, Any] | None, overrides: dict[str, Any], takes: Callable[..., Any] | None = None
) -> dict[str, Any]:
    """``set=`` and settings given by name (``mini_batch_size=5``, ``timeout=60``) as one dict
    of overrides, as :func:`daskscore.run` and :func:`daskscore.validate` take them; a name
    that is no setting is a ``TypeError``, as an unknown keyword argument is, naming the
    nearest setting or parameter of ``takes`` (the function called)."""
    if set_ is not None and not isinstance(set_, Mapping):
        example = '{"settings.mini_batch_size": 2}'
        raise UsageError(f"set={set_!r}: expected a dict of dotted keys and values: {example}.")
    merged = dict(set_ or {})
    for key, value in overrides.items():
        if key not in SETTING_KWARGS:
            raise TypeError(unknown_kwarg(key, _parameters(takes)))
        merged[key] = value
    return merged


def unknown_kwarg(key: str, parameters: list[str]) -> str:
    """The message of a keyword argument that is neither a setting nor one of ``parameters``:
    the nearest of them; for a key of the deployment file (a section, ``settings``, or a dotted
    key), how settings are given to the function instead."""
    text = f"unexpected keyword argument '{key}'"
    section, _, rest = key.partition(".")
    if section in TOP_KEYS or section in CLOUD_ONLY_KEYS:
        name = rest.rpartition(".")[2]
        if name in SETTING_KWARGS:
            text += f" (did you mean {name}=...?)"
        example = key if rest else _EXAMPLES.get(key, _EXAMPLE)
        why = "the deployment file's keys are not keyword arguments"
        return f"{text}: {why}; {_HOW}" % f"'{example}': ..."
    if key in RENAMED_KEYS:
        new = RENAMED_KEYS[key][0]
        name = new.rpartition(".")[2]
        said = f"'{name}'" if name in SETTING_KWARGS else f"set={{'{new}': ...}}"
        return f"{text} (did you mean {said}? {key} is its ParallelRunStep / parallel job name)"
    names = sorted(SETTING_KWARGS | set(parameters))
    match = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    if match:
        return f"{text} (did you mean '{match[0]}'?)"
    return f"{text}; {_HOW}" % f"'{_EXAMPLE}': '10MB'"


def _parameters(takes: Callable[..., Any] | None) -> list[str]:
    """The names ``takes`` takes as keyword arguments (not its ``**kwargs``)."""
    if takes is None:
        return []
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in inspect.signature(takes).parameters.values() if p.kind in kinds]
