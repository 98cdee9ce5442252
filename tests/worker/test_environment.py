"""What a scoring script sees of its process, set and undone per installed job, in a process
where jobs overlap: two sessions on one client install two jobs in the same worker process,
and closing them in either order must leave the one still open as it was and, after the last,
the process as it was (no variable, secret or not, of a closed job left behind).  The current
directory a script moves to is its own for its calls; the caller's comes back between them on
an in-process worker, and when the script is uninstalled everywhere."""

from __future__ import annotations

import dataclasses
import itertools
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daskscore.protocol import WorkerJob
from daskscore.worker.environment import (
    ScriptVariables,
    is_newest,
    reassert_environment,
    restore_environment,
    script_environment,
    set_environment,
)

PREFIX = "DASKSCORE_TEST_ENV_"


def job(name: str, tmp_path: Path, **env: str) -> WorkerJob:
    return WorkerJob(
        job_id=name, code=str(tmp_path), script=f"{name}.py", model_path=None,
        output=str(tmp_path / f"out-{name}"), logs=str(tmp_path / "logs"), staging="s",
        env={PREFIX + k: v for k, v in env.items()},
    )  # fmt: skip


def ours() -> dict[str, str]:
    """The test's variables and Azure's two, as the process has them now."""
    names = ("AZUREML_MODEL_DIR", "AZUREML_BI_OUTPUT_PATH")
    return {k: v for k, v in os.environ.items() if k.startswith(PREFIX) or k in names}


