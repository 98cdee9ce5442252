"""daskscore: run Azure ML batch-deployment scoring scripts unchanged on Dask.

The public API:

* :func:`run` — run a deployment over an input folder into an output folder;
* :func:`score` — the predictions as a lazy Dask DataFrame, and :func:`open_session` — the
  same with its failure report and ``close()``;
* :func:`replay` — one mini-batch of a finished job again, in this process;
* :func:`validate` — a deployment's scoring script tried on one mini-batch, here;
* :func:`load_deployment` — load and validate a ``deployment.yml``;
* :class:`JobResult` and the exceptions of :mod:`daskscore.errors`.
"""

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
