"""Shipping a job to workers that do not share the driver's disk, and bringing results back.

On a LocalCluster (or any cluster whose workers mount the driver's folders) workers read the
code and the model where they are, and write part files and ledgers into the output's staging
folder.  On other clusters — separate hosts, containers — nothing on the driver's disk is
visible, so a job is *shipped*:

* the code folder travels inside the worker plugin as a zip (:class:`Bundle`), unpacked into a
  worker-local cache under its content hash, so two jobs with different code on one cluster
  never import each other's files;
* the model folder travels the same way, or, when ``model.path`` is a URL (``s3://``,
  ``az://``, ...), each worker fetches it once into its cache (:func:`fetch_model`);
* tasks write their part files into a worker-local staging folder and hand the bytes back with
  their result; the driver writes them into its own staging folder and ledger, so resuming and
  assembling work as on one machine;
* the "ledger" of the ``run()`` call in flight lives in the scheduler's metadata
  (:class:`daskscore.worker.relay.RelayLedger`): a worker process that dies mid-call leaves
  there which mini-batch and try it was running, and whether the watchdog ended it for a
  timeout.

This module holds the file side of it: packing and unpacking bundles, and fetching a model
(the files that travel in task replies: :mod:`daskscore.io.replyfiles`).  It knows nothing of
Dask.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

from daskscore.errors import InputError
from daskscore.protocol import Bundle

logger = logging.getLogger("daskscore")

#: Folders never shipped with the code: caches and version control.
SKIPPED_DIRS = {"__pycache__", ".git", ".hg", ".svn", ".ipynb_checkpoints", ".mypy_cache"}
#: What a job leaves in its output folder (staging, kept staging, lock, summary): a folder
#: holding one of them is a job's output, never code, even inside a code folder (``code: .``
#: with ``--output out``).
OUTPUT_MARKERS = frozenset({".daskscore", ".daskscore-kept", ".daskscore.lock", "job_summary.json"})
#: A fixed timestamp for every zip entry, so the same files always make the same bundle.
_ZIP_TIME = (2000, 1, 1, 0, 0, 0)
#: Files that are not regular ones, refused unread (unnamed here: a device).
_KINDS = {stat.S_IFIFO: "a named pipe (FIFO)", stat.S_IFSOCK: "a socket"}


def pack(path: Path, skip: Path | None = None) -> Bundle:
    """Pack ``path`` (a folder, walked recursively as :func:`code_files` does, or a single
    file) as a :class:`Bundle` named by :func:`content_digest`; ``skip``: the job's output
    folder, left out.  A file that cannot be read is an
    :class:`~daskscore.errors.InputError` naming it."""
    buffer = io.BytesIO()
    digest = _digest_start(path)
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for rel, full in code_files(path, skip):
            info = zipfile.ZipInfo(_zip_name(rel), _ZIP_TIME)
            if info.filename != rel:  # not UTF-8: its bytes travel in the entry's comment
                info.comment = _RAW_NAME + os.fsencode(rel)
            try:
                mode = _regular(full).st_mode & 0o777
                with open(full, "rb") as fh:
                    data = fh.read()
            except OSError as exc:
                raise _unshippable(full, exc) from exc
            info.external_attr = mode << 16
            digest.update(_entry_head(rel, mode, len(data)))
            digest.update(data)
            how = zipfile.ZIP_DEFLATED if _compressible(data) else zipfile.ZIP_STORED
            zf.writestr(info, data, compress_type=how, compresslevel=1)
    return Bundle(path.name, digest.hexdigest()[:DIGEST_CHARS], buffer.getvalue(), path.is_file())


#: Hex digits of a bundle's digest.
DIGEST_CHARS = 24


def content_digest(path: Path, skip: Path | None = None) -> str:
    """The digest :func:`pack` names ``path``'s bundle by — each file's name, permission bits
    and bytes — read without packing (a hash runs at about 1 GB/s; deflating at tens of MB/s),
    so a job can tell whether the cluster holds the bundle already."""
    digest = _digest_start(path)
    for rel, full in code_files(path, skip):
        try:
            mode = _regular(full).st_mode & 0o777
            with open(full, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                digest.update(_entry_head(rel, mode, size))
                for chunk in iter(lambda: fh.read(1 << 20), b""):  # noqa: B023 - fh is local
                    digest.update(chunk)
        except OSError as exc:
            raise _unshippable(full, exc) from exc
    return digest.hexdigest()[:DIGEST_CHARS]


def reference(path: Path, digest: str) -> Bundle:
    """A bundle without its bytes: the workers take it from their cache, or from the
    scheduler, which holds it (see :mod:`daskscore.engine.bundles`)."""
    return Bundle(path.name, digest, None, path.is_file())


def _digest_start(path: Path) -> Any:
    # (-2: unpacked with their permission bits; a worker's cache may hold -1s without them)
    return hashlib.sha256(b"daskscore-bundle-2\0" + (b"file" if path.is_file() else b"folder"))


def _entry_head(rel: str, mode: int, size: int) -> bytes:
    return b"\0" + os.fsencode(rel) + f"\0{mode:o}\0{size}\0".encode()


#: A file is deflated when its first :data:`_SAMPLE` bytes deflate to under this fraction.
_WORTH = 0.9
_SAMPLE = 1 << 16


def _compressible(data: bytes) -> bool:
    """Whether deflating ``data`` is worth its time.  A model's weights (floats) deflate by
    some 7 % at 15-30 MB/s: a 50 MB model took the driver 3.4 s per shipped job, 0.1 s
    stored.  Judged on a sample at the start (small files: whole), so the same bytes always
    make the same bundle."""
    if len(data) <= 512:
        return True
    sample = data[:_SAMPLE]
    return len(zlib.compress(sample, 1)) < _WORTH * len(sample)


def check_shippable(path: Path, skip: Path | None = None) -> None:
    """Refuse, before anything is claimed, a file of ``path`` that :func:`pack` could not
    read (each regular file is opened, none read; any other kind is refused unopened)."""
    for _rel, full in code_files(path, skip):
        try:
            _regular(full)
            with open(full, "rb"):
                pass
        except OSError as exc:
            raise _unshippable(full, exc) from exc


def _regular(full: Path) -> os.stat_result:
    """``full``'s status when it is a regular file; any other kind is never opened (a named
    pipe blocks the open until a writer comes): an ``OSError`` saying what it is."""
    st = os.stat(full)
    if not stat.S_ISREG(st.st_mode):
        kind = _KINDS.get(stat.S_IFMT(st.st_mode), "a device")
        raise OSError(0, f"it is {kind}, not a regular file")
    return st


def _unshippable(full: Path, exc: OSError) -> InputError:
    return InputError(
        f"cannot ship {os.fsdecode(full)!r} to the workers (they do not see this disk, so the "
        f"code and model folders travel to them): {exc.strerror or exc}. Make it a readable "
        f"file, or move it out of the folder."
    )


#: What starts a zip entry's comment holding the entry's real name (bytes, not UTF-8).
_RAW_NAME = b"daskscore-name:"


def _zip_name(rel: str) -> str:
    """The entry name of ``rel`` in a bundle: itself, or, for a name that is not UTF-8 (a
    file name is bytes on POSIX), a stand-in; the real name travels in the comment."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return ".daskscore-raw-name/" + hashlib.sha256(os.fsencode(rel)).hexdigest()
    return rel


