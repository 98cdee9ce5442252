"""When a job may reuse workers that an earlier job initialised: :func:`init_key`.

On a cluster that outlives its jobs (``daskscore cluster start``, or a caller's ``client=``)
each job's script stays initialised in the workers after the job, and the next job with the
same key takes it over without calling ``init()`` again (see :mod:`daskscore.worker.plugin`).
The key is a hash of everything ``init()`` can depend on: the code folder's contents, the model
(its files' names, sizes and modification times, or its URL), ``environment_variables`` (and
on a warm cluster the driver's storage variables, see ``WorkerJob.storage_env``), and
the settings the worker applies before ``init()`` — the logging level, the intra-op threads,
the GPUs, the resources — where the code and model are, and the output folder (``init()`` may
keep ``AZUREML_BI_OUTPUT_PATH``; a shipped job's is its own, so it never takes an install
over).  Any change makes a new key: the
workers then uninstall the old script (its ``shutdown()`` runs) and initialise the new one.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

from daskscore.io.shipping import code_files
from daskscore.protocol import WorkerJob

#: Bumped when the meaning of a key changes, so that no older key matches.
KEY_VERSION = 2


def init_key(job: WorkerJob) -> str:
    """The hash of what the script's ``init()`` depends on, for ``job`` (16 hex digits)."""
    parts: dict[str, Any] = {
        "version": KEY_VERSION,
        "code": job.code,
        "script": job.script,
        "code_digest": folder_digest(Path(job.code), skip=Path(job.output)),
        "model": job.model_url or job.model_path,
        "model_files": None if job.model_url or not job.model_path else listing(job.model_path),
        "env": sorted(job.env.items()),
        "logging_level": job.logging_level,
        "intra_op_threads": job.intra_op_threads,
        "gpu_ids": list(job.gpu_ids),
        "resources": sorted(job.resources.items()),
        "shipped": job.shipped,
        # the output folder: init() may keep AZUREML_BI_OUTPUT_PATH in a global (Azure's
        # custom-output example does), and a job that took it over wrote its files into the
        # earlier job's folder; a shipped job's is a folder of its own on each worker
        "output": job.job_id if job.shipped else job.output,
        # (a warm cluster's job: its driver's storage credentials, which init() may read)
        "storage_env": sorted((job.storage_env or {}).items()),
    }
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def folder_digest(root: Path, skip: Path | None = None) -> str:
    """The hash of a folder's files, names and contents (caches, version control and job
    outputs left out — ``skip``: the job's own — as when the code is shipped).  A file that
    cannot be read counts as unreadable; so does one that is not a regular file, unopened (a
    named pipe's open waits for a writer)."""
    digest = hashlib.sha256()
    for rel, full in code_files(root, skip):
        digest.update(os.fsencode(rel) + b"\0")
        try:
            if not stat.S_ISREG(os.stat(full).st_mode):
                raise OSError(0, "not a regular file")
            with open(full, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):  # noqa: B023 - fh is local
                    digest.update(chunk)
        except OSError:
            digest.update(b"\1unreadable")
        digest.update(b"\0")
    return digest.hexdigest()


def listing(path: str) -> list[tuple[str, int, int]]:
    """A model's files: name, size and modification time (ns) of each (not their contents:
    a model may be gigabytes)."""
    out = []
    for rel, full in code_files(Path(path)):
        try:
            st = os.stat(full)
        except OSError:
            continue
        out.append((rel, st.st_size, st.st_mtime_ns))
    return out
