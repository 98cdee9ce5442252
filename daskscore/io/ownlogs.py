"""The files daskscore writes under an output folder's ``logs/``: all that ``--overwrite``
removes there.

A job writes a fixed set of files under ``logs/`` (the verdict, the errors, the progress, its
own log, its recipe, the tries) and one file per worker process in ``logs/user/error/`` and
``logs/user/stdout/``.  An ``--overwrite`` removes those, and the folders they leave empty;
any other file there (a log of the user's own, ``logs/app.log``) is not daskscore's and stays,
as every file daskscore did not write in the output folder does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

LOGS_DIR = "logs"
#: The files a job writes under ``logs/``, by their path there ('/'-separated).
LOG_FILES = frozenset(
    {
        "job_result.txt",
        "job_error.txt",
        "job_progress_overview.txt",
        "sys/daskscore.txt",
        "sys/job_recipe.json",
        "sys/job_report/processed_mini-batches.csv",
    }
)
#: The folders under ``logs/`` that hold one file per worker process (its tracebacks, what
#: its script printed), every one of them a job's.
WORKER_LOG_DIRS = frozenset({"user/error", "user/stdout"})
#: What a file being written atomically is called until it is whole.
_PARTIAL = ".partial"


def is_own_log(rel: str) -> bool:
    """Whether ``rel`` (a path under ``logs/``, '/'-separated) is a file daskscore writes."""
    rel = rel.removesuffix(_PARTIAL)
    return rel in LOG_FILES or rel.rpartition("/")[0] in WORKER_LOG_DIRS


def remove_own_logs(output: Path) -> None:
    """Remove daskscore's files under ``output/logs`` and the folders they leave empty; every
    other file there stays."""
    logs = output / LOGS_DIR
    if not logs.is_dir() or logs.is_symlink():
        return
    for root, dirs, files in os.walk(logs, topdown=False):
        rel_root = os.path.relpath(root, logs).replace(os.sep, "/")
        for name in files:
            rel = name if rel_root == "." else f"{rel_root}/{name}"
            if is_own_log(rel):
                Path(root, name).unlink(missing_ok=True)
        for name in dirs:
            try:
                os.rmdir(os.path.join(root, name))  # (only when left empty)
            except OSError:
                pass
    try:
        logs.rmdir()
    except OSError:
        pass


def own_remote_logs(fs: Any, base: str) -> list[str]:
    """The paths of daskscore's files under ``logs/`` of an output URL (``base``: its path in
    ``fs``), for an ``--overwrite`` to remove."""
    top = f"{base}/{LOGS_DIR}/"
    if not fs.isdir(top.rstrip("/")):
        return []
    return [p for p in fs.find(top.rstrip("/")) if p.startswith(top) and is_own_log(p[len(top) :])]
