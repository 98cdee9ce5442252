"""Local paths of a job: a ``file://`` URL as the path it names (:func:`local_path`), and
whether a local output folder's path leaves room for the paths a job makes under it.

The file system refuses a path longer than ``PATH_MAX`` bytes (4096 on Linux) and a name
longer than ``NAME_MAX`` (255).  An output folder within a few dozen bytes of that limit took
its lock and logs, then failed on its first staged file as an internal error, leaving a half
made staging folder and a ``--resume`` hint that could never work.  :func:`check_room` refuses
it before anything is created, naming the folder and the limit.
"""

from __future__ import annotations

import os
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from daskscore.errors import OutputError, UsageError

#: Bytes that daskscore's own paths under the output folder take at most, besides the
#: predictions' name: a worker's log ``logs/user/stdout/<worker>.txt`` (a worker named after
#: its address), ``logs/sys/job_report/processed_mini-batches.csv.partial``, a staged part file
#: ``.daskscore-kept/parts/r01a000001-<job id>.part``, with room to spare.
ROOM = 128
#: What the predictions' name may grow by: a dataset's part file, a file being written.
_PREDICTIONS_ROOM = len("/part-00000.parquet.partial")


def local_path(value: Any, option: str) -> Any:
    """``value`` as it is, but a ``file://`` URL of this machine as the local path it names
    (``file:///data/in`` is ``/data/in``: taken as a path, it named a folder ``file:``); one of
    another host is refused, naming ``option``."""
    if not isinstance(value, str) or not value.lower().startswith("file://"):
        return value
    url = urllib.parse.urlsplit(value)
    if url.netloc.lower() not in ("", "localhost"):
        raise UsageError(
            f"{option} '{value}' is a file:// URL of the host '{url.netloc}': give a local "
            "path (a file:// URL of this machine names no host: file:///data/in)."
        )
    return urllib.request.url2pathname(url.path)


def check_room(output: str | os.PathLike[str], output_file_name: str) -> None:
    """Refuse the local output folder ``output`` when a name in its path is longer than the
    file system takes, or when the paths a job makes under it (``output_file_name``: the
    predictions' name) would be longer than it takes."""
    path = Path(output).expanduser().resolve()
    base = _existing(path)
    name_max = _limit(base, "PC_NAME_MAX", 255)
    for part in path.relative_to(base).parts:  # (those that exist were taken already)
        if len(os.fsencode(part)) > name_max:
            raise OutputError(
                f"output folder '{output}': the folder name '{part[:60]}...' is "
                f"{len(os.fsencode(part)):,} bytes, longer than this file system takes for a "
                f"name ({name_max:,} bytes, NAME_MAX); nothing was created. Choose a shorter "
                "name for the output folder."
            )
    path_max = _limit(base, "PC_PATH_MAX", 4096)
    have = len(os.fsencode(str(path)))
    need = have + 1 + max(ROOM, len(os.fsencode(output_file_name)) + _PREDICTIONS_ROOM)
    if need >= path_max:
        raise OutputError(
            f"output folder '{output}' is too deep for this file system: its path is "
            f"{have:,} bytes, and the files a job writes under it (its staging folder, logs "
            f"and predictions) need paths of up to {need:,} bytes, past its limit of "
            f"{path_max:,} bytes (PATH_MAX); nothing was created. Choose an output folder "
            f"whose path is shorter than {path_max - (need - have):,} bytes."
        )


def _existing(path: Path) -> Path:
    """``path`` or its nearest folder above it that exists."""
    while not os.path.exists(path) and path.parent != path:  # (False for a name too long)
        path = path.parent
    return path


def _limit(folder: Path, name: str, default: int) -> int:
    """The file system's ``os.pathconf`` value ``name`` for ``folder``; ``default`` where it
    does not say."""
    try:
        value = os.pathconf(folder, name)
    except (OSError, ValueError, AttributeError):
        return default
    return value if isinstance(value, int) and value > 0 else default
