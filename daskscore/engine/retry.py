"""``--retry-failed``: the failed mini-batches of a finished job run again in its output folder.

A job that ends with anything left to do (mini-batches that failed, returned fewer results than
items, or never ran because ``error_threshold`` cancelled them or ``init()`` failed) keeps its
staging folder: before its summary it writes the books of the mini-batches that did not go
cleanly (:data:`BOOK`: every try, numbered, and the final try), and once the summary is written
the folder is renamed ``.daskscore-kept/`` in one step
(:func:`daskscore.io.outputdir.keep_staging`).  Every part file stays, so the output can be
assembled again, in any format, from the rows of the mini-batches that succeeded and the new
rows of those run again.

A retry pass (:func:`restore`) checks the job as ``--resume`` does, except that the scoring
script, its code folder and the model may have changed (that is the fix); the input file list,
the mini-batching and the output settings may not, nor (tabular) the rows each mini-batch of a
file holds: the data may be fixed in place only where every mini-batch keeps its rows.  It
restores the clean mini-batches from the ledgers, the others from the book, and opens again
those that failed, returned too few results or never ran; their earlier tries stay in the
history and this pass's are numbered after them.  The staging folder is renamed back to
``.daskscore/`` and the job runs as a resumed one; the old summary and predictions stay until
the pass writes new ones, so a pass killed half-way leaves the folder as the previous pass left
it (plus the new ledgers), ready for ``--retry-failed`` again.  The book notes the pass that
wrote it (:func:`book_run`): the ledgers of later passes are those of passes stopped (Ctrl-C)
or killed before their summary, and the next pass keeps what they committed
(:meth:`~daskscore.engine.rebook.RetryBooks.fold_later`), running only the rest.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from daskscore.engine import resume
from daskscore.engine.outcomes import Outcomes
from daskscore.errors import OutputError
from daskscore.io import outputdir
from daskscore.io.ledger import BOOK_FILE, read_ledger
from daskscore.protocol import MiniBatchRecord

logger = logging.getLogger("daskscore")

#: The books of the mini-batches a pass did not settle cleanly, one JSON line each.
BOOK = BOOK_FILE
#: What may change between a job and a retry of its failures: the fix.
MAY_CHANGE = ("code", "model")
#: Mini-batch ids named in the summary's texts before "and N more".
SHOWN_IDS = 20


def left_to_do(summary: dict[str, Any]) -> int:
    """Mini-batches of a finished job (its ``job_summary.json``) a retry would run again."""
    keys = ("failed_mini_batches", "partial_mini_batches", "not_run_mini_batches")
    return sum(int(summary.get(key) or 0) for key in keys)


def needs_keeping(outcomes: Outcomes) -> bool:
    """Whether a finished job has anything a retry would run again (its staging is kept)."""
    return bool(
        outcomes.failed_mini_batches()
        or outcomes.partial_mini_batches()
        or len(outcomes.final) < len(outcomes.work)
    )


def clear_leftovers(out_dir: Path) -> None:
    """Remove what a job in ``out_dir`` left that nothing needs (any job there does, whatever
    it is): a finished job's staging folder beside its summary (the job killed between the
    two) when the summary leaves nothing to retry or the folder holds no book; a staging
    folder with no ``job.json`` and nothing staged (its job killed as it made it: not a job);
    and the trash folders of staging folders being deleted."""
    staging = out_dir / outputdir.STAGING_DIR
    if staging.is_dir() and not outputdir.finished(out_dir) and _never_started(staging):
        logger.info("removing %s: a job killed as it started left it empty", staging)
        outputdir.discard_staging(staging, "unstarted")
    elif staging.is_dir() and outputdir.finished(out_dir):
        try:
            summary = json.loads((out_dir / outputdir.SUMMARY_FILE).read_text("utf-8"))
            job_id = str(summary["job_id"])
        except (OSError, ValueError, TypeError, KeyError):
            return  # (not a summary this version wrote: left to --overwrite)
        if not left_to_do(summary) or not (staging / BOOK).is_file():
            logger.info("removing %s, left by the finished job %s", staging, job_id)
            outputdir.discard_staging(staging, job_id)
    if out_dir.is_dir():
        outputdir.clear_trash(out_dir)


def _never_started(staging: Path) -> bool:
    """Whether ``staging`` holds no ``job.json`` and no part file or ledger: made by a job
    killed before it wrote its manifest, nothing scored."""
    if (staging / resume.MANIFEST).exists():
        return False
    return not any(p.is_file() for sub in ("parts", "ledger") for p in (staging / sub).rglob("*"))


def put_away(staging: Path, job_id: str, keep: bool) -> None:
    """A finished job's staging folder, once its summary is written: kept for a retry
    (``keep``, its book written), else discarded."""
    if keep:
        kept = outputdir.keep_staging(staging, job_id)
        logger.info("staged results kept in %s for --retry-failed", kept)
    else:
        outputdir.discard_staging(staging, job_id)


def write_book(staging: Path, outcomes: Outcomes) -> Path:
    """Write the books of the mini-batches kept whole into ``staging`` (atomically)."""
    path = staging / BOOK
    tmp = path.with_name(BOOK + ".partial")
    texts: dict[str, int] = {}  # each error text is written once, in a line of its own
    run = int((resume.read_manifest(staging) or {}).get("runs", 1))
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps({"run": run}) + "\n")  # (the pass that wrote it: book_run)
        for tries, final in outcomes.book():
            recs = [_booked(rec, texts, fh) for rec in (*tries, final) if rec is not None]
            entry = {"tries": recs[: len(tries)], "final": recs[-1] if final else None}
            fh.write(json.dumps(entry, separators=(",", ":"), default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def _booked(rec: MiniBatchRecord, texts: dict[str, int], fh: Any) -> dict[str, Any]:
    """``rec`` as the book keeps it: its error text as the number of a ``{"text": n,
    "error": ...}`` line, written before its first use (a failure repeated over thousands of
    mini-batches and tries: one line, not one copy each)."""
    data = rec.to_json()
    if rec.error:
        ref = texts.get(rec.error)
        if ref is None:
            ref = texts[rec.error] = len(texts)
            fh.write(json.dumps({"text": ref, "error": rec.error}, separators=(",", ":")) + "\n")
        data["error"], data["error_ref"] = "", ref
    return data


def read_book(
    staging: Path,
) -> dict[int, tuple[list[MiniBatchRecord], MiniBatchRecord | None]]:
    """The books :func:`write_book` wrote, by mini-batch."""
    books: dict[int, tuple[list[MiniBatchRecord], MiniBatchRecord | None]] = {}
    texts: dict[int, str] = {}
    with open(staging / BOOK, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            entry = json.loads(line)
            if "run" in entry:
                continue
            if "text" in entry:
                texts[entry["text"]] = entry["error"]
                continue
            tries = [_record(r, texts) for r in entry["tries"]]
            final = _record(entry["final"], texts) if entry["final"] else None
            mb = tries[0].mini_batch if tries else final.mini_batch if final else None
            if mb is not None:
                books[mb] = (tries, final)
    return books


def book_run(staging: Path) -> int | None:
    """The number of the pass that wrote the book in ``staging`` (None: a book written before
    it was noted): the ledgers of later passes are those of passes interrupted (or killed)
    since, whose committed mini-batches the next pass keeps."""
    try:
        with open(staging / BOOK, encoding="utf-8") as fh:
            entry = json.loads(fh.readline() or "{}")
    except (OSError, ValueError):
        return None
    run = entry.get("run") if isinstance(entry, dict) else None
    return run if isinstance(run, int) else None


def _record(data: dict[str, Any], texts: dict[int, str]) -> MiniBatchRecord:
    """A record of the book (JSON gives a list where the record holds a tuple), its error
    text looked up (one text, one object, for every try that failed with it)."""
    if isinstance(data.get("items"), list):
        data = {**data, "items": tuple(data["items"])}
    if "error_ref" in data:
        data = {**data, "error": texts[data["error_ref"]]}
    return MiniBatchRecord.from_json(data)


def restore(
    outcomes: Outcomes,
    kept: Path,
    fingerprint: dict[str, str],
    out_dir: Path,
    splits: dict[str, list[Any]] | None = None,
    files: Sequence[str] | None = None,
) -> tuple[int, list[int]]:
    """Fold a finished job's books into ``outcomes`` (from its kept staging folder ``kept``)
    and reopen what is left to do; return this pass's run number and the mini-batches it runs
    (``splits``: a tabular job's, which must hold the rows they held, file by file; ``files``:
    the job's inputs, those added or removed named in a refusal).

    Raises
    ------
    OutputError
        The job changed in what decides its rows (nothing in the folder was changed), or its
        kept staging folder cannot be read.
    """
    previous = resume.read_manifest(kept)
    if previous is None or not (kept / BOOK).is_file():
        raise OutputError(
            f"cannot retry the failed mini-batches of the job in '{out_dir}': its kept staging "
            f"folder {kept.name}/ has no job.json or {BOOK} (it was not left by a job of this "
            "version of daskscore, or it was changed). Pass --overwrite to run the whole job "
            "again."
        )
    inputs = (kept, files) if files is not None else None
    resume.check_resumable(
        previous, fingerprint, out_dir, MAY_CHANGE, "retry", splits=splits, inputs=inputs
    )
    try:
        books = read_book(kept)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise OutputError(
            f"cannot retry the failed mini-batches of the job in '{out_dir}': "
            f"{kept.name}/{BOOK} cannot be read ({type(exc).__name__}: {exc}). Pass --overwrite "
            "to run the whole job again."
        ) from None
    later: list[str] = []  # (the ledgers of passes after the book's, interrupted or killed)
    run = book_run(kept)
    for attempt in _ledgers(kept):  # (the tries a dead process was charged: D lines)
        committed = _tried(kept, attempt)
        outcomes.restore(attempt, [r for r in committed if r.mini_batch not in books])
        if run is not None and int(attempt[1:].split("a", 1)[0]) > run:
            later.append(attempt)
    rerun = outcomes.reopen(books[mb] for mb in sorted(books))
    if later:  # what they committed is kept, their tries numbered after the book's
        book = f"r{run:02d}"
        for attempt in later:
            committed = _tried(kept, attempt)
            outcomes.fold_later(attempt, [r for r in committed if r.mini_batch in books], book)
        folded = [mb for mb in rerun if outcomes.is_final(mb)]
        rerun = [mb for mb in rerun if not outcomes.is_final(mb)]
        if folded:
            logger.info("kept %s an interrupted retry pass committed", describe(folded))
    if splits is not None:  # (a file not cut whose kept mini-batch read other lines)
        resume.check_uncut(previous, splits, outcomes, out_dir, "retry")
    return int(previous.get("runs", 1)) + 1, rerun


def _tried(staging: Path, attempt: str) -> list[MiniBatchRecord]:
    """What an attempt's ledger says it tried: its commits, and the tries the driver charged
    to it once its process died (a pass stopped before its book keeps them nowhere else)."""
    state = read_ledger(staging, attempt)
    return state.committed + state.charged


def _ledgers(staging: Path) -> Iterator[str]:
    """The attempts whose ledgers are in ``staging``, in run order."""
    return (p.stem for p in sorted((staging / "ledger").glob("*.log")))


def describe(mbs: list[int]) -> str:
    """``3 mini-batches (2, 5, 7)``, the ids cut after :data:`SHOWN_IDS`."""
    if not mbs:  # (an interrupted pass had run them all)
        return "no mini-batch"
    shown = ", ".join(str(mb) for mb in mbs[:SHOWN_IDS])
    more = f" and {len(mbs) - SHOWN_IDS} more" if len(mbs) > SHOWN_IDS else ""
    return f"{len(mbs)} mini-batch{'es' if len(mbs) != 1 else ''} ({shown}{more})"


def finished_summary(out_dir: Path) -> dict[str, Any]:
    """The ``job_summary.json`` of the finished job in ``out_dir``; an :class:`OutputError`
    when the folder holds no finished job (none at all, or an interrupted one)."""
    try:
        summary = json.loads((out_dir / outputdir.SUMMARY_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        if (out_dir / outputdir.STAGING_DIR).is_dir():
            raise OutputError(
                f"output folder '{out_dir}' holds an unfinished job (it was interrupted: its "
                f"staging folder {outputdir.STAGING_DIR}/ is there, and no "
                f"{outputdir.SUMMARY_FILE}); --retry-failed runs again the failures of a "
                "finished job. Pass --resume to finish it where it stopped."
            ) from None
        raise OutputError(
            f"output folder '{out_dir}' holds no finished job (no {outputdir.SUMMARY_FILE}); "
            "--retry-failed runs again the failed mini-batches of a job that ran there. Run "
            "the job without it first."
        ) from None
    except ValueError as exc:
        raise OutputError(
            f"cannot read {out_dir / outputdir.SUMMARY_FILE} ({exc}); pass --overwrite to run "
            "the whole job again."
        ) from None
    if isinstance(summary, dict) and summary.get("status") == outputdir.INTERRUPTED:
        raise OutputError(
            f"output folder '{out_dir}' holds an interrupted job ({outputdir.SUMMARY_FILE} says "
            f"{outputdir.INTERRUPTED}); --retry-failed runs again the failures of a finished "
            "job. Pass --resume to finish it where it stopped."
        )
    return dict(summary)


def kept_staging(out_dir: Path) -> Path:
    """The kept staging folder of the finished job in ``out_dir`` (see
    :func:`daskscore.io.outputdir.find_kept`), or an :class:`OutputError` saying why there is
    none."""
    kept = outputdir.find_kept(out_dir)
    if kept is None:
        raise OutputError(
            f"cannot retry the failed mini-batches of the job in '{out_dir}': its staged "
            f"results ({outputdir.KEPT_DIR}/) are gone (removed by hand, or the job was run by "
            "an older version of daskscore), so the output could not be assembled again. "
            "Pass --overwrite to run the whole job again."
        )
    return kept
