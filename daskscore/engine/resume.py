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
The names are kept too (:data:`INPUTS`, compressed: a few bytes a file), so that a refusal for
a changed file list names the first files removed and added.

The code is what Python imports: the scoring script and every module of the code folder
(:func:`code_stats`), compared byte for byte.  Its other files are not: a job's own script may
write there while it runs (a cache next to ``__file__``), and nothing tells such a write from
an edit; nor are ``__pycache__``, version control, or the output folders of jobs inside it (a
job run with ``code: .`` and ``--output out`` writes into its own code folder).
``--retry-failed`` (:mod:`.retry`) checks the same fingerprint, but for the code and the model,
which may change (they are the fix).

A tabular job's kept mini-batches are matched to the new plan by id, and an id means a range of
one file's rows: ``job.json`` also notes, per tabular input file with rows (:data:`SPLITS`), its
size, modification time, splits, rows and a digest of the rows each split holds
(:meth:`~daskscore.io.splittable.SplitTable.ranges`).  A resume or retry is refused, naming the
files, when any file's digest differs (rows appended, a fix that moved the cuts: the ids would
mean other rows), and goes on when every file's splits hold the rows they held (a fix of the
data in place that keeps them); the size and time are only said in the refusal.  A tabular
job's manifest written before that note was kept is refused: nothing tells whether its ids still
mean the same rows.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import json
import os
import stat
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from daskscore.errors import OutputError
from daskscore.io.shipping import code_files

MANIFEST = "job.json"
#: The input files' names in the staging folder: NUL-separated, zlib-compressed.
INPUTS = "inputs.z"
#: Files named per kind (removed, added) in a refusal.
_NAMED = 3
#: The manifest's key for the tabular inputs' splits (absent in file mode).
SPLITS = "tabular_inputs"
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
            if not _regular(path):  # (a named pipe would wait for a writer: not opened)
                out.append([rel, None, "not a regular file"])
                continue
            data = path.read_bytes()
            out.append([rel, len(data), hashlib.sha256(data).hexdigest()])
    return out


def _regular(path: Path) -> bool:
    """Whether ``path`` is a regular file (a link followed); one gone counts as one (its read
    says so)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return True


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


def split_record(ranges: dict[str, tuple[int, int, str]]) -> dict[str, list[Any]]:
    """Per tabular input file with rows (``ranges``: its splits, rows and digest, from
    :meth:`~daskscore.io.splittable.SplitTable.ranges`): ``[size, mtime_ns, splits, rows,
    digest]``, as :data:`SPLITS` keeps it (the size and time: ``None`` for a file gone)."""
    record = {}
    for path, (n, rows, digest) in ranges.items():
        try:
            st = os.stat(path)
            size, mtime = st.st_size, st.st_mtime_ns
        except OSError:
            size = mtime = None
        record[path] = [size, mtime, n, rows, digest]
    return record


def manifest(fp: dict[str, str], runs: int, splits: dict[str, list[Any]] | None) -> dict[str, Any]:
    """The manifest of a job's run: its fingerprint, the run's number and (tabular) its splits."""
    doc: dict[str, Any] = {"fingerprint": fp, "runs": runs}
    if splits is not None:
        doc[SPLITS] = splits
    return doc


def refresh_model(staging: Path, model: Path | str | None, out_dir: Path | None = None) -> None:
    """Note in the job's manifest the model folder as ``init()`` left it, once it ran on every
    worker: a script may write there (a compiled cache next to the weights, rewritten by every
    ``init()``), and that write is the job's own, not a change a resume must refuse.  What a
    resume compares is then what this job's ``run()`` calls saw.  A URL is left as it was."""
    if model is None or isinstance(model, str):
        return
    doc = read_manifest(staging)
    if doc is None or not isinstance(doc.get("fingerprint"), dict):
        return
    doc["fingerprint"]["model"] = _hash(_model_stats(model, out_dir))
    write_manifest(staging, doc)


