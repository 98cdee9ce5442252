"""``daskscore run ... --retry-failed``: after the cause of a job's failures is fixed, only its
failed, partial and unrun mini-batches run again, in the same output folder, and the whole
output (every format), summary and logs are written anew as if the job had run cleanly.

The jobs run the real CLI in a subprocess.  The script raises on the files named by a
``raise-<file>`` flag file and leaves out of its result (a partial return) the files named by
a ``drop-<file>`` flag; a job's cause is fixed by removing a flag, or by changing the script
(the code folder may change for a retry; the inputs, mini-batching and output settings may
not).  Every retried output is compared with a clean run of the fixed job in another folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from helpers import cli, make_job, processed_of, show, summary_of

import daskscore
from daskscore.config.options import JobOptions
from daskscore.engine.outcomes import Outcomes
from daskscore.errors import UsageError
from daskscore.protocol import MiniBatchRecord, Status

# 12 files in mini-batches of 2: mini-batch k holds f{2k}, f{2k+1}
N_FILES = 12
SCRIPT = """
    import os
    import pandas as pd

    FLAGS = os.environ["FLAGS"]
    BROKEN = True  # the bug: a raise-<file> flag makes run() raise


    def init():
        pass


    def run(mini_batch):
        rows = []
        for path in mini_batch:
            name = os.path.basename(path)
            if BROKEN and os.path.exists(os.path.join(FLAGS, "raise-" + name)):
                raise ValueError("bad input " + name)
            if os.path.exists(os.path.join(FLAGS, "drop-" + name)):
                continue  # a partial return
            x = pd.read_csv(path)["x"]
            rows.append({"file": name, "group": "g" + str(int(x[0]) % 3), "total": x.sum()})
        return pd.DataFrame(rows, columns=["file", "group", "total"])
"""
KEPT = ".daskscore-kept"


def _job(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    flags = tmp_path / "flags"
    flags.mkdir()
    dep, inputs, out = make_job(
        tmp_path,
        SCRIPT,
        n_files=N_FILES,
        settings={"mini_batch_size": 2, "retry_settings": {"max_retries": 1}},
        env={"FLAGS": str(flags)},
    )
    return dep, inputs, out, flags


def _flag(flags: Path, *names: str) -> None:
    for name in names:
        (flags / name).touch()


def _tries(out: Path) -> dict[int, list[tuple[int, str]]]:
    """processed_mini-batches.csv: each mini-batch's tries, (try, status), in order."""
    frame = processed_of(out)
    got: dict[int, list[tuple[int, str]]] = {}
    for mb, try_no, status in zip(
        frame["mini_batch_id"], frame["try"], frame["status"], strict=True
    ):
        got.setdefault(int(mb), []).append((int(try_no), str(status)))
    return got


