"""What the scoring script wrote into the output folder (``AZUREML_BI_OUTPUT_PATH``) under a
name that the job writes there: kept beside it, renamed ``NAME.from-script.EXT``, with a
warning, never replaced or removed.

* The job's output (``predictions.csv``, a dataset's folder): a file or folder of its name that
  is not what an earlier assembly of this job left there (:func:`mark_assembled`, on
  ``--resume`` and ``--retry-failed``) is the script's (:func:`set_aside`).
* daskscore's own files beside it (``job_summary.json``, ``report.html``,
  ``failed_items.csv``): those there as the job starts are taken for daskscore's (an earlier
  run's of this job, on ``--resume`` and ``--retry-failed``); one that has appeared or changed
  by the time the job writes its own is the script's (:func:`note_own`,
  :func:`set_aside_own`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from daskscore.config.settings import OWN_OUTPUT_NAMES
from daskscore.io.inplace import assembled_here, identity, same


def set_aside(dest: Path, staging: Path, what: str) -> str | None:
    """Make way for the job's output ``dest`` (``what`` it is): a file or folder of that name
    that is not an earlier assembly of this job's was written by the scoring script (into
    ``AZUREML_BI_OUTPUT_PATH``, which is the output folder); it is renamed beside it,
    ``predictions.from-script.csv``, and the warning saying so is returned (None: nothing
    there, or the job's own, which is replaced)."""
    if not os.path.lexists(dest) or assembled_here(staging, dest):
        return None
    aside = rename_aside(dest)
    return (
        f"the scoring script wrote its own '{dest.name}' into the output folder "
        f"(AZUREML_BI_OUTPUT_PATH), the name of the job's {what} (settings.output_file_name): "
        f"the script's is kept as '{aside.name}', and '{dest.name}' holds the job's rows. Have "
        "the script write another name, or give the job's output another with "
        "settings.output_file_name."
    )


def rename_aside(path: Path) -> Path:
    """Rename ``path`` (the script's file or folder) beside it: ``predictions.from-script.csv``,
    ``predictions.from-script-2.csv``, ... where that is taken (a folder: ``NAME.from-script``);
    return the new path."""
    suffix = "" if path.is_dir() else path.suffix
    stem = path.name.removesuffix(suffix) if suffix else path.name
    aside, n = path.with_name(f"{stem}.from-script{suffix}"), 1
    while aside.exists() or aside.is_symlink():
        n += 1
        aside = path.with_name(f"{stem}.from-script-{n}{suffix}")
    os.rename(path, aside)
    return aside


def note_own(output: Path, names: Iterable[str]) -> dict[str, list[Any] | None]:
    """The identity of each of daskscore's own files ``names`` in ``output`` as the job starts
    (None where there is none): what is there then is an earlier run's of this job."""
    return {name: identity(output / name) for name in names}


def set_aside_own(output: Path, noted: dict[str, list[Any] | None]) -> list[str]:
    """Make way for daskscore's own files, before the job writes them: each of ``noted``
    (:func:`note_own`) that has appeared or changed since the job started was written by the
    scoring script; it is renamed beside it (``report.from-script.html``), and the warnings
    saying so are returned."""
    said = []
    for name, before in noted.items():
        now = identity(output / name)
        if now is None or (before is not None and same(before, now)):
            continue
        aside = rename_aside(output / name)
        what = OWN_OUTPUT_NAMES.get(name, "a file of the job's")
        said.append(
            f"the scoring script wrote its own '{name}' into the output folder "
            f"(AZUREML_BI_OUTPUT_PATH), the name of {what}, which daskscore writes there: the "
            f"script's is kept as '{aside.name}', and the name is left to daskscore's own. Have "
            "the script write another name."
        )
    return said
