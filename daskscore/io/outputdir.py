"""The output folder: claiming it, assembling the append_row file, and the job's reports.

Layout (Azure's names, which users' tooling looks for)::

    <output>/
      predictions.csv                    append_row: rows in mini-batch order
      job_summary.json                   the verdict and the counts
      logs/job_result.txt, job_error.txt, job_progress_overview.txt
      logs/user/error/<worker>.txt       full tracebacks from init()/run()
      logs/user/stdout/<worker>.txt      what the script printed or logged
      logs/sys/job_report/processed_mini-batches.csv
      logs/sys/daskscore.txt             daskscore's and Dask's own log
      .daskscore/                        part files and ledgers while the job runs
      .daskscore-kept/                   ... kept by a job that ended with failures, for
                                         --retry-failed (until it succeeds, or --overwrite)
      .daskscore.lock                    the running job's lock (see daskscore.io.outputlock)

A job's output is whole once ``job_summary.json`` is written: that is the last thing it writes.
The staging folder is then renamed to ``.daskscore-trash-<job id>`` (one step, so a job killed
at any instant leaves either its whole staging folder or none) and deleted; a summary beside a
staging folder means the job finished, and a trash folder is removed by the next job there.
A job that ends with mini-batches failed, partial or not run renames its staging folder to
``.daskscore-kept/`` instead (:func:`keep_staging`): ``--retry-failed`` runs those again and
assembles the whole output anew from the kept part files (see :mod:`daskscore.engine.retry`).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from daskscore.errors import OutputError
from daskscore.io.inplace import assembled_here, mark_assembled
from daskscore.io.ledger import BOOK_FILE
from daskscore.io.ownlogs import own_remote_logs, remove_own_logs

SUMMARY_FILE = "job_summary.json"
#: The status of a summary written when a job was interrupted (Ctrl-C): not a finished job.
INTERRUPTED = "Interrupted"
STAGING_DIR = ".daskscore"
#: A finished job's staging folder, renamed on its way out (never taken for a live one).
TRASH_PREFIX = ".daskscore-trash-"
#: A finished job's staging folder, kept because something is left to retry (--retry-failed).
KEPT_DIR = ".daskscore-kept"
#: The job's report (``ui.report`` writes it): an --overwrite removes an earlier job's.
REPORT_FILE = "report.html"
#: One row per failed input item, beside the predictions (written by the engine's
#: :mod:`~daskscore.engine.failed_items` when an item failed).
FAILED_ITEMS_FILE = "failed_items.csv"
#: What a finished job leaves beside its predictions: an output holding one of them (or the
#: predictions) holds a job's results, which only --overwrite replaces (a folder or a URL)
RESULT_FILES = (SUMMARY_FILE, FAILED_ITEMS_FILE)
#: What daskscore writes beside the output as the job ends (a script's file of one of these
#: names is set aside first: :mod:`daskscore.io.setaside`)
OWN_FILES = (SUMMARY_FILE, REPORT_FILE, FAILED_ITEMS_FILE)
_COPY_CHUNK = 1 << 20


def claim_output(
    output: Path,
    predictions_name: str | None,
    overwrite: bool,
    resume: bool = False,
    before_changes: Callable[[], None] | None = None,
) -> bool:
    """Make ``output`` ready for a job, or refuse one that already holds a job's results.

    Returns True when an unfinished job is there to be resumed (``resume=True``).  A staging
    folder beside a summary is a finished job's (killed as it removed it), not an unfinished
    one.  ``before_changes`` is called once the folder is found usable, before anything in it
    is removed (not when resuming: the caller checks the job first).
    """
    if output.exists() and not output.is_dir():
        raise OutputError(f"output '{output}' is a file; give a folder (it is created if missing).")
    unfinished = (output / STAGING_DIR).is_dir() and not finished(output)
    if resume and not overwrite:
        if not unfinished and (output / SUMMARY_FILE).exists():
            retry = (
                " or --retry-failed to run its failed mini-batches again"
                if find_kept(output)
                else ""
            )
            raise OutputError(
                f"output folder '{output}' holds a finished job (see {SUMMARY_FILE}); there is "
                f"nothing to resume. Pass --overwrite to run it again{retry}."
            )
        _make_logs(output)
        return unfinished
    names = [n for n in (predictions_name, *RESULT_FILES, STAGING_DIR, KEPT_DIR) if n]
    held = [output / n for n in names if (output / n).exists()]
    if unfinished and not overwrite:
        raise OutputError(
            f"output folder '{output}' holds an unfinished job (its staging folder "
            f"{STAGING_DIR}/ is there: the job was interrupted). Pass --resume to finish it "
            "where it stopped, or --overwrite to start again."
        )
    if held and not overwrite:
        shown = [p.name for p in held if p.name not in (STAGING_DIR, KEPT_DIR)]
        raise results_held(f"output folder '{output}'", shown)
    if before_changes is not None:
        before_changes()
    if overwrite:
        held += [p for p in earlier_outputs(output) if p not in held]
    for path in held:
        _remove(path)
    if overwrite:  # (daskscore's files there: not the user's own)
        remove_own_logs(output)
    _make_logs(output)
    return False


def earlier_outputs(output: Path) -> list[Path]:
    """What an earlier job wrote in ``output`` besides its summary, logs and staging: its
    report, and its predictions as its summary names them (another ``output_file_name``, a
    dataset folder of another format); only what lies in ``output`` itself."""
    found = [output / REPORT_FILE] if (output / REPORT_FILE).is_file() else []
    try:
        named = json.loads((output / SUMMARY_FILE).read_text("utf-8")).get("predictions")
    except (OSError, ValueError, AttributeError):
        return found
    if isinstance(named, str) and named:
        path = Path(named)
        if path.name and path.parent.resolve() == output.resolve() and path.exists():
            found.append(output / path.name)
    return found


def results_held(where: str, names: list[str]) -> OutputError:
    """The refusal of an output (a folder or a URL) that holds an earlier job's results."""
    return OutputError(
        f"{where} already holds a job's results ({', '.join(names)}); daskscore does not "
        "overwrite them. Pass --overwrite (overwrite=True) to replace them, or choose another "
        "--output."
    )