def _snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under ``folder``: its modification time and contents."""
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _clean_run(tmp_path: Path, dep: Path, inputs: Path, *extra: str) -> Path:
    clean = tmp_path / "clean"
    proc = cli(dep, inputs, clean, *extra)
    assert proc.returncode == 0, show(proc)
    assert summary_of(clean)["failed_items"] == 0, show(proc)
    return clean


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_retry_failed_append_row_over_two_passes(tmp_path: Path) -> None:
    dep, inputs, out, flags = _job(tmp_path)
    # mini-batch 1 raises, 2 returns one result of two, 4 raises
    _flag(flags, "raise-f0003.csv", "drop-f0005.csv", "raise-f0008.csv")
    proc = cli(dep, inputs, out)
    assert proc.returncode == 0, show(proc)  # error_threshold -1: Completed with failures
    s = summary_of(out)
    assert (s["failed_mini_batches"], s["partial_mini_batches"]) == (2, 1), s
    assert s["retried_in_this_pass"] is None
    assert (out / KEPT / "book.jsonl").is_file()  # the staged parts stay for a retry
    assert not (out / ".daskscore").exists()

    # pass 2: the data of mini-batches 1 and 2 fixed; 4 still fails
    (flags / "raise-f0003.csv").unlink()
    (flags / "drop-f0005.csv").unlink()
    proc = cli(dep, inputs, out, "--retry-failed")
    assert proc.returncode == 0, show(proc)
    assert "3 mini-batches (1, 2, 4) run again" in proc.stderr, show(proc)
    assert "Resuming:" not in proc.stderr, show(proc)  # (a retry pass is not a resume)
    s = summary_of(out)
    assert s["retried_in_this_pass"] == [1, 2, 4], s
    assert (s["failed_mini_batches"], s["partial_mini_batches"]) == (1, 0), s
    assert (s["succeeded_items"], s["failed_items"], s["total_items"]) == (10, 2, 12), s
    assert [f["mini_batch_id"] for f in s["failures"]] == [4]
    assert s["failures"][0]["tries"] == 4  # every pass's, as failed_items.csv
    tries = _tries(out)
    assert tries[1] == [(1, "RUN_EXCEPTION"), (2, "RUN_EXCEPTION"), (3, "RUN_DONE")], tries
    assert tries[2] == [(1, "RUN_DONE"), (2, "RUN_DONE")], tries
    assert [t for t, _ in tries[4]] == [1, 2, 3, 4], tries
    assert tries[0] == [(1, "RUN_DONE")], tries  # not run again
    items = pd.read_csv(out / "failed_items.csv")
    assert items["mini_batch"].tolist() == [4, 4], items
    assert items["tries"].tolist() == [4, 4], items
    assert (
        "retried in this pass: 3 mini-batches (1, 2, 4)"
        in (out / "logs" / "job_result.txt").read_text()
    )
    assert "(1, 2, 4) run again" in (out / "logs" / "sys" / "daskscore.txt").read_text()
    assert (out / KEPT).is_dir()

    # pass 3: the bug fixed in the code
    script = dep.parent / "code" / "score.py"
    script.write_text(script.read_text().replace("BROKEN = True", "BROKEN = False"))
    proc = cli(dep, inputs, out, "--retry-failed")
    assert proc.returncode == 0, show(proc)
    s = summary_of(out)
    assert s["status"] == "Completed" and s["retried_in_this_pass"] == [4], s
    assert (s["succeeded_items"], s["failed_items"], s["rows_written"]) == (12, 0, 12), s
    assert (s["failed_mini_batches"], s["partial_mini_batches"], s["failures"]) == (0, 0, [])
    assert s["resumed_mini_batches"] == 5, s
    assert not (out / "failed_items.csv").exists()
    assert not (out / KEPT).exists() and not (out / ".daskscore").exists()
    assert [t for t, _ in _tries(out)[4]] == [1, 2, 3, 4, 5]
    assert "No errors." in (out / "logs" / "job_error.txt").read_text()

    clean = _clean_run(tmp_path, dep, inputs)
    assert (out / "predictions.csv").read_bytes() == (clean / "predictions.csv").read_bytes()

    # a job with nothing failed: said so, nothing run, nothing changed
    before = _snapshot(out)
    proc = cli(dep, inputs, out, "--retry-failed")
    assert proc.returncode == 0, show(proc)
    assert "Nothing to retry" in proc.stderr, show(proc)
    assert _snapshot(out) == before


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    "extra",
    [
        ("--output-format", "parquet"),
        ("--output-format", "csv"),
        ("--output-format", "csv", "--partition-on", "group"),
        ("--set", "settings.output_action=summary_only"),
    ],
    ids=["parquet", "csv", "csv-partitioned", "summary_only"],
)
def test_retry_failed_every_output_format(tmp_path: Path, extra: tuple[str, ...]) -> None:
    dep, inputs, out, flags = _job(tmp_path)
    _flag(flags, "raise-f0000.csv", "drop-f0007.csv", "raise-f0011.csv")
    proc = cli(dep, inputs, out, *extra)
    assert proc.returncode == 0, show(proc)
    assert summary_of(out)["failed_items"] == 5, show(proc)  # 2 + 1 (partial) + 2
    for name in ("raise-f0000.csv", "drop-f0007.csv", "raise-f0011.csv"):
        (flags / name).unlink()
    proc = cli(dep, inputs, out, *extra, "--retry-failed")
    assert proc.returncode == 0, show(proc)
    s = summary_of(out)
    assert s["retried_in_this_pass"] == [0, 3, 5], s
    assert (s["succeeded_items"], s["failed_items"], s["total_items"]) == (12, 0, 12), s
    assert not (out / "failed_items.csv").exists() and not (out / KEPT).exists()

    clean = _clean_run(tmp_path, dep, inputs, *extra)
    if "summary_only" in extra[-1]:
        assert s["predictions"] is None
        assert not (out / "predictions").exists() and not (out / "predictions.csv").exists()
        return
    got, want = out / "predictions", clean / "predictions"
    names = sorted(str(p.relative_to(got)) for p in got.rglob("*") if p.is_file())
    assert names == sorted(str(p.relative_to(want)) for p in want.rglob("*") if p.is_file())
    if "csv" in extra:  # the same files, byte for byte
        for name in names:
            assert (got / name).read_bytes() == (want / name).read_bytes(), name
    else:
        frame, expected = pd.read_parquet(got), pd.read_parquet(want)
        pd.testing.assert_frame_equal(frame, expected)
        assert frame["file"].tolist() == [f"f{i:04d}.csv" for i in range(N_FILES)]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_retry_failed_refused_when_the_job_changed(tmp_path: Path) -> None:
    dep, inputs, out, flags = _job(tmp_path)
    _flag(flags, "raise-f0003.csv")
    proc = cli(dep, inputs, out)
    assert proc.returncode == 0, show(proc)
    (flags / "raise-f0003.csv").unlink()
    before = _snapshot(out)

    proc = cli(dep, inputs, out, "--retry-failed", "--set", "settings.mini_batch_size=3")
    assert proc.returncode == 2, show(proc)
    assert "mini-batching" in proc.stderr and "--overwrite" in proc.stderr, show(proc)
    assert _snapshot(out) == before

    proc = cli(dep, inputs, out, "--retry-failed", "--output-format", "parquet")
    assert proc.returncode == 2, show(proc)
    assert "output settings" in proc.stderr, show(proc)
    assert _snapshot(out) == before

    extra = inputs / "f0099.csv"
    extra.write_text("x\n99\n")
    proc = cli(dep, inputs, out, "--retry-failed")
    assert proc.returncode == 2, show(proc)
    assert "input file list" in proc.stderr, show(proc)
    assert _snapshot(out) == before
    extra.unlink()

    proc = cli(dep, inputs, out, "--resume")  # (a finished job: the hint names the retry)
    assert proc.returncode == 2 and "--retry-failed" in proc.stderr, show(proc)
    assert _snapshot(out) == before

    for other in ("--resume", "--overwrite"):
        proc = cli(dep, inputs, out, "--retry-failed", other)
        assert proc.returncode == 2, show(proc)
        assert "not allowed with argument" in proc.stderr, show(proc)
        assert _snapshot(out) == before

    # unchanged (the staged results were kept through the refusals): the retry goes through
    proc = cli(dep, inputs, out, "--retry-failed")
    assert proc.returncode == 0, show(proc)
    assert summary_of(out)["failed_items"] == 0, show(proc)
    assert summary_of(out)["retried_in_this_pass"] == [1]


def test_retry_failed_needs_a_finished_job(tmp_path: Path) -> None:
    dep, inputs, out = make_job(tmp_path, "def run(b):\n    return list(b)\n", n_files=2)
    with pytest.raises(UsageError, match="holds no finished job"):
        daskscore.run(dep, inputs, out, retry_failed=True, progress=False)
    (out / ".daskscore").mkdir(parents=True)
    (out / ".daskscore" / "job.json").write_text("{}")  # (an empty one is no job: removed)
    with pytest.raises(UsageError, match="unfinished job.*--resume"):
        daskscore.run(dep, inputs, out, retry_failed=True, progress=False)


def test_retry_failed_usage_errors(tmp_path: Path) -> None:
    for other in ({"overwrite": True}, {"resume": True}):
        with pytest.raises(UsageError, match="retry_failed and"):
            JobOptions(retry_failed=True, **other)
    dep, inputs, _ = make_job(tmp_path, "def run(b):\n    return list(b)\n", n_files=2)
    with pytest.raises(UsageError, match="needs a local output folder"):
        daskscore.run(dep, inputs, "s3://bucket/out", retry_failed=True, progress=False)


def test_reopen_keeps_history_and_numbers_on(tmp_path: Path) -> None:
    """The books of an earlier pass folded in: failed and partial mini-batches open again with
    their tries kept, clean and fixed ones stay final."""
    from daskscore.config.settings import Settings

    settings = Settings()
    work = [[f"f{i}"] for i in range(4)]
    first = Outcomes(work, settings)
    first.record("r01a1", [_rec(0, 1, final=True)])  # clean
    first.record("r01a2", [_rec(1, 1, failed=True), _rec(1, 2, final=True)])  # retried, then done
    first.record("r01a3", [_rec(2, 1, failed=True), _rec(2, 2, failed=True, final=True)])
    first.record("r01a4", [_rec(3, 1, final=True, partial=True)])
    books = json.loads(json.dumps([[[t.to_json() for t in tries], f and f.to_json()]
                                   for tries, f in first.book()]))  # fmt: skip
    assert [b[0][0]["mini_batch"] for b in books] == [1, 2, 3]

    again = Outcomes(work, settings)
    again.restore("r01a1", [_rec(0, 1, final=True)])
    rerun = again.reopen(
        (
            [MiniBatchRecord.from_json(t) for t in tries],
            MiniBatchRecord.from_json(final) if final else None,
        )
        for tries, final in books
    )
    assert rerun == [2, 3]
    assert sorted(again.final) == [0, 1] and again.failed_items == 0
    assert again.offset[2] == 2 and again.offset[3] == 1
    again.record("r02a1", [_rec(2, 1, final=True)])
    assert again.final[2].try_no == 3
    assert [(r.mini_batch, r.try_no) for r in again.attempts] == [
        (0, 1), (1, 1), (1, 2), (2, 1), (2, 2), (2, 3), (3, 1),
    ]  # fmt: skip


def test_the_book_keeps_each_error_text_once(tmp_path: Path) -> None:
    """A failure repeated over many mini-batches and tries: the kept book holds its text once
    and gives every try of every mini-batch its text back."""
    from daskscore.config.settings import Settings
    from daskscore.engine.retry import read_book, write_book

    text = "Traceback (most recent call last):\nValueError: " + "x" * 5000
    work = [[f"f{i}"] for i in range(50)]
    outcomes = Outcomes(work, Settings())
    for mb in range(49):
        tries = [_rec(mb, 1, failed=True), _rec(mb, 2, failed=True, final=True)]
        for rec in tries:
            rec.error = text
        outcomes.record(f"r01a{mb}", tries)
    outcomes.record("r01a99", [_rec(49, 1, failed=True, final=True)])  # another text
    write_book(tmp_path, outcomes)
    assert (tmp_path / "book.jsonl").read_text().count("x" * 5000) == 1
    books = read_book(tmp_path)
    assert sorted(books) == list(range(50))
    for mb in range(49):
        tries, final = books[mb]
        assert [(t.try_no, t.error) for t in tries] == [(1, text), (2, text)]
        assert final is not None and final.error == text and final.try_no == 2
    assert books[49][1].error == "ValueError: x"
    assert [(t.mini_batch, t.try_no) for t in outcomes.attempts] == [
        (t.mini_batch, t.try_no) for mb in range(50) for t in books[mb][0]
    ]


def _failed_then_fixed(tmp_path: Path, script: str) -> tuple[Path, Path, Path]:
    """A job of ``script`` whose every mini-batch failed (its ``broken`` flag set), then fixed
    (the flag gone); its deployment, inputs and output folder."""
    flags = tmp_path / "flags"
    flags.mkdir()
    dep, inputs, out = make_job(
        tmp_path,
        script,
        n_files=N_FILES,
        settings={"mini_batch_size": 1, "retry_settings": {"max_retries": 1}},
        env={"FLAGS": str(flags)},
    )
    _flag(flags, "broken")
    proc = cli(dep, inputs, out)
    assert proc.returncode == 0 and summary_of(out)["failed_mini_batches"] == N_FILES, show(proc)
    (flags / "broken").unlink()  # the fix
    return dep, inputs, out


def _rec(mb: int, try_no: int, *, final: bool = False, failed: bool = False, partial: bool = False
         ) -> MiniBatchRecord:  # fmt: skip
    if failed:
        return MiniBatchRecord(mb, try_no, total=1, failed=1, final=final, error="ValueError: x")
    return MiniBatchRecord(
        mb, try_no, total=2 if partial else 1, succeeded=1, failed=int(partial), rows=1,
        status=Status.RUN_DONE, final=final,
    )  # fmt: skip


KILLED_BEFORE_SUMMARY = """\
import os, signal, sys

