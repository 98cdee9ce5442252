"""Integration tests of :func:`daskscore.score`: the predictions as a lazy Dask DataFrame.

Every test scores on the module's LocalCluster (the ``client`` fixture).  The scoring script
notes every ``run()`` call (and its files) in a marker file in a folder named by
``settings.environment_variables``, so the tests can tell how many mini-batches ran and when:
nothing but the one mini-batch that infers ``meta`` before a compute.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import write_deployment, write_inputs

import daskscore
from daskscore.engine.scoredeaths import ROOT

N_FILES = 12
MINI_BATCH_SIZE = 2
N_MINI_BATCHES = N_FILES // MINI_BATCH_SIZE

SCRIPT = """
    import os
    import uuid

    import pandas as pd

    MARKERS = os.environ["MARKERS"]
    RETURNS = os.environ.get("RETURNS", "frame")
    FAIL_ON = os.environ.get("FAIL_ON", "")

    def init():
        pass

    def run(mini_batch):
        if isinstance(mini_batch, pd.DataFrame):
            names = [f"rows-{mini_batch.index[0]}"]
        else:
            names = [os.path.basename(p) for p in mini_batch]
        with open(os.path.join(MARKERS, "run-" + uuid.uuid4().hex), "w") as fh:
            fh.write(" ".join(names))
        if FAIL_ON and FAIL_ON in names:
            raise ValueError(f"cannot score {FAIL_ON}")
        if isinstance(mini_batch, pd.DataFrame):
            out = pd.DataFrame({"pred": mini_batch["v"] * 2})
            if os.environ.get("INDEX_BY"):  # (else the file's row numbers, as given)
                name = os.environ.get("INDEX_NAME", "key")
                out.index = pd.Index(mini_batch[os.environ["INDEX_BY"]], name=name)
            return out
        n = [int(name[1:5]) for name in names]
        if RETURNS == "list":
            return [f"{name}:{i * 10}" for name, i in zip(names, n)]
        frame = pd.DataFrame(
            {
                "n": pd.array(n, dtype="int64"),
                "score": [i * 0.5 for i in n],
                "small": pd.array([i % 7 for i in n], dtype="int16"),
                "even": [i % 2 == 0 for i in n],
                "name": names,
            }
        )
        if RETURNS == "extra" and "f0006.csv" in names:
            frame["x"] = 1.5  # (a column the first mini-batch did not return)
        return frame

    def shutdown():
        with open(os.path.join(MARKERS, "shutdown-" + uuid.uuid4().hex), "w") as fh:
            fh.write("bye")
