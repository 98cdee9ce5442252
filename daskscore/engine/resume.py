"""Resuming a job: the fingerprint of what makes old results valid, and the staging manifest.

A job keeps its staging folder (``<output>/.daskscore/``: part files, ledgers, and
``job.json``) until it has written its summary (a staging folder beside ``job_summary.json`` is
a finished job's, left by a kill as it was removed: nothing to resume).  Part files and ledgers
keep their names across runs (``r<run>a<seq>-<job id>``): a resumed job reads the earlier runs'
ledgers and keeps their part files as they are.  ``job.json`` holds the job's fingerprint;
``--resume`` compares it with the new job's and refuses when anything that decides the rows
changed: the scoring script and its code folder, the model files, the input file list,
mini-batching, or the output settings.  The fingerprint is cheap for large inputs: the input
files' names; the model files' names, sizes and modification times; the code folder's code.

The code is what Python imports: the scoring script and every module of the code folder
(:func:`code_stats`), compared byte for byte.  Its other files are not: a job's own script may
write there while it runs (a cache next to ``__file__``), and nothing tells such a write from
an edit; nor are ``__pycache__``, version control, or the output folders of jobs inside it (a
job run with ``code: .`` and ``--output out`` writes into its own code folder).
``--retry-failed`` (:mod:`.retry`) checks the same fingerprint, but for the code and the model,
which may change (they are the fix).
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from daskscore.errors import OutputError
from daskscore.io.shipping import code_files

MANIFEST = "job.json"
#: Input names hashed at a time.
_HASH_CHUNK = 10_000
#: What each fingerprint key means, for the refusal message.
WHAT = {
    "code": "the scoring script or its code folder",
    "model": "the model files",
    "inputs": "the input file list",
    "mini_batches": "the mini-batching (mini_batch_size, tabular mode)",
    "output": "the output settings (output_action/format, file name, to_csv arguments, "
    "partitioning, carried columns)",
}


def _hash(items: Any) -> str:
    return hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()


def _tree_stats(root: Path, contents: bool, skip: Path | None = None) -> list[Any]:
    """Name, size and contents (or mtime) of each file under ``root``; ``skip``: the job's
    output folder, left out should it lie inside (a model path of ``.``: its writes are no
    change of the model's)."""
    if root.is_file():
        st = root.stat()
        return [[root.name, st.st_size, root.read_bytes().hex() if contents else st.st_mtime_ns]]
    out = []
    inside = _inside(skip, root)
    for path in sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and not (inside and _under(p, inside))
    ):
        st = path.stat()
        marker = hashlib.sha256(path.read_bytes()).hexdigest() if contents else st.st_mtime_ns
        out.append([path.relative_to(root).as_posix(), st.st_size, marker])
    return out


#: What Python imports from a folder: sources, sourceless bytecode, extension modules.
CODE_SUFFIXES = tuple(importlib.machinery.all_suffixes())


def code_stats(code: Path, script: Path | None = None, skip: Path | None = None) -> list[Any]:
    """The code folder's code: name, size and SHA-256 of the scoring script and of each file
    Python may import (:data:`CODE_SUFFIXES`), job outputs inside it left out (``skip``: the
    job's own, see :func:`~daskscore.io.shipping.code_files`)."""
    out = []
    for rel, path in code_files(code, skip):
        if path.name.endswith(CODE_SUFFIXES) or (script is not None and path == script):
            data = path.read_bytes()
            out.append([rel, len(data), hashlib.sha256(data).hexdigest()])
    return out


def _inside(folder: Path | None, root: Path) -> Path | None:
    """``folder`` resolved, when it lies inside ``root``."""
    if folder is None:
        return None
    resolved = Path(folder).resolve()
    return resolved if _under(resolved, Path(root).resolve()) else None


