"""A shipped job's custom outputs: the files ``run()`` writes into ``AZUREML_BI_OUTPUT_PATH``
on a worker travel home with the task's result, before its mini-batches count as done — so a
worker restarted later, or a driver killed later, loses none of them — and a try that failed
leaves none."""

from __future__ import annotations

from pathlib import Path

import conftest
import pytest
from helpers import cli_args, kill_tree, make_job, start_cli, summary_of, wait_until

import daskscore
from daskscore.io.replyfiles import OutputTaker

pytestmark = pytest.mark.timeout(150)

#: One ``<file>.out`` per input.  ``FAIL``: the first try of that file's mini-batch writes
#: ``<file>.partial``, then raises.  ``DIE``: the first try of that file's mini-batch waits
#: (at most 20 s) until the driver's output folder holds ``f0000.csv.out``, then kills its
#: process.  ``HOLD``: that file's mini-batch waits until the file ``RELEASE`` exists.
SCRIPT = """
    import os, time

    def _first(name, marker):
        try:
            os.close(os.open(marker + "-" + name, os.O_CREAT | os.O_EXCL))
            return True
        except FileExistsError:
            return False

    def run(mini_batch):
        out, env = os.environ["AZUREML_BI_OUTPUT_PATH"], os.environ
        name = os.path.basename(mini_batch[0])
        if name == env.get("FAIL") and _first(name, env["MARKER"]):
            open(os.path.join(out, name + ".partial"), "w").write("half")
            raise ValueError("first try fails")
        if name == env.get("DIE") and _first(name, env["MARKER"]):
            for _ in range(400):
                if os.path.exists(os.path.join(env["DRIVER_OUT"], "f0000.csv.out")):
                    break
                time.sleep(0.05)
            os._exit(3)
        while name == env.get("HOLD") and not os.path.exists(env["RELEASE"]):
            time.sleep(0.05)
        for path in mini_batch:
            open(os.path.join(out, os.path.basename(path) + ".out"), "w").write("ok")
        return mini_batch
"""

NAMES = [f"f{i:04d}.csv.out" for i in range(6)]


def _outs(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("*.out"))


def test_files_of_done_mini_batches_survive_a_restarted_worker(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {"FAIL": "f0001.csv", "DIE": "f0005.csv", "MARKER": str(tmp_path / "m")}
    dep, inputs, _ = make_job(
        tmp_path,
        SCRIPT,
        n_files=6,
        settings={"mini_batch_size": 1, "output_action": "summary_only"},
        env={**env, "DRIVER_OUT": str(out)},
    )
    result = daskscore.run(dep, inputs, out, workers=1, shared_filesystem=False)
    assert result.summary["succeeded_items"] == 6
    # f0000's file came home with its task, before its worker died in f0005's first try
    assert _outs(out) == NAMES
    assert not list(out.glob("*.partial"))  # what the failed try of f0001 wrote is dropped


def test_files_of_kept_mini_batches_are_there_after_a_resume(tmp_path: Path) -> None:
    release = tmp_path / "release"
    dep, inputs, out = make_job(
        tmp_path,
        SCRIPT,
        n_files=6,
        settings={"mini_batch_size": 1, "output_action": "summary_only"},
        env={"HOLD": "f0005.csv", "RELEASE": str(release)},
    )
    args = cli_args(dep, inputs, out, "--no-shared-filesystem")
    driver = start_cli(*args)
    try:  # the driver killed once some mini-batches are committed and their files home
        wait_until(lambda: len(_outs(out)) >= 3, driver, "the job's files came home")
    finally:
        kill_tree(driver)
    release.touch()
    proc = conftest.run_cli(*args, "--resume", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert summary_of(out)["resumed_mini_batches"] >= 3
    assert _outs(out) == NAMES


def test_the_taker_leaves_files_held_open_and_sends_them_again_when_changed(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "output"
    (folder / "sub").mkdir(parents=True)
    taker = OutputTaker(folder)
    assert taker.take() == {"sub/": b""}  # an empty folder, sent once
    (folder / "sub" / "a.txt").write_text("a")
    with open(folder / "log.txt", "w") as log:
        log.write("one\n")
        log.flush()
        assert taker.take() == {"sub/a.txt": b"a", "log.txt": b"one\n"}
        assert not (folder / "sub" / "a.txt").exists() and (folder / "log.txt").exists()
        assert taker.take() == {}  # unchanged: not sent again
        (folder / "b.txt").write_text("b")
        log.write("two\n")
        log.flush()
        assert taker.take(keep=False) == {}  # a failed try's: b.txt removed, the log kept
        assert not (folder / "b.txt").exists()
        assert taker.take() == {"log.txt": b"one\ntwo\n"}


FOLDERS = """
    import os

    def init():
        out = os.environ["AZUREML_BI_OUTPUT_PATH"]
        os.makedirs(os.path.join(out, "made-by-init"), exist_ok=True)

    def run(mini_batch):
        out = os.environ["AZUREML_BI_OUTPUT_PATH"]
        for path in mini_batch:
            name = os.path.basename(path)
            os.makedirs(os.path.join(out, "empty", name), exist_ok=True)
            os.makedirs(os.path.join(out, "full", name), exist_ok=True)
            open(os.path.join(out, "full", name, "a.txt"), "w").write(name)
        return mini_batch
"""


def _tree(out: Path) -> set[str]:
    skip = {".daskscore", ".daskscore-kept", "logs"}
    return {
        p.relative_to(out).as_posix() + ("/" if p.is_dir() else "")
        for p in out.rglob("*")
        if not skip & set(p.relative_to(out).parts) and p.name != "job_summary.json"
    }


def test_empty_folders_the_script_makes_come_home(tmp_path: Path) -> None:
    """Folders the script makes in ``AZUREML_BI_OUTPUT_PATH`` come home even when they stay
    empty (in init() or in run()), as on a shared disk: the two jobs leave the same tree."""
    dep, inputs, _ = make_job(
        tmp_path,
        FOLDERS,
        n_files=4,
        settings={"mini_batch_size": 1, "output_action": "summary_only"},
    )
    shared = daskscore.run(dep, inputs, tmp_path / "shared", workers=2)
    shipped = daskscore.run(dep, inputs, tmp_path / "shipped", workers=2, shared_filesystem=False)
    assert {"made-by-init/", "empty/f0000.csv/", "full/f0003.csv/a.txt"} <= _tree(shared.output)
    assert _tree(shipped.output) == _tree(shared.output)