def remove_stale(output: Path, predictions_name: str | None) -> None:
    """Resuming: the outputs an interrupted run may have left are assembled again (the
    predictions only where they are the job's own: a file of that name the script wrote is
    set aside when they are, :func:`daskscore.io.setaside.set_aside`)."""
    for name in (predictions_name, SUMMARY_FILE):
        if not name or not (output / name).exists():
            continue
        if name == SUMMARY_FILE or assembled_here(output / STAGING_DIR, output / name):
            _remove(output / name)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()


def discard_staging(staging: Path, job_id: str) -> None:
    """Remove a finished job's staging folder: renamed out of the way in one step, then
    deleted (a kill during the deletion leaves a trash folder, never a half staging folder)."""
    trash = staging.with_name(f"{TRASH_PREFIX}{job_id}")
    try:
        os.rename(staging, trash)
    except FileNotFoundError:
        return
    except OSError:  # (a trash folder of that name: delete in place)
        trash = staging
    shutil.rmtree(trash, ignore_errors=True)


def keep_staging(staging: Path, job_id: str) -> Path:
    """Keep a finished job's staging folder for ``--retry-failed``: renamed to
    :data:`KEPT_DIR` in one step (after the summary: a kill before the rename leaves it beside
    the summary, where :func:`find_kept` finds it too)."""
    kept = staging.with_name(KEPT_DIR)
    if kept.exists():  # (never left beside a live staging folder by daskscore: out of the way)
        discard_staging(kept, f"{job_id}-kept")
    os.rename(staging, kept)
    return kept


def drop_run(staging: Path, prefix: str) -> None:
    """Remove the part files and ledgers of the attempts named ``prefix...`` (one run's)."""
    for sub in ("parts", "ledger"):
        for path in (staging / sub).glob(f"{prefix}*"):
            path.unlink(missing_ok=True)


def find_kept(output: Path) -> Path | None:
    """The staging folder a finished job kept (``--retry-failed``): :data:`KEPT_DIR`, or
    :data:`STAGING_DIR` beside the summary (a job killed between its summary and the rename,
    or a retry pass killed before its own summary); None when there is none."""
    if not finished(output):
        return None
    for name in (STAGING_DIR, KEPT_DIR):
        if (output / name / BOOK_FILE).is_file():
            return output / name
    return None


def finished(output: Path) -> bool:
    """Whether ``output`` holds a finished job's summary (not one written as the job was
    interrupted, status :data:`INTERRUPTED`, which leaves it resumable)."""
    try:
        return json.loads((output / SUMMARY_FILE).read_text("utf-8")).get("status") != INTERRUPTED
    except FileNotFoundError:
        return False
    except (OSError, ValueError, AttributeError):  # unreadable: a finished job's, as before
        return True


def reopen_kept(kept: Path, output: Path) -> Path:
    """A retry pass takes the kept staging folder back as its own (renamed to
    :data:`STAGING_DIR`); the logs folders are made again if they were removed."""
    staging = output / STAGING_DIR
    if kept != staging:
        os.rename(kept, staging)
    _make_logs(output)
    return staging


def clear_trash(output: Path) -> None:
    """Delete what earlier jobs' staging folders left while they were being deleted."""
    for path in output.glob(f"{TRASH_PREFIX}*"):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


def _make_logs(output: Path) -> None:
    for sub in ("logs/user/error", "logs/user/stdout", "logs/sys/job_report"):
        (output / sub).mkdir(parents=True, exist_ok=True)


