"""The Python API: thin functions over the engine — :func:`run` over
:func:`daskscore.engine.runner.execute`, :func:`open_session` and :func:`score` over
:func:`daskscore.engine.session.open_session`."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from distributed import Client

from daskscore.cluster.local import parse_resources
from daskscore.config.loader import load_deployment, with_overrides
from daskscore.config.options import (
    DEFAULT_PREFETCH,
    DEFAULT_PREFETCH_MB,
    JobOptions,
    merge_setting_kwargs,
)
from daskscore.config.settings import Deployment
from daskscore.devtools.checks import validate
from daskscore.devtools.replay import replay as _replay
from daskscore.engine.finish import JobResult
from daskscore.engine.runner import execute
from daskscore.engine.session import ScoringSession
from daskscore.errors import ConfigError, UsageError
from daskscore.io import pathroom
from daskscore.ui.progress import in_jupyter_kernel


def run(
    deployment: str | os.PathLike[str] | Deployment,
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    resume: bool = False,
    retry_failed: bool = False,
    workers: int | None = None,
    scheduler: str | None = None,
    client: Client | None = None,
    shared_filesystem: bool | None = None,
    security: Any = None,
    resources: dict[str, float] | str | None = None,
    set: dict[str, Any] | None = None,
    progress: bool | None = None,
    dashboard: bool = False,
    output_format: str | None = None,
    partition_on: str | list[str] | None = None,
    rows_per_file: int | None = None,
    tabular: bool | None = None,
    carry_columns: list[str] | None = None,
    warm: bool = True,
    prefetch: int = DEFAULT_PREFETCH,
    prefetch_mb: float = DEFAULT_PREFETCH_MB,
    lenient: bool = False,
    isolate_failures: bool = False,
    worker_memory: str | int | None = None,
    init_timeout: float | None = None,
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
    resume : bool, default False
        Finish an interrupted job in ``output``: mini-batches it completed are kept, the rest
        run, and the output is the same as an uninterrupted run's.  Refused when the script,
        model, inputs, mini-batching or output settings changed since it started, and
        together with ``overwrite`` (which would discard what the interrupted job did).
    retry_failed : bool, default False
        Run again only the mini-batches of the finished job in ``output`` that failed,
        returned fewer results than items or never ran, after the script or model was fixed;
        their rows take their place and the whole output, summary and logs are written anew
        (``job_summary.json`` lists them as ``retried_in_this_pass``).  Refused when the input
        files, mini-batching or output settings changed, for a URL ``output``, and together
        with ``overwrite`` or ``resume``.  Nothing failed: nothing runs, and the job's result
        is returned as it stands.
    workers : int, optional
        Worker processes of the embedded LocalCluster (default
        ``max_concurrency_per_instance × instance_count``).
    scheduler : str, optional
        Address of a running Dask scheduler to use instead of an embedded cluster.
    client : distributed.Client, optional
        An existing client to use (a notebook's, or a driver script's); it is left open.
    shared_filesystem : bool, optional
        Whether the workers of an existing cluster see this machine's files.  Default: found
        out by asking them.  ``False`` ships the code folder (and a local model) to them, and
        brings each task's results home in its reply.
    security : distributed.security.Security, optional
        TLS settings for a ``tls://`` ``scheduler``.
    resources : dict or str, optional
        Worker resources each task needs, as Dask's ``resources=``: ``{"GPU": 1}`` or
        ``"GPU=1"``.  Workers without them run nothing of the job.
    set : dict, optional
        Dotted overrides, as ``--set`` takes them: ``{"settings.output_file_name": "x.csv"}``.
    progress : bool, optional
        Show progress: a live display in a Jupyter notebook (mini-batches, items, items/s,
        failures, ETA), a bar or lines on stderr elsewhere.  Default: on inside a Jupyter
        kernel, off otherwise.
    dashboard : bool, default False
        Start the Dask dashboard of the embedded cluster.  Whenever the cluster has a
        dashboard (a ``client``'s too), the job's counts are on its ``/daskscore`` page.
    output_format : {"append_row", "summary_only", "parquet", "csv"}, optional
        Default: the deployment's ``output_action``.  ``parquet`` and ``csv`` write a dataset
        folder named after ``output_file_name`` (``predictions/part-00000.parquet`` ...).
    partition_on : str or list of str, optional
        Dataset formats: columns to partition by, hive-style (``column=value`` folders).
    rows_per_file : int, optional
        Dataset formats: about this many rows per file (whole mini-batches).
    tabular : bool, optional
        Tabular mode: ``run()`` gets a DataFrame of rows from CSV/Parquet inputs, and
        ``mini_batch_size`` is a byte size (``"10MB"``) or a row count (``"500 rows"``).
        Default: on when ``mini_batch_size`` is such a string.
    carry_columns : list of str, optional
        Tabular mode: input columns (and ``file``, ``row``) joined onto ``run()``'s result.
    warm : bool, default True
        Without ``scheduler`` or ``client``: run on the warm cluster of ``daskscore cluster
        start`` when one runs.  On the warm cluster or a ``client``'s: leave the script
        initialised on the workers after the job, so that the next job of the same deployment
        (same code, model, environment variables and init-time settings) skips ``init()``;
        its ``shutdown()`` runs when another deployment replaces it or the workers close.
        ``False``: an embedded cluster, and the script installed for this job only.
    prefetch : int, default 2
        Mini-batches each worker fetches ahead (downloads remote files, reads tabular splits)
        while ``run()`` scores one; ``0`` fetches each when its turn comes.  ``run()`` gets the
        same arguments, in the same order, and a failed fetch is its own mini-batch's failure.
    prefetch_mb : float, default 256
        ... while what a worker holds fetched ahead is under this many megabytes.
    lenient : bool, default False
        Ignore deployment keys that neither daskscore nor Azure ML knows (and keys of the code
        folder's ``parallel_run_step.settings.json`` nobody knows), each with an
        ``UnknownKeyWarning`` kept in the job's log and ``job_summary.json`` (``warnings``),
        instead of refusing them with a :class:`~daskscore.errors.ConfigError`.
    isolate_failures : bool, default False
        Split a mini-batch that fails every try (an exception, a timeout, a process death) and
        retry its parts, down to single items, so that only the items that fail on their own
        are counted failed (Azure counts the whole mini-batch as failed).
        ``processed_mini-batches.csv`` shows each part's tries (``items`` column).
    worker_memory : str or int, optional
        Memory limit of each worker of the embedded cluster (Dask's ``memory_limit``), e.g.
        ``"4GB"``; a worker killed for exceeding it is charged ``PROCESS_DIED`` with the error
        ``out of memory (limit 4GB, peak ...)``.  Not with ``scheduler`` or ``client``.
    init_timeout : float, optional
        Seconds the scoring script's import and ``init()`` may take on a worker; past them the
        job fails with :class:`~daskscore.errors.InitFailed`, whose text shows where
        ``init()`` was, and the workers stuck in it are restarted.  Default: no limit (a note
        in the job's log says where a slow ``init()`` is, after a minute).
    **overrides
        Settings by name: ``mini_batch_size=5``, ``error_threshold=0``, ``timeout=60``,
        ``max_retries=1``, ``output_file_name="x.csv"``, ...  A section of the deployment file
        (``settings={...}``) is no keyword argument: another name is a ``TypeError`` naming
        the nearest setting or argument.

    Returns
    -------
    JobResult
        ``status``, ``predictions`` (the append_row file), and the counts of
        ``job_summary.json`` as attributes (``result.succeeded_items``, ...).

    Raises
    ------
    UsageError
        The deployment, input or output cannot be used, or an option cannot be meant
        (``workers=0``, ``prefetch_mb=nan``, ``overwrite`` with ``resume``); nothing ran.
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
    dep = _load(deployment, merge_setting_kwargs(set, overrides, run), lenient)
    options = JobOptions(
        output_format=output_format,
        partition_on=_names(partition_on),
        rows_per_file=rows_per_file,
        tabular=tabular,
        carry_columns=_names(carry_columns, "carry_columns"),
        overwrite=overwrite,
        resume=resume,
        retry_failed=retry_failed,
        workers=workers,
        scheduler=scheduler,
        client=client,
        shared_filesystem=shared_filesystem,
        security=security,
        resources=parse_resources(resources),
        progress=in_jupyter_kernel() if progress is None else progress,
        dashboard=dashboard,
        warm=warm,
        prefetch=prefetch,
        prefetch_mb=prefetch_mb,
        isolate_failures=isolate_failures,
        worker_memory=worker_memory,
        init_timeout=init_timeout,
    )
    return execute(dep, _one_path(input, "input"), _one_path(output, "output"), options)


def open_session(
    deployment: str | os.PathLike[str] | Deployment,
    input: str | os.PathLike[str],
    *,
    client: Client | None = None,
    meta: Any = None,
    partitions: int | None = None,
    tabular: bool | None = None,
    carry_columns: list[str] | None = None,
    set: dict[str, Any] | None = None,
    lenient: bool = False,
    on_error: str = "raise",
    progress: bool | None = None,
    init_timeout: float | None = None,
    **overrides: Any,
) -> ScoringSession:
    """Install a deployment's scoring script on a cluster; its predictions as a lazy DataFrame.

    Parameters
    ----------
    deployment : str, path-like or Deployment
        The deployment YAML file.
    input : str or path-like
        A file or folder.
    client : distributed.Client, optional
        The cluster to score on; default: the current client (``distributed.get_client()``).
    meta : pandas.DataFrame, optional
        The empty frame of the predictions, kept as given; default: inferred by scoring the
        first mini-batch once (its dtypes; object columns keep run()'s values, whatever
        Dask's ``dataframe.convert-string``).
    partitions : int, optional
        Partitions of the result (each a group of mini-batches); default: 4 per worker.
    tabular, carry_columns, set, lenient, init_timeout, **overrides
        As for :func:`run`.
    on_error : {"raise", "drop"}, default "raise"
        A mini-batch whose every try failed has no rows.  ``"raise"``: computing a partition
        that holds one raises :class:`~daskscore.errors.JobFailed` naming the mini-batch, its
        files and the script's traceback — unless ``settings.error_threshold`` (``N >= 0``)
        still allows the session's failed items, as ``run`` allows them; then
        :class:`~daskscore.errors.ErrorThresholdExceeded` once more than ``N`` failed.  (Azure's
        default ``-1``, any number, does not make ``score()`` drop rows: use ``"drop"``.)
        ``"drop"``: their rows are left out.  Either way every failure is in
        ``session.failures`` and ``report()``, and logged as a warning.
    progress : bool, optional
        The live display of each computation of the frame: mini-batches as they end, items,
        rate, failures, ETA.  Default (None): drawn in a Jupyter notebook only.  True: also
        on standard error elsewhere (a driver script, a terminal).  False: none (and the
        workers send no progress events).

    Returns
    -------
    ScoringSession
        ``.frame`` is the predictions' Dask DataFrame (columns of the DataFrames ``run()``
        returns, or one ``prediction`` column for lists; ``.frame.attrs["daskscore"]`` is the
        session); ``.failures`` lists the failed mini-batches and ``.report()`` counts the
        items and failures of the partitions computed so far; ``.close()`` (or leaving a
        ``with`` block) uninstalls the script (its ``shutdown()`` runs).

    Examples
    --------
    >>> from distributed import Client
    >>> client = Client(n_workers=2, threads_per_worker=1)  # doctest: +SKIP
    >>> with daskscore.open_session("configs/digits-cnn/deployment.yml",
    ...                             "configs/digits-cnn/sample-inputs") as session:
    ...     counts = session.frame["class"].value_counts().compute()  # doctest: +SKIP
    ...     failed = session.report()["failed_items"]  # doctest: +SKIP
    """
    from distributed import get_client

    from daskscore.engine.session import open_session as open_scoring_session

    dep = _load(deployment, merge_setting_kwargs(set, overrides, open_session), lenient)
    if partitions is not None and not (
        isinstance(partitions, int) and not isinstance(partitions, bool) and partitions >= 1
    ):
        raise UsageError(f"partitions={partitions!r}: expected a positive integer (or None).")
    options = JobOptions(
        tabular=tabular,
        carry_columns=_names(carry_columns, "carry_columns"),
        init_timeout=init_timeout,
        client=client,
    )
    if client is None:
        try:
            client = get_client()
        except ValueError:
            raise UsageError(
                "open_session()/score() score on a Dask cluster and none was given: pass "
                "client=Client(...) (a LocalCluster's, or one of --scheduler's), or make a "
                "Client() first (it becomes the default)."
            ) from None
    return open_scoring_session(
        dep,
        str(_one_path(input, "input")),
        client=client,
        meta=meta,
        partitions=partitions,
        options=options,
        on_error=on_error,
        progress=progress,
    )


def score(
    deployment: str | os.PathLike[str] | Deployment,
    input: str | os.PathLike[str],
    **kwargs: Any,
) -> Any:
    """The predictions of a deployment over ``input``, as a lazy Dask DataFrame.

    The same as ``open_session(deployment, input, **kwargs).frame``: the script stays installed
    on the workers until the cluster closes (or, once ``client`` has closed, until another job
    installs its own).  A failed mini-batch makes the computation raise
    unless ``on_error="drop"``; its session (``ddf.attrs["daskscore"]``) lists the failures
    (``.failures``, ``.report()``).  Use :func:`open_session` to uninstall the script
    (``shutdown()``) sooner.

    Parameters
    ----------
    deployment : str, path-like or Deployment
        The deployment YAML file.
    input : str or path-like
        A file or folder.
    **kwargs
        As for :func:`open_session`: ``client``, ``meta``, ``partitions``, ``tabular``,
        ``carry_columns``, ``set``, ``lenient``, ``on_error``, ``progress``, ``init_timeout``
        and settings by name.

    Returns
    -------
    dask.dataframe.DataFrame
        ``.head()``, ``.compute()`` and ``.to_parquet()`` work as usual.

    Examples
    --------
    >>> from distributed import Client
    >>> client = Client(n_workers=2, threads_per_worker=1)  # doctest: +SKIP
    >>> ddf = daskscore.score("configs/digits-cnn/deployment.yml",
    ...                       "configs/digits-cnn/sample-inputs", client=client)  # doctest: +SKIP
    >>> ddf["class"].value_counts().compute()  # doctest: +SKIP
    """
    return open_session(deployment, input, **kwargs).frame


def replay(
    output: str | os.PathLike[str],
    mini_batch: int,
    *,
    pdb: bool = False,
    rows: int | None = None,
    set: dict[str, Any] | None = None,
) -> int:
    """Run mini-batch ``mini_batch`` of the finished job in ``output`` again, in this process.

    The twin of ``daskscore replay OUTPUT --mini-batch N``: the job's deployment (its ``--set``
    overrides and environment variables), its input (downloaded again when remote) and the
    scoring script as it is now; ``init()`` then ``run()``.  The rows are printed as append_row
    writes them; an exception of the script is printed with its traceback (``pdb=True`` stops
    in the script's frame).  Returns 0 when the script worked, 1 when it raised; raises
    :class:`~daskscore.errors.UsageError` when ``output`` holds no job, ``mini_batch`` is not
    one of its mini-batches, or the input changed since the job ran.

    The recipe does not keep secret values: ``set={"settings.environment_variables.NAME":
    value}`` gives them, else they are taken from the deployment file or this process's
    environment (a ``UsageError`` names the one found nowhere).
    """
    return _replay(output, mini_batch, post_mortem=pdb, rows=rows, overrides=set)


def _names(
    value: str | list[str] | tuple[str, ...] | None, option: str = "partition_on"
) -> tuple[str, ...]:
    if not value:
        return ()
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise UsageError(f"{option}={value!r}: expected a column name or a list of them.")
    return tuple(value)


def _one_path(value: Any, option: str) -> str | os.PathLike[str]:
    """``value``, one path or URL: a list of files is no input (a folder of them is); a
    ``file://`` URL, the local path it names."""
    if isinstance(value, (str, os.PathLike)):
        return pathroom.local_path(value, option)
    what = f"a list of {len(value)} paths" if isinstance(value, (list, tuple)) else repr(value)
    raise UsageError(
        f"{option}: expected one file, folder or URL, got {what}"
        + (". Put the files in one folder and pass the folder." if option == "input" else ".")
    )


def _load(
    deployment: str | os.PathLike[str] | Deployment, overrides: dict[str, Any], lenient: bool
) -> Deployment:
    if isinstance(deployment, Deployment):  # (lenient: for parallel_run_step.settings.json)
        loaded = with_overrides(deployment, overrides)
        return dataclasses.replace(loaded, lenient=True) if lenient else loaded
    if not isinstance(deployment, (str, os.PathLike)):
        raise ConfigError(
            f"deployment: expected a path to a YAML file, got {type(deployment).__name__}."
        )
    return load_deployment(Path(deployment), overrides, lenient=lenient)


__all__ = ["JobResult", "load_deployment", "open_session", "run", "score", "validate"]