"""


# --------------------------------------------------------------------------- helpers


def deploy(root: Path, markers: Path, **env: str) -> Path:
    return write_deployment(
        root / "deploy",
        SCRIPT,
        settings={
            "mini_batch_size": MINI_BATCH_SIZE,
            "environment_variables": {"MARKERS": str(markers), **env},
            "retry_settings": {"max_retries": 1},
        },
    )


def runs(markers: Path) -> list[str]:
    """What each run() call so far was given (file names joined by spaces)."""
    return sorted(p.read_text() for p in markers.glob("run-*"))


def expected_frame(skip: tuple[int, ...] = ()) -> pd.DataFrame:
    n = [i for i in range(N_FILES) if i not in skip]
    return pd.DataFrame(
        {
            "n": pd.array(n, dtype="int64"),
            "score": [i * 0.5 for i in n],
            "small": pd.array([i % 7 for i in n], dtype="int16"),
            "even": [i % 2 == 0 for i in n],
            "name": [f"f{i:04d}.csv" for i in n],
        }
    )


@pytest.fixture
def markers(tmp_path: Path) -> Path:
    folder = tmp_path / "markers"
    folder.mkdir()
    return folder


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    return write_inputs(tmp_path / "in", N_FILES)


#: the sessions this module's tests opened, oldest first (fixtures close them)
_opened: list[Any] = []


def score(*args: Any, **kwargs: Any) -> Any:
    """``daskscore.open_session(...).frame``, the session kept in ``_opened`` to be closed."""
    session = daskscore.open_session(*args, **kwargs)
    _opened.append(session)
    return session.frame


@pytest.fixture
def current(client: Any) -> Iterator[Any]:
    """The module's client as the current one, so that ``.compute()`` uses it; every session
    the test opened is closed afterwards."""
    opened = len(_opened)
    try:
        with client.as_current():
            yield client
    finally:
        for session in _opened[opened:]:
            session.close()


# --------------------------------------------------------------------------- laziness, results


def test_score_is_lazy_then_head_and_compute_give_rows_in_order(
    current: Any, tmp_path: Path, markers: Path, inputs: Path
) -> None:
    dep = deploy(tmp_path, markers)
    ddf = score(dep, inputs, client=current, partitions=3)
    assert len(runs(markers)) == 1, "only the mini-batch that infers meta runs before compute"
    assert ddf.npartitions == 3

    head = ddf.head(3)
    assert head["n"].tolist() == [0, 1, 2]
    assert len(runs(markers)) == 1 + 2, "head() computes the first partition only (2 batches)"

    frame = ddf.compute()
    assert len(runs(markers)) == 1 + 2 + N_MINI_BATCHES
    want = expected_frame()
    assert frame["n"].tolist() == list(range(N_FILES)), "all rows, in mini-batch order"
    got = frame.reset_index(drop=True)
    assert list(got.columns) == list(want.columns)
    for column in ["n", "score", "small", "even"]:
        assert got[column].dtype == want[column].dtype, column
        assert ddf.dtypes[column] == want[column].dtype, f"meta of {column}"
    assert pd.api.types.is_string_dtype(got["name"])
    assert got["name"].tolist() == want["name"].tolist()
    pd.testing.assert_frame_equal(got, want, check_dtype=False)


def test_list_returns_give_a_prediction_column(
    current: Any, tmp_path: Path, markers: Path, inputs: Path
) -> None:
    dep = deploy(tmp_path, markers, RETURNS="list")
    ddf = score(dep, inputs, client=current)
    assert list(ddf.columns) == ["prediction"]
    got = ddf.compute()["prediction"].tolist()
    assert got == [f"f{i:04d}.csv:{i * 10}" for i in range(N_FILES)]


def test_meta_skips_inference(current: Any, tmp_path: Path, markers: Path, inputs: Path) -> None:
    dep = deploy(tmp_path, markers)
    meta = expected_frame().iloc[:0]
    ddf = score(dep, inputs, client=current, meta=meta)
    assert runs(markers) == [], "with meta= nothing runs before compute"
    assert list(ddf.columns) == list(meta.columns)
    frame = ddf.compute()
    assert len(runs(markers)) == N_MINI_BATCHES
    assert frame["n"].tolist() == list(range(N_FILES))


def test_a_column_the_frame_does_not_declare_fails_the_compute_not_dropped(
    current: Any, tmp_path: Path, markers: Path, inputs: Path
) -> None:
    ddf = score(deploy(tmp_path, markers, RETURNS="extra"), inputs, client=current)
    assert "x" not in ddf.columns  # (inferred from mini-batch 0)
    with pytest.raises(daskscore.UsageError, match=r"column\(s\) \['x'\].*mini-batch 3"):
        ddf.compute()
    _opened[-1].close()  # (its RETURNS would stay in the process's environment while open)

    misspelt = expected_frame().iloc[:0].rename(columns={"score": "scor"})
    ddf = score(deploy(tmp_path / "b", markers), inputs, client=current, meta=misspelt)
    with pytest.raises(daskscore.UsageError, match=r"\['score'\].*given as meta="):
        ddf.compute()


def test_partitions_hold_the_declared_dtypes(
    current: Any, tmp_path: Path, markers: Path, inputs: Path
) -> None:
    """Ints where meta= says float64, text where it says string: each partition is converted,
    so the computed frame has the frame's own dtypes (to_parquet holds it to them)."""
    meta = expected_frame().iloc[:0].astype({"n": "float64", "name": "string"})
    ddf = score(deploy(tmp_path, markers), inputs, client=current, meta=meta)
    frame = ddf.compute()
    # (as the frame declares them: Dask 2024.8 makes a declared string column string[pyarrow])
    assert frame.dtypes.to_dict() == ddf.dtypes.to_dict()
    assert frame["n"].dtype == "float64"
    assert frame["n"].tolist() == [float(i) for i in range(N_FILES)]
    ddf.to_parquet(str(tmp_path / "pq"), write_index=False)
    assert pd.read_parquet(tmp_path / "pq")["n"].dtype == "float64"


