"""Local inputs: listing the files, and cutting them into mini-batches.

Pure functions and compact sequences.  Work is split by file count, as Azure does: the files of
the input are listed recursively, sorted by path (so every run forms the same mini-batches),
dot-files and dot-folders skipped (and broken symbolic links, the job's own output folder when
it lies inside the input, other jobs' output folders there: each said in one line of the job
log, :mod:`daskscore.io.skipped`), and cut into mini-batches
of ``mini_batch_size`` files, the last taking the remainder; file sizes play no part.

A big input costs the driver little memory: :class:`FileList` keeps each folder's path once and
the file names packed in one string (~20 bytes a file; a list of paths takes 100-150), and
:class:`FileBatches` cuts it into mini-batches without copying it (tabular: the
:class:`~daskscore.io.splittable.SplitTable`); each makes a path or a mini-batch when asked.
"""

from __future__ import annotations

import errno
import os
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence
from itertools import accumulate
from pathlib import Path
from typing import Any

from daskscore.errors import InputError
from daskscore.io.skipped import Skipped, job_output

#: Paths made at a time when a :class:`FileList` is walked.
_CHUNK = 4096
_ONE = 1
#: What following a symbolic link that leads nowhere raises: it is skipped, not listed.
_BROKEN = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)


def list_input_files(
    path: str | os.PathLike[str],
    *,
    exclude: str | os.PathLike[str] | None = None,
    notes: list[str] | None = None,
) -> Sequence[str]:
    """Absolute paths of the input files, sorted; a folder is walked recursively.

    Files and folders whose name starts with a dot are skipped, and so are symbolic links that
    lead nowhere (a file that is not there cannot be scored), the folder ``exclude`` and any
    folder holding another daskscore job's output (its staging folder, lock or summary); a
    folder's paths come as a packed :class:`FileList`.

    Parameters
    ----------
    path : path-like
        A file or a folder.
    exclude : path-like, optional
        A folder left out when it lies inside ``path``: the job's output folder, whose
        predictions, logs and staging a second run would otherwise score as inputs.
    notes : list, optional
        Gets one line for each kind of entry skipped (for the job log).

    Raises
    ------
    InputError
        The path does not exist (a link to nothing, or in a loop of links, says so), a folder
        under it cannot be listed, or it holds no files.
    """
    p = Path(path).expanduser()
    if not p.exists():
        if p.is_symlink():  # (to nothing, or one of a loop of links)
            loop = _stat_errno(p) == errno.ELOOP
            why = "in a loop of links (no file at its end)" if loop else "which does not exist"
            raise InputError(f"input '{path}' is a symbolic link to '{os.readlink(p)}', {why}.")
        raise InputError(f"input '{path}' does not exist.")
    if p.is_file():  # (a link keeps its own name: run() gets the path as given, made absolute)
        return [os.path.abspath(p)]
    if not p.is_dir():
        raise InputError(
            f"input '{path}' is neither a file nor a folder (a pipe, a socket or a device): "
            "run() could wait on it forever. Give a file or a folder of files."
        )
    p = p.resolve()
    skipped = Skipped(_folder_id(exclude))
    if skipped.exclude is not None and skipped.exclude == _folder_id(p):
        raise InputError(
            f"the output folder '{exclude}' is the input folder '{path}': daskscore writes its "
            "predictions, report and logs there, and every later run would score them as "
            "inputs. Choose an output folder outside the input folder (one inside it is left "
            "out of the input)."
        )
    files = FileList(_walk(str(p), skipped))
    if notes is not None:
        notes.extend(skipped.notes(str(p)))
    if not files:
        more = " and broken symbolic links" if skipped.counts["broken"] else ""
        more += ", pipes, sockets and devices" if skipped.counts["special"] else ""
        raise InputError(f"input folder '{path}' holds no files (dot-files{more} are skipped).")
    return files


def _folder_id(folder: str | os.PathLike[str] | None) -> tuple[int, int] | None:
    """(device, inode) of ``folder``, if it is one."""
    try:
        st = os.stat(Path(folder).expanduser()) if folder is not None else None
    except OSError:
        st = None  # not made yet: nothing in it to leave out
    return (st.st_dev, st.st_ino) if st is not None else None


def _broken_link(entry: os.DirEntry[str]) -> bool:
    """Whether ``entry`` is a symbolic link to nothing (or to a loop of links); ``is_symlink``
    is the listing's own file type (no system call)."""
    return entry.is_symlink() and _stat_errno(entry.path) in _BROKEN


