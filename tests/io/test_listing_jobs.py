"""What the listing of an input folder leaves out besides dot-files (issue 17, items 7 and 11):
the job's own output folder when it lies inside the input, and symbolic links that lead to no
file; each is said in one line of the job log.  Whole jobs through the command, and the listing
itself."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import cli, cli_args, kill_tree, make_job, show, start_cli, summary_of, wait_until

from daskscore import InputError
from daskscore.io.inputs import list_input_files

SCRIPT = """
    import os

    def init():
        pass

    def run(mini_batch):
        return [f"{os.path.basename(path)} {len(open(path).read())}" for path in mini_batch]
"""


def job_log(out: Path) -> str:
    return (out / "logs" / "sys" / "daskscore.txt").read_text(encoding="utf-8")


def test_an_output_folder_inside_the_input_is_not_scored_by_a_second_run(tmp_path: Path) -> None:
    dep, inputs, _ = make_job(tmp_path, SCRIPT, n_files=3, settings={"mini_batch_size": 1})
    out = inputs / "out"
    first = cli(dep, inputs, out)
    assert first.returncode == 0, show(first)
    before = (out / "predictions.csv").read_text()

    again = cli(dep, inputs, out, "--overwrite")

    assert again.returncode == 0, show(again)
    s = summary_of(out)
    assert (s["total_items"], s["succeeded_items"], s["total_mini_batches"]) == (3, 3, 3)
    assert (out / "predictions.csv").read_text() == before
    assert [line.split()[0] for line in before.splitlines()] == [
        "f0000.csv",
        "f0001.csv",
        "f0002.csv",
    ]
    lines = [line for line in job_log(out).splitlines() if "inside the input folder" in line]
    assert len(lines) == 1, job_log(out)
    assert str(out) in lines[0]


def test_an_earlier_jobs_output_folder_inside_the_input_is_not_scored(tmp_path: Path) -> None:
    """A job into ``input/scores`` then one into ``input/scores2``: the second left out the
    first's results (predictions, report, summary, logs), which it scored as 12 more items."""
    dep, inputs, _ = make_job(tmp_path, SCRIPT, n_files=3, settings={"mini_batch_size": 1})
    first = cli(dep, inputs, inputs / "scores")
    assert first.returncode == 0, show(first)
    data = inputs / "more"  # a folder of inputs that merely has a summary-like name in it
    data.mkdir()
    (data / "job_summary.json").write_text('{"not": "a job"}')
    (data / "logs").mkdir()
    (data / "logs" / "x.txt").write_text("x")

    second = cli(dep, inputs, inputs / "scores2")

    assert second.returncode == 0, show(second)
    s = summary_of(inputs / "scores2")
    assert (s["total_items"], s["succeeded_items"]) == (5, 5)
    rows = (inputs / "scores2" / "predictions.csv").read_text().splitlines()
    names = [line.split()[0] for line in rows]
    assert names == ["f0000.csv", "f0001.csv", "f0002.csv", "job_summary.json", "x.txt"]
    log = job_log(inputs / "scores2").splitlines()
    lines = [line for line in log if "another daskscore job" in line]
    assert len(lines) == 1 and str(inputs / "scores") in lines[0], lines
    # the earlier job's folder given as the input itself is scored (a chained job)
    assert len(list_input_files(inputs / "scores")) > 3


HOLD_SCRIPT = """
    import os
    import time

    def init():
        pass

    def run(mini_batch):
        for path in mini_batch:  # HOLD: the input that waits until the file GO exists
            while os.path.basename(path) == os.environ["HOLD"] and not os.path.exists(
                os.environ["GO"]
            ):
                open(os.environ["HELD"], "w").close()
                time.sleep(0.05)
        return [os.path.basename(path) for path in mini_batch]
"""


def test_a_running_or_interrupted_jobs_output_inside_the_input_is_not_scored(
    tmp_path: Path,
) -> None:
    """An output folder inside the input whose job was still running, or was killed, has no
    job_summary.json yet: a second job scored its logs and job_recipe.json as inputs (and in
    tabular mode was refused for them).  Its staging folder and lock say it is a job's."""
    held, go = tmp_path / "held", tmp_path / "go"
    env = {"HOLD": "f0002.csv", "HELD": str(held), "GO": str(go)}
    dep, inputs, _ = make_job(
        tmp_path, HOLD_SCRIPT, n_files=4, settings={"mini_batch_size": 1}, env=env
    )
    data = inputs / "data"  # a folder of inputs that merely has a logs/ folder
    (data / "logs").mkdir(parents=True)
    (data / "logs" / "x.txt").write_text("x")
    running = start_cli(*cli_args(dep, inputs, inputs / "outA"))
    try:
        wait_until(held.exists, running, "the first job reached f0002.csv")
        notes: list[str] = []
        files = list_input_files(inputs, exclude=inputs / "outB", notes=notes)
        assert [Path(f).name for f in files] == ["x.txt", *(f"f000{i}.csv" for i in range(4))]
        assert any(str(inputs / "outA") in n and "another daskscore job" in n for n in notes)
    finally:
        kill_tree(running)
    assert (inputs / "outA" / ".daskscore").is_dir()
    assert not (inputs / "outA" / "job_summary.json").exists()
    go.touch()

    second = cli(dep, inputs, inputs / "outB")

    assert second.returncode == 0, show(second)
    names = (inputs / "outB" / "predictions.csv").read_text().split()
    assert names == ["x.txt", "f0000.csv", "f0001.csv", "f0002.csv", "f0003.csv"]
    lines = [x for x in job_log(inputs / "outB").splitlines() if "another daskscore job" in x]
    assert len(lines) == 1 and str(inputs / "outA") in lines[0], lines


