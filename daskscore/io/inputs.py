"""Local inputs: listing the files, and cutting them into mini-batches.

Pure functions.  Work is split by file count, as Azure does: the files of the input are listed
recursively, sorted by path (so every run forms the same mini-batches), dot-files and
dot-folders skipped, and cut into mini-batches of ``mini_batch_size`` files, the last taking
the remainder; file sizes play no part.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from daskscore.errors import InputError


def list_input_files(path: str | os.PathLike[str]) -> list[str]:
    """Absolute paths of the input files, sorted; a folder is walked recursively.

    Files and folders whose name starts with a dot are skipped.

    Raises
    ------
    InputError
        The path does not exist, a folder under it cannot be listed, or it holds no files.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"input '{path}' does not exist.")
    p = p.resolve()
    if p.is_file():
        return [str(p)]
    files: list[str] = []
    seen: set[tuple[int, int]] = set()  # (device, inode) of folders walked: no symlink loops
    stack = [str(p)]
    # os.scandir directly rather than os.walk: the entries' paths are joined in C and their
    # types come with the listing (100,000 files: 0.05 s instead of 0.15 s)
    while stack:
        folder = stack.pop()
        try:
            st = os.stat(folder)
            entries = os.scandir(folder)
        except OSError as exc:  # never skipped quietly: its files would not be scored
            raise InputError(
                f"input folder '{folder}' cannot be listed ({exc.strerror or exc}); its files "
                "would not be scored. Fix its permissions, or choose another input."
            ) from exc
        if (st.st_dev, st.st_ino) in seen:
            entries.close()
            continue
        seen.add((st.st_dev, st.st_ino))
        folders: list[str] = []
        with entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                try:
                    is_folder = entry.is_dir()  # follows symbolic links, as os.walk(followlinks)
                except OSError:
                    is_folder = False
                (folders if is_folder else files).append(entry.path)
        # depth first, by name: of two links to one folder, the first by name is walked
        folders.sort(reverse=True)
        stack.extend(folders)
    if not files:
        raise InputError(f"input folder '{path}' holds no files (dot-files are skipped).")
    files.sort()
    return files


def make_mini_batches(files: Sequence[str], mini_batch_size: int) -> list[list[str]]:
    """Cut ``files`` into mini-batches of ``mini_batch_size``; the last takes the remainder.

    Examples
    --------
    >>> make_mini_batches(["a", "b", "c"], 2)
    [['a', 'b'], ['c']]
    """
    if mini_batch_size < 1:
        raise ValueError("mini_batch_size must be >= 1")
    return [list(files[i : i + mini_batch_size]) for i in range(0, len(files), mini_batch_size)]
