"""The live display of ``score(...).compute()`` (:mod:`daskscore.engine.scorelive`): the
partitions' tasks report each mini-batch through Dask's event log, and the session's display
counts them, one display per notebook cell.

A real LocalCluster of two worker processes computes the frame; the notebook's ``display``
and IPython's cell events are stand-ins here (``tests/test_notebooks.py`` runs the real kernel).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import write_deployment, write_inputs

import daskscore
from daskscore.engine.scorelive import LiveScore

SCRIPT = """
    import os

    def run(mini_batch):
        names = [os.path.basename(p) for p in mini_batch]
        if "f0004.csv" in names:
            raise ValueError("cannot score f0004.csv")
        return names
"""


class Handle:
    def __init__(self, shown: list[Any]) -> None:
        self.shown = shown

    def update(self, view: Any) -> None:
        self.shown.append(view)


class Notebook:
    """``display`` and IPython's cell events, as the session sees them."""

    def __init__(self) -> None:
        self.displays: list[list[Any]] = []  # the views of each display, first to last
        self.hooks: dict[str, list[Any]] = {"pre_run_cell": [], "post_run_cell": []}

    def display(self, view: Any, display_id: bool = False) -> Handle:
        assert display_id is True
        self.displays.append([view])
        return Handle(self.displays[-1])

    def register(self, name: str, hook: Any) -> None:
        self.hooks[name].append(hook)

    def unregister(self, name: str, hook: Any) -> None:
        self.hooks[name].remove(hook)

    def cell(self, body: Any) -> Any:
        for hook in list(self.hooks["pre_run_cell"]):
            hook(None)
        try:
            return body()
        finally:
            for hook in list(self.hooks["post_run_cell"]):
                hook(None)


@pytest.mark.slow
def test_compute_shows_every_mini_batch_once_per_cell(client: Any, tmp_path: Path) -> None:
    dep = write_deployment(tmp_path / "deploy", SCRIPT, settings={"mini_batch_size": 2})
    inputs = write_inputs(tmp_path / "in", 10)  # 5 mini-batches, the third fails
    session = daskscore.open_session(
        dep, inputs, client=client, on_error="drop", meta=_meta(), partitions=3
    )
    notebook = Notebook()
    live = LiveScore(
        client, session.job.job_id, _work(dep, inputs), display=notebook.display, events=notebook
    )
    try:
        frame = notebook.cell(session.frame.compute)
        assert len(frame) == 8
        assert len(notebook.displays) == 1
        views = notebook.displays[0]
        final = views[-1]
        assert "5/5 mini-batches" in repr(final) and "1 failed" in repr(final)
        assert "10/10 items" in repr(final)
        assert "data-field='state'>done<" in final._repr_html_()
        assert "running" in views[0]._repr_html_()  # opened as the partitions started
        # a second cell: a display of its own, counting afresh
        notebook.cell(session.frame.compute)
        assert len(notebook.displays) == 2
        assert "5/5 mini-batches" in repr(notebook.displays[1][-1])
        # a cell that computes nothing draws nothing
        notebook.cell(lambda: None)
        assert len(notebook.displays) == 2
    finally:
        live.close()
        session.close()
    assert notebook.hooks == {"pre_run_cell": [], "post_run_cell": []}


def test_outside_a_kernel_no_display(client: Any, tmp_path: Path) -> None:
    dep = write_deployment(tmp_path / "deploy", SCRIPT, settings={"mini_batch_size": 2})
    inputs = write_inputs(tmp_path / "in", 4)
    with daskscore.open_session(dep, inputs, client=client, meta=_meta()) as session:
        assert session.live is None


def _meta() -> Any:
    import pandas as pd

    return pd.DataFrame({"prediction": pd.Series([], dtype="object")})


def _work(dep: Path, inputs: Path) -> list[Any]:
    """The session's mini-batches, as its frame holds them."""
    from daskscore.engine.plan import plan_job

    plan = plan_job(daskscore.load_deployment(dep), inputs)
    assert plan is not None
    return list(plan.work)


def test_progress_true_draws_on_standard_error_outside_a_kernel(
    client: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:

    dep = write_deployment(tmp_path / "deploy", SCRIPT, settings={"mini_batch_size": 2})
    inputs = write_inputs(tmp_path / "in", 10)  # 5 mini-batches, the third fails
    lines, err = _progress_lines(client, dep, inputs, capsys, rows=8)
    assert lines and lines[-1].startswith("progress: 5/5 mini-batches, 1 failed"), err
    assert "10/10 items" in lines[-1], err


def test_progress_false_sends_no_events(client: Any, tmp_path: Path) -> None:
    import time

    from daskscore.engine.scorelive import topic

    dep = write_deployment(tmp_path / "deploy", SCRIPT, settings={"mini_batch_size": 2})
    inputs = write_inputs(tmp_path / "in", 6)
    sent = {}
    for progress in (None, False):
        with daskscore.open_session(
            dep, inputs, client=client, meta=_meta(), on_error="drop", progress=progress
        ) as session:
            assert session.live is None  # (outside a kernel: no display either way)
            assert len(session.frame.compute()) == 4
            name = topic(session.job.job_id)
            end = time.monotonic() + (10 if progress is None else 1)
            while time.monotonic() < end and not client.get_events(name):
                time.sleep(0.1)
            sent[progress] = len(client.get_events(name))
    assert sent[None] > 0 and sent[False] == 0, sent


#: Mini-batch 2 raises; mini-batch 3 returns one result too few (a partial mini-batch).
PARTIAL_SCRIPT = """
    import os

    def run(mini_batch):
        names = [os.path.basename(p) for p in mini_batch]
        if "f0004.csv" in names:
            raise ValueError("cannot score f0004.csv")
        return names[:-1] if "f0006.csv" in names else names
"""


def test_failed_and_partial_mini_batches_are_counted_as_a_job_counts_them(
    client: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:

    dep = write_deployment(tmp_path / "deploy", PARTIAL_SCRIPT, settings={"mini_batch_size": 2})
    inputs = write_inputs(tmp_path / "in", 10)
    lines, err = _progress_lines(client, dep, inputs, capsys, rows=7)
    # as job_summary.json and report.html count them: 1 failed, 1 partial
    assert lines and lines[-1].startswith("progress: 5/5 mini-batches, 1 failed, 1 partial"), err
    result = daskscore.run(dep, inputs, tmp_path / "out", client=client, progress=False)
    assert (result.failed_mini_batches, result.partial_mini_batches) == (1, 1)


def _progress_lines(client: Any, dep: Path, inputs: Path, capsys: Any, rows: int) -> Any:
    """A ``progress=True`` session's frame computed (``rows`` rows): the progress lines it
    drew on stderr by the time the last of its 5 mini-batches was shown, and all it drew."""
    import time

    with daskscore.open_session(
        dep, inputs, client=client, meta=_meta(), on_error="drop", progress=True
    ) as session:
        assert session.live is not None
        assert len(session.frame.compute()) == rows
        # (the events reach this client on its own thread, just after the result)
        end = time.monotonic() + 30
        err = ""
        while time.monotonic() < end and "5/5 mini-batches" not in err:
            time.sleep(0.1)
            err += capsys.readouterr().err
    return [line for line in err.splitlines() if line.startswith("progress: ")], err