from daskscore import cli
from daskscore.io import outputdir


def killed(output, summary):
    os.killpg(0, signal.SIGKILL)  # the driver, its fork server and its workers


outputdir.write_summary = killed
sys.argv[0] = "daskscore"
cli.entry()
"""


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_retry_pass_killed_before_its_summary_can_be_retried(tmp_path: Path) -> None:
    """A pass killed after it assembled the output and wrote its logs, before its summary:
    the folder still holds the earlier pass's job, and the next retry finishes it, keeping
    what the killed pass committed: it runs nothing again."""
    import os
    import subprocess
    import sys

    from conftest import REPO
    from helpers import cli_args

    dep, inputs, out, flags = _job(tmp_path)
    _flag(flags, "raise-f0002.csv", "drop-f0009.csv")
    proc = cli(dep, inputs, out)
    assert proc.returncode == 0, show(proc)
    for name in ("raise-f0002.csv", "drop-f0009.csv"):
        (flags / name).unlink()
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            KILLED_BEFORE_SUMMARY,
            *cli_args(dep, inputs, out, "--retry-failed"),
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        timeout=150,
        env=dict(os.environ),
    )
    assert killed.returncode == -9, killed.stderr
    assert summary_of(out)["failed_mini_batches"] == 1  # the first pass's summary stands

    proc = cli(dep, inputs, out, "--retry-failed")
    assert proc.returncode == 0, show(proc)
    s = summary_of(out)
    assert s["retried_in_this_pass"] == [], s  # (the killed pass had run them: kept)
    tries = _tries(out)
    assert tries[1] == [(1, "RUN_EXCEPTION"), (2, "RUN_EXCEPTION"), (3, "RUN_DONE")], tries
    assert [status for _, status in tries[4]] == ["RUN_DONE", "RUN_DONE"], tries
    assert (s["succeeded_items"], s["failed_items"]) == (12, 0), s
    clean = _clean_run(tmp_path, dep, inputs)
    assert (out / "predictions.csv").read_bytes() == (clean / "predictions.csv").read_bytes()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".daskscore")]


CANCELLED_SCRIPT = """
import os, time

