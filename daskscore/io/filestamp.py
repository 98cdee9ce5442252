"""A tabular input file as the job listed it: its stamp (size and modification time, taken when
its splits were planned), and the checks that a file about to be read is still that file.

A file changed after the planner cut it into byte ranges (CSV) or row groups (Parquet) holds
other rows under those ranges: a line grown by two bytes would be cut short, a Parquet file
written again would give rows lost, read twice or numbered wrongly.  So every read opens the
file with :func:`open_planned` (or checks it with :func:`check_planned` before pyarrow opens
it): a path that is no longer a regular file (a named pipe, a device, a folder) or whose size
or modification time is not the planned one fails with an :class:`~daskscore.errors.InputError`
naming the file and saying how it changed — except a CSV file that only grew, whose planned
bytes still end as they did (rows appended after the listing: not scored, the planned ones
read as planned).  A pipe is opened without blocking, and nothing is
read before the check, so a file swapped for ``/dev/zero`` or a pipe cannot hang the read.
One ``fstat`` per open: once per task and file, or once per split read alone.
"""

from __future__ import annotations

import os
import stat
import zlib
from typing import IO

from daskscore.errors import InputError

#: A file's stamp: its size in bytes and its modification time in nanoseconds; a CSV file's
#: also the CRC-32 of its last :data:`TAIL` bytes (up to its size then), which tells rows
#: appended since (the planned bytes where they were) from an edit (they moved).
Stamp = tuple[int, ...]
TAIL = 4096


def stamp_of(st: os.stat_result, fd: int | None = None) -> Stamp:
    """The stamp of a file from its ``stat`` (and, given ``fd``, a CSV file's tail)."""
    if fd is None:
        return st.st_size, st.st_mtime_ns
    return st.st_size, st.st_mtime_ns, _tail(fd, st.st_size)


def _tail(fd: int, size: int) -> int:
    """The CRC-32 of the :data:`TAIL` bytes before byte ``size`` of the file open as ``fd``."""
    start = max(0, size - TAIL)
    return zlib.crc32(os.pread(fd, size - start, start))


def gone(path: str) -> InputError:
    """The error of a file removed after the job listed it."""
    return InputError(f"input file '{path}' is gone: it was there when the job listed its inputs.")


def changed(path: str, why: str) -> InputError:
    """The error of a file changed after the job listed it (``why``: how)."""
    return InputError(
        f"input file '{path}' changed since the job listed its inputs ({why}); its mini-batches "
        "were planned from the file as it was, so they cannot be read from it now. Leave the "
        "inputs unchanged while a job runs (write a new file, then run the job again)."
    )


def check_planned(
    path: str, planned: Stamp | None, st: os.stat_result, fd: int | None = None
) -> None:
    """Raise :func:`changed` when ``st`` (the file at ``path`` now, open as ``fd``) is not a
    regular file, or not of the ``planned`` stamp (None: the size and time are not checked).
    A CSV file that only grew — its planned bytes still end as they did — is its planned
    self: rows appended since the listing are not scored, the planned ones are read."""
    if not stat.S_ISREG(st.st_mode):
        what = (
            "a named pipe"
            if stat.S_ISFIFO(st.st_mode)
            else "a folder"
            if stat.S_ISDIR(st.st_mode)
            else "a device"
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
            else "not a regular file"
        )
        raise changed(path, f"it is {what} now")
    if planned is None:
        return
    size, mtime = planned[0], planned[1]
    if len(planned) > 2 and st.st_size > size and fd is not None and _tail(fd, size) == planned[2]:
        return  # (appended to: what was planned is where it was)
    if st.st_size != size:
        raise changed(path, f"it was {size} bytes, it is {st.st_size} bytes now")
    if st.st_mtime_ns != mtime:
        raise changed(path, "it has the same size but was modified")


def stat_planned(path: str, planned: Stamp | None) -> None:
    """:func:`check_planned` of ``path`` now (a removed file: :func:`gone`)."""
    try:
        st = os.stat(path)
    except FileNotFoundError as exc:
        raise gone(path) from exc
    check_planned(path, planned, st)


def open_planned(path: str, planned: Stamp | None) -> IO[bytes]:
    """``path`` opened for reading in binary, once checked (:func:`check_planned`) against its
    ``planned`` stamp; a named pipe is opened without waiting for a writer, and refused."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError as exc:
        raise gone(path) from exc
    try:
        check_planned(path, planned, os.fstat(fd), fd)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