def _stat_errno(path: str | os.PathLike[str]) -> int:
    """The ``errno`` of ``stat(path)``, links followed; 0 where it succeeds."""
    try:
        return os.stat(path) and 0
    except OSError as exc:
        return exc.errno or 0


def _sort_entry(
    entry: os.DirEntry[str], names: list[str], folders: list[tuple[str, str]], skipped: Skipped
) -> None:
    """An entry that is no regular file: a folder, a link to one or to a file, or skipped."""
    try:
        is_folder = entry.is_dir()  # follows symbolic links, as os.walk(followlinks)
    except OSError:
        is_folder = False
    if is_folder:
        folders.append((entry.name, entry.path))
    elif _broken_link(entry):
        skipped.add("broken", entry.path)
    elif _special(entry):
        skipped.add("special", entry.path)
    else:
        names.append(entry.name)


def _special(entry: os.DirEntry[str]) -> bool:
    """Whether ``entry`` is no regular file: a pipe (``open()`` would wait for a writer), a
    socket, a device."""
    try:
        return not entry.is_file()  # (the listing's own file type, but for a link)
    except OSError:
        return False


class _Folder:
    """A walked folder: its path, its files' names (sorted, packed) and the sub-folders walked
    from it (``(name + "/", index)``)."""

    __slots__ = ("prefix", "names", "offsets", "children")

    def __init__(self, path: str, names: list[str]) -> None:
        self.prefix = path if path.endswith(os.sep) else path + os.sep
        names.sort()
        self.names = "\0".join(names) + "\0" if names else ""
        # where each name starts: the lengths before it, and one separator after each
        self.offsets = array("q", accumulate(map(_ONE.__add__, map(len, names)), initial=0))
        self.children: list[tuple[str, int]] = []

    def name(self, i: int) -> str:
        return self.names[self.offsets[i] : self.offsets[i + 1] - 1]


def _walk(root: str, skipped: Skipped | None = None) -> list[_Folder]:
    """The folders under ``root`` that are walked (each once), depth first by name; what is
    left out is noted in ``skipped``."""
    skipped = skipped or Skipped(None)
    walked: list[_Folder] = []
    seen: set[tuple[int, int]] = set()  # (device, inode) of folders walked: no symlink loops
    stack: list[tuple[str, int, str]] = [(root, -1, "")]
    # os.scandir directly rather than os.walk: the entries' paths are joined in C and their
    # types come with the listing
    while stack:
        folder, parent, name = stack.pop()
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
        if parent >= 0 and (st.st_dev, st.st_ino) == skipped.exclude:
            entries.close()
            skipped.excluded = folder
            continue
        seen.add((st.st_dev, st.st_ino))
        folders: list[tuple[str, str]] = []
        names: list[str] = []
        dots: list[os.DirEntry[str]] = []
        with entries:
            for entry in entries:
                if entry.name[0] == ".":
                    dots.append(entry)
                    continue
                try:
                    if entry.is_file(follow_symlinks=False):  # most: the listing's own type
                        names.append(entry.name)
                        continue
                except OSError:
                    pass
                _sort_entry(entry, names, folders, skipped)
        if parent >= 0 and job_output(folder, names, dots):
            skipped.jobs.append(folder)  # (neither its files nor its sub-folders)
            continue
        for entry in dots:
            skipped.add("dot", entry.path)
        if parent >= 0:
            walked[parent].children.append((name + os.sep, len(walked)))
        index = len(walked)
        walked.append(_Folder(folder, names))
        # depth first, by name: of two links to one folder, the first by name is walked
        folders.sort(reverse=True)
        stack.extend((sub, index, sub_name) for sub_name, sub in folders)
    return walked


def _runs(folders: list[_Folder]) -> Iterator[tuple[int, int, int]]:
    """``(folder, first, stop)``: runs of each folder's files in the order of their full paths
    (a folder's files and its sub-folders' interleave: ``a.csv`` < ``a/b`` < ``a0.csv``)."""
    for folder in folders:
        folder.children.sort()
    stack = [(0, 0, 0)]  # folder, next sub-folder, next file
    while stack:
        f, child, first = stack.pop()
        folder = folders[f]
        count = len(folder.offsets) - 1
        if child < len(folder.children):
            key, sub = folder.children[child]
            pos = bisect_left(range(count), key, lo=first, key=folder.name)
            if pos > first:
                yield f, first, pos
            stack.append((f, child + 1, pos))
            stack.append((sub, 0, 0))
        elif count > first:
            yield f, first, count


