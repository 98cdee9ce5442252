"""Putting a job's output in place: noted as the job's own first, then renamed in.

The output a job assembles (an append_row file, a dataset folder) is built in a temporary
place, noted in the staging folder as the job's own (:func:`mark_assembled`, which keeps the
output it replaces noted too), then renamed to its name.  So a resumed job, or a retry pass,
tells an output it assembled itself from a file of that name the scoring script wrote
(:func:`assembled_here`), whatever instant the earlier run was stopped or killed at.

A file replaces the one before in one rename.  A folder cannot: :func:`put_in_place` moves
the output already there (a previous pass's) into the staging folder, renames the new one in,
and deletes the old one.  Ctrl-C and the stop signals wait for the two renames
(:func:`uninterrupted`); a job killed between them leaves the old output in the staging
folder, which the next run there puts back (:func:`settle`): the folder's summary, which
still names it, is the previous pass's.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: In the staging folder: what the job's assembly left under the output's name (a file's
#: size and time, a folder's files'), so that a resumed or retried job tells it from a file
#: of that name the script wrote.
ASSEMBLED_FILE = "assembled.json"
#: In the staging folder: the output a new one replaces, while the new one is renamed in.
REPLACED = "replaced"
#: The signals that stop a job as Ctrl-C does (held by :func:`uninterrupted`).
STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")


def identity(path: Path) -> list[Any] | None:
    """A file's inode, size and time; a folder's inode and a digest of its files' names, sizes
    and times (None: nothing there).  Only the inode changes when the output folder is copied
    (``cp -a``, a backup put back), so :func:`same` leaves it out."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    if not path.is_dir():
        return [st.st_ino, st.st_size, st.st_mtime_ns]
    digest = hashlib.sha1(usedforsecurity=False)
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            try:
                fst = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            rel = os.path.relpath(os.path.join(root, name), path)
            digest.update(f"{rel}\0{fst.st_size}\0{fst.st_mtime_ns}\n".encode(errors="replace"))
    return [st.st_ino, digest.hexdigest()]


def same(noted: list[Any], now: list[Any]) -> bool:
    """Whether the identity noted at assembly is ``now``'s, whatever the inode (a copied
    output folder's files have new ones); a folder noted by its inode alone (as earlier
    versions did) by its inode."""
    if len(noted) == 1:
        return noted[0] == now[0]
    return noted[1:] == now[1:]


def _noted(staging: Path, name: str) -> list[list[Any]]:
    """The identities noted as the job's own under ``name``, newest first (an earlier
    version's note: one identity)."""
    try:
        value = json.loads((staging / ASSEMBLED_FILE).read_text("utf-8")).get(name)
    except (OSError, ValueError, AttributeError):
        return []
    if not isinstance(value, list) or not value:
        return []
    if all(isinstance(v, list) and v for v in value):
        return value
    return [value]


def mark_assembled(staging: Path, path: Path, name: str) -> None:
    """Note ``path`` (assembled, to be renamed ``name`` in the output folder) as the job's own,
    before it is renamed: the output noted before under ``name`` (a previous pass's, in place
    until the new one replaces it) stays noted too.  Written whole, or not at all."""
    noted = [i for i in (identity(path), *_noted(staging, name)[:1]) if i]
    tmp = staging / f"{ASSEMBLED_FILE}.partial"
    tmp.write_text(json.dumps({name: noted}), "utf-8")
    os.replace(tmp, staging / ASSEMBLED_FILE)


def assembled_here(staging: Path, path: Path) -> bool:
    """Whether ``path`` is an output this job assembled (or was assembling), untouched since."""
    now = identity(path)
    return now is not None and any(same(noted, now) for noted in _noted(staging, path.name))


def put_in_place(staging: Path, built: Path, dest: Path) -> None:
    """Rename the whole output ``built`` (in the staging folder) to ``dest``, noted as the job's
    own first.  An output at ``dest`` (the job's own: a previous pass's; a file of that name
    the script wrote was set aside before) is moved into the staging folder, and deleted once
    the new one is in place."""
    mark_assembled(staging, built, dest.name)
    aside = staging / REPLACED / dest.name
    with uninterrupted():
        if os.path.lexists(dest):
            _remove(aside)  # (left by an earlier try, settled since)
            aside.parent.mkdir(exist_ok=True)
            os.rename(dest, aside)
        os.rename(built, dest)
    _remove(aside.parent)


def settle(staging: Path, output: Path) -> None:
    """Finish the replacement a run killed in :func:`put_in_place` left half done: the output it
    moved aside goes back where no new one took its place (the folder's summary, an earlier
    pass's, names it), and is deleted where one did."""
    replaced = staging / REPLACED
    if not replaced.is_dir():
        return
    for aside in sorted(replaced.iterdir()):
        if not os.path.lexists(output / aside.name):
            os.rename(aside, output / aside.name)
    _remove(replaced)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


@contextmanager
def uninterrupted() -> Iterator[None]:
    """Hold Ctrl-C and the stop signals (:data:`STOP_SIGNALS`) for the block: steps that must
    not be cut apart run to their end, and a signal that came meanwhile is acted on after it
    (its handler called, as if it came then: Ctrl-C's ``KeyboardInterrupt`` is raised there).
    Off the main thread, where handlers cannot be set, the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    came: list[tuple[int, Any]] = []
    saved: dict[int, Any] = {}
    for name in STOP_SIGNALS:
        sig = getattr(signal, name, None)
        handler = signal.getsignal(sig) if sig is not None else None
        if handler is None or handler == signal.SIG_IGN:  # (not Python's to hold)
            continue
        saved[sig] = signal.signal(sig, lambda signum, frame: came.append((signum, frame)))
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        if came:
            signum, frame = came[0]
            handler = saved[signum]
            if callable(handler):
                handler(signum, frame)
            else:  # (the default action: SIGTERM's ends the process, now)
                os.kill(os.getpid(), signum)