def run(mini_batch):
    names = [os.path.basename(p) for p in mini_batch]
    marks, out = os.environ["MARKS"], os.environ["OUT"]
    if names[0] in ("f0002.csv", "f0003.csv", "f0004.csv"):
        if os.path.exists(os.path.join(marks, "second")):
            for _ in range(600):  # in flight until the pass's books are written (60 s at most)
                if os.path.exists(os.path.join(out, ".daskscore-kept")):
                    break
                time.sleep(0.1)
        raise ValueError("poison")
    if names[0] == "f0001.csv":
        raise ValueError("poison")
    return names
"""


def test_retried_in_this_pass_leaves_out_what_error_threshold_cancelled(tmp_path: Path) -> None:
    """A retry pass stopped by error_threshold: ``retried_in_this_pass`` (and
    ``job_result.txt``) listed every mini-batch it opened again, those it cancelled too."""
    marks = tmp_path / "marks"
    marks.mkdir()
    out = tmp_path / "out"
    settings = {"mini_batch_size": 1, "retry_settings": {"max_retries": 0}}
    env = {"MARKS": str(marks), "OUT": str(out)}
    dep, inputs, _ = make_job(tmp_path, CANCELLED_SCRIPT, n_files=6, settings=settings, env=env)
    proc = cli(dep, inputs, out)
    assert proc.returncode == 0, show(proc)
    assert summary_of(out)["failed_mini_batches"] == 4
    (marks / "second").touch()
    proc = cli(dep, inputs, out, "--retry-failed", "--set", "settings.error_threshold=0")
    assert proc.returncode == 1, show(proc)
    assert "4 mini-batches (1, 2, 3, 4) run again" in proc.stderr, show(proc)
    s = summary_of(out)
    assert s["status"] == "Failed" and "error_threshold" in s["reason"], s["reason"]
    assert s["not_run_mini_batches"] == 3, s  # (2, 3 and 4: in flight, given up)
    assert s["retried_in_this_pass"] == [1], s
    assert _tries(out)[1] == [(1, "RUN_EXCEPTION"), (2, "RUN_EXCEPTION")]
    result = (out / "logs" / "job_result.txt").read_text()
    assert "retried in this pass: 1 mini-batch (1)" in result, result


INTERRUPTED_SCRIPT = """
import os, time