def test_to_parquet_writes_every_row(
    current: Any, tmp_path: Path, markers: Path, inputs: Path
) -> None:
    dep = deploy(tmp_path, markers)
    ddf = score(dep, inputs, client=current)
    dest = tmp_path / "pq"
    ddf.to_parquet(str(dest), write_index=False)
    got = pd.read_parquet(dest).sort_values("n").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected_frame(), check_dtype=False)
    assert str(got["small"].dtype) == "int16"


def test_report_counts_and_close_calls_shutdown(
    current: Any, tmp_path: Path, markers: Path, inputs: Path
) -> None:
    dep = deploy(tmp_path, markers)
    ddf = score(dep, inputs, client=current)
    session = _opened[-1]
    assert session.frame is ddf
    assert session.report()["mini_batches"] == 0, "nothing computed yet"
    ddf.compute()
    ddf.compute()  # computed twice: counted once
    report = session.report()
    assert report["mini_batches"] == N_MINI_BATCHES
    assert report["succeeded_items"] == N_FILES and report["failed_items"] == 0
    assert report["failures"] == []
    assert Path(report["logs"]).is_dir()

    assert not list(markers.glob("shutdown-*"))
    job_id = session.job.job_id
    assert current.get_metadata([ROOT, job_id], None), "its partitions' records"
    session.close()
    # the scheduler keeps nothing of the session (it would, for its life)
    assert [name for name in current.get_events() if job_id in name] == []
    assert current.get_metadata([ROOT, job_id], None) is None
    assert not session.job_dir.exists(), "nothing failed: its temporary folder is removed"
    workers = len(current.scheduler_info(n_workers=-1)["workers"])
    assert len(list(markers.glob("shutdown-*"))) == workers, "shutdown() once per worker"


def test_failing_mini_batch_is_retried_then_gives_no_rows_and_is_reported(
    current: Any, tmp_path: Path, markers: Path, inputs: Path
) -> None:
    dep = deploy(tmp_path, markers, FAIL_ON="f0005.csv")  # mini-batch 2: f0004, f0005
    ddf = score(dep, inputs, client=current, on_error="drop")  # (default: raise)
    frame = ddf.compute()
    assert runs(markers).count("f0004.csv f0005.csv") == 2, "max_retries=1: two tries"
    assert frame["n"].tolist() == [i for i in range(N_FILES) if i not in (4, 5)]
    pd.testing.assert_frame_equal(
        frame.reset_index(drop=True), expected_frame(skip=(4, 5)), check_dtype=False
    )
    report = _opened[-1].report()
    assert report["succeeded_items"] == N_FILES - 2 and report["failed_items"] == 2
    [failure] = report["failures"]
    assert failure["mini_batch"] == 2 and failure["try"] == 2
    assert "cannot score f0005.csv" in failure["error"]


def test_tabular_score_with_carry_columns(current: Any, tmp_path: Path, markers: Path) -> None:
    folder = tmp_path / "tab"
    folder.mkdir()
    frames = []
    for k in range(2):
        frame = pd.DataFrame({"id": np.arange(k * 50, k * 50 + 50), "v": np.arange(50) * 1.5})
        frame.to_csv(folder / f"t{k}.csv", index=False)
        frames.append(frame.assign(row=np.arange(50)))
    rows = pd.concat(frames, ignore_index=True)
    dep = write_deployment(
        tmp_path / "deploy",
        SCRIPT,
        settings={"mini_batch_size": "9 rows", "environment_variables": {"MARKERS": str(markers)}},
    )
    ddf = score(dep, folder, client=current, carry_columns=["id", "row"])
    got = ddf.compute().reset_index(drop=True)
    assert list(got.columns) == ["id", "row", "pred"]
    assert got["id"].tolist() == rows["id"].tolist()
    assert got["row"].tolist() == rows["row"].tolist()
    np.testing.assert_allclose(got["pred"], rows["v"] * 2)


