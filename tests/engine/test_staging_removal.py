"""A job killed while its staging folder is removed is a finished job.

``finish`` writes ``job_summary.json`` last, then renames ``.daskscore/`` to
``.daskscore-trash-<job id>`` (one step) and deletes that.  The jobs here are real ``daskscore
run`` processes SIGKILLed, with their whole process group, at the instant the test picks: right
after the summary was written (the staging folder still whole), or halfway through deleting the
staging folder (its part files gone).  A kill can only land there reliably from inside, so the
subprocess runs the CLI's own entry point with one function wrapped to kill it at that point.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import helpers
import pytest
from conftest import REPO
from helpers import cli_args, make_job, summary_of

from daskscore.errors import OutputError
from daskscore.io.outputdir import SUMMARY_FILE, claim_output

N_FILES = 30

SCRIPT = """\
from pathlib import Path

def init():
    pass

def run(mini_batch):
    return [f"scored {Path(p).name}" for p in mini_batch]
"""

#: ``python -c`` of the CLI that SIGKILLs its process group at $KILL_AT.
KILLED_AT = """\
import os, shutil, signal, sys
from pathlib import Path

from daskscore import cli
from daskscore.io import outputdir


def die():
    os.killpg(0, signal.SIGKILL)  # the driver, its fork server and its workers


if os.environ["KILL_AT"] == "summary":
    write_summary = outputdir.write_summary

    def written_then_killed(output, summary):
        write_summary(output, summary)
        die()

    outputdir.write_summary = written_then_killed
else:  # "deleting": the staging folder's part files deleted, then the kill
    rmtree = shutil.rmtree

    def half_then_killed(path, *args, **kwargs):
        if Path(path).name.startswith(".daskscore"):
            rmtree(Path(path) / "parts")
            die()
        return rmtree(path, *args, **kwargs)

    shutil.rmtree = half_then_killed
sys.argv[0] = "daskscore"
cli.entry()
"""

cli = functools.partial(helpers.cli, timeout=120)


def expected() -> str:
    return "".join(f"scored f{i:04d}.csv\n" for i in range(N_FILES))


def killed_at(point: str, dep: Path, inputs: Path, out: Path) -> None:
    log = out.parent / "killed.stderr"
    with open(log, "w") as err:
        proc = subprocess.run(
            [sys.executable, "-c", KILLED_AT, *cli_args(dep, inputs, out)],
            cwd=REPO,
            env={**os.environ, "KILL_AT": point},
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
            timeout=120,
        )
    assert proc.returncode == -9, log.read_text()


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("point", ["summary", "deleting"])
def test_a_job_killed_after_its_summary_is_a_finished_job(tmp_path: Path, point: str) -> None:
    dep, inputs, out = make_job(tmp_path, SCRIPT, n_files=N_FILES, settings={"mini_batch_size": 3})
    killed_at(point, dep, inputs, out)
    s = summary_of(out)
    assert s["status"] == "Completed" and s["rows_written"] == N_FILES
    assert (out / "predictions.csv").read_text() == expected()
    trash = sorted(p.name for p in out.glob(".daskscore-trash-*"))
    if point == "summary":
        assert (out / ".daskscore").is_dir() and not trash  # killed before the rename
    else:
        assert not (out / ".daskscore").exists(), "the staging folder was renamed before deletion"
        assert trash == [f".daskscore-trash-{s['job_id']}"]
    before = {name: (out / name).read_bytes() for name in ("predictions.csv", SUMMARY_FILE)}

    # a plain rerun sees a finished job (not an interrupted one), and so does --resume
    again = cli(dep, inputs, out)
    assert again.returncode == 2, again.stderr
    assert "already holds a job's results" in again.stderr, again.stderr
    assert "unfinished" not in again.stderr and ".daskscore" not in again.stderr, again.stderr
    resumed = cli(dep, inputs, out, "--resume")
    assert resumed.returncode == 2, resumed.stderr
    assert "holds a finished job" in resumed.stderr and "nothing to resume" in resumed.stderr
    assert {name: (out / name).read_bytes() for name in before} == before, "output changed"

    # the next job in the folder removes what is left
    fresh = cli(dep, inputs, out, "--overwrite")
    assert fresh.returncode == 0, fresh.stderr
    assert (out / "predictions.csv").read_text() == expected()
    assert summary_of(out)["resumed_mini_batches"] == 0
    left = [p.name for p in out.iterdir() if p.name.startswith(".daskscore")]
    assert not left, f"left behind: {left}"


def test_a_staging_folder_beside_a_summary_is_not_an_unfinished_job(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / ".daskscore" / "ledger").mkdir(parents=True)
    (out / ".daskscore-trash-abc" / "parts").mkdir(parents=True)
    (out / SUMMARY_FILE).write_text('{"status": "Completed"}')
    with pytest.raises(OutputError, match="already holds a job's results") as info:
        claim_output(out, "predictions.csv", overwrite=False)
    assert ".daskscore" not in str(info.value)
    with pytest.raises(OutputError, match="nothing to resume"):
        claim_output(out, "predictions.csv", overwrite=False, resume=True)
    assert claim_output(out, "predictions.csv", overwrite=True) is False
    assert not (out / ".daskscore").exists() and not (out / SUMMARY_FILE).exists()


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("point", ["summary", "deleting"])
def test_any_later_job_removes_what_a_finished_job_left(tmp_path: Path, point: str) -> None:
    """The staging folder (or its trash) of a job killed after its summary, which keeps nothing
    for a retry, goes with the next job in the folder, whatever it is: a plain run refused for
    the results there, ``--resume`` refused as there is nothing to resume, ``--retry-failed``
    with nothing to retry, ``--overwrite``."""
    import shutil

    dep, inputs, out = make_job(tmp_path, SCRIPT, n_files=N_FILES, settings={"mini_batch_size": 3})
    killed_at(point, dep, inputs, out)
    for n, (extra, code) in enumerate(
        [((), 2), (("--resume",), 2), (("--retry-failed",), 0), (("--overwrite",), 0)]
    ):
        copy = tmp_path / f"out{n}"
        shutil.copytree(out, copy, symlinks=True)
        assert [p for p in copy.iterdir() if p.name.startswith(".daskscore-trash-")] or (
            copy / ".daskscore"
        ).is_dir()
        proc = cli(dep, inputs, copy, *extra)
        assert proc.returncode == code, helpers.show(proc)
        left = [p.name for p in copy.iterdir() if p.name.startswith(".daskscore")]
        assert not left, f"{extra}: left behind: {left}"  # (the killed job's lock file too)
        assert (copy / "predictions.csv").read_text() == expected()