def run(mini_batch):
    flags = os.environ["FLAGS"]
    if os.path.exists(os.path.join(flags, "broken")):
        raise ValueError("broken")
    names = [os.path.basename(p) for p in mini_batch]
    with open(os.path.join(flags, "calls"), "a") as fh:
        fh.write(names[0] + "\\n")
    time.sleep(0.4)
    return names
"""


def test_a_retry_pass_stopped_by_ctrl_c_keeps_what_it_committed(tmp_path: Path) -> None:
    """Every mini-batch failed; the fixed job's retry pass gets Ctrl-C half-way.  The message
    says how many it did; the next ``--retry-failed`` keeps them (their tries numbered after
    the first pass's) and runs only the rest; every mini-batch succeeds once.  Before, the
    pass's work was thrown away and the next pass ran all of them again."""
    import signal

    from helpers import cli_args, sigterm_when

    from daskscore.io.ledger import read_ledger

    flags, (dep, inputs, out) = tmp_path / "flags", _failed_then_fixed(tmp_path, INTERRUPTED_SCRIPT)
    calls = flags / "calls"
    scoring = lambda: calls.exists() and len(calls.read_text().split()) >= 4  # noqa: E731
    argv = cli_args(dep, inputs, out, "--retry-failed")
    code, err = sigterm_when(scoring, *argv, sig=signal.SIGINT)
    assert code == 130, err
    line = next(li for li in err.splitlines() if li.startswith("daskscore: interrupted"))
    assert "mini-batches this retry pass runs again done" in line, err
    assert "Go on with: " in err and "--retry-failed" in err, err
    staging = out / ".daskscore"
    committed = {
        rec.mini_batch
        for ledger in (staging / "ledger").glob("r02a*.log")
        for rec in read_ledger(staging, ledger.stem).committed
        if rec.final and rec.done
    }
    assert committed, err
    calls.unlink()
    proc = cli(dep, inputs, out, "--retry-failed")
    assert proc.returncode == 0, show(proc)
    s = summary_of(out)
    assert (s["succeeded_items"], s["failed_items"]) == (N_FILES, 0), s
    rerun = set(s["retried_in_this_pass"])
    assert rerun == set(range(N_FILES)) - committed, (rerun, committed)
    assert {f"f{mb:04d}.csv" for mb in rerun} == set(calls.read_text().split())
    tries = _tries(out)
    for mb in range(N_FILES):  # 2 failed tries, then one that succeeded: in either pass
        assert tries[mb] == [(1, "RUN_EXCEPTION"), (2, "RUN_EXCEPTION"), (3, "RUN_DONE")], tries
    clean = _clean_run(tmp_path, dep, inputs)
    assert (out / "predictions.csv").read_bytes() == (clean / "predictions.csv").read_bytes()


DIED_SCRIPT = """
import os, time

def run(mini_batch):
    flags = os.environ["FLAGS"]
    if os.path.exists(os.path.join(flags, "broken")):
        raise ValueError("broken")
    name = os.path.basename(mini_batch[0])
    if name == "f0000.csv":
        try:  # its first call of the retry pass kills its worker process
            os.close(os.open(os.path.join(flags, "died"), os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return [name]
        os._exit(3)
    time.sleep(1.0)
    return [name]
"""


def test_a_retry_pass_stopped_by_ctrl_c_keeps_the_tries_charged_to_dead_processes(
    tmp_path: Path,
) -> None:
    """Every mini-batch failed; in the fixed job's retry pass mini-batch 0 kills its process
    once, then succeeds, and the pass gets Ctrl-C.  The next pass keeps the crashed try the
    stopped pass charged (noted in the dead task's ledger): before, its history went from
    try 2 to try 4."""
    import signal

    from helpers import cli_args, sigterm_when

    from daskscore.io.ledger import read_ledger

    dep, inputs, out = _failed_then_fixed(tmp_path, DIED_SCRIPT)
    staging = out / ".daskscore"

    def first_done() -> bool:
        return any(
            rec.mini_batch == 0 and rec.done
            for ledger in (staging / "ledger").glob("r02a*.log")
            for rec in read_ledger(staging, ledger.stem).committed
        )

    argv = cli_args(dep, inputs, out, "--retry-failed")
    code, err = sigterm_when(first_done, *argv, sig=signal.SIGINT)
    assert code == 130, err
    proc = cli(dep, inputs, out, "--retry-failed")
    assert proc.returncode == 0, show(proc)
    tries = _tries(out)
    want = [(1, "RUN_EXCEPTION"), (2, "RUN_EXCEPTION"), (3, "PROCESS_DIED"), (4, "RUN_DONE")]
    assert tries[0] == want, tries
    s = summary_of(out)
    assert (s["succeeded_items"], s["failed_items"]) == (N_FILES, 0), s
