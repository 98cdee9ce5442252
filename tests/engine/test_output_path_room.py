"""Local paths of a job: an output folder whose path leaves no room for the files a job makes
under it, and ``file://`` URLs.

Near ``PATH_MAX`` (4096 bytes on Linux) a job took its lock and logs, then failed on its
first staged file as an internal error, leaving a half-made staging folder and a ``--resume``
hint that could never work.  It is refused up front (exit 2, naming the folder), nothing
created; a folder just deep enough runs, every file of its job within the limit.  A
``file://`` URL of this machine is the local path it names (it was "does not exist" as an
input, and a folder ``./file:/...`` as an output).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from conftest import write_deployment, write_inputs
from helpers import cli, show, summary_of

import daskscore

SCRIPT = """
    def init():
        pass

    def run(mini_batch):
        print("scoring", len(mini_batch))
        return [p for p in mini_batch]
"""

PATH_MAX = os.pathconf("/", "PC_PATH_MAX")


def _deep(base: Path, length: int) -> Path:
    """A path under ``base`` of ``length`` bytes (not made), in names of up to 200 bytes."""
    path = str(base / "out")
    while len(path) < length:
        path = os.path.join(path, "o" * min(200, length - len(path) - 1))
    assert len(path) == length
    return Path(path)


def _everything(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*"))


def test_an_output_folder_too_deep_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    dep = write_deployment(tmp_path / "d", SCRIPT)
    inputs = write_inputs(tmp_path / "in", 2)
    out = _deep(tmp_path, PATH_MAX - 30)
    before = _everything(tmp_path)
    for extra in ((), ("--resume",), ("--overwrite",)):
        proc = cli(dep, inputs, out, *extra)
        assert proc.returncode == 2, show(proc)
        assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr
        assert str(out) in proc.stderr and "PATH_MAX" in proc.stderr, show(proc)
        assert "--resume" not in proc.stderr.replace(str(out), ""), show(proc)
        assert _everything(tmp_path) == before  # nothing made: no staging folder, no logs


def test_a_folder_name_too_long_is_refused(tmp_path: Path) -> None:
    dep = write_deployment(tmp_path / "d", SCRIPT)
    inputs = write_inputs(tmp_path / "in", 1)
    name_max = os.pathconf(tmp_path, "PC_NAME_MAX")
    before = _everything(tmp_path)
    proc = cli(dep, inputs, tmp_path / ("n" * (name_max + 1)) / "out")
    assert proc.returncode == 2, show(proc)
    assert "NAME_MAX" in proc.stderr and "internal error" not in proc.stderr, show(proc)
    assert _everything(tmp_path) == before


def test_an_output_folder_just_deep_enough_runs(client: Any, tmp_path: Path) -> None:
    """The deepest folder taken: its job's logs, staging and predictions all fit."""
    from daskscore.io.pathroom import ROOM

    dep = write_deployment(tmp_path / "d", SCRIPT, settings={"mini_batch_size": 1})
    inputs = write_inputs(tmp_path / "in", 3)
    out = _deep(tmp_path, PATH_MAX - 2 - ROOM)
    result = daskscore.run(dep, inputs, out, client=client)
    assert result.status == "Completed" and result.succeeded_items == 3
    assert summary_of(out)["total_items"] == 3
    longest = max(len(str(p)) for p in out.rglob("*"))
    assert longest < PATH_MAX


def test_file_urls_are_the_local_paths_they_name(client: Any, tmp_path: Path) -> None:
    dep = write_deployment(tmp_path / "d", SCRIPT)
    inputs = write_inputs(tmp_path / "in", 2)
    out = tmp_path / "out"
    result = daskscore.run(dep, inputs.as_uri(), out.as_uri(), client=client)
    assert result.status == "Completed" and result.succeeded_items == 2
    assert summary_of(out)["total_items"] == 2
    again = tmp_path / "again"
    proc = cli(dep, inputs.as_uri(), again.as_uri())  # type: ignore[arg-type]  # (the command)
    assert proc.returncode == 0 and summary_of(again)["total_items"] == 2, show(proc)
    assert not Path("file:").exists()
    with pytest.raises(daskscore.UsageError, match="file:// URL of the host 'elsewhere'"):
        daskscore.run(dep, f"file://elsewhere{inputs}", tmp_path / "o3", client=client)
