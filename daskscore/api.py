"""The Python API: thin functions over :func:`daskscore.runner.execute`."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from distributed import Client

from .books import JobResult
from .config import Deployment, RetrySettings, Settings
from .deployment import load_deployment, with_overrides
from .errors import ConfigError
from .runner import JobOptions, execute

_SETTING_NAMES = {f.name for f in dataclasses.fields(Settings)} | {
    f.name for f in dataclasses.fields(RetrySettings)
}


def run(
    deployment: str | os.PathLike[str] | Deployment,
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    workers: int | None = None,
    scheduler: str | None = None,
    client: Client | None = None,
    set: dict[str, Any] | None = None,
    progress: bool = False,
    dashboard: bool = False,
    **overrides: Any,
) -> JobResult:
    """Run a batch deployment over ``input`` and write its results into ``output``.

    The same as ``daskscore run`` on the command line.

    Parameters
    ----------
    deployment : str, path-like or Deployment
        The deployment YAML file (or one loaded with :func:`load_deployment`).
    input : str or path-like
        A file, or a folder (walked recursively; dot-files skipped).
    output : str or path-like
        The output folder; created if missing.  One that already holds a job's results is
        refused unless ``overwrite=True``.
    overwrite : bool, default False
        Replace the results of an earlier job in ``output``.
    workers : int, optional
        Worker processes of the embedded LocalCluster (default
        ``max_concurrency_per_instance × instance_count``).
    scheduler : str, optional
        Address of a running Dask scheduler to use instead of an embedded cluster.
    client : distributed.Client, optional
        An existing client to use (a notebook's, say); it is left open.
    set : dict, optional
        Dotted overrides, as ``--set`` takes them: ``{"settings.output_file_name": "x.csv"}``.
    progress : bool, default False
        Draw progress on stderr.
    dashboard : bool, default False
        Start the Dask dashboard of the embedded cluster.
    **overrides
        Settings by name: ``mini_batch_size=5``, ``error_threshold=0``, ``timeout=60``,
        ``max_retries=1``, ``output_file_name="x.csv"``, ...

    Returns
    -------
    JobResult
        ``status``, ``predictions`` (the append_row file), and the counts of
        ``job_summary.json`` as attributes (``result.succeeded_items``, ...).

    Raises
    ------
    UsageError
        The deployment, input or output cannot be used; nothing ran.
    JobFailed
        The job ran and failed (init() raised, or error_threshold was exceeded); the
        exception's ``result`` holds the counts, ``user_traceback`` the script's traceback.

    Examples
    --------
    >>> import daskscore
    >>> result = daskscore.run("configs/digits-cnn/deployment.yml",
    ...                        "configs/digits-cnn/sample-inputs", "out/digits",
    ...                        overwrite=True)  # doctest: +SKIP
    >>> result.status, result.succeeded_items  # doctest: +SKIP
    ('Completed', 120)
    """
    merged = dict(set or {})
    for key, value in overrides.items():
        if key not in _SETTING_NAMES:
            from .config import nearest_key

            raise TypeError(f"run() got an unexpected keyword argument '{key}'{nearest_key(key)}")
        merged[key] = value
    dep = _load(deployment, merged)
    options = JobOptions(
        overwrite=overwrite,
        workers=workers,
        scheduler=scheduler,
        client=client,
        progress=progress,
        dashboard=dashboard,
    )
    return execute(dep, input, output, options)


def _load(deployment: str | os.PathLike[str] | Deployment, overrides: dict[str, Any]) -> Deployment:
    if isinstance(deployment, Deployment):
        return with_overrides(deployment, overrides)
    if not isinstance(deployment, (str, os.PathLike)):
        raise ConfigError(
            f"deployment: expected a path to a YAML file, got {type(deployment).__name__}."
        )
    return load_deployment(Path(deployment), overrides)


__all__ = ["JobResult", "load_deployment", "run"]