def _paths(prefix: str, names: str) -> list[str]:
    """The paths of ``names`` (separated by NUL) in the folder ``prefix``."""
    return (prefix + names.replace("\0", "\0" + prefix)).split("\0")


class FileList(Sequence[str]):
    """Sorted file paths, packed: each folder's path once, every name in one string.

    Behaves as a read-only list of str (indexing, slices, iteration, ``==`` with a list).
    """

    def __init__(self, folders: list[_Folder]) -> None:
        prefixes: list[str] = []
        pieces: list[str] = []
        starts, which = array("q"), array("I")
        offsets = array("q", [0])
        n = 0
        for f, first, stop in _runs(folders):
            folder = folders[f]
            if not prefixes or prefixes[-1] is not folder.prefix:
                prefixes.append(folder.prefix)
            starts.append(n)
            which.append(len(prefixes) - 1)
            base, end = folder.offsets[first], folder.offsets[stop]
            pieces.append(folder.names[base:end])
            shift = offsets[-1] - base
            offsets.extend(map(shift.__add__, folder.offsets[first + 1 : stop + 1]))
            n += stop - first
        self._prefixes = prefixes
        self._starts, self._which, self._offsets = starts, which, offsets
        self._names = "".join(pieces)
        self._n = n
        self._last: tuple[int, int, str] = (0, 0, "")

    def __len__(self) -> int:
        return self._n

    def _prefix(self, i: int) -> tuple[str, int]:
        """The folder of path ``i`` and where its run ends (mostly read in order: the last
        run found is tried first)."""
        first, end, prefix = self._last
        if first <= i < end:
            return prefix, end
        starts = self._starts
        r = bisect_right(starts, i) - 1
        end = starts[r + 1] if r + 1 < len(starts) else self._n
        prefix = self._prefixes[self._which[r]]
        self._last = (starts[r], end, prefix)
        return prefix, end

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            start, stop, step = index.indices(self._n)
            if step != 1:
                return [self[i] for i in range(start, stop, step)]
            return self.between(start, stop)
        i = index + self._n if index < 0 else index
        if not 0 <= i < self._n:
            raise IndexError("file index out of range")
        prefix, _ = self._prefix(i)
        return prefix + self._names[self._offsets[i] : self._offsets[i + 1] - 1]

    def between(self, start: int, stop: int) -> list[str]:
        """The paths ``[start, stop)`` (``0 <= start <= stop <= len``), a new list."""
        offsets, names = self._offsets, self._names
        first, end, prefix = self._last
        if first <= start and stop <= end:  # within the last run found: the common case
            if stop - start == 1:
                return [prefix + names[offsets[start] : offsets[stop] - 1]]
            if stop > start:
                return _paths(prefix, names[offsets[start] : offsets[stop] - 1])
            return []
        out: list[str] = []
        while start < stop:
            prefix, end = self._prefix(start)
            end = min(end, stop)
            out.extend(_paths(prefix, names[offsets[start] : offsets[end] - 1]))
            start = end
        return out

    def __iter__(self) -> Iterator[str]:
        for start in range(0, self._n, _CHUNK):
            yield from self.between(start, min(start + _CHUNK, self._n))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str) or len(other) != len(self):
            return False
        return all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(list(self)) if self._n <= 20 else f"<FileList of {self._n} files>"


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


class FileBatches(Sequence[list[str]]):
    """``files`` cut into mini-batches of ``size`` (the last takes the remainder), without a
    copy: mini-batch ``i`` is made when asked for, a new list."""

    def __init__(self, files: Sequence[str], size: int) -> None:
        if size < 1:
            raise ValueError("mini_batch_size must be >= 1")
        self.files, self.size = files, size
        self._files = len(files)
        self._len = -(-self._files // size)
        self._between = getattr(files, "between", None)

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._len))]
        i = index + self._len if index < 0 else index
        if not 0 <= i < self._len:
            raise IndexError("mini-batch index out of range")
        start = i * self.size
        stop = min(start + self.size, self._files)
        if self._between is not None:
            return self._between(start, stop)
        return list(self.files[start:stop])

    def planned(self, i: int) -> int:
        """Files of mini-batch ``i``."""
        return min(self.size, self._files - i * self.size)

    def planned_total(self) -> int:
        return self._files

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]
