"""Exceptions raised by daskscore.

The tree separates problems in what the user gave us (a deployment file, an input path, an
output folder) from failures of the user's own scoring code, and both from the job verdict::

    DaskScoreError                  base of everything daskscore raises on purpose
    ├── UsageError                  the job cannot start as asked (CLI exit code 2)
    │   ├── ConfigError             deployment YAML: malformed, wrong type, missing file
    │   ├── InputError              the input path: missing, empty
    │   └── OutputError             the output folder: already holds a job, is a file
    ├── ClusterLost                 the scheduler went away mid-job (CLI exit code 1; the
    │   │                           job stays resumable)
    │   └── NoWorkersLeft           the cluster has no worker and can start none (a cluster
    │                               object of this process: closed, scaled to 0, nannies gone)
    ├── WriteFailed                 the job's files could not be written: a full disk, a
    │   │                           read-only one (CLI exit code 1; the job stays resumable)
    │   └── UploadFailed            an output URL could not take the finished job's output:
    │                               it is kept in a local folder, which the message names
    └── JobFailed                   the job ran and its verdict is Failed (CLI exit code 1)
        ├── InitFailed              the script's init() (or import) raised on a worker
        ├── ErrorThresholdExceeded  more failed items than settings.error_threshold allows
        └── OutputFailed            the output could not be written (a dataset column whose
                                    types in different mini-batches cannot be made one)

    StopSignal (a KeyboardInterrupt) SIGTERM or SIGHUP, which stop ``daskscore run`` as Ctrl-C
                                    does: the job says which signal it was

Every message is meant to be read by the user as it is: one paragraph naming the file, key or
mini-batch.  Failures inside the user's script carry the script's own traceback
(:attr:`JobFailed.user_traceback`, user frames only); the full traceback, with daskscore's and
Dask's frames, goes to the job's logs only.
"""

from __future__ import annotations

import errno
import os
from typing import Any


class DaskScoreError(Exception):
    """Base class of all errors daskscore raises on purpose."""

    exit_code = 1


class UsageError(DaskScoreError):
    """The job cannot start as it was asked for; nothing was run."""

    exit_code = 2


class ConfigError(UsageError):
    """A deployment file is malformed, has a wrong type, or names a file that does not exist."""


class InputError(UsageError):
    """The input path is missing or holds no files."""


class OutputError(UsageError):
    """The output folder cannot be used (it already holds a job, or it is a file)."""


class ClusterLost(DaskScoreError):
    """The Dask scheduler stopped answering mid-job: nothing more can run.  What was committed
    is kept in the output folder's staging folder, and ``--resume`` finishes the job."""


class NoWorkersLeft(ClusterLost):
    """The job's cluster, a cluster object of this process, has had no worker for a while and
    can start none again: nothing more can run.  As with :class:`ClusterLost`, what was
    committed is kept, and ``resume=True`` finishes the job once the cluster has workers."""