def assemble_append_row(
    staging: Path, pieces: Iterable[tuple[str, int, int]], dest: Path, head: bytes = b""
) -> int:
    """Concatenate byte ranges of part files into ``dest``, atomically; return bytes written.

    ``pieces`` are ``(attempt, start_offset, length)`` in output order; consecutive ranges of
    the same part file are copied in one go.  ``head`` (an encoding's byte order mark) starts
    a file that has rows.  The file appears under its name only when whole.
    """
    tmp = dest.with_name(dest.name + ".partial")
    written = 0
    handles: dict[str, Any] = {}
    try:
        with open(tmp, "wb") as out:
            for attempt, start, length in _coalesce(pieces):
                if head and not written:
                    written = out.write(head)
                src = handles.get(attempt)
                if src is None:
                    src = handles[attempt] = open(staging / "parts" / f"{attempt}.part", "rb")
                src.seek(start)
                left = length
                while left:
                    chunk = src.read(min(left, _COPY_CHUNK))
                    if not chunk:
                        raise OSError(f"part file of {attempt} is shorter than its ledger says")
                    out.write(chunk)
                    left -= len(chunk)
                written += length
            out.flush()
            os.fsync(out.fileno())
        mark_assembled(staging, tmp, dest.name)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        for handle in handles.values():
            handle.close()
    return written


def _coalesce(pieces: Iterable[tuple[str, int, int]]) -> Iterable[tuple[str, int, int]]:
    current: list[Any] | None = None
    for attempt, start, length in pieces:
        if length <= 0:
            continue
        if current and current[0] == attempt and current[1] + current[2] == start:
            current[2] += length
            continue
        if current:
            yield tuple(current)  # type: ignore[misc]
        current = [attempt, start, length]
    if current:
        yield tuple(current)  # type: ignore[misc]


def write_summary(output: Path, summary: dict[str, Any]) -> Path:
    path = output / SUMMARY_FILE
    tmp = path.with_suffix(".json.partial")
    with open(tmp, "w", encoding="utf-8") as fh:  # (written as made: one with 10^5 failures
        json.dump(summary, fh, indent=2, default=str)  # is tens of MB, not held twice over)
        fh.write("\n")
    os.replace(tmp, path)
    return path


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = text if text.endswith("\n") else text + "\n"
    path.write_text(text, encoding="utf-8", errors="backslashreplace")


def append_text(path: Path, line: str) -> None:
    with open(path, "a", encoding="utf-8", errors="backslashreplace") as fh:
        fh.write(line.rstrip("\n") + "\n")


def claim_remote_output(
    url: str,
    target: str | None,
    overwrite: bool,
    before_changes: Callable[[], None] | None = None,
) -> None:
    """Refuse a remote output folder that holds a job's results, unless overwriting them;
    ``before_changes`` is called once it is found usable, before anything is removed.

    An overwrite removes what it removes in a local folder (:func:`claim_output`): the
    predictions, the summary, ``failed_items.csv``, the earlier job's report and predictions
    as its summary names them, and daskscore's files under ``logs/``; nothing else there.
    """
    from daskscore.io import storage, storeaccess

    try:
        _claim_remote(storage, url, target, overwrite, before_changes)
    except Exception as exc:
        if not storeaccess.backend_error(exc):
            raise
        raise OutputError(storeaccess.access_problem(f"output '{url}'", "written", exc)) from exc


def _claim_remote(
    storage: Any,
    url: str,
    target: str | None,
    overwrite: bool,
    before_changes: Callable[[], None] | None,
) -> None:
    fs, root = storage.filesystem(url, verb="writing")
    fs.invalidate_cache()
    base = root.rstrip("/")
    names = [n for n in (target, *RESULT_FILES) if n]
    held = [n for n in names if fs.exists(f"{base}/{n}")]
    if held and not overwrite:
        raise results_held(f"output '{url}'", held)
    if before_changes is not None:
        before_changes()
    if overwrite:
        held += [n for n in _earlier_remote(fs, base) if n not in held]
    logs = own_remote_logs(fs, base) if overwrite else []
    for name in held:
        fs.rm(f"{base}/{name}", recursive=True)
    if logs:
        fs.rm(logs)
    fs.invalidate_cache()


def _earlier_remote(fs: Any, base: str) -> list[str]:
    """:func:`earlier_outputs` of an output URL (``base``: its path in ``fs``): the report,
    and the predictions as the summary names them, where they lie in the folder itself."""
    found = [REPORT_FILE] if fs.isfile(f"{base}/{REPORT_FILE}") else []
    try:
        named = json.loads(fs.cat_file(f"{base}/{SUMMARY_FILE}")).get("predictions")
    except (OSError, ValueError, AttributeError):
        return found
    if isinstance(named, str) and named:
        path = fs._strip_protocol(named).rstrip("/")
        name = path.rsplit("/", 1)[-1]
        if path == f"{base}/{name}" and name and fs.exists(path):
            found.append(name)
    return found