@pytest.fixture
def process(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """The process as it was: one variable the jobs replace, one they leave, sys.argv."""
    monkeypatch.setenv(PREFIX + "SHARED", "the process's own")
    monkeypatch.setenv(PREFIX + "UNTOUCHED", "kept")
    monkeypatch.delenv("AZUREML_MODEL_DIR", raising=False)
    monkeypatch.delenv("AZUREML_BI_OUTPUT_PATH", raising=False)
    monkeypatch.setattr(sys, "argv", ["driver.py", "--flag"])
    yield {"env": ours(), "argv": list(sys.argv)}


@pytest.mark.parametrize("first_closed", ["a", "b"])
def test_overlapping_jobs_undone_in_either_order_leave_the_open_one_then_the_process(
    tmp_path: Path, process: dict[str, Any], first_closed: str
) -> None:
    saved: dict[str, dict[str, Any]] = {"a": {}, "b": {}}
    first = job("a", tmp_path, SHARED="a", ONLY_A="a", SECRET="a-secret")
    dirs = {"a": set_environment(first, saved["a"])}
    seen_a = ours()
    dirs["b"] = set_environment(job("b", tmp_path, SHARED="b", ONLY_B="b"), saved["b"])
    seen_b = ours()
    try:
        # the newest job sees its own values and the process's: none of the older one's (a
        # closed session's or a killed driver's job, not yet removed, went into its results)
        assert seen_b[PREFIX + "SHARED"] == "b" and seen_b[PREFIX + "ONLY_B"] == "b"
        assert PREFIX + "ONLY_A" not in seen_b and PREFIX + "SECRET" not in seen_b
        assert seen_b[PREFIX + "UNTOUCHED"] == "kept"
        assert seen_b["AZUREML_MODEL_DIR"] == dirs["b"] and sys.argv == ["b.py"]

        open_one = "b" if first_closed == "a" else "a"
        restore_environment(saved[first_closed])
        now = ours()
        if open_one == "b":
            # a's own variables go (its secret too), b's stay as b set them
            gone = {PREFIX + "ONLY_A", PREFIX + "SECRET"}
            assert now == {k: v for k, v in seen_b.items() if k not in gone}
            assert sys.argv == ["b.py"]
        else:
            # b's own variables go; where b had replaced one of a's, a's value is back
            assert now == seen_a
            assert sys.argv == ["a.py"]

        restore_environment(saved[open_one])
        assert ours() == process["env"]
        assert sys.argv == process["argv"]
    finally:
        for folder in dirs.values():
            shutil.rmtree(folder, ignore_errors=True)


def test_three_jobs_in_every_order_of_undoing_end_as_the_process_began(
    tmp_path: Path, process: dict[str, Any]
) -> None:
    names = ["a", "b", "c"]
    for order in itertools.permutations(names):
        saved: dict[str, dict[str, Any]] = {n: {} for n in names}
        dirs = [
            set_environment(job(n, tmp_path, SHARED=n, **{n.upper(): n}), saved[n]) for n in names
        ]
        open_jobs = list(names)
        for name in order:
            restore_environment(saved[name])
            open_jobs.remove(name)
            now = ours()
            newest = open_jobs[-1] if open_jobs else None
            for n in names:  # the newest open job's own variable is there, no other job's
                assert (PREFIX + n.upper() in now) == (n == newest), (order, name, now)
            expected = newest if newest else process["env"][PREFIX + "SHARED"]
            assert now[PREFIX + "SHARED"] == expected, (order, name)
            assert sys.argv == ([f"{newest}.py"] if newest else process["argv"])
        assert ours() == process["env"], order
        for folder in dirs:
            shutil.rmtree(folder, ignore_errors=True)


def test_a_warm_script_taken_over_by_the_next_job_becomes_the_newest(
    tmp_path: Path, process: dict[str, Any]
) -> None:
    """A parked script's next job sets its values again (its output folder is new); undoing
    the other job afterwards must not take them back."""
    a, b = {}, {}  # type: ignore[var-annotated]
    dirs = [set_environment(job("a", tmp_path, SHARED="a"), a)]
    dirs.append(set_environment(job("b", tmp_path, SHARED="b"), b))
    again = {PREFIX + "SHARED": "a2", "AZUREML_BI_OUTPUT_PATH": "/new/out"}
    reassert_environment(a, again, ["a.py"])
    assert os.environ[PREFIX + "SHARED"] == "a2" and sys.argv == ["a.py"]
    restore_environment(b)
    assert os.environ[PREFIX + "SHARED"] == "a2"
    assert os.environ["AZUREML_BI_OUTPUT_PATH"] == "/new/out" and sys.argv == ["a.py"]
    restore_environment(a)
    assert ours() == process["env"] and sys.argv == process["argv"]
    restore_environment(a)  # a second undo does nothing
    assert ours() == process["env"]
    for folder in dirs:
        shutil.rmtree(folder, ignore_errors=True)


def test_an_older_jobs_variables_come_back_when_it_is_made_current_again(
    tmp_path: Path, process: dict[str, Any]
) -> None:
    """A task of the older of two open jobs makes its job current again (``reassert``): its
    own variables are back and the newer job's are not, until the newer one's next task."""
    a, b = {}, {}  # type: ignore[var-annotated]
    dirs = [set_environment(job("a", tmp_path, ONLY_A="a", SHARED="a"), a)]
    dirs.append(set_environment(job("b", tmp_path, ONLY_B="b"), b))
    assert is_newest(b) and not is_newest(a)
    assert PREFIX + "ONLY_A" not in os.environ
    assert os.environ[PREFIX + "SHARED"] == "the process's own"
    env_a = {PREFIX + "ONLY_A": "a", PREFIX + "SHARED": "a", "AZUREML_BI_OUTPUT_PATH": "/a"}
    reassert_environment(a, env_a, ["a.py"])
    assert is_newest(a) and not is_newest(b)
    assert os.environ[PREFIX + "ONLY_A"] == "a" and os.environ[PREFIX + "SHARED"] == "a"
    assert PREFIX + "ONLY_B" not in os.environ and sys.argv == ["a.py"]
    restore_environment(a)
    assert not is_newest(a)
    assert os.environ[PREFIX + "ONLY_B"] == "b" and PREFIX + "ONLY_A" not in os.environ
    assert os.environ[PREFIX + "SHARED"] == "the process's own"
    restore_environment(b)
    assert ours() == process["env"] and sys.argv == process["argv"]
    for folder in dirs:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """The caller's directory (the current one) and two a script may move to."""
    found = {name: (tmp_path / name).resolve() for name in ("caller", "a", "b")}
    for folder in found.values():
        folder.mkdir()
    monkeypatch.chdir(found["caller"])
    return found


def test_an_in_process_scripts_directory_holds_for_its_calls_the_callers_between_them(
    tmp_path: Path, process: dict[str, Any], dirs: dict[str, Path]
) -> None:
    saved: dict[str, Any] = {}
    model_dir = set_environment(job("a", tmp_path), saved)  # (the import and init() follow)
    cwd = saved["cwd"]
    cwd.per_call = True  # (a worker in its caller's process)
    os.chdir(dirs["a"])  # init()
    cwd.leave()
    assert Path.cwd() == dirs["caller"]
    for _ in range(2):  # run(), twice
        cwd.enter()
        assert Path.cwd() == dirs["a"]
        cwd.leave()
        assert Path.cwd() == dirs["caller"]
    cwd.enter()  # shutdown(), then the script is uninstalled
    restore_environment(saved)
    assert Path.cwd() == dirs["caller"]
    shutil.rmtree(model_dir, ignore_errors=True)


def test_calls_of_two_in_process_jobs_at_once_give_the_caller_its_directory_after_the_last(
    tmp_path: Path, process: dict[str, Any], dirs: dict[str, Path]
) -> None:
    saved: dict[str, dict[str, Any]] = {"a": {}, "b": {}}
    folders = [set_environment(job(n, tmp_path), saved[n]) for n in ("a", "b")]
    a, b = saved["a"]["cwd"], saved["b"]["cwd"]
    a.per_call = b.per_call = True
    os.chdir(dirs["b"])  # b's init() (a's install is still in its init(): both calls in flight)
    b.leave()
    assert Path.cwd() == dirs["b"], "a call still runs: the directory is left as it is"
    a.leave()
    assert Path.cwd() == dirs["caller"]
    a.enter()
    assert Path.cwd() == dirs["caller"], "b's move is not a's: a stayed where it began"
    b.enter()
    assert Path.cwd() == dirs["b"]
    a.leave()
    b.leave()
    assert Path.cwd() == dirs["caller"]
    for name in ("a", "b"):
        restore_environment(saved[name])
    assert Path.cwd() == dirs["caller"]
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_worker_process_of_its_own_keeps_the_scripts_directory_until_it_is_uninstalled(
    tmp_path: Path, process: dict[str, Any], dirs: dict[str, Path]
) -> None:
    saved: dict[str, Any] = {}
    model_dir = set_environment(job("a", tmp_path), saved)
    cwd = saved["cwd"]
    os.chdir(dirs["a"])  # init()
    cwd.leave()
    cwd.enter()  # run()
    cwd.leave()
    assert Path.cwd() == dirs["a"], "the process is the script's while it is installed"
    restore_environment(saved)
    assert Path.cwd() == dirs["caller"], "the next job starts where a fresh process would"
    shutil.rmtree(model_dir, ignore_errors=True)


def test_a_storage_variable_the_script_set_stays_when_a_warm_job_takes_it_over(
    tmp_path: Path, process: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A warm job's storage variables are set over the worker's own; one the script's init()
    set (its region) stays when the next job takes the script over, whose init() does not run
    again: unsetting the worker's others took it away."""
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    first = dataclasses.replace(
        job("a", tmp_path), storage_env={"AWS_ACCESS_KEY_ID": "from-the-driver"}
    )
    saved: dict[str, Any] = {}
    folder = set_environment(first, saved)
    try:
        assert os.environ["AWS_ACCESS_KEY_ID"] == "from-the-driver"
        os.environ["AWS_DEFAULT_REGION"] = "eu-west-1"  # the script's init()
        reassert_environment(saved, script_environment(first, None, None), ["a.py"])
        assert os.environ["AWS_DEFAULT_REGION"] == "eu-west-1"
        assert os.environ["AWS_ACCESS_KEY_ID"] == "from-the-driver"
    finally:
        restore_environment(saved)
        os.environ.pop("AWS_DEFAULT_REGION", None)
        shutil.rmtree(folder, ignore_errors=True)


def test_a_worker_process_of_its_own_gives_each_script_its_directory_again_when_reasserted(
    tmp_path: Path, process: dict[str, Any], dirs: dict[str, Path]
) -> None:
    """Two scripts installed in one worker process: the one made newest again (its next
    mini-batch) has where its own init() went (the worker's own: it never moved), not where
    the other one's init() went; the worker's comes back after the last is uninstalled."""
    saved: dict[str, dict[str, Any]] = {"a": {}, "b": {}, "c": {}}
    folders = []
    for name in ("a", "b", "c"):
        folders.append(set_environment(job(name, tmp_path), saved[name]))
        if name in dirs:
            os.chdir(dirs[name])  # (its init(); c's stays where it began)
        saved[name]["cwd"].leave()
    for name, where in (("a", "a"), ("c", "caller"), ("b", "b"), ("a", "a")):
        reassert_environment(saved[name], {}, [f"{name}.py"])
        assert Path.cwd() == dirs[where]
    for name in ("a", "c", "b"):
        restore_environment(saved[name])
    assert Path.cwd() == dirs["caller"] and ours() == process["env"]
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("order", list(itertools.permutations("ab")))
def test_variables_two_scripts_init_set_are_each_ones_own_and_undone_in_any_order(
    tmp_path: Path, process: dict[str, Any], order: tuple[str, ...]
) -> None:
    saved: dict[str, dict[str, Any]] = {"a": {}, "b": {}}
    folders = []
    for name in ("a", "b"):
        folders.append(set_environment(job(name, tmp_path), saved[name]))
        assert PREFIX + "INIT" not in os.environ, "another script's init() set it, not this one"
        own = ScriptVariables()
        os.environ[PREFIX + "INIT"] = os.environ[PREFIX + "SHARED"] = name  # its init()
        own.taken(saved[name])
    reassert_environment(saved["a"], script_environment(job("a", tmp_path), None, None), ["a"])
    assert os.environ[PREFIX + "INIT"] == os.environ[PREFIX + "SHARED"] == "a"
    restore_environment(saved[order[0]])
    assert os.environ[PREFIX + "INIT"] == order[1]
    restore_environment(saved[order[1]])
    assert ours() == process["env"]
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
