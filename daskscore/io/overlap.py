"""An input that the job's own output would replace: refused before anything is written.

A job writes, and ``--overwrite`` removes, a few names in its output folder: its predictions
(``settings.output_file_name``, or a dataset folder named after it), ``job_summary.json``,
``failed_items.csv``, ``report.html``, ``logs/``, its staging folders and lock, and an earlier
job's predictions as that job's summary names them.  An input that is one of them, or lies
inside one, would be emptied or deleted by the very job that reads it (every item then fails
with its file gone): such a job is refused, with or without ``--overwrite``, naming both
paths.  An output folder inside the input folder is another matter: it is left out of the
input (:mod:`daskscore.io.inputs`).
"""

from __future__ import annotations

import os
from pathlib import Path

from daskscore.errors import InputError
from daskscore.io import outputdir, storage
from daskscore.io.outputlock import LOCK_FILE
from daskscore.io.ownlogs import LOGS_DIR

#: The names a job writes in its output folder besides its predictions, and what each is.
_NAMES = {
    outputdir.SUMMARY_FILE: "the job's summary",
    outputdir.FAILED_ITEMS_FILE: "the job's list of failed items",
    outputdir.REPORT_FILE: "the job's report",
    LOGS_DIR: "the job's logs folder",
    outputdir.STAGING_DIR: "daskscore's staging folder",
    outputdir.KEPT_DIR: "daskscore's staging folder kept for --retry-failed",
    LOCK_FILE: "the job's lock",
}


def check_apart(input_path: str, output: str, target: str | None) -> None:
    """Refuse an input that is, or lies inside, a file or folder the job writes or removes in
    its output folder ``output`` (``target``: the name of its predictions there, if any)."""
    if storage.is_remote(input_path) != storage.is_remote(output):
        return
    if storage.is_remote(output):
        inp, out = input_path.rstrip("/"), output.rstrip("/")
        first = inp[len(out) + 1 :].split("/", 1)[0] if inp.startswith(out + "/") else ""
        earlier: list[str] = []
    else:
        inp, out = (os.path.realpath(Path(p).expanduser()) for p in (input_path, output))
        inside = inp.startswith(out.rstrip(os.sep) + os.sep)
        first = inp[len(out.rstrip(os.sep)) + 1 :].split(os.sep, 1)[0] if inside else ""
        earlier = [p.name for p in outputdir.earlier_outputs(Path(out))] if first else []
    what = _NAMES.get(first)
    if first and first == target:
        what = "the job's predictions (settings.output_file_name)"
    elif first in earlier:
        what = "an earlier job's predictions (its job_summary.json names them)"
    elif first.startswith(outputdir.TRASH_PREFIX):
        what = "a finished job's staging folder, being deleted"
    if not what:
        return
    held = f"{out}{'/' if storage.is_remote(output) else os.sep}{first}"
    where = "is" if inp == held else f"lies inside '{held}',"
    raise InputError(
        f"input '{input_path}' {where} {what} in the output folder '{output}', which the job "
        "writes or removes there (--overwrite removes it before scoring): the job would "
        "destroy its own input, with or without --overwrite. Move the input out of the output "
        "folder, or choose another --output"
        + (" (or another settings.output_file_name)." if first == target else ".")
    )