def _under(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.resolve().parents


def _model_stats(model: Path | str | None, skip: Path | None = None) -> Any:
    if model is None:
        return None
    if isinstance(model, str):  # a URL: its listing's names, sizes and etags or times
        from daskscore.io import storage

        fs, root = storage.filesystem(model, verb="reading")
        return [model, sorted(_remote_stat(i) for i in fs.find(root, detail=True).values())]
    return _tree_stats(model, contents=False, skip=skip)


def _remote_stat(info: dict[str, Any]) -> list[Any]:
    marker = info.get("ETag") or info.get("etag") or info.get("LastModified") or info.get("mtime")
    return [str(info.get("name")), info.get("size"), str(marker)]


def _hash_names(files: Sequence[str]) -> str:
    """:func:`_hash` of the list of ``files`` (names only: a stat() per input costs ~0.5 s per
    100,000 files on every job start), hashed a chunk at a time: the same digest, without the
    whole list as one JSON string (tens of bytes per file)."""
    digest = hashlib.sha256(b"[")
    for start in range(0, len(files), _HASH_CHUNK):
        chunk = json.dumps(list(files[start : start + _HASH_CHUNK]))[1:-1]
        digest.update((", " + chunk if start else chunk).encode())
    digest.update(b"]")
    return digest.hexdigest()


def fingerprint(
    code: Path,
    model: Path | str | None,
    files: Sequence[str],
    batching: Any,
    output: Any,
    script: Path | None = None,
    out_dir: Path | None = None,
) -> dict[str, str]:
    """The job's fingerprint: one hash per thing that decides its rows (``script``: the
    scoring script; ``out_dir``: the job's output folder, left out of the code folder's)."""
    return {
        "code": _hash(code_stats(code, script, out_dir)),
        "model": _hash(_model_stats(model, out_dir)),
        "inputs": _hash_names(files),
        "mini_batches": _hash(batching),
        "output": _hash(output),
    }


def refresh_model(staging: Path, model: Path | str | None, out_dir: Path | None = None) -> None:
    """Note in the job's manifest the model folder as ``init()`` left it, once it ran on every
    worker: a script may write there (a compiled cache next to the weights, rewritten by every
    ``init()``), and that write is the job's own, not a change a resume must refuse.  What a
    resume compares is then what this job's ``run()`` calls saw.  A URL is left as it was."""
    if model is None or isinstance(model, str):
        return
    manifest = read_manifest(staging)
    if manifest is None or not isinstance(manifest.get("fingerprint"), dict):
        return
    manifest["fingerprint"]["model"] = _hash(_model_stats(model, out_dir))
    write_manifest(staging, manifest)


def read_manifest(staging: Path) -> dict[str, Any] | None:
    try:
        return json.loads((staging / MANIFEST).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None


def write_manifest(staging: Path, manifest: dict[str, Any]) -> None:
    path = staging / MANIFEST
    tmp = path.with_suffix(".partial")
    tmp.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    os.replace(tmp, path)


def check_resumable(
    previous: dict[str, Any],
    current: dict[str, str],
    output: Path,
    ignore: Sequence[str] = (),
    verb: str = "resume",
) -> None:
    """Refuse to resume when the job changed in a way that makes the old results wrong.

    ``ignore``: fingerprint keys that may change (``--retry-failed``: the code and the model,
    which is the fix); ``verb``: ``"resume"`` or ``"retry"`` (the refusal says which).
    """
    old = previous.get("fingerprint", {})
    changed = [key for key in current if key not in ignore and old.get(key) != current[key]]
    if not changed:
        return
    what = "; ".join(WHAT[key] for key in changed)
    if verb == "retry":
        raise OutputError(
            f"cannot retry the failed mini-batches of the job in '{output}': {what} changed "
            "since it ran, so the rows it kept would not match a run of the job as it is now "
            "(only the scoring script, its code folder and the model may change for "
            "--retry-failed). Nothing was changed in the folder. Pass --overwrite to run the "
            "whole job again, or use another --output."
        )
    raise OutputError(
        f"cannot resume the job in '{output}': {what} changed since it started, so its "
        "results so far would not match a run of the job as it is now. Pass --overwrite "
        "to start it again from the beginning, or use another --output."
    )
