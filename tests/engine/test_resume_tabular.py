"""``--resume`` and ``--retry-failed`` of tabular jobs whose input files changed in between.

A tabular job's mini-batch ids mean ranges of one file's rows; the mini-batches a resume or a
retry keeps are matched to the new plan by id.  An input file that changed so that its
mini-batches hold other rows (rows appended; a fix of the data that moves the cuts) is refused,
the file named and nothing in the output changed: the ids would mean other rows, and rows would
be lost or scored twice.  A change that keeps every mini-batch's rows (a fix in place that keeps
the file's cuts) goes on, and gives each row once, as a clean run of the changed job.

The jobs run the real CLI in a subprocess, on 2 workers, over two CSV files ``a.csv`` and
``b.csv`` whose column ``id`` names each row (``a0``, ``a1``... ``b0``...).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from helpers import cli, cli_args, kill_tree, make_job, show, start_cli, summary_of, wait_until

from daskscore.engine.resume import MANIFEST
from daskscore.io.ledger import read_ledger

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SCRIPT = """
    import os
    import time

    import pandas as pd

    def init():
        pass

    def run(mini_batch):
        env = os.environ
        # HOLD: the first id of a mini-batch that waits until the file GO exists
        while mini_batch["id"].iloc[0] == env.get("HOLD") and not os.path.exists(env["GO"]):
            open(env["HELD"], "w").close()
            time.sleep(0.05)
        return pd.DataFrame({"id": mini_batch["id"], "row": mini_batch.index})
"""


def _job(tmp_path: Path, size: str, **env: str) -> tuple[Path, Path, Path]:
    """The job of :data:`SCRIPT` in mini-batches of ``size`` (its input files written by the
    test); (deployment, input, output)."""
    dep, inputs, out = make_job(
        tmp_path,
        SCRIPT,
        n_files=0,
        settings={"mini_batch_size": size, "retry_settings": {"max_retries": 0}},
        env=env,
    )
    return dep, inputs, out


#: The third field of the bad row: longer than a few rows, so that taking it out moves the cut
#: of a mini-batch of 1KB (a row is about 13 bytes).
EXTRA = "x" * 200


def _write(path: Path, prefix: str, rows: range, bad: int | None = None, fix: str = "") -> None:
    """A CSV file of columns ``id,name``; row ``bad`` has a third field (its mini-batch fails)
    unless ``fix`` says how it was fixed: ``"drop"`` (the row taken out), ``"field"`` (the
    third field taken out), ``"same-length"`` (its comma replaced: the file keeps its length
    and its line ends)."""
    lines = ["id,name"]
    for i in rows:
        if i != bad:
            lines.append(f"{prefix}{i},name{i}")
        elif fix == "field":
            lines.append(f"{prefix}{i},name{i}")
        elif fix == "same-length":
            lines.append(f"{prefix}{i},name{i}_{EXTRA}")
        elif fix != "drop":
            lines.append(f"{prefix}{i},name{i},{EXTRA}")
    path.write_text("\n".join(lines) + "\n")


def _ids(out: Path) -> list[str]:
    return pd.read_csv(out / "predictions.csv", sep=" ", header=None)[0].tolist()


def _input_ids(inputs: Path) -> list[str]:
    """Every row's id, file after file, as a clean run scores them."""
    return [i for p in sorted(inputs.glob("*.csv")) for i in pd.read_csv(p)["id"]]