@pytest.mark.parametrize("index_by", ["", "id"], ids=["row-numbers", "named"])
def test_carry_columns_keep_the_index_run_returned(
    current: Any, tmp_path: Path, markers: Path, index_by: str
) -> None:
    """The index of the frame run() returned (a tabular mini-batch's row numbers in its
    file, or an index of its own) is the frame's with carried columns as without them (it
    became 0..n-1 per mini-batch)."""
    folder = tmp_path / "tab"
    folder.mkdir()
    for k in range(2):
        frame = pd.DataFrame({"id": np.arange(k * 20, k * 20 + 20) * 3, "v": np.arange(20.0)})
        frame.to_csv(folder / f"t{k}.csv", index=False)
    env = {"MARKERS": str(markers), "INDEX_BY": index_by}
    dep = write_deployment(
        tmp_path / "deploy",
        SCRIPT,
        settings={"mini_batch_size": "7 rows", "environment_variables": env},
    )
    ddf = score(dep, folder, client=current)
    plain = ddf.compute()
    ddf.attrs["daskscore"].close()  # (one session at a time: each sets the workers' environment)
    carried = score(dep, folder, client=current, carry_columns=["id", "row"]).compute()

    assert plain.index.name == carried.index.name == ("key" if index_by else None)
    assert carried.index.tolist() == plain.index.tolist()
    want = carried["id" if index_by else "row"].tolist()
    assert carried.index.tolist() == want  # (run() indexed each row by its id, or row number)
    assert carried["pred"].tolist() == plain["pred"].tolist()


def test_a_carried_column_named_as_the_index_is_called_input_name(
    current: Any, tmp_path: Path, markers: Path
) -> None:
    """run() indexes its rows by ``id``, naming the index ``row``, and ``row`` is carried: the
    carried column is ``input_row``, as in a dataset, whose column ``row`` is that index (the
    frame had a column and an index both ``row``, which ``reset_index()`` refused)."""
    folder = tmp_path / "tab"
    folder.mkdir()
    ids = np.arange(20) * 3
    pd.DataFrame({"id": ids, "v": np.arange(20.0)}).to_csv(folder / "t0.csv", index=False)
    env = {"MARKERS": str(markers), "INDEX_BY": "id", "INDEX_NAME": "row"}
    dep = write_deployment(
        tmp_path / "deploy",
        SCRIPT,
        settings={"mini_batch_size": "7 rows", "environment_variables": env},
    )
    ddf = score(dep, folder, client=current, carry_columns=["id", "row"])
    carried = ddf.compute()
    ddf.attrs["daskscore"].close()  # (one at a time: each sets the workers' environment)
    assert list(carried.columns) == ["id", "input_row", "pred"]
    assert carried.index.name == "row" and carried.index.tolist() == ids.tolist()
    assert carried["input_row"].tolist() == list(range(20))
    dataset = daskscore.run(
        dep, folder, tmp_path / "out", client=current, output_format="parquet",
        carry_columns=["id", "row"],
    )  # fmt: skip
    written = pd.read_parquet(dataset.predictions)
    pd.testing.assert_frame_equal(
        carried.reset_index()[list(written.columns)].reset_index(drop=True), written
    )


# --------------------------------------------------------------------------- the given client


def test_compute_runs_on_the_client_given_to_score(
    client: Any, tmp_path: Path, markers: Path, inputs: Path
) -> None:
    """score(client=...) with a client that is not the default one (``Client(...,
    set_as_default=False)``, as the fixture's): the frame is scored on that client's workers,
    where the script is installed; ``.compute()`` must not run it anywhere else."""
    dep = deploy(tmp_path, markers)
    opened = len(_opened)
    try:
        ddf = score(dep, inputs, client=client)
        frame = ddf.compute()
        assert frame["n"].tolist() == list(range(N_FILES))
    finally:
        for session in _opened[opened:]:
            session.close()


ENV_SCRIPT = """
    import os

    def init():
        pass

    def run(mini_batch):
        print("run() of", os.path.basename(os.path.dirname(os.path.dirname(__file__))))
        seen = {k: os.environ.get(k, "-") for k in ("JOB_TAG", "ONLY_A", "ONLY_B")}
        return [f"{os.path.basename(p)} {seen['JOB_TAG']} {seen['ONLY_A']} {seen['ONLY_B']}"
                for p in mini_batch]
"""

#: a worker's view of the variables the two jobs set (the driver asks each worker)
WATCHED = ("JOB_TAG", "ONLY_A", "ONLY_B", "AZUREML_BI_OUTPUT_PATH")