class WriteFailed(DaskScoreError):
    """The job's own files (staged predictions, books, summary) could not be written: the disk
    is full, over quota or read-only.  Nothing more can be kept, so the job stops; what was
    committed is kept in the output folder's staging folder, and ``--resume`` goes on once
    the disk is fixed."""

    exit_code = 1

    #: ``OSError.errno`` values that are the disk's, not the worker's or the network's
    ERRNOS = frozenset(
        getattr(errno, name)
        for name in ("ENOSPC", "EDQUOT", "EROFS", "EFBIG")
        if hasattr(errno, name)
    )

    #: ``OSError.errno`` values that are the disk's when they are about the job's own files
    #: (inside its output folder): a folder made read-only (``chmod``, ``chattr +i``) under it
    DENIED = frozenset({errno.EACCES, errno.EPERM})
    #: a file where the job makes a folder, or a folder where it writes a file
    IN_THE_WAY = frozenset({errno.EISDIR, errno.ENOTDIR, errno.EEXIST})

    @classmethod
    def is_disk(cls, exc: BaseException | None, out: Any) -> bool:
        """Whether ``exc`` is the disk's: full, over quota, read-only, a permission refused
        on a file inside the output folder ``out``, or a folder of it gone (:meth:`removed`)."""
        if not isinstance(exc, OSError):
            return False
        if exc.errno in cls.ERRNOS:
            return True
        if exc.errno not in cls.DENIED | cls.IN_THE_WAY or not exc.filename or out is None:
            return cls.removed(exc, out)
        return cls._inside(exc.filename, out)

    @classmethod
    def removed(cls, exc: BaseException | None, out: Any) -> bool:
        """Whether ``exc`` says a file inside the output folder ``out`` is missing because its
        folder is gone (``rm -rf`` of the output folder while the job ran)."""
        if not isinstance(exc, FileNotFoundError) or not exc.filename or out is None:
            return False
        try:
            folder = os.path.dirname(os.path.abspath(os.fsdecode(exc.filename)))
        except (TypeError, ValueError):
            return False
        return cls._inside(folder, out) and not os.path.isdir(folder)

    @staticmethod
    def _inside(path: Any, out: Any) -> bool:
        try:
            root = os.path.abspath(os.fspath(out))
            return os.path.commonpath([os.path.abspath(os.fsdecode(path)), root]) == root
        except (TypeError, ValueError):  # (another drive, a URL)
            return False

    @classmethod
    def of(cls, exc: BaseException | None, out: Any, what: str) -> WriteFailed | None:
        """The error for ``exc`` if it is a disk's (None otherwise): ``what`` was being
        written into the output folder ``out``."""
        if not isinstance(exc, OSError) or not cls.is_disk(exc, out):
            return None
        if cls.removed(exc, out):
            return cls(
                f"{what} failed: the folder of {exc.filename} is gone: the output folder {out} "
                "(or its staging folder, .daskscore/) was removed or moved while the job ran, "
                "and with it what the job had kept. Nothing more can be kept, so the job "
                "stopped. Run the job again (with --overwrite if that folder exists again)."
            )
        if exc.errno in cls.IN_THE_WAY:
            kind = "a folder" if exc.errno == errno.EISDIR else "a file"
            return cls(
                f"{what} failed: {os.fsdecode(exc.filename)} is in the way ({exc.strerror}): "
                f"{kind} of the name the job writes was made in the output folder {out} (by the "
                "scoring script, or by hand while the job ran). Nothing was lost: what was "
                "done is kept there. Move it away, then run the same command with --resume."
            )
        where = f" ({exc.filename})" if exc.filename else ""
        return cls(
            f"{what} failed: {exc.strerror}{where}. Nothing more can be kept, so the job "
            f"stopped; what was done is kept in {out}. Free space on that disk (or make it "
            "writable), then run the same command with --resume to go on from there."
        )


class UploadFailed(WriteFailed):
    """The job ran to its end, but its output could not be uploaded to the output URL (the
    store went away, refused a write, ...).  Nothing is lost: the whole output is kept in the
    local folder it was assembled in (:attr:`kept`), which the message names, with how to
    upload it or run the job again.  CLI exit code 1, as :class:`WriteFailed`."""

    def __init__(self, message: str, *, url: str = "", kept: Any = None) -> None:
        super().__init__(message)
        #: the output URL
        self.url = url
        #: the local folder that holds the job's complete output
        self.kept = kept


class JobFailed(DaskScoreError):
    """The job ran and failed.

    Parameters
    ----------
    message : str
        Why the job failed, one paragraph.
    result : JobResult, optional
        The job's result (counts, failed mini-batches, where the logs are), when one exists.
    user_traceback : str, optional
        The first user-code traceback, user frames only.
    """

    exit_code = 1

    def __init__(
        self, message: str, *, result: Any = None, user_traceback: str | None = None
    ) -> None:
        super().__init__(message)
        self.result = result
        self.user_traceback = user_traceback


class InitFailed(JobFailed):
    """The scoring script's ``init()`` (or its import) raised on a worker."""


class ErrorThresholdExceeded(JobFailed):
    """More items failed than ``settings.error_threshold`` allows."""


class OutputFailed(JobFailed):
    """The job's output could not be written: a dataset column whose types in different
    mini-batches cannot be written as one.  Its summary and logs are written; its dataset
    folder is not."""


class StopSignal(KeyboardInterrupt):
    """A stop signal (SIGTERM: a batch system's or ``timeout``'s; SIGHUP: a closed terminal)
    raised in ``daskscore run`` as Ctrl-C is: the job stops as for Ctrl-C and says which
    signal stopped it (``signal_name``)."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name
