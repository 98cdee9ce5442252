"""Nothing is dropped without a word in ``daskscore.score()``.

A mini-batch whose every try failed has no rows.  By default computing the frame raises, naming
the mini-batch, its files and the script's traceback; ``settings.error_threshold`` (``N >= 0``)
allows ``N`` failed items over the session, as ``daskscore run`` does; ``on_error="drop"`` keeps
the rows of the others and records the failures on the session (``ddf.attrs["daskscore"]``).
Real worker processes: the module's LocalCluster.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import write_deployment, write_inputs

import daskscore
from daskscore.errors import ErrorThresholdExceeded, JobFailed, UsageError

N_FILES, SIZE = 12, 2

SCRIPT = """
    import os

    FAIL_ON = os.environ.get("FAIL_ON", "").split(",")
    SHORT_ON = os.environ.get("SHORT_ON", "")

    def run(mini_batch):
        names = [os.path.basename(p) for p in mini_batch]
        for name in names:
            if name in FAIL_ON:
                raise ValueError(f"cannot score {name}")
        if SHORT_ON in names:
            return names[:1]  # fewer results than files: a partial return
        return names
"""


def _score(
    tmp_path: Path, sessions: list[Any], threshold: int = -1, **kwargs: Any
) -> tuple[Any, Path]:
    env = {k: v for k, v in kwargs.items() if k in ("FAIL_ON", "SHORT_ON")}
    options = {k: v for k, v in kwargs.items() if k not in env}
    dep = write_deployment(
        tmp_path / "deploy",
        SCRIPT,
        settings={
            "mini_batch_size": SIZE,
            "error_threshold": threshold,
            "retry_settings": {"max_retries": 1},
            "environment_variables": env,
        },
    )
    inputs = write_inputs(tmp_path / "in", N_FILES)
    ddf = daskscore.score(dep, inputs, meta=_meta(), **options)
    sessions.append(ddf.attrs["daskscore"])
    return ddf, inputs


def _meta() -> Any:
    import pandas as pd

    return pd.DataFrame({"prediction": pd.Series([], dtype=object)})


def test_by_default_a_failed_mini_batch_makes_the_computation_raise(
    tmp_path: Path, sessions: list[Any]
) -> None:
    ddf, inputs = _score(tmp_path, sessions, FAIL_ON="f0005.csv")  # mini-batch 2
    with pytest.raises(JobFailed) as caught:
        ddf.compute()
    message = str(caught.value)
    assert "mini-batch 2 failed (RUN_EXCEPTION, 2 tries)" in message, message
    assert str(inputs / "f0004.csv") in message and str(inputs / "f0005.csv") in message
    assert 'on_error="drop"' in message
    # the script's own traceback, its frame and line
    assert "ValueError: cannot score f0005.csv" in message
    line = 1 + SCRIPT.splitlines().index('                raise ValueError(f"cannot score {name}")')
    assert f'score.py", line {line}, in run' in message, message
    assert "ValueError: cannot score f0005.csv" in caught.value.user_traceback


def test_on_error_drop_keeps_the_other_rows_and_records_the_failures(
    tmp_path: Path, sessions: list[Any]
) -> None:
    ddf, inputs = _score(tmp_path, sessions, FAIL_ON="f0005.csv", on_error="drop")
    frame = ddf.compute()
    assert frame["prediction"].tolist() == [
        f"f{i:04d}.csv" for i in range(N_FILES) if i not in (4, 5)
    ]
    session = ddf.attrs["daskscore"]
    (failure,) = session.failures
    assert failure["mini_batch"] == 2 and failure["status"] == "RUN_EXCEPTION"
    assert failure["try"] == 2 and failure["failed"] == 2 and failure["dropped"]
    assert failure["files"] == [str(inputs / "f0004.csv"), str(inputs / "f0005.csv")]
    assert "ValueError: cannot score f0005.csv" in failure["error"]
    report = session.report()
    assert report["mini_batches"] == N_FILES // SIZE
    assert report["succeeded_items"] == N_FILES - 2 and report["failed_items"] == 2
    session.close()
    assert (session.job_dir / "logs").is_dir(), "a session with failures keeps its logs"


def test_error_threshold_allows_failed_items_over_the_session_then_raises(
    tmp_path: Path, sessions: list[Any]
) -> None:
    # mini-batches 1 and 4 fail (2 items each), in different partitions: 4 failed items
    allowed, _ = _score(
        tmp_path / "a", sessions, threshold=4, FAIL_ON="f0002.csv,f0009.csv", partitions=3
    )
    frame = allowed.compute()
    assert len(frame) == N_FILES - 4
    assert [f["mini_batch"] for f in allowed.attrs["daskscore"].failures] == [1, 4]
    sessions.pop().close()  # (one session at a time: each sets the workers' environment)

    over, _ = _score(
        tmp_path / "b", sessions, threshold=3, FAIL_ON="f0002.csv,f0009.csv", partitions=3
    )
    with pytest.raises(ErrorThresholdExceeded) as caught:
        over.compute()
    assert "4 items failed, more than the 3 allowed" in str(caught.value), str(caught.value)


def test_a_partial_return_does_not_raise_but_is_recorded(
    tmp_path: Path, sessions: list[Any]
) -> None:
    ddf, _ = _score(tmp_path, sessions, SHORT_ON="f0006.csv")  # mini-batch 3 returns 1 of 2
    assert len(ddf.compute()) == N_FILES - 1  # every row run() returned is there
    (failure,) = ddf.attrs["daskscore"].failures
    assert failure["mini_batch"] == 3 and failure["failed"] == 1 and not failure["dropped"]
    assert "returned 1 result for 2 files" in failure["error"]


def test_an_unknown_on_error_is_refused(tmp_path: Path, sessions: list[Any]) -> None:
    with pytest.raises(UsageError, match="on_error='ignore'"):
        _score(tmp_path, sessions, on_error="ignore")


def test_without_a_client_score_says_what_it_needs(tmp_path: Path) -> None:
    """(In a process of its own: no client of another test is the default there.)"""
    dep = write_deployment(tmp_path / "deploy", SCRIPT)
    inputs = write_inputs(tmp_path / "in", 2)
    code = f"import daskscore; daskscore.score({str(dep)!r}, {str(inputs)!r})"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 1
    assert "daskscore.errors.UsageError: open_session()/score() score on a Dask cluster" in (
        proc.stderr
    ), proc.stderr
    assert "pass client=Client" in proc.stderr


def test_a_first_mini_batch_that_raises_without_meta_names_it_with_the_traceback(
    tmp_path: Path, sessions: list[Any]
) -> None:
    """Without ``meta=``, score() runs mini-batch 0 to see the columns: when it fails (and
    ``on_error="raise"`` would fail the frame's compute for it), the error names it and its
    files and carries the script's traceback (it was a bare RuntimeError with one line)."""
    dep = write_deployment(
        tmp_path / "deploy",
        SCRIPT,
        settings={"mini_batch_size": SIZE, "environment_variables": {"FAIL_ON": "f0001.csv"}},
    )
    inputs = write_inputs(tmp_path / "in", N_FILES)

    with pytest.raises(JobFailed) as info:
        daskscore.score(dep, inputs)

    message = str(info.value)
    assert "mini-batch 0 (" in message and "f0000.csv" in message and "f0001.csv" in message
    assert "ValueError: cannot score f0001.csv" in message
    assert "pass meta= to score()" in message and 'on_error="drop"' in message
    assert info.value.user_traceback is not None
    assert 'raise ValueError(f"cannot score {name}")' in info.value.user_traceback


def test_on_error_drop_infers_the_columns_past_failed_first_mini_batches(
    tmp_path: Path, sessions: list[Any]
) -> None:
    """Without ``meta=`` and with ``on_error="drop"``, failed first mini-batches are left out
    as any other: the columns come from the first one that does not fail (score() raised,
    telling the caller to fix the script, when mini-batch 0 failed)."""
    dep = write_deployment(
        tmp_path / "deploy",
        SCRIPT,
        settings={
            "mini_batch_size": SIZE,
            "retry_settings": {"max_retries": 0},
            "environment_variables": {"FAIL_ON": "f0000.csv,f0003.csv"},  # mini-batches 0, 1
        },
    )
    inputs = write_inputs(tmp_path / "in", N_FILES)

    ddf = daskscore.score(dep, inputs, on_error="drop")
    sessions.append(ddf.attrs["daskscore"])

    assert list(ddf.columns) == ["prediction"]
    frame = ddf.compute()
    assert frame["prediction"].tolist() == [f"f{i:04d}.csv" for i in range(4, N_FILES)]
    failures = ddf.attrs["daskscore"].failures
    assert [(f["mini_batch"], f["dropped"]) for f in failures] == [(0, True), (1, True)]
    assert "ValueError: cannot score f0000.csv" in failures[0]["error"]


def test_on_error_drop_without_meta_says_when_every_mini_batch_failed(
    tmp_path: Path, sessions: list[Any]
) -> None:
    """No mini-batch to infer the columns from: one paragraph naming the first failure."""
    names = ",".join(f"f{i:04d}.csv" for i in range(0, 6, SIZE))
    dep = write_deployment(
        tmp_path / "deploy",
        SCRIPT,
        settings={
            "mini_batch_size": SIZE,
            "retry_settings": {"max_retries": 0},
            "environment_variables": {"FAIL_ON": names},
        },
    )
    inputs = write_inputs(tmp_path / "in", 6)

    with pytest.raises(JobFailed) as info:
        daskscore.score(dep, inputs, on_error="drop")

    message = str(info.value)
    assert "every one of the 3 mini-batch(es) failed" in message, message
    assert f"mini-batch 0 ({inputs / 'f0000.csv'}, {inputs / 'f0001.csv'})" in message
    assert "ValueError: cannot score f0000.csv" in message
    assert "pass meta= to score()" in message and "\n" not in message


def test_error_threshold_infers_the_columns_past_the_failures_it_allows(
    tmp_path: Path, sessions: list[Any]
) -> None:
    """``settings.error_threshold`` (``N >= 0``) leaves failed mini-batches out as long as
    their items are no more than ``N``: so does the inference of the columns."""
    settings = {
        "mini_batch_size": SIZE,
        "retry_settings": {"max_retries": 0},
        "environment_variables": {"FAIL_ON": "f0000.csv"},  # mini-batch 0: 2 items
    }
    inputs = write_inputs(tmp_path / "in", N_FILES)
    dep = write_deployment(tmp_path / "a", SCRIPT, settings={**settings, "error_threshold": 2})
    ddf = daskscore.score(dep, inputs)
    sessions.append(ddf.attrs["daskscore"])
    assert len(ddf.compute()) == N_FILES - 2
    sessions.pop().close()  # (one session at a time: each sets the workers' environment)

    dep = write_deployment(tmp_path / "b", SCRIPT, settings={**settings, "error_threshold": 1})
    with pytest.raises(JobFailed) as info:
        daskscore.score(dep, inputs)
    assert "more items than settings.error_threshold (1) allows" in str(info.value)


@pytest.mark.parametrize("where", ["count_deaths_fairly", "watch_session", "LiveScore"])
def test_a_ctrl_c_while_the_frame_is_built_leaves_nothing_installed(
    tmp_path: Path, client: Any, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """A ``KeyboardInterrupt`` (Ctrl-C, a kernel's stop) after the script's install, while
    the session is built: no session comes back to close, so the install goes with it.
    Before, only a failure of the inference of the columns uninstalled it: the plugin, and
    the initialised script, stayed on every worker."""
    from daskscore.engine import session as session_mod

    def interrupt(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    if where == "LiveScore":
        monkeypatch.setattr(session_mod.LiveScore, "for_session", interrupt)
    else:
        monkeypatch.setattr(session_mod, where, interrupt)
    dep = write_deployment(tmp_path / "deploy", SCRIPT, settings={"mini_batch_size": 2})

    def installed(dask_worker: Any) -> list[str]:
        return [name for name in dask_worker.plugins if name.startswith("daskscore-")]

    with pytest.raises(KeyboardInterrupt):
        daskscore.score(dep, write_inputs(tmp_path / "in", 4), client=client, progress=False)
    assert all(not names for names in client.run(installed).values())
    leftovers = list(session_mod._OPEN)
    assert leftovers == [], leftovers