def _workers_env(client: Any) -> list[dict[str, str | None]]:
    def look() -> dict[str, str | None]:
        import os

        return {k: os.environ.get(k) for k in WATCHED}

    return list(client.run(look).values())


@pytest.mark.parametrize("same_name", [False, True], ids=["own-names", "both-score.py"])
def test_two_sessions_on_one_client_closed_out_of_order_leave_no_variable_behind(
    client: Any, tmp_path: Path, inputs: Path, same_name: bool
) -> None:
    """Two sessions open at once install two jobs in each worker process.  Closing the first
    one must leave the second its variables, and closing the second must leave the workers
    as they were: before, the first job's values (a secret, say) stayed set for good."""
    before = _workers_env(client)

    def script_name(name: str) -> str:
        return "score.py" if same_name else f"score_{name}.py"

    deps = {
        name: write_deployment(
            tmp_path / f"deploy-{name}", ENV_SCRIPT, script_name=script_name(name),
            settings={"mini_batch_size": 3,
                      "environment_variables": {"JOB_TAG": name, f"ONLY_{name.upper()}": "set"}},
        )
        for name in ("a", "b")
    }  # fmt: skip
    first = daskscore.open_session(deps["a"], inputs, client=client)
    second = daskscore.open_session(deps["b"], inputs, client=client)
    try:
        # both installed in each worker: the first still scores (its own script, even of the
        # same module name), with its own variables and none of the second's
        rows = first.frame.compute(scheduler=client.get)
        assert len(rows) == N_FILES
        assert {line.split(" ", 1)[1] for line in rows.iloc[:, 0].astype(str)} == {"a set -"}
        first.close()
        rows = second.frame.compute(scheduler=client.get)
        tags = {line.split(" ", 1)[1] for line in rows.iloc[:, 0].astype(str)}
        assert tags == {"b - set"}, tags  # b's own values; none of a's
        during = _workers_env(client)
        assert all(env["ONLY_A"] is None and env["JOB_TAG"] == "b" for env in during), during
        # the second's prints still reach its own log, not the first's (closed) one
        printed = "".join(
            p.read_text() for p in Path(second.report()["logs"]).glob("user/stdout/*")
        )
        assert "run() of deploy-b" in printed, printed
    finally:
        second.close()
        first.close()
    assert _workers_env(client) == before

    # and the workers' own streams are back: a print in a later task is not written to a
    # closed job's log file
    def prints() -> str:
        import sys

        print("after both sessions")
        return type(sys.stdout).__name__

    assert "SwitchableStream" not in set(client.run(prints).values())
    assert "RedactingStream" not in set(client.run(prints).values())


HELPER_SCRIPT = """
    import helpers

    def init():
        pass

    def run(mini_batch):
        import helpers as again  # looked up when run() is called
        return [f"{helpers.TAG} {again.TAG}" for _ in mini_batch]
"""


def test_sessions_open_at_once_each_keep_their_own_helper_module_of_the_same_name(
    client: Any, tmp_path: Path, inputs: Path
) -> None:
    """Code folders with a helper module of the same name, open at once: each job's script
    has its own helper, and a job after both have closed gets its own, not a closed one's."""

    def deploy_tag(tag: str) -> Path:
        return write_deployment(
            tmp_path / f"deploy-{tag}", HELPER_SCRIPT, script_name=f"score_{tag}.py",
            extra_code={"helpers.py": f"TAG = {tag!r}\n"}, settings={"mini_batch_size": 4},
        )  # fmt: skip

    def tags(session: Any) -> set[str]:
        rows = session.frame.compute(scheduler=client.get)
        return set(rows.iloc[:, 0].astype(str))

    first = daskscore.open_session(deploy_tag("a"), inputs, client=client)
    second = daskscore.open_session(deploy_tag("b"), inputs, client=client)
    try:
        assert tags(second) == {"b b"}
        assert {t.split()[0] for t in tags(first)} == {"a"}  # its own module, imported at init
        first.close()
        assert tags(second) == {"b b"}
    finally:
        second.close()
        first.close()
    third = daskscore.open_session(deploy_tag("c"), inputs, client=client)
    try:
        assert tags(third) == {"c c"}
    finally:
        third.close()