def _extract(zf: zipfile.ZipFile, dest: Path) -> None:
    """Unpack a folder's bundle into ``dest``, names that are not UTF-8 as they were, each
    file with the permission bits it had (:func:`_set_mode`)."""
    for member in zf.infolist():
        if not member.comment.startswith(_RAW_NAME):
            _set_mode(zf.extract(member, dest), member)
    root = os.fsencode(dest.resolve())
    for member in zf.infolist():
        if not member.comment.startswith(_RAW_NAME):
            continue
        target = os.path.normpath(os.path.join(root, member.comment[len(_RAW_NAME) :]))
        if not target.startswith(root + b"/"):
            continue  # (never outside the folder)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as fh:
            fh.write(zf.read(member))
        _set_mode(target, member)


def _set_mode(path: str | bytes | Path, member: zipfile.ZipInfo) -> None:
    """The rwx bits :func:`pack` recorded (``zipfile`` gives every file the default mode)."""
    mode = (member.external_attr >> 16) & 0o777
    if mode:
        os.chmod(path, mode)


def unpack(bundle: Bundle, cache: Path) -> Path:
    """Unpack into ``cache/<digest>/<name>`` (once per cache and name: the digest is of the
    contents alone, so a renamed folder shares its home with the old name); return that path."""
    home = cache / bundle.digest
    target = home / bundle.name
    if target.exists():
        return target
    if bundle.data is None:
        raise InputError(
            f"the shipped {bundle.name!r} ({bundle.digest}) is neither in this worker's cache "
            "nor held by the scheduler any more (it keeps the bundles of recent jobs up to "
            "DASKSCORE_BUNDLE_CACHE_MB); run the job again: it sends them anew."
        )
    cache.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{bundle.digest}-", dir=cache))
    try:
        dest = scratch / bundle.name
        with zipfile.ZipFile(io.BytesIO(bundle.data)) as zf:
            if bundle.is_file:
                dest.write_bytes(zf.read(zf.infolist()[0]))
                _set_mode(dest, zf.infolist()[0])
            else:
                dest.mkdir()
                _extract(zf, dest)
        _publish(scratch, home)
        if not target.exists():  # (home holds the same files under another name: renamed)
            _publish(dest, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def code_files(path: Path, skip: Path | None = None) -> list[tuple[str, Path]]:
    """The files of a code (or model) folder — (name relative to it, path), sorted — as they
    are shipped, fingerprinted and hashed for the warm key: caches and version control
    (:data:`SKIPPED_DIRS`) left out, and so are the output folders of jobs inside it:
    ``skip`` (the job's own output, which may not exist yet) and any subfolder holding what a
    job leaves there (:data:`OUTPUT_MARKERS`).  Symlinked folders are followed, as Python's
    import follows them; a folder reached twice (by its real path: a symlink loop) is walked
    once, and a symlink to nothing is left out (both logged).  A name need not be UTF-8 (it
    stays as the disk has it: ``os.fsencode`` gives its bytes).  A single file: itself."""
    if path.is_file():
        return [(path.name, path)]
    skipped = os.path.realpath(skip) if skip is not None else None
    seen: set[str] = set()
    found = []
    for root, dirs, files in os.walk(path, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            logger.info("not shipping %s again: it is %s, already in the code", root, real)
            dirs[:] = []
            continue
        seen.add(real)
        if root != str(path) and (
            not OUTPUT_MARKERS.isdisjoint(dirs)
            or not OUTPUT_MARKERS.isdisjoint(files)
            or real == skipped
        ):
            dirs[:] = []  # a job's output folder: none of it is code
            continue
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
        for name in sorted(files):
            full = Path(root) / name
            if not full.exists():  # a symlink to nothing: Python could not import it either
                logger.info(
                    "left out %s: a symlink to %s, which does not exist", full, os.readlink(full)
                )
                continue
            found.append((full.relative_to(path).as_posix(), full))
    return found


def _publish(scratch: Path, home: Path) -> None:
    """Move a finished folder into place; another process may have won the race."""
    try:
        os.rename(scratch, home)
    except OSError:
        if not home.exists():
            raise


def fetch_model(url: str, cache: Path) -> Path:
    """Download the model at ``url`` (a file or a folder) into the cache, once; return it."""
    from daskscore.io import storage  # fsspec is imported only when a model is fetched

    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    name = url.rstrip("/").rsplit("/", 1)[-1] or "model"
    home = cache / digest
    if (home / name).exists():
        return home / name
    cache.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{digest}-", dir=cache))
    try:
        fs, root = storage.filesystem(url, verb="reading")
        if fs.isdir(root):
            fs.get(root.rstrip("/") + "/", str(scratch / name), recursive=True)
        else:
            fs.get(root, str(scratch / name))
        _publish(scratch, home)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return home / name


#: Bytes of a file read to tell whether two processes see the same file (with its size).
DIGEST_HEAD = 1 << 20


def file_digests(paths: list[str]) -> list[str | None]:
    """For each file, a sha256 of its size and first :data:`DIGEST_HEAD` bytes, or None when
    this process cannot see it (run on workers to learn whether they share the driver's disk;
    a model file may be large, and the job's manifest, unique to the job, is small)."""
    found: list[str | None] = []
    for path in paths:
        try:
            with open(path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                head = fh.read(DIGEST_HEAD)
        except OSError:
            found.append(None)
            continue
        found.append(hashlib.sha256(str(size).encode() + b"\0" + head).hexdigest())
    return found
