"""daskscore: run Azure ML batch-deployment scoring scripts unchanged on Dask.

The public API:

* :func:`run` — run a deployment over an input folder into an output folder;
* :func:`score` — the predictions as a lazy Dask DataFrame;
* :func:`load_deployment` — load and validate a ``deployment.yml``;
* :class:`JobResult` and the exceptions of :mod:`daskscore.errors`.
"""

from .api import run, score
from .books import JobResult
from .config import Deployment, Settings, UnknownKeyWarning
from .deployment import load_deployment
from .errors import (
    ConfigError,
    DaskScoreError,
    ErrorThresholdExceeded,
    InitFailed,
    InputError,
    JobFailed,
    OutputError,
    UsageError,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DaskScoreError",
    "Deployment",
    "ErrorThresholdExceeded",
    "InitFailed",
    "InputError",
    "JobFailed",
    "JobResult",
    "OutputError",
    "Settings",
    "UnknownKeyWarning",
    "UsageError",
    "load_deployment",
    "run",
    "score",
]
