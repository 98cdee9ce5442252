"""The deployment, typed: settings with their defaults (:mod:`.settings`), loading and
validating YAML with overrides (:mod:`.loader`), and the options of one job (:mod:`.options`).

Nothing here knows of Dask, workers or files other than the deployment file and the folders it
names; nothing of daskscore is imported but :mod:`daskscore.errors`.
"""

from daskscore.config.loader import load_deployment, with_overrides
from daskscore.config.settings import (
    Deployment,
    Model,
    RetrySettings,
    Settings,
    UnknownKeyWarning,
    redact,
    secret_values,
)

__all__ = [
    "Deployment",
    "Model",
    "RetrySettings",
    "Settings",
    "UnknownKeyWarning",
    "load_deployment",
    "redact",
    "secret_values",
    "with_overrides",
]
