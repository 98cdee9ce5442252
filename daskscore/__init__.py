"""daskscore: run Azure ML batch-deployment scoring scripts unchanged on Dask.

The public API:

* :func:`run` — run a deployment over an input folder into an output folder;
* :func:`score` — the predictions as a lazy Dask DataFrame, and :func:`open_session` — the
  same with its failure report and ``close()``;
* :func:`replay` — one mini-batch of a finished job again, in this process;
* :func:`validate` — a deployment's scoring script tried on one mini-batch, here;
* :func:`load_deployment` — load and validate a ``deployment.yml``;
* :class:`JobResult` and the exceptions of :mod:`daskscore.errors`.

The names are imported when first used (``daskscore.run``, ``from daskscore import run``):
importing the package itself imports neither Dask nor the engine, so that the ``daskscore``
command can catch a Ctrl-C from its very start (:mod:`daskscore.__main__`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from daskscore.api import open_session, replay, run, score, validate
    from daskscore.config.loader import load_deployment
    from daskscore.config.settings import Deployment, Settings, UnknownKeyWarning
    from daskscore.engine.finish import JobResult
    from daskscore.errors import (
        ClusterLost,
        ConfigError,
        DaskScoreError,
        ErrorThresholdExceeded,
        InitFailed,
        InputError,
        JobFailed,
        NoWorkersLeft,
        OutputError,
        OutputFailed,
        UploadFailed,
        UsageError,
        WriteFailed,
    )

__version__ = "0.1.0"

#: Where each public name is defined.
_HOMES = {
    **dict.fromkeys(("open_session", "replay", "run", "score", "validate"), "daskscore.api"),
    "load_deployment": "daskscore.config.loader",
    **dict.fromkeys(("Deployment", "Settings", "UnknownKeyWarning"), "daskscore.config.settings"),
    "JobResult": "daskscore.engine.finish",
    **dict.fromkeys(
        (
            "ClusterLost",
            "ConfigError",
            "DaskScoreError",
            "ErrorThresholdExceeded",
            "InitFailed",
            "InputError",
            "JobFailed",
            "NoWorkersLeft",
            "OutputError",
            "OutputFailed",
            "UploadFailed",
            "UsageError",
            "WriteFailed",
        ),
        "daskscore.errors",
    ),
}

__all__ = [
    "ClusterLost",
    "ConfigError",
    "DaskScoreError",
    "Deployment",
    "ErrorThresholdExceeded",
    "InitFailed",
    "InputError",
    "JobFailed",
    "NoWorkersLeft",
    "JobResult",
    "OutputError",
    "OutputFailed",
    "Settings",
    "UnknownKeyWarning",
    "UploadFailed",
    "UsageError",
    "WriteFailed",
    "load_deployment",
    "open_session",
    "replay",
    "run",
    "score",
    "validate",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'daskscore' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # (once: the next use finds it here)
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
