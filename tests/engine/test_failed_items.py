"""``<output>/failed_items.csv``: one row per failed input item, for exceptions, timeouts,
process deaths and partial returns; none when nothing failed; the same in ``JobResult``."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from conftest import run_cli
from helpers import cli_args, make_job, show, summary_of

import daskscore

# mini-batches of 2 over f0000..f0009: 0 fine, 1 raises, 2 kills its process, 3 hangs past the
# timeout, 4 returns one result for two files
SCRIPT = """
    import os, time

    def run(mini_batch):
        names = [os.path.basename(p) for p in mini_batch]
        if "f0002.csv" in names:
            raise ValueError("bad input " + names[0] + "\\n\\tthe second line of its message")
        if "f0004.csv" in names:
            os._exit(3)
        if "f0006.csv" in names:
            time.sleep(60)
        if "f0008.csv" in names:
            return names[:1]
        return names
"""


@pytest.mark.slow
def test_failed_items_for_each_way_of_failing(tmp_path: Path) -> None:
    dep, inputs, out = make_job(
        tmp_path,
        SCRIPT,
        n_files=10,
        settings={"mini_batch_size": 2, "retry_settings": {"max_retries": 0, "timeout": 3}},
        env={"API_TOKEN": "s3cr3t-value"},
    )
    proc = run_cli(*cli_args(dep, inputs, out))
    assert proc.returncode == 0, show(proc)  # error_threshold -1: Completed with failures
    with open(out / "failed_items.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["mini_batch", "file", "status", "tries", "error"]
    got = [(r["mini_batch"], Path(r["file"]).name, r["status"], r["tries"]) for r in rows]
    assert got == [
        ("1", "f0002.csv", "RUN_EXCEPTION", "1"),
        ("1", "f0003.csv", "RUN_EXCEPTION", "1"),
        ("2", "f0004.csv", "PROCESS_DIED", "1"),
        ("2", "f0005.csv", "PROCESS_DIED", "1"),
        ("3", "f0006.csv", "RUN_TIMEOUT", "1"),
        ("3", "f0007.csv", "RUN_TIMEOUT", "1"),
        ("4", "f0008.csv", "PARTIAL", "1"),
        ("4", "f0009.csv", "PARTIAL", "1"),
    ], show(proc)
    assert all(Path(r["file"]).parent == inputs for r in rows)  # full paths
    # a message of several lines: the exception's own line first, not the last line alone
    error = "ValueError: bad input f0002.csv the second line of its message"
    assert rows[0]["error"] == error
    with open(out / "logs/sys/job_report/processed_mini-batches.csv", encoding="utf-8") as fh:
        tries = list(csv.DictReader(fh))
    assert [t["error"] for t in tries if t["status"] == "RUN_EXCEPTION"] == [error]
    assert "retry_settings.timeout" in rows[4]["error"]
    assert "\n" not in "".join(r["error"] for r in rows)
    assert "failed_items.csv" in proc.stderr, show(proc)


def test_no_failed_items_file_when_nothing_failed(tmp_path: Path) -> None:
    dep, inputs, out = make_job(
        tmp_path, "def run(b):\n    return list(b)\n", n_files=4, settings={"mini_batch_size": 2}
    )
    stale = out / "failed_items.csv"
    out.mkdir()
    result = daskscore.run(dep, inputs, out, workers=1, progress=False, dashboard=False)
    assert result.status == "Completed"
    assert result.failed_items_path is None
    assert result.failed_items_frame().empty
    assert not stale.exists()


def test_job_result_gives_the_failed_items(tmp_path: Path) -> None:
    dep, inputs, out = make_job(
        tmp_path,
        """
        import os
        def run(b):
            if any(p.endswith("f0001.csv") for p in b):
                raise KeyError("no " + os.environ["API_TOKEN"])
            return list(b)
        """,
        n_files=4,
        settings={"mini_batch_size": 2, "retry_settings": {"max_retries": 1}},
        env={"API_TOKEN": 'tok"<&>\\\\en'},
    )
    result = daskscore.run(dep, inputs, out, workers=1, progress=False, dashboard=False)
    assert result.failed_items_path == out / "failed_items.csv"
    frame = result.failed_items_frame()
    assert frame["file"].map(lambda f: Path(f).name).tolist() == ["f0000.csv", "f0001.csv"]
    assert frame["tries"].tolist() == [2, 2]
    assert frame["status"].tolist() == ["RUN_EXCEPTION"] * 2
    text = (out / "failed_items.csv").read_text()
    assert "tok" not in text and "KeyError" in text  # the secret is masked, in every form


ODD_SCRIPT = """
    import os

    def run(mini_batch):
        names = [os.path.basename(p) for p in mini_batch]
        if any("bad" in n for n in names):
            raise ValueError("bad file")
        return names[:-1]  # one result short: a partial mini-batch