def read_manifest(staging: Path) -> dict[str, Any] | None:
    try:
        return json.loads((staging / MANIFEST).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None


def write_manifest(staging: Path, doc: dict[str, Any]) -> None:
    path = staging / MANIFEST
    tmp = path.with_suffix(".partial")
    # one line: the tabular inputs' entries would take a line per value indented
    tmp.write_text(json.dumps(doc, separators=(",", ":")), encoding="utf-8")
    os.replace(tmp, path)


def write_inputs(staging: Path, files: Sequence[str]) -> None:
    """Keep the job's input file names in ``staging`` (:data:`INPUTS`)."""
    packer, tmp = zlib.compressobj(1), staging / f"{INPUTS}.partial"
    with open(tmp, "wb") as fh:
        for start in range(0, len(files), _HASH_CHUNK):
            chunk = "".join(f"{name}\0" for name in files[start : start + _HASH_CHUNK])
            fh.write(packer.compress(chunk.encode("utf-8", "surrogateescape")))
        fh.write(packer.flush())
    os.replace(tmp, staging / INPUTS)


def input_changes(staging: Path, files: Sequence[str]) -> str:
    """`` (f02.txt removed; f00.txt added)``: how ``files`` differ from the names kept in
    ``staging``, the first few of each kind; ``""`` where none were kept."""
    try:
        kept = zlib.decompress((staging / INPUTS).read_bytes())
    except (OSError, zlib.error):
        return ""
    before = set(kept.decode("utf-8", "surrogateescape").split("\0")[:-1])
    now = set(files)
    said = []
    for names, how in ((sorted(before - now), "removed"), (sorted(now - before), "added")):
        if names:
            more = f" and {len(names) - _NAMED:,} more" if len(names) > _NAMED else ""
            said.append(f"{', '.join(repr(n) for n in names[:_NAMED])}{more} {how}")
    return f" ({'; '.join(said)})" if said else ""


def check_resumable(
    previous: dict[str, Any],
    current: dict[str, str],
    output: Path,
    ignore: Sequence[str] = (),
    verb: str = "resume",
    splits: dict[str, list[Any]] | None = None,
    inputs: tuple[Path, Sequence[str]] | None = None,
) -> None:
    """Refuse to resume when the job changed in a way that makes the old results wrong.

    ``ignore``: fingerprint keys that may change (``--retry-failed``: the code and the model,
    which is the fix); ``verb``: ``"resume"`` or ``"retry"`` (the refusal says which);
    ``splits``: a tabular job's :func:`split_record` (None in file mode), compared file by
    file with the one ``previous`` noted (:func:`check_splits`); ``inputs``: the staging
    folder and the job's input files, to name those added or removed (:func:`input_changes`).
    """
    old = previous.get("fingerprint", {})
    changed = [key for key in current if key not in ignore and old.get(key) != current[key]]
    if not changed:
        if splits is not None:
            check_splits(previous, splits, output, verb)
        return
    detail = input_changes(*inputs) if inputs is not None and "inputs" in changed else ""
    what = "; ".join(WHAT[key] + (detail if key == "inputs" else "") for key in changed)
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


def check_splits(
    previous: dict[str, Any], current: dict[str, list[Any]], output: Path, verb: str
) -> None:
    """Refuse when a tabular input file's splits hold other rows than when ``previous`` (the
    manifest of the runs whose mini-batches are kept) was written, naming the files; or when
    ``previous`` noted none (written before they were noted)."""
    retry, head = verb == "retry", _cannot(output, verb)
    before = previous.get(SPLITS)
    if not isinstance(before, dict):
        raise OutputError(
            f"{head}: it is a tabular job whose job.json was written by an earlier version of "
            "daskscore, which did not note which rows each input file's mini-batches hold, so "
            "whether the mini-batches it kept still hold the rows of their ids cannot be told "
            "(rows could be lost or scored twice). Pass --overwrite to run the whole job "
            "again, or use another --output."
        )
    then = {path: entry_of(value) for path, value in before.items()}
    moved = sorted(
        path
        for path in {*then, *current}
        if (then.get(path) or NO_ROWS)[4] != (current.get(path) or NO_ROWS)[4]
    )
    if moved:
        raise _changed_rows(head, then, current, moved, retry)


def check_uncut(
    previous: dict[str, Any], current: dict[str, list[Any]], outcomes: Any, output: Path, verb: str
) -> None:
    """Refuse when a CSV file that is not cut (one mini-batch, its rows counted as its lines
    until read) has other lines than when ``previous`` was written, and its mini-batch is kept
    (final in ``outcomes``, restored from the earlier runs): its id still means the whole file,
    so :func:`check_splits` takes it, but the rows kept are the ones it held then (rows
    appended since would be missing).  One to be run again reads the file as it is now."""
    before = previous.get(SPLITS)
    if not isinstance(before, dict):
        return
    then = {path: entry_of(before.get(path)) for path in current}
    grown = {
        path
        for path, now in current.items()
        if then[path] is not None and then[path][4] == now[4] and then[path][3] != now[3]
    }
    if not grown:
        return
    kept = sorted(
        {path for path, ids in outcomes.work.ids_of(grown) if any(map(outcomes.is_final, ids))}
    )
    if kept:
        raise _changed_rows(_cannot(output, verb), then, current, kept, verb == "retry")


def _cannot(output: Path, verb: str) -> str:
    """How a refused resume or retry (``verb``) of the job in ``output`` begins."""
    if verb == "retry":
        return f"cannot retry the failed mini-batches of the job in '{output}'"
    return f"cannot resume the job in '{output}'"


def _changed_rows(
    head: str,
    then: dict[str, list[Any] | None],
    current: dict[str, list[Any]],
    moved: list[str],
    retry: bool,
) -> OutputError:
    """The refusal of a resume or retry (``retry``) whose tabular files ``moved`` hold other
    rows under their mini-batch ids than they did."""
    shown = "; ".join(changed_file(path, then.get(path), current.get(path)) for path in moved[:5])
    more = f"; and {len(moved) - 5} more" if len(moved) > 5 else ""
    many = len(moved) > 1
    files = f"input files {shown}{more}" if many else f"input file {shown}"
    if retry:
        advice = (
            "A fix of the data keeps a retry possible only where every mini-batch of a file "
            "keeps its rows (with 'N rows' mini-batches: as many rows in the file; with a byte "
            "size: cuts at the same rows, as a fix that keeps the file's length and its line "
            "ends gives); a fix that moves rows needs the whole job run again. Nothing was "
            "changed in the folder: pass --overwrite to run the whole job again, or use "
            "another --output."
        )
    else:
        advice = (
            f"Put the {'files' if many else 'file'} back as {'they were' if many else 'it was'} "
            "to resume, or pass --overwrite to start the job again from the beginning, or use "
            "another --output."
        )
    return OutputError(
        f"{head}: its tabular {files} changed since it {'ran' if retry else 'started'} so that "
        f"{'their' if many else 'its'} mini-batches hold other rows. The mini-batches kept are "
        f"matched to the new ones by id, so rows would be lost or scored twice. {advice}"
    )


#: The entry in :data:`SPLITS` of a file with no rows (it has none).
NO_ROWS: list[Any] = [None, None, 0, 0, ""]


def entry_of(value: Any) -> list[Any] | None:
    """A file's entry in a manifest's :data:`SPLITS`; one that is not as :func:`split_record`
    writes it (a damaged file) as if the file had no rows (it then differs)."""
    ok = isinstance(value, list) and len(value) == len(NO_ROWS) and isinstance(value[2], int)
    return value if ok and isinstance(value[3], int) else None


def changed_file(path: str, then: list[Any] | None, now: list[Any] | None) -> str:
    """``path (1,000 rows in 20 mini-batches then, 2,000 rows in 40 mini-batches now; 6,890
    bytes then, 13,890 now)``: a changed file, for the refusal."""
    rows_then, rows_now = _rows(then), _rows(now)
    said = [
        f"{rows_then} then, {rows_now} now"
        if rows_then != rows_now
        else f"{rows_now} then and now, cut at other rows"
    ]
    if then and now and None not in (then[0], now[0]):
        if then[0] != now[0]:
            said.append(f"{then[0]:,} bytes then, {now[0]:,} now")
        elif then[1] != now[1]:
            said.append("the same size, modified since")
    return f"{path} ({'; '.join(said)})"


def _rows(entry: list[Any] | None) -> str:
    if not entry:
        return "no rows"
    n, rows = entry[2], entry[3]
    return f"{rows:,} row{'s' * (rows != 1)} in {n:,} mini-batch{'es' * (n != 1)}"
