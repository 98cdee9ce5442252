"""Scripts installed at once in one worker process (two ``score()`` sessions on one client, a
session beside a ``run()`` job) each run as if alone: a newer install of another deployment
does not give an older one its sibling modules, its current directory or the variables its
``init()`` set, and once all are closed, in any order, the process is as it was before them.

The new install of a deployment imported the sibling ``helper.py`` of another deployment
installed since (its folder stayed ahead on ``sys.path``); a script's ``run()`` read the files
of the directory another script's ``init()`` moved to, and saw that script's variables; and a
variable two scripts' ``init()`` set stayed behind when they were closed in the order they
were opened.  Real LocalClusters: worker processes, and workers in this process."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import write_deployment, write_inputs
from distributed import Client, LocalCluster

import daskscore

pytestmark = pytest.mark.timeout(300)

#: run() names the helper the script imported and the one ``import helper`` finds in run()
HELPER_SCRIPT = """
    import helper

    def run(mini_batch):
        import helper as now  # (looked up when run() runs)
        return [f"{helper.WHO}/{now.WHO}" for _ in mini_batch]
"""

#: init() moves to the model's folder and sets variables; run() reads its weights there
INIT_SCRIPT = """
    import os

    NAME = "@NAME@"

    def init():
        os.chdir(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model"))
        os.environ["DASKSCORE_TEST_INITSET"] = NAME
        os.environ["DASKSCORE_TEST_ONLY_" + NAME] = "1"

    def run(mini_batch):
        with open("weights.txt") as fh:  # (relative to the directory init() chose)
            weights = fh.read().strip()
        seen = os.environ.get("DASKSCORE_TEST_INITSET")
        only = ",".join(sorted(k for k in os.environ if k.startswith("DASKSCORE_TEST_ONLY_")))
        return [f"{NAME} {weights} {seen} {only}" for _ in mini_batch]
"""


@pytest.fixture
def cluster_client(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Client]:
    """A client of a fresh LocalCluster of two single-threaded workers: worker processes
    (``processes``), or workers in this process; started in ``tmp_path``."""
    monkeypatch.chdir(tmp_path)
    processes = request.param == "processes"
    where = {"host": "127.0.0.1"} if processes else {}  # (in-process: its own transport)
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=processes,
            dashboard_address="127.0.0.1:0",
            **where,
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        yield client


def _values(session: Any, client: Client) -> set[str]:
    return set(client.compute(session.frame).result()["prediction"].astype(str))


def _helper_deployment(root: Path, who: str) -> Path:
    return write_deployment(
        root,
        HELPER_SCRIPT,
        extra_code={"helper.py": f"WHO = {who!r}\n"},
        settings={"mini_batch_size": 2},
    )


def _init_deployment(root: Path, name: str) -> Path:
    return write_deployment(
        root,
        INIT_SCRIPT.replace("@NAME@", name),
        model_files={"weights.txt": f"{name}-weights"},
        settings={"mini_batch_size": 2},
    )


def _process(dask_worker: Any = None) -> tuple[str, tuple[tuple[str, str], ...]]:
    """A worker process's directory and the test's variables it has."""
    ours = sorted((k, v) for k, v in os.environ.items() if k.startswith("DASKSCORE_TEST_"))
    return os.getcwd(), tuple(ours)


@pytest.mark.parametrize("cluster_client", ["processes"], indirect=True)
def test_each_install_imports_its_own_sibling_modules_whatever_else_is_open(
    cluster_client: Client, tmp_path: Path
) -> None:
    client = cluster_client
    inputs = write_inputs(tmp_path / "in", 4)
    a = _helper_deployment(tmp_path / "A", "A")
    b = _helper_deployment(tmp_path / "B", "B")
    with contextlib.ExitStack() as open_sessions:

        def session(dep: Path) -> Any:
            return open_sessions.enter_context(daskscore.open_session(dep, inputs, client=client))

        first_a = session(a)
        assert _values(first_a, client) == {"A/A"}
        only_b = session(b)
        assert _values(only_b, client) == {"B/B"}
        second_a = session(a)  # (A's folder is on sys.path already: first_a's)
        assert _values(second_a, client) == {"A/A"}  # (was B/B: B's folder came first)
        assert _values(only_b, client) == {"B/B"}  # (its run()'s import: was B/A)
        assert _values(first_a, client) == {"A/A"}
        result = daskscore.run(a, inputs, tmp_path / "out", client=client, progress=False)
        assert set(result.predictions.read_text().split()) == {"A/A"}
        assert _values(only_b, client) == {"B/B"}


@pytest.mark.parametrize("cluster_client", ["processes", "in-process"], indirect=True)
def test_each_scripts_run_sees_the_directory_and_variables_its_own_init_left(
    cluster_client: Client, tmp_path: Path
) -> None:
    client = cluster_client
    inputs = write_inputs(tmp_path / "in", 4)
    c, d = _init_deployment(tmp_path / "C", "C"), _init_deployment(tmp_path / "D", "D")
    with (
        daskscore.open_session(c, inputs, client=client) as first,
        daskscore.open_session(d, inputs, client=client) as second,
    ):
        for _ in range(2):  # (each in turn, after the other's run() calls)
            assert _values(first, client) == {"C C-weights C DASKSCORE_TEST_ONLY_C"}
            assert _values(second, client) == {"D D-weights D DASKSCORE_TEST_ONLY_D"}
        result = daskscore.run(c, inputs, tmp_path / "out", client=client, progress=False)
        rows = set(result.predictions.read_text().splitlines())
        assert rows == {"C C-weights C DASKSCORE_TEST_ONLY_C"}
        assert _values(second, client) == {"D D-weights D DASKSCORE_TEST_ONLY_D"}


@pytest.mark.parametrize("order", ["first-opened-first", "last-opened-first"])
@pytest.mark.parametrize("cluster_client", ["processes", "in-process"], indirect=True)
def test_closing_the_sessions_in_any_order_leaves_the_process_as_it_was(
    cluster_client: Client, tmp_path: Path, order: str
) -> None:
    client = cluster_client
    inputs = write_inputs(tmp_path / "in", 4)
    before = client.run(_process)
    assert {cwd for cwd, _ in before.values()} == {str(tmp_path)}
    c, d = _init_deployment(tmp_path / "C", "C"), _init_deployment(tmp_path / "D", "D")
    sessions = [
        daskscore.open_session(c, inputs, client=client),
        daskscore.open_session(d, inputs, client=client),
    ]
    try:
        for session in sessions:  # (each run() made its job's environment the process's)
            assert len(_values(session, client)) == 1
    finally:
        for session in sessions if order == "first-opened-first" else sessions[::-1]:
            session.close()
    assert client.run(_process) == before  # (was DASKSCORE_TEST_INITSET=C left behind)
    assert not any(k.startswith("DASKSCORE_TEST_") for k in os.environ)
    assert os.getcwd() == str(tmp_path)


#: run() checks its job's variables before and after a pause (another job's install or call
#: in the process meanwhile changed them), writes a custom output file, as Azure's scripts do
TURN_SCRIPT = """
    import os
    import time

    def run(mini_batch):
        rows = []
        for path in mini_batch:
            before = os.environ["DASKSCORE_TEST_DEP"]
            time.sleep(0.05)
            stem = os.path.splitext(os.path.basename(path))[0]
            out = os.environ["AZUREML_BI_OUTPUT_PATH"]
            with open(os.path.join(out, f"{before}-{stem}.out"), "w") as fh:
                fh.write(before)
            rows.append(f"{before}/{os.environ['DASKSCORE_TEST_DEP']}")
        return rows
"""


def _turn_deployment(root: Path, name: str) -> Path:
    return write_deployment(
        root,
        TURN_SCRIPT,
        settings={"mini_batch_size": 1, "environment_variables": {"DASKSCORE_TEST_DEP": name}},
    )


def test_two_jobs_on_a_worker_with_two_threads_take_turns(tmp_path: Path) -> None:
    """A ``run()`` job and a ``score()`` session at once on one client whose worker has two
    threads: each call sees its own job's variables from start to end and writes its files
    into its own output folder (they ran at once, each seeing the other's)."""
    inputs = write_inputs(tmp_path / "in", 8)
    a, b = _turn_deployment(tmp_path / "A", "A"), _turn_deployment(tmp_path / "B", "B")
    found: dict[str, Any] = {}
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=2, host="127.0.0.1", dashboard_address="127.0.0.1:0"
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
        daskscore.open_session(b, inputs, client=client, meta=_meta()) as session,
    ):

        def job() -> None:
            found["a"] = daskscore.run(a, inputs, tmp_path / "out", client=client, progress=False)

        thread = threading.Thread(target=job)
        thread.start()
        found["b"] = client.compute(session.frame).result()["prediction"].tolist()
        thread.join()
        b_files = sorted(p.name for p in session.job_dir.glob("*.out"))
    rows = found["a"].predictions.read_text().split()
    assert found["a"].succeeded_items == 8 and set(rows) == {"A/A"}
    assert sorted(found["b"]) == ["B/B"] * 8
    a_files = sorted(p.name for p in (tmp_path / "out").glob("*.out"))
    assert a_files == [f"A-f{i:04d}.out" for i in range(8)]
    assert b_files == [f"B-f{i:04d}.out" for i in range(8)]


def _meta() -> Any:
    import pandas as pd

    return pd.DataFrame({"prediction": pd.Series([], dtype=object)})


#: init() moves to its code folder; run() reads a file there by a relative path
CHDIR_SCRIPT = """
    import os

    def init():
        os.chdir(os.path.dirname(os.path.abspath(__file__)))

    def run(mini_batch):
        with open("labels.txt") as fh:
            label = fh.read().strip()
        return [f"{label} {os.getcwd()}" for _ in mini_batch]
"""


@pytest.mark.parametrize("cluster_client", ["processes"], indirect=True)
def test_the_same_deployment_installed_twice_runs_each_in_the_directory_its_init_chose(
    cluster_client: Client, tmp_path: Path
) -> None:
    """A deployment installed again while it is open (two sessions, and a ``run()`` job,
    of it): the later install started in the folder the first one's init() moved to, so its
    own move looked like none, and its run() calls were put back in the worker's directory
    after the other's (every item failed: labels.txt not found)."""
    client = cluster_client
    inputs = write_inputs(tmp_path / "in", 4)
    dep = write_deployment(
        tmp_path / "D",
        CHDIR_SCRIPT,
        extra_code={"labels.txt": "label\n"},
        settings={"mini_batch_size": 2, "retry_settings": {"max_retries": 0}},
    )
    want = {f"label {(tmp_path / 'D' / 'code').resolve()}"}
    with (
        daskscore.open_session(dep, inputs, client=client) as first,
        daskscore.open_session(dep, inputs, client=client) as second,
    ):
        for session in (first, second, first, second):  # (each after the other's calls)
            assert _values(session, client) == want
        result = daskscore.run(dep, inputs, tmp_path / "out", client=client, progress=False)
        assert (result.succeeded_items, result.failed_items) == (4, 0)
        assert set(result.predictions.read_text().splitlines()) == want
        for session in (first, second):
            assert _values(session, client) == want


#: run() logs (from its own thread and from one it starts) a line naming its job and the key
LOG_SCRIPT = """
    import logging
    import os
    import threading

    log = logging.getLogger("myscript")

    def init():
        log.warning("init of %s", os.environ["DASKSCORE_TEST_DEP"])

    def run(mini_batch):
        name = os.environ["DASKSCORE_TEST_DEP"]
        log.warning("%s scoring with key=%s", name, os.environ.get("API_KEY", "none"))
        helper = threading.Thread(target=log.warning, args=("%s from a thread", name))
        helper.start()
        helper.join()
        return [name for _ in mini_batch]
"""


def _log_deployment(root: Path, name: str, **env: str) -> Path:
    variables = {"DASKSCORE_TEST_DEP": name, **env}
    return write_deployment(
        root, LOG_SCRIPT, settings={"mini_batch_size": 2, "environment_variables": variables}
    )


def _logs(session: Any) -> str:
    folder = session.job_dir / "logs" / "user" / "stdout"
    return "".join(p.read_text() for p in sorted(folder.glob("*.txt")))


@pytest.mark.parametrize("cluster_client", ["processes"], indirect=True)
def test_each_open_jobs_log_has_the_records_of_its_own_calls_alone(
    cluster_client: Client, tmp_path: Path
) -> None:
    """Two jobs installed in the same worker processes: each one's ``logs/user/stdout`` has
    its own script's log records (those of a thread its run() starts too), none of the
    other's; the other's secret is in neither (a record went to every job's log)."""
    client = cluster_client
    inputs = write_inputs(tmp_path / "in", 4)
    secret = "sk-live-Zq81xTT"
    lb = _log_deployment(tmp_path / "LB", "LB", API_KEY=secret)
    la = _log_deployment(tmp_path / "LA", "LA")
    with (
        daskscore.open_session(lb, inputs, client=client) as b,
        daskscore.open_session(la, inputs, client=client) as a,
    ):
        for session, name in ((b, "LB"), (a, "LA"), (b, "LB")):
            assert _values(session, client) == {name}
        logs = {"LA": _logs(a), "LB": _logs(b)}
    for name, other in (("LA", "LB"), ("LB", "LA")):
        assert f"{name} scoring" in logs[name] and f"{name} from a thread" in logs[name]
        assert other not in logs[name], logs[name]
    assert secret not in logs["LA"] + logs["LB"]