def _snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under ``folder``: its modification time and contents (but the lock file a
    killed job left, locked by no one, which the next job removes, refused or not)."""
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".daskscore.lock"
    }


def _committed(out: Path) -> set[int]:
    """The mini-batches the ledgers of the job in ``out`` say were committed."""
    staging = out / ".daskscore"
    ledgers = sorted((staging / "ledger").glob("*.log"))
    return {r.mini_batch for p in ledgers for r in read_ledger(staging, p.stem).committed}


def _refused(proc, changed: Path, unchanged: Path, verb: str) -> str:
    """The CLI refused (exit 2) naming the changed file and not the other one."""
    assert proc.returncode == 2, show(proc)
    message = proc.stderr
    assert "Traceback" not in message, show(proc)
    assert f"cannot {verb}" in message, show(proc)
    assert str(changed) in message, show(proc)
    assert str(unchanged) not in message, show(proc)
    assert "--overwrite" in message and "lost or scored twice" in message, show(proc)
    return message


def test_resume_after_rows_were_appended_is_refused_naming_the_file(tmp_path: Path) -> None:
    held, go = tmp_path / "held", tmp_path / "go"
    dep, inputs, out = _job(tmp_path, "20 rows", HOLD="b200", HELD=str(held), GO=str(go))
    a, b = inputs / "a.csv", inputs / "b.csv"
    _write(a, "a", range(100))
    _write(b, "b", range(300))
    original = a.read_bytes()
    job = start_cli(*cli_args(dep, inputs, out))
    try:  # killed while mini-batch 15 (b200...) runs: the 5 of a.csv and others were done
        wait_until(held.exists, job, "the job reached mini-batch 15")
    finally:
        kill_tree(job)
    assert (out / ".daskscore" / MANIFEST).is_file(), "the job was not left interrupted"
    go.touch()

    # rows appended to the first file: every later id would mean other rows (of b.csv too)
    with open(a, "a") as fh:
        fh.write("".join(f"a{i},name{i}\n" for i in range(100, 150)))
    before = _snapshot(out)
    proc = cli(dep, inputs, out, "--resume")
    message = _refused(proc, a, b, "resume")
    assert "100 rows in 5 mini-batches then, 150 rows in 8 mini-batches now" in message
    assert _snapshot(out) == before, "the refused resume changed the output folder"

    # a job.json of an earlier version, which did not note the splits: refused too
    from daskscore.engine.resume import SPLITS  # (here: the refusals above hold without it)

    a.write_bytes(original)  # (put back as it was: the same rows, a newer time)
    older = tmp_path / "older"
    shutil.copytree(out, older)
    doc = json.loads((older / ".daskscore" / MANIFEST).read_text())
    del doc[SPLITS]
    (older / ".daskscore" / MANIFEST).write_text(json.dumps(doc))
    proc = cli(dep, inputs, older, "--resume")
    assert proc.returncode == 2, show(proc)
    assert "earlier version of daskscore" in proc.stderr and "--overwrite" in proc.stderr

    # the file put back as it was: its mini-batches hold their rows again, and the job resumes
    proc = cli(dep, inputs, out, "--resume")
    assert proc.returncode == 0, show(proc)
    s = summary_of(out)
    assert s["resumed_mini_batches"] > 0, s
    assert s["total_items"] == s["succeeded_items"] == s["rows_written"] == 400, s
    assert _ids(out) == _input_ids(inputs)


def test_resume_after_rows_were_appended_to_a_file_not_cut_is_refused(tmp_path: Path) -> None:
    """A CSV file that cannot be cut (a quoted line break) is one mini-batch, its rows not
    counted: rows appended to it changed nothing the resume compared, so the resume kept its
    mini-batch, ended Completed, and the new rows were missing from the output.  It is refused
    as the same append to a file that is cut is; the file put back as it was resumes."""
    held, go = tmp_path / "held", tmp_path / "go"
    dep, inputs, out = _job(tmp_path, "20 rows", HOLD="b200", HELD=str(held), GO=str(go))
    a, b = inputs / "a.csv", inputs / "b.csv"
    a.write_text('id,name\na0,"two\nlines"\n' + "".join(f"a{i},name{i}\n" for i in range(1, 10)))
    _write(b, "b", range(300))
    original = a.read_bytes()
    job = start_cli(*cli_args(dep, inputs, out))

    def ready() -> bool:  # (a.csv's mini-batch, 0, committed: the resume keeps it)
        return held.exists() and 0 in _committed(out)

    try:  # killed while the mini-batch of b200... runs
        wait_until(ready, job, "the job reached b.csv's row 200 with a.csv's rows committed")
    finally:
        kill_tree(job)
    assert (out / ".daskscore" / MANIFEST).is_file(), "the job was not left interrupted"
    go.touch()

    with open(a, "a") as fh:
        fh.write("a10,name10\na11,name11\n")
    before = _snapshot(out)
    proc = cli(dep, inputs, out, "--resume")
    _refused(proc, a, b, "resume")
    assert _snapshot(out) == before, "the refused resume changed the output folder"

    a.write_bytes(original)  # (put back as it was: the same rows, a newer time)
    proc = cli(dep, inputs, out, "--resume")
    assert proc.returncode == 0, show(proc)
    s = summary_of(out)
    assert s["resumed_mini_batches"] > 0, s
    assert s["total_items"] == s["succeeded_items"] == s["rows_written"] == 310, s
    assert _ids(out) == _input_ids(inputs)


@pytest.mark.parametrize(
    ("size", "moving", "keeping"),
    [("1KB", "field", "same-length"), ("32 rows", "drop", "field")],
    ids=["bytes", "rows"],
)
def test_retry_after_a_fix_that_moves_rows_is_refused_one_that_keeps_them_goes_on(
    tmp_path: Path, size: str, moving: str, keeping: str
) -> None:
    dep, inputs, out = _job(tmp_path, size)
    a, b = inputs / "a.csv", inputs / "b.csv"
    _write(a, "a", range(400), bad=150)
    _write(b, "b", range(300))
    proc = cli(dep, inputs, out)
    assert proc.returncode == 0, show(proc)
    assert summary_of(out)["failed_mini_batches"] == 1, show(proc)
    before = _snapshot(out)

    # a fix that moves a.csv's rows between its mini-batches: with a byte size, a shorter
    # row (the cuts after it fall at other rows); with 'N rows', a row taken out
    _write(a, "a", range(400), bad=150, fix=moving)
    proc = cli(dep, inputs, out, "--retry-failed")
    message = _refused(proc, a, b, "retry")
    assert "whole job" in message, message
    assert _snapshot(out) == before, "the refused retry changed the output folder"

    # a fix that keeps every mini-batch's rows: the retry runs the failed one again
    _write(a, "a", range(400), bad=150, fix=keeping)
    proc = cli(dep, inputs, out, "--retry-failed")
    assert proc.returncode == 0, show(proc)
    s = summary_of(out)
    assert len(s["retried_in_this_pass"]) == 1, s
    assert s["total_items"] == s["succeeded_items"] == s["rows_written"] == 700, s
    assert _ids(out) == _input_ids(inputs)
    clean = tmp_path / "clean"
    proc = cli(dep, inputs, clean)
    assert proc.returncode == 0, show(proc)
    assert (out / "predictions.csv").read_bytes() == (clean / "predictions.csv").read_bytes()