"""


def test_a_partial_and_odd_names_are_said_plainly_on_the_terminal_and_in_the_report(
    tmp_path: Path,
) -> None:
    """A partial mini-batch is said as such where its failure is listed (it read
    ``RUN_DONE, 1 failed``, Azure's status, which job_summary.json keeps); a name's
    right-to-left override and escape sequence are written out there, never printed raw."""
    settings = {"mini_batch_size": 2, "retry_settings": {"max_retries": 0}}
    dep, inputs, out = make_job(tmp_path, ODD_SCRIPT, n_files=0, settings=settings)
    for name in ("a1.txt", "a2.txt", "zz\x1b[31mredbad.txt", "zz\u202eRTLbad.txt"):
        (inputs / name).write_text("x")
    proc = run_cli(*cli_args(dep, inputs, out))
    assert proc.returncode == 0, show(proc)
    said = "mini-batch 0 (partial: returned 1 result for 2 files, 1 try): a1.txt, a2.txt"
    assert said in proc.stderr, show(proc)
    bad = (
        "mini-batch 1 (RUN_EXCEPTION, 1 try, 2 failed): zz\\x1b[31mredbad.txt, zz\\u202eRTLbad.txt"
    )
    assert bad in proc.stderr, show(proc)
    assert "\x1b" not in proc.stderr and "\u202e" not in proc.stderr, show(proc)
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "<td>partial: returned 1 result for 2 files</td>" in page
    assert "RUN_DONE" not in page.split('id="failures"', 1)[1]
    assert "\u202e" not in page and "zz\\u202eRTLbad.txt" in page
    s = summary_of(out)  # (its schema as it was: Azure's status)
    assert [f["status"] for f in s["failures"]] == ["RUN_DONE", "RUN_EXCEPTION"]


LONG_ERROR_SCRIPT = """
    def run(mini_batch):
        raise KeyError("None of [x] are in the columns: " + ", ".join(
            f"column_with_a_long_name_{k:05d}" for k in range(800)))
"""


def test_a_long_error_is_not_repeated_whole_on_each_files_row(tmp_path: Path) -> None:
    """A mini-batch's rows share its error: a 25 KB one on each of its files made the file
    grow as files times error length (1.6 GB for 100,000 failed files); each row now gives
    the exception's line cut, and the summary keeps the mini-batch's error once."""
    settings = {"mini_batch_size": 20, "retry_settings": {"max_retries": 0}}
    dep, inputs, out = make_job(tmp_path, LONG_ERROR_SCRIPT, n_files=40, settings=settings)
    result = daskscore.run(dep, inputs, out, workers=1, progress=False, dashboard=False)
    frame = result.failed_items_frame()
    assert len(frame) == 40 and set(frame["mini_batch"]) == {0, 1}
    errors = frame["error"].tolist()
    assert all(e.startswith("KeyError: 'None of [x] are in the columns: column_w") for e in errors)
    assert all(len(e) < 1000 and e.endswith("…") for e in errors)
    assert (out / "failed_items.csv").stat().st_size < 40 * 1200
    # the mini-batch's error, once, in the summary: far longer than a row's
    failures = {f["mini_batch_id"]: f for f in summary_of(out)["failures"]}
    assert sorted(failures) == [0, 1]
    assert all("column_with_a_long_name_00799" in f["error"] for f in failures.values())