def test_broken_symbolic_links_are_skipped_with_one_line_in_the_job_log(tmp_path: Path) -> None:
    dep, inputs, out = make_job(tmp_path, SCRIPT, n_files=3, settings={"mini_batch_size": 1})
    (inputs / "gone.csv").symlink_to(tmp_path / "deleted.csv")
    (inputs / "loop-a.csv").symlink_to(inputs / "loop-b.csv")
    (inputs / "loop-b.csv").symlink_to(inputs / "loop-a.csv")
    (inputs / "kept.csv").symlink_to(inputs / "f0000.csv")  # a good link is an input

    proc = cli(dep, inputs, out)

    assert proc.returncode == 0, show(proc)
    s = summary_of(out)
    assert (s["total_items"], s["succeeded_items"], s["failed_items"]) == (4, 4, 0)
    names = [line.split()[0] for line in (out / "predictions.csv").read_text().splitlines()]
    assert names == ["f0000.csv", "f0001.csv", "f0002.csv", "kept.csv"]
    lines = [line for line in job_log(out).splitlines() if "broken symbolic link" in line]
    assert len(lines) == 1, job_log(out)
    assert "skipped 3 broken symbolic link(s)" in lines[0]
    assert str(inputs / "gone.csv") in lines[0]


# --------------------------------------------------------------------------- the listing


def test_the_excluded_folder_is_left_out_and_noted(tmp_path: Path) -> None:
    root = tmp_path / "in"
    for rel in ("a.csv", "out/predictions.csv", "out/logs/x.txt", "outer/b.csv"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x")
    (tmp_path / "alias").symlink_to(root / "out")
    notes: list[str] = []

    # the output named by another path to the same folder is recognised
    files = list_input_files(root, exclude=tmp_path / "alias", notes=notes)

    assert [Path(f).relative_to(root.resolve()).as_posix() for f in files] == [
        "a.csv",
        "outer/b.csv",
    ]
    assert len(notes) == 1 and "is inside the input folder" in notes[0]
    # an output elsewhere leaves everything in
    notes.clear()
    assert len(list_input_files(root, exclude=tmp_path / "missing", notes=notes)) == 4
    assert notes == []


def test_dot_files_and_folders_are_skipped_and_noted(tmp_path: Path) -> None:
    root = tmp_path / "in"
    for rel in ("a.csv", ".hidden.csv", ".git/config", "sub/.DS_Store", "sub/b.csv"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x")
    notes: list[str] = []
    files = list_input_files(root, notes=notes)
    assert [Path(f).name for f in files] == ["a.csv", "b.csv"]
    (line,) = notes
    assert "skipped 3 dot-file(s) and dot-folder(s)" in line, line
    for rel in (".hidden.csv", ".git", "sub/.DS_Store"):
        assert str(root.resolve() / rel) in line


def test_an_output_folder_that_is_the_input_folder_is_refused(tmp_path: Path) -> None:
    """Its predictions, report and logs would be the next run's inputs."""
    root = tmp_path / "in"
    root.mkdir()
    (root / "a.csv").write_text("x")
    (tmp_path / "alias").symlink_to(root)
    for output in (root, tmp_path / "alias"):
        with pytest.raises(InputError, match="is the input folder") as info:
            list_input_files(root, exclude=output)
        assert str(output) in str(info.value)


def test_the_command_refuses_an_output_folder_that_is_the_input_folder(tmp_path: Path) -> None:
    dep, inputs, _ = make_job(tmp_path, "def run(mb):\n    return mb\n", n_files=3)
    before = sorted(p.name for p in inputs.iterdir())

    proc = cli(dep, inputs, inputs)

    assert proc.returncode == 2, show(proc)
    assert "is the input folder" in proc.stderr
    assert sorted(p.name for p in inputs.iterdir()) == before, "nothing written there"


def test_a_folder_of_broken_links_only_holds_no_files(tmp_path: Path) -> None:
    root = tmp_path / "in"
    root.mkdir()
    os.symlink(tmp_path / "nowhere", root / "a.csv")
    with pytest.raises(InputError, match="broken symbolic links are skipped"):
        list_input_files(root)
    with pytest.raises(InputError, match="is a symbolic link to .*nowhere.*does not exist"):
        list_input_files(root / "a.csv")


def test_a_symbolic_link_loop_given_as_the_input_is_said_to_be_one(tmp_path: Path) -> None:
    """It was said to link to a file that does not exist, though that link was there."""
    os.symlink("loop2", tmp_path / "loop1")
    os.symlink("loop1", tmp_path / "loop2")
    with pytest.raises(InputError) as info:
        list_input_files(tmp_path / "loop1")
    message = str(info.value)
    assert "symbolic link to 'loop2', in a loop of links" in message, message
    assert "does not exist" not in message, message
