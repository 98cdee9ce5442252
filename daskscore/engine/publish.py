"""A job whose output is a URL: its output folder, assembled locally, uploaded at the end.

The job runs into a local folder of the temporary directory, named by a hash of the URL
(:func:`assembly_dir`: ``daskscore-output-<hash>``), and :func:`publish` uploads it when the
job has ended, then removes it.  The same URL always gets the same folder: an interrupted job
(Ctrl-C, SIGTERM, a lost scheduler, a killed driver) keeps what it committed there, and the
same command with ``--resume`` finds it and scores only the rest.  An upload that fails (the
store went away, refused a write) loses nothing: the folder is kept, and the job raises
:class:`~daskscore.errors.UploadFailed` naming the URL, what failed, the folder and how to
upload it or run the job again; the traceback goes to the folder's own job log
(``logs/sys/daskscore.txt``), not to the terminal.  Such a folder (an upload that failed, or was
interrupted) still holds the job's summary: the same command with ``--resume`` uploads it
(:func:`finish_upload`), and without it is refused, naming the folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any

from daskscore.config import redact
from daskscore.engine.finish import JobResult
from daskscore.errors import OutputError, UploadFailed
from daskscore.io import outputdir, outputlock, storage
from daskscore.io.joblog import FileLogHandler
from daskscore.ui.explain import uploaded

logger = logging.getLogger("daskscore")

#: What a job's local output folder holds that is not uploaded: the staging folders, the lock
LEFTOVERS = (
    outputdir.STAGING_DIR,
    outputdir.KEPT_DIR,
    f"{outputdir.TRASH_PREFIX}*",
    outputlock.LOCK_FILE,
)
#: The longest an exception's text is quoted in the error (its first line)
SHOWN_CHARS = 300


def assembly_dir(url: str) -> Path:
    """The local folder where the output of ``url`` is assembled (created, private to this
    user): the same for every job written to that URL, so that ``--resume`` finds what an
    interrupted one committed."""
    folder = _assembly_path(url)
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode) or (hasattr(os, "getuid") and info.st_uid != os.getuid()):
        raise OutputError(
            f"the local folder where the output '{url}' is assembled, {folder}, is not a "
            "folder of your own; remove it, or set TMPDIR to another temporary directory."
        )
    return folder


def _assembly_path(url: str) -> Path:
    key = hashlib.sha256(url.rstrip("/").encode("utf-8")).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"daskscore-output-{key}"


def upload_left(url: str) -> dict[str, Any] | None:
    """The summary of a job to ``url`` that ended but whose output was not all uploaded (its
    upload interrupted, or failed): its local assembly folder still holds the job's own
    summary (the folder goes once the upload is done).  None when there is none."""
    folder = _assembly_path(url)
    if not outputdir.finished(folder) or not (folder / outputdir.SUMMARY_FILE).is_file():
        return None
    try:
        summary = json.loads((folder / outputdir.SUMMARY_FILE).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def finish_upload(
    url: str, summary: dict[str, Any], resume: bool, input_path: str, secrets: tuple[str, ...]
) -> JobResult:
    """``--resume`` of a job to ``url`` whose upload did not finish (:func:`upload_left`):
    its kept output folder uploaded, nothing scored again; without ``resume``, or for another
    input than the job's, refused naming the folder."""
    folder = _assembly_path(url)
    what = (
        f"the job {summary.get('job_id', '')} written to '{url}' ended "
        f"({summary.get('status')}), but its output was not all uploaded (the upload was "
        f"interrupted, or failed): its whole output is kept in {folder}"
    )
    if not resume:
        raise OutputError(
            f"{what}. Pass --resume to upload it (nothing is scored again), or --overwrite "
            "to run the job again."
        )
    if summary.get("input") not in (None, input_path):
        raise OutputError(
            f"{what}, of the input {summary.get('input')}, not {input_path}: --resume uploads "
            "that job's output, nothing else. Give its input to upload it, or pass --overwrite "
            "to run this job."
        )
    logger.info("resumed: uploading the kept output of job %s", summary.get("job_id"))
    pred = summary.get("predictions")
    result = JobResult(str(summary.get("status")), folder, Path(pred) if pred else None, summary)
    return publish(result, folder, url, secrets)


def publish(result: JobResult, out_dir: Path, url: str, secrets: tuple[str, ...] = ()) -> JobResult:
    """Upload a job's local output folder to ``url``; the result then names the URL.

    Raises
    ------
    UploadFailed
        The upload failed: ``out_dir`` is kept, with the job's whole output.
    """
    summary = uploaded(result.summary, url)  # (as the logs and report.html uploaded say it)
    outputdir.write_summary(out_dir, summary)
    try:
        count = storage.upload_tree(out_dir, url, exclude=LEFTOVERS, last=(outputdir.SUMMARY_FILE,))
    except Exception as exc:  # noqa: BLE001 - any failure of the store: the folder is kept
        raise upload_failed(exc, result, out_dir, url, secrets) from exc
    logger.info("uploaded %d files to %s", count, url)
    shutil.rmtree(out_dir, ignore_errors=True)
    return JobResult(result.status, url, summary["predictions"], summary)  # type: ignore[arg-type]


def upload_failed(
    exc: BaseException, result: JobResult, out_dir: Path, url: str, secrets: tuple[str, ...] = ()
) -> UploadFailed:
    """The error of an upload of ``out_dir`` to ``url`` that failed with ``exc``; its
    traceback is written into the folder's job log (``secrets`` masked)."""
    log = out_dir / "logs" / "sys" / "daskscore.txt"
    _log_to(log, secrets, exc, url)
    text = redact(f"{type(exc).__name__}: {str(exc).strip()}".split("\n", 1)[0], secrets)
    if len(text) > SHOWN_CHARS:
        text = text[: SHOWN_CHARS - 3] + "..."
    return UploadFailed(
        f"uploading the job's output to {url} failed ({text}). The job itself ran to its "
        f"end ({result.status}), and its whole output is kept in {out_dir}, which was not "
        f"deleted; part of it may have reached {url}. Copy that folder's contents to {url} "
        f"with your storage's tools{_tool_hint(out_dir, url)}, or run the same command again "
        f"once {url} can be written to, with --resume (which uploads that folder, nothing "
        f"scored again) or --overwrite. The traceback is in {log}.",
        url=url,
        kept=out_dir,
    )


def _log_to(log: Path, secrets: tuple[str, ...], exc: BaseException, url: str) -> None:
    """The upload's failure, with its traceback, in the job log ``log`` (and nowhere else:
    the terminal gets the error's one paragraph)."""
    try:
        handler = FileLogHandler(log, secrets)
    except OSError:
        return
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)  # (a handler of its own: Python's last resort prints none)
    try:
        logger.error("uploading the output to %s failed", url, exc_info=exc)
    finally:
        logger.removeHandler(handler)
        handler.close()


def _tool_hint(out_dir: Path, url: str) -> str:
    """A command that uploads ``out_dir`` to ``url``, for the protocols that have a common one."""
    protocol, _, path = url.partition("://")
    if protocol.lower() in ("s3", "s3a"):
        return f" (`aws s3 cp --recursive {out_dir} s3://{path}`)"
    container, _, prefix = path.partition("/")
    if protocol.lower() == "az" and container:
        where = f" --destination-path {prefix.rstrip('/')}" if prefix.strip("/") else ""
        return f" (`az storage blob upload-batch --source {out_dir} -d {container}{where}`)"
    return ""
