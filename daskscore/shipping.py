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
  (:class:`RelayLedger`): a worker process that dies mid-call leaves there which mini-batch and
  try it was running, and whether the watchdog ended it for a timeout.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .ledger import LedgerState, LedgerWriter

logger = logging.getLogger("daskscore")

#: Scheduler metadata lives under ("daskscore", job_id, attempt).
METADATA_ROOT = "daskscore"
#: Folders never shipped with the code: caches and version control.
SKIPPED_DIRS = {"__pycache__", ".git", ".hg", ".svn", ".ipynb_checkpoints", ".mypy_cache"}
#: A fixed timestamp for every zip entry, so the same files always make the same bundle.
_ZIP_TIME = (2000, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Bundle:
    """A folder (or one file) as a deterministic zip, named by the hash of its contents."""

    name: str
    digest: str
    data: bytes
    is_file: bool = False

    @classmethod
    def of(cls, path: Path) -> Bundle:
        """Pack ``path`` (a folder, walked recursively, or a single file)."""
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            for rel, full in _walk(path):
                info = zipfile.ZipInfo(rel, _ZIP_TIME)
                info.external_attr = (os.stat(full).st_mode & 0o777) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                with open(full, "rb") as fh:
                    zf.writestr(info, fh.read())
        data = buffer.getvalue()
        digest = hashlib.sha256(data).hexdigest()[:16]
        return cls(path.name, digest, data, path.is_file())

    def unpack(self, cache: Path) -> Path:
        """Unpack into ``cache/<digest>/<name>`` (once per cache); return that path."""
        home = cache / self.digest
        target = home / self.name
        if target.exists():
            return target
        cache.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{self.digest}-", dir=cache))
        try:
            dest = scratch / self.name
            with zipfile.ZipFile(io.BytesIO(self.data)) as zf:
                if self.is_file:
                    dest.write_bytes(zf.read(self.name))
                else:
                    dest.mkdir()
                    zf.extractall(dest)
            _publish(scratch, home)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return target


def _walk(path: Path) -> list[tuple[str, Path]]:
    if path.is_file():
        return [(path.name, path)]
    found = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
        for name in sorted(files):
            full = Path(root) / name
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
    from . import storage

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


# ----------------------------------------------------------------------------- the relay ledger


def _metadata_key(job_id: str, attempt: str) -> list[str]:
    return [METADATA_ROOT, job_id, attempt]


class RelayLedger(LedgerWriter):
    """A worker-local ledger that also tells the scheduler which ``run()`` is in flight.

    The part file and ledger are written as on a shared disk (in the worker's own staging
    folder); ``started``/``finished``/``timed_out`` are also set, synchronously, in the
    scheduler's metadata, which outlives the worker process.
    """

    def __init__(self, staging: str | Path, attempt: str, job_id: str) -> None:
        from distributed import get_worker

        super().__init__(staging, attempt)
        self.key = _metadata_key(job_id, attempt)
        # found now, in the task's thread: the watchdog thread that calls timed_out() has none
        self.worker = get_worker()
        self.entry: dict[str, Any] = {"running": None, "timed_out": None}

    def claim(self) -> bool:
        """Mark the attempt as started; False if it started before (its process died)."""
        if self._call("get_metadata", keys=self.key, default=None) is not None:
            return False
        self._send()
        return True

    def started(self, mini_batch: int, attempt: int, worker: str, start: float) -> None:
        super().started(mini_batch, attempt, worker, start)
        self.entry["running"] = [mini_batch, attempt, start, worker]
        self._send()

    def finished(self, mini_batch: int) -> None:
        super().finished(mini_batch)
        self.entry["running"] = None
        self._send()

    def timed_out(self, mini_batch: int) -> None:
        super().timed_out(mini_batch)
        self.entry["timed_out"] = mini_batch
        self._send()

    def _send(self) -> None:
        self._call("set_metadata", keys=self.key, value=dict(self.entry))

    def _call(self, op: str, **kwargs: Any) -> Any:
        """Call a scheduler handler from a task (or watchdog) thread, and wait for it."""
        from distributed.utils import sync

        return sync(self.worker.loop, getattr(self.worker.scheduler, op), **kwargs)


def relay_state(client: Any, job_id: str, attempt: str) -> LedgerState:
    """What the scheduler knows of an attempt whose process died (driver side)."""
    state = LedgerState()
    try:
        entry = client.get_metadata(_metadata_key(job_id, attempt), default=None)
    except Exception:  # noqa: BLE001 - a scheduler that lost it knows nothing: run it again
        logger.debug("reading the relay ledger of %s failed", attempt, exc_info=True)
        entry = None
    if not entry:
        return state
    state.exists = True
    running = entry.get("running")
    if running:
        state.running = (int(running[0]), int(running[1]))
        state.running_start, state.running_worker = running[2], str(running[3])
        state.timed_out = entry.get("timed_out") == running[0]
    return state


def forget_job(client: Any, job_id: str) -> None:
    """Drop a finished job's entries from the scheduler's metadata."""
    try:
        client.set_metadata([METADATA_ROOT, job_id], {})
    except Exception:  # noqa: BLE001 - housekeeping only
        logger.debug("clearing the job's metadata failed", exc_info=True)


# ----------------------------------------------------------------------------- files coming back


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
    """Write files that came back from a worker under ``folder`` (names are relative)."""
    for rel, data in files.items():
        dest = (folder / rel).resolve()
        if folder.resolve() not in dest.parents:
            logger.warning("ignored a returned file outside %s: %s", folder, rel)
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(dest, "ab" if append else "wb") as fh:
            fh.write(data)


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
