"""The files a shipped job's tasks bring home in their replies, and their landing on the driver.

A shipped task (see :mod:`daskscore.io.shipping`) writes its part files, its ledger and the
script's files in ``AZUREML_BI_OUTPUT_PATH`` into worker-local folders; they are read (and
removed) on the worker, travel in the task's reply as ``{relative name: bytes}``, and are
written under the driver's folders by :func:`put_files`.  It knows nothing of Dask.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

logger = logging.getLogger("daskscore")


def take_files(folder: Path, attempt: str | None = None) -> dict[str, bytes]:
    """Read and remove the files under ``folder`` (only ``attempt``'s when given: its name, or
    its name followed by ``.`` or ``-``)."""
    found: dict[str, bytes] = {}
    if not folder.is_dir():
        return found
    for path in sorted(folder.rglob("*")):
        name = path.name
        if attempt and not (name == attempt or name.startswith((f"{attempt}.", f"{attempt}-"))):
            continue
        if path.is_file():
            found[path.relative_to(folder).as_posix()] = path.read_bytes()
            path.unlink()
    return found


class OutputTaker:
    """The files a shipped job's script writes into ``AZUREML_BI_OUTPUT_PATH`` on one worker,
    taken as each ``run()`` try ends, so that they travel home with the task's result.

    A taken file is read and removed: the folder holds only what the script wrote since the
    last take, so that a take of the usual empty folder is one ``scandir`` and a job writing a
    file per input never rescans the files it wrote before.  A file this process still holds
    open (a log opened in ``init()``, written by every ``run()``) is read but left in place; it
    is sent again, whole, whenever its size or time changed (:attr:`held`).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        #: files left in place because the process holds them open: (size, mtime_ns) sent
        self.held: dict[str, tuple[int, int]] = {}
        #: empty folders sent (as ``name/``, once; left in place: the script may use them)
        self.folders: set[str] = set()

    def take(self, keep: bool = True) -> dict[str, bytes]:
        """The files written since the last take (names relative to the folder), removed here.
        ``keep=False`` (a try that failed): they are removed unread and nothing is returned;
        a file held open stays as it is, for the next take.  An empty folder is ``name/``, sent
        by the first take that keeps what it finds."""
        found: dict[str, bytes] = {}
        entries, empty = _files_under(self.folder)
        if keep:  # (each left in place: the script may write into it later)
            for rel in sorted(set(empty) - self.folders):
                self.folders.add(rel)
                found[rel + "/"] = b""
        if not entries:
            return found
        open_now = _open_files()
        for rel, path, stamp in entries:
            if self.held.get(rel) == stamp:
                continue  # held open, unchanged since it was sent
            if path in open_now:
                if keep:
                    found[rel] = _read(path)
                    self.held[rel] = stamp
                continue
            if keep:
                found[rel] = _read(path)
            self.held.pop(rel, None)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        return found


def _files_under(folder: Path) -> tuple[list[tuple[str, str, tuple[int, int]]], list[str]]:
    """The files under ``folder``: (relative name, path, (size, mtime_ns)), sorted by name;
    and the relative names of its empty subfolders."""
    found, empty = [], []
    root = os.path.realpath(folder)  # (as /proc/self/fd names the open ones)
    stack = [root]
    while stack:
        try:
            entries = list(os.scandir(path := stack.pop()))
        except (FileNotFoundError, NotADirectoryError):
            continue
        if not entries and path != root:
            empty.append(os.path.relpath(path, root).replace(os.sep, "/"))
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
            elif entry.is_file():
                st = entry.stat()
                rel = os.path.relpath(entry.path, root).replace(os.sep, "/")
                found.append((rel, entry.path, (st.st_size, st.st_mtime_ns)))
    return sorted(found), empty


def _open_files() -> set[str]:
    """The files this process holds open (Linux: ``/proc/self/fd``; elsewhere none known)."""
    fds = "/proc/self/fd"
    try:
        names = os.listdir(fds)
    except OSError:
        return set()
    found = set()
    for name in names:
        with contextlib.suppress(OSError):
            found.add(os.readlink(os.path.join(fds, name)))
    return found


def _read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def read_new(path: Path, offset: int) -> tuple[bytes, int]:
    """What a growing file holds past ``offset``, and its new end."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return b"", offset
    return data, offset + len(data)


def put_files(folder: Path, files: dict[str, bytes], append: bool = False) -> None:
    """Write files that came back from a worker under ``folder`` (names are relative; one
    ending in ``/``: an empty folder, made)."""
    for rel, data in files.items():
        dest = (folder / rel).resolve()
        if folder.resolve() not in dest.parents:
            logger.warning("ignored a returned file outside %s: %s", folder, rel)
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith("/"):
            dest.mkdir(exist_ok=True)
            continue
        with open(dest, "ab" if append else "wb") as fh:
            fh.write(data)
