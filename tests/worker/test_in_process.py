"""An in-process cluster (``LocalCluster(processes=False)``, as in a notebook) with two
workers in the caller's own process: the script is installed once for the process (Azure's
``init()`` once per process), and when the job ends, or ``init()`` fails, the caller's
``sys.stdout``/``sys.stderr``, ``sys.argv`` and environment are its own again. Each worker
installed its own copy under one job id: the second replaced the first, which was never
uninstalled, so the caller's prints went on into the script's log after the job.  A script
that changes directory (``os.chdir`` in ``init()``) has it for each of its calls, and the
caller has its own between them: it was left in the script's folder, so that a second job
given by relative paths found no deployment file."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import write_deployment, write_inputs

import daskscore
from daskscore.errors import InitFailed

pytestmark = pytest.mark.timeout(240)

SCRIPT = """
    import os

    def init():
        os.environ["SET_BY_INIT"] = "1"  # (the script's own: undone when it is uninstalled)
        if os.environ.get("FAIL"):
            raise ValueError("no model")
        with open(os.path.join(os.environ["MARKS"], f"init-{os.getpid()}-{id(init)}"), "w"):
            pass

    def run(mini_batch):
        print("scoring", len(mini_batch))
        return [os.path.basename(p) for p in mini_batch]
"""

CHDIR = """
    import os

    HERE = os.path.dirname(os.path.abspath(__file__))

    def init():
        os.chdir(HERE)  # (so that the script's relative paths find its files)

    def run(mini_batch):
        with open("label.txt") as fh:
            label = fh.read().strip()
        return [f"{label}:{os.path.basename(p)}" for p in mini_batch]

    def shutdown():
        with open("shutdown.txt", "w") as fh:
            fh.write(os.getcwd())
"""


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address="127.0.0.1:0"
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        yield client


def _process_state() -> tuple[Any, ...]:
    return sys.stdout, sys.stderr, list(sys.argv), dict(os.environ)


def test_a_job_installs_once_per_process_and_leaves_the_callers_streams_as_they_were(
    client: Any, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    dep = write_deployment(
        tmp_path / "deploy",
        SCRIPT,
        settings={"mini_batch_size": 2, "environment_variables": {"MARKS": str(marks)}},
    )
    before = _process_state()

    result = daskscore.run(dep, write_inputs(tmp_path / "in", 12), tmp_path / "out", client=client)

    assert result.status == "Completed" and result.succeeded_items == 12
    assert len(list(marks.iterdir())) == 1, "init() once for the process's two workers"
    assert _process_state() == before
    # (the process is the caller's: what run() printed is the caller's output, as in Python)
    assert "scoring 2" in capsys.readouterr().out


def test_an_open_session_leaves_the_callers_output_alone(
    client: Any, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A notebook's session stays open (score()'s until the kernel exits): its prints must
    not go into the session's log meanwhile."""
    marks = tmp_path / "marks"
    marks.mkdir()
    dep = write_deployment(
        tmp_path / "deploy", SCRIPT, settings={"environment_variables": {"MARKS": str(marks)}}
    )
    before = sys.stdout, sys.stderr
    with daskscore.open_session(dep, str(write_inputs(tmp_path / "in", 4)), client=client) as s:
        assert (sys.stdout, sys.stderr) == before
        print("the notebook's own line")
        assert len(client.compute(s.frame).result()) == 4
    assert "the notebook's own line" in capsys.readouterr().out


def test_a_session_whose_init_fails_leaves_nothing_switched(client: Any, tmp_path: Path) -> None:
    dep = write_deployment(
        tmp_path / "deploy",
        SCRIPT,
        settings={"environment_variables": {"FAIL": "1", "MARKS": str(tmp_path)}},
    )
    before = _process_state()

    with pytest.raises(InitFailed):
        daskscore.score(dep, write_inputs(tmp_path / "in", 4), client=client)

    assert _process_state() == before


def _chdir_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The CHDIR script's deployment and inputs in ``tmp_path``, the caller's directory;
    returns the script's code folder."""
    write_deployment(
        tmp_path / "deploy",
        CHDIR,
        extra_code={"label.txt": "cat\n"},
        settings={"mini_batch_size": 2},
    )
    write_inputs(tmp_path / "in", 4)
    monkeypatch.chdir(tmp_path)
    return (tmp_path / "deploy" / "code").resolve()


def test_a_script_that_changes_directory_leaves_the_callers_after_the_job(
    client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = _chdir_job(tmp_path, monkeypatch)
    caller = os.getcwd()
    for out in ("out1", "out2"):  # (the second job's relative paths: the caller's directory)
        result = daskscore.run("deploy/deployment.yml", "in", out, client=client)
        assert result.status == "Completed" and result.succeeded_items == 4
        assert os.getcwd() == caller
        assert "cat:f0003.csv" in Path(result.predictions).read_text()  # (run() found its file)
        assert (code / "shutdown.txt").read_text() == str(code)  # (so did shutdown())
        assert not (tmp_path / out / "shutdown.txt").exists()


def test_an_open_session_leaves_the_caller_its_directory_and_each_run_the_scripts(
    client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = _chdir_job(tmp_path, monkeypatch)
    caller = os.getcwd()
    with daskscore.open_session("deploy/deployment.yml", "in", client=client) as session:
        assert os.getcwd() == caller, "between the script's calls the directory is the caller's"
        frame = client.compute(session.frame).result()
        assert frame["prediction"].tolist() == [f"cat:f{i:04d}.csv" for i in range(4)]
        assert os.getcwd() == caller
    assert os.getcwd() == caller
    assert (code / "shutdown.txt").read_text() == str(code)
