"""An input the job's own output would destroy, and what ``--overwrite`` leaves alone.

A job writes (and ``--overwrite`` removes) its predictions, summary, report, ``logs/`` and
staging in its output folder: an input that is one of them, or lies inside one, is refused
before anything is written, with or without ``--overwrite``, and stays as it was.  An
``--overwrite`` removes daskscore's own files under ``logs/``, not a log of the user's there.
Jobs run on the module's LocalCluster (``client``), one on the command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli, write_deployment
from helpers import show, summary_of

import daskscore
from daskscore import InputError

SCRIPT = """
    def init():
        pass

    def run(mini_batch):
        return [open(p).read().strip() for p in mini_batch]
"""


def _precious(folder: Path, n: int = 3) -> dict[Path, str]:
    """``n`` input files in ``folder``, and what each holds."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {folder / f"f{i}.txt": f"precious {i}" for i in range(n)}
    for path, text in files.items():
        path.write_text(text)
    return files


def _intact(files: dict[Path, str]) -> None:
    assert {p: p.read_text() for p in files if p.exists()} == files


@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
@pytest.mark.parametrize(
    ("name", "fmt"),
    [("predictions", "parquet"), ("predictions.csv", None), ("logs", None)],
    ids=["dataset-folder", "append_row-file", "logs"],
)
def test_an_input_among_the_output_s_names_is_refused_and_kept(
    client: Any, tmp_path: Path, name: str, fmt: str | None, overwrite: bool
) -> None:
    """The input folder ``proj/predictions`` of a parquet job into ``proj`` (the file
    ``proj/predictions.csv``, the folder ``proj/logs``) was deleted by ``--overwrite`` before
    scoring, every item then failing with its file gone; without it, the job was refused as
    holding "a job's results" though none ran there."""
    dep = write_deployment(tmp_path / "d", SCRIPT, settings={"mini_batch_size": 2})
    proj = tmp_path / "proj"
    if name.endswith(".csv"):
        proj.mkdir()
        files = {proj / name: "precious"}
        (proj / name).write_text("precious")
    else:
        files = _precious(proj / name)
    with pytest.raises(InputError) as info:
        daskscore.run(dep, proj / name, proj, client=client, overwrite=overwrite, output_format=fmt)
    message = str(info.value)
    assert f"'{proj / name}'" in message and f"'{proj}'" in message, message
    assert "\n" not in message
    _intact(files)
    assert not (proj / "job_summary.json").exists()


def test_an_earlier_job_s_predictions_are_not_the_input_of_an_overwrite(
    client: Any, tmp_path: Path
) -> None:
    """An --overwrite removes the earlier job's predictions under whatever name its summary
    gives them: scoring them into the same folder is refused, and they stay."""
    first = write_deployment(tmp_path / "d1", SCRIPT, settings={"output_file_name": "first.csv"})
    out = tmp_path / "out"
    _precious(tmp_path / "in")
    daskscore.run(first, tmp_path / "in", out, client=client)
    earlier = (out / "first.csv").read_text()
    second = write_deployment(tmp_path / "d2", SCRIPT)
    with pytest.raises(InputError, match="earlier job's predictions") as info:
        daskscore.run(second, out / "first.csv", out, client=client, overwrite=True)
    assert str(out / "first.csv") in str(info.value)
    assert (out / "first.csv").read_text() == earlier


def test_overwrite_keeps_the_user_s_own_files_in_logs(client: Any, tmp_path: Path) -> None:
    """An --overwrite removed the whole logs/ folder, a log of the user's own with it; it
    removes daskscore's files there now.  An input folder of the user's inside the output
    folder, under a name the job does not write, is scored as any other."""
    dep = write_deployment(tmp_path / "d", SCRIPT)
    out = tmp_path / "out"
    inputs = _precious(out / "mine")
    daskscore.run(dep, out / "mine", out, client=client)
    (out / "logs" / "app.log").write_text("the user's own")
    (out / "logs" / "sys" / "notes.txt").write_text("also the user's")
    old_recipe = (out / "logs" / "sys" / "job_recipe.json").read_text()

    result = daskscore.run(dep, out / "mine", out, client=client, overwrite=True)

    assert result.status == "Completed" and result.succeeded_items == len(inputs)
    assert (out / "logs" / "app.log").read_text() == "the user's own"
    assert (out / "logs" / "sys" / "notes.txt").read_text() == "also the user's"
    assert (out / "logs" / "sys" / "job_recipe.json").read_text() != old_recipe  # the new job's
    assert summary_of(out)["job_id"] == result.summary["job_id"]
    _intact(inputs)


def test_the_command_refuses_with_exit_2_naming_both_paths(tmp_path: Path) -> None:
    dep = write_deployment(tmp_path / "d", SCRIPT)
    proj = tmp_path / "proj"
    files = _precious(proj / "logs")
    proc = run_cli(
        "run", str(dep), "-i", str(proj / "logs"), "-o", str(proj), "--overwrite",
        "--no-progress", "--no-dashboard",
    )  # fmt: skip
    assert proc.returncode == 2, show(proc)
    assert "Traceback" not in proc.stderr and "logs folder" in proc.stderr, show(proc)
    assert str(proj / "logs") in proc.stderr, show(proc)
    _intact(files)
