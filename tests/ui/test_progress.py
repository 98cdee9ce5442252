"""Progress: the terminal bar and lines as they were, the live HTML display of a Jupyter notebook
(shown through a fake ``display`` function: no Jupyter needed), and how a kernel is recognised.
"""

from __future__ import annotations

import _thread
import html
import io
import re
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from conftest import write_deployment, write_inputs
from helpers import summary_of

import daskscore
import daskscore.api
from daskscore.ui.barline import plain_line
from daskscore.ui.progress import Progress, ProgressView, in_jupyter_kernel, render_html


class FakeHandle:
    """What ``display(..., display_id=True)`` returns: ``update`` replaces the shown object."""

    def __init__(self, shown: list[Any]) -> None:
        self.shown = shown

    def update(self, obj: Any) -> None:
        self.shown.append(("update", obj))


class FakeDisplay:
    """IPython's ``display``, recording what was shown."""

    def __init__(self) -> None:
        self.shown: list[Any] = []

    def __call__(self, obj: Any, display_id: bool = False) -> FakeHandle:
        assert display_id is True
        self.shown.append(("display", obj))
        return FakeHandle(self.shown)


class FakeShell:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config


def _fake_ipython(monkeypatch: pytest.MonkeyPatch, get_ipython: Any) -> types.ModuleType:
    module = types.ModuleType("IPython")
    module.get_ipython = get_ipython  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "IPython", module)
    return module


def _snapshot(**changes: Any) -> dict[str, Any]:
    snap = {
        "mini_batches_done": 3,
        "mini_batches_total": 10,
        "failed_mini_batches": 0,
        "items_done": 30,
        "items_total": 100,
        "items_per_s": 12.4,
        "elapsed_s": 2.4,
        "eta_s": 5.6,
    }
    snap.update(changes)
    return snap


# ----------------------------------------------------------------------------- the HTML


def test_html_shows_the_counts_a_bar_and_the_eta() -> None:
    html = render_html(_snapshot())
    assert '<span data-field="mini-batches">3/10</span> mini-batches' in html
    assert '<span data-field="items">30/100</span> items' in html
    assert '<span data-field="rate">12</span> items/s' in html
    assert 'ETA <span data-field="eta">5s</span>' in html
    assert "elapsed 2s" in html
    assert 'aria-valuenow="30"' in html and "width:30.0%" in html
    assert "background:#2da44e" in html  # green: nothing failed
    assert "data-field='state'>running<" in html
    assert 'data-field="failed"' not in html
    assert "<script" not in html and "http" not in html  # nothing runs, nothing is fetched


@pytest.mark.parametrize("rate", [0.04, 0.4, 2.35, 9.96, 12.4, 1234.5])
def test_html_shows_the_rate_as_the_progress_line_does(rate: float) -> None:
    """A slow model's 0.4 items/s read "0 items/s" in the notebook (the line said 0.4)."""
    snapshot = _snapshot(items_per_s=rate, items_per_s_now=None)
    shown = re.search(r'<span data-field="rate">([^<]*)</span> items/s', render_html(snapshot))
    assert shown is not None
    in_line = re.search(r"\| ([\d.,]+) items/s", plain_line(snapshot))
    assert in_line is not None and shown[1] == in_line[1]
    assert shown[1] != "0" or rate == 0


def test_html_of_failures_and_of_a_finished_job() -> None:
    html = render_html(
        _snapshot(failed_mini_batches=2, items_done=12_345, items_total=100_000), finished=True
    )
    assert '<span data-field="failed" style="color:#cf222e">2 failed</span>' in html
    assert "background:#bf8700" in html  # amber: some mini-batches failed
    assert '<span data-field="items">12,345/100,000</span>' in html
    assert "ETA" not in html
    assert "data-field='state'>done<" in html


def test_html_counts_partial_mini_batches_as_the_report_does() -> None:
    html = render_html(_snapshot(failed_mini_batches=1, partial_mini_batches=1), finished=True)
    assert '<span data-field="failed" style="color:#cf222e">1 failed</span>' in html
    assert '<span data-field="partial" style="color:#bf8700">1 partial</span>' in html
    alone = render_html(_snapshot(partial_mini_batches=1))  # (no mini-batch failed outright)
    assert "1 partial" in alone and 'data-field="failed"' not in alone
    assert "background:#bf8700" in alone  # amber: items failed


@pytest.mark.parametrize(
    ("ending", "colour"), [("interrupted", "#bf8700"), ("failed", "#cf222e"), ("done", "#2da44e")]
)
def test_html_of_a_job_that_ended_says_how(ending: str, colour: str) -> None:
    html = render_html(_snapshot(), finished=True, ending=ending)
    assert f"background:{colour}" in html
    assert re.search(rf"data-field='state'[^>]*>{ending}</span>", html), html
    assert "ETA" not in html


def test_html_links_the_daskscore_page_escaped() -> None:
    html = render_html(_snapshot(), link='http://127.0.0.1:8787/daskscore?a=1&b="<x>"')
    assert 'href="http://127.0.0.1:8787/daskscore?a=1&amp;b=&quot;&lt;x&gt;&quot;"' in html
    assert "<x>" not in html


def test_html_of_an_empty_job() -> None:
    html = render_html(_snapshot(mini_batches_total=0, items_done=0, items_total=0, eta_s=None))
    assert "width:100.0%" in html and "ETA" not in html


def test_the_view_is_html_for_jupyter_and_text_elsewhere() -> None:
    view = ProgressView("<b>3/10</b>", "3/10 mini-batches")
    assert view._repr_html_() == "<b>3/10</b>"
    assert repr(view) == "3/10 mini-batches"
    formatters = pytest.importorskip("IPython.core.formatters")
    data, _ = formatters.DisplayFormatter().format(view)
    assert data == {"text/html": "<b>3/10</b>", "text/plain": "3/10 mini-batches"}


# ----------------------------------------------------------------------------- the display


def test_progress_shows_one_display_and_updates_it(capsys: pytest.CaptureFixture[str]) -> None:
    display = FakeDisplay()
    progress = Progress(4, 40, display=display)
    assert progress.html and not progress.tty
    progress.page_link = "http://127.0.0.1:8787/daskscore"
    progress.add_done(1, 10)
    progress.draw(force=True)
    progress.add_done(1, 10, failed_mini_batches=1)
    progress.draw()  # under HTML_PERIOD_S after the last one: skipped
    progress.draw(force=True)
    progress.close()
    kinds = [kind for kind, _ in display.shown]
    assert kinds == ["display", "update", "update"]
    first, second, last = (view for _, view in display.shown)
    assert isinstance(first, ProgressView)
    assert '"mini-batches">1/4<' in first.html and "daskscore page" in first.html
    assert first.text.startswith("1/4 mini-batches | 10/40 items")
    assert '"mini-batches">2/4<' in second.html and "1 failed" in second.html
    assert "running" in second.html and "done" in last.html
    assert capsys.readouterr() == ("", "")  # nothing on stderr


def test_disabled_progress_shows_nothing() -> None:
    display = FakeDisplay()
    progress = Progress(4, 40, enabled=False, display=display)
    progress.draw(force=True)
    progress.close()
    assert display.shown == []


@pytest.fixture
def kernel_display(monkeypatch: pytest.MonkeyPatch) -> FakeDisplay:
    """This process seen as a Jupyter kernel, whose ``display`` is a :class:`FakeDisplay`."""
    display = FakeDisplay()
    _fake_ipython(monkeypatch, lambda: FakeShell({"IPKernelApp": {"connection_file": "k.json"}}))
    module = types.ModuleType("IPython.display")
    module.display = display  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "IPython.display", module)
    return display


def test_a_kernel_gets_ipythons_display(kernel_display: FakeDisplay) -> None:
    display = kernel_display
    progress = Progress(2, 20)
    progress.draw(force=True)
    assert [kind for kind, _ in display.shown] == ["display"]

    # a stream given explicitly keeps the terminal behaviour, even in a kernel
    stream = io.StringIO()
    Progress(2, 20, stream=stream).draw(force=True)
    assert stream.getvalue().startswith("progress: 0/2 mini-batches")
    assert len(display.shown) == 1


# ----------------------------------------------------------------------------- the terminal


def test_lines_when_stderr_is_no_terminal() -> None:
    stream = io.StringIO()
    progress = Progress(2, 20, stream=stream)
    assert not progress.tty and not progress.html
    progress.draw(force=True)
    progress.add_done(2, 20, failed_mini_batches=1)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "progress: 0/2 mini-batches | 0/20 items | 0 items/s | elapsed 0s"
    assert "1 failed" in lines[1]
    assert lines[1].startswith("progress: 2/2 mini-batches, 1 failed | 20/20 items | ")
    assert "ETA" not in lines[1]


def test_a_bar_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    progress = Progress(4, 40, stream=stream)
    assert progress.tty
    progress.add_live(10, "a1", 1)
    progress.draw(force=True)
    progress.close()
    text = stream.getvalue()
    assert text.startswith("\r[####---------------]  25% 1/4 mini-batches | ")
    assert "| ETA " in text and text.endswith("\033[K\n")


# ----------------------------------------------------------------------------- detection


def test_no_kernel_without_ipython_and_ipython_is_not_imported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [n for n in sys.modules if n == "IPython" or n.startswith("IPython.")]:
        monkeypatch.delitem(sys.modules, name)
    assert in_jupyter_kernel() is False
    assert "IPython" not in sys.modules


@pytest.mark.parametrize(
    ("get_ipython", "expected"),
    [
        (lambda: FakeShell({"IPKernelApp": {}}), True),
        (lambda: FakeShell({"TerminalInteractiveShell": {}}), False),  # terminal IPython
        (lambda: None, False),  # IPython imported, no shell running
        (lambda: 1 / 0, False),
    ],
    ids=["kernel", "terminal-ipython", "no-shell", "broken"],
)
def test_kernel_detection(monkeypatch: pytest.MonkeyPatch, get_ipython: Any, expected: bool):
    _fake_ipython(monkeypatch, get_ipython)
    assert in_jupyter_kernel() is expected


@pytest.mark.parametrize(
    ("kernel", "given", "expected"),
    [(True, None, True), (False, None, False), (True, False, False), (False, True, True)],
)
def test_run_shows_progress_by_default_in_a_kernel(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    kernel: bool,
    given: bool | None,
    expected: bool,
) -> None:
    seen: list[Any] = []
    monkeypatch.setattr(daskscore.api, "in_jupyter_kernel", lambda: kernel)
    monkeypatch.setattr(daskscore.api, "execute", lambda dep, i, o, options: seen.append(options))
    dep = write_deployment(tmp_path / "deploy", "def init():\n    pass\n")
    kwargs = {} if given is None else {"progress": given}
    daskscore.run(dep, tmp_path, tmp_path / "out", **kwargs)
    assert [options.progress for options in seen] == [expected]


# ----------------------------------------------------------------------------- real jobs' endings

ENDINGS_SCRIPT = """
import os, time

def run(mini_batch):
    time.sleep(0.1)
    if os.environ["FAIL"] == "1" and any(p.endswith("f0003.csv") for p in mini_batch):
        raise ValueError("bad file")
    return [os.path.basename(p) for p in mini_batch]
"""


class InterruptingDisplay(FakeDisplay):
    """A kernel's display whose user stops the kernel (``KeyboardInterrupt`` in the main
    thread, as Jupyter's interrupt does) once it shows a mini-batch done."""

    def __call__(self, obj: Any, display_id: bool = False) -> FakeHandle:
        handle = super().__call__(obj, display_id)
        stop, update = [True], handle.update

        def watched(view: Any) -> None:
            update(view)
            if stop and re.search(r'"mini-batches">[1-9]', view.html):
                stop.clear()
                _thread.interrupt_main()

        handle.update = watched  # type: ignore[method-assign]
        return handle


@pytest.mark.parametrize(
    ("fail", "threshold", "state", "colour"),
    [
        ("0", -1, "done", "#2da44e"),
        ("1", -1, "done", "#bf8700"),  # (completed; its failed mini-batch said, in amber)
        ("1", 0, "failed", "#cf222e"),  # (ErrorThresholdExceeded)
        ("0", -1, "interrupted", "#bf8700"),
    ],
)
def test_a_jobs_display_ends_saying_how_the_job_ended(
    tmp_path: Path,
    client: Any,
    kernel_display: FakeDisplay,
    monkeypatch: pytest.MonkeyPatch,
    fail: str,
    threshold: int,
    state: str,
    colour: str,
) -> None:
    """daskscore.run in a notebook: the display's last state is the job's ending, in its
    colour (an interrupted job's read "55% done", in green)."""
    from daskscore.errors import ErrorThresholdExceeded

    if state == "interrupted":
        kernel_display = InterruptingDisplay()
        monkeypatch.setattr(sys.modules["IPython.display"], "display", kernel_display)
    settings = {
        "mini_batch_size": 1,
        "error_threshold": threshold,
        "retry_settings": {"max_retries": 0},
        "environment_variables": {"FAIL": fail},
    }
    dep = write_deployment(tmp_path / "deploy", ENDINGS_SCRIPT, settings=settings)
    inputs = write_inputs(tmp_path / "in", 20)
    raised = {"done": None, "failed": ErrorThresholdExceeded, "interrupted": KeyboardInterrupt}
    expected = raised[state]
    try:
        daskscore.run(dep, inputs, tmp_path / "out", client=client)
    except BaseException as exc:  # noqa: BLE001 - the ending is checked below
        assert expected is not None and isinstance(exc, expected), repr(exc)
    else:
        assert expected is None
    last = kernel_display.shown[-1][1]
    assert re.search(rf"data-field='state'[^>]*>{state}</span>", last.html), last.html
    assert f"background:{colour}" in last.html, last.html
    assert re.search(rf" \| {state}(: .+)?$", last.text), last.text
    if state == "failed":  # (and why)
        assert "error_threshold exceeded" in last.text, last.text
    if fail == "1":
        assert 'data-field="failed"' in last.html, last.html


class StoppingDisplay(FakeDisplay):
    """A kernel's display whose user stops the kernel (``KeyboardInterrupt`` in the main
    thread) once it shows ``count`` mini-batches done, and ``seen()`` says so too."""

    def __init__(self, count: str, seen: Any = lambda: True) -> None:
        super().__init__()
        self.count, self.seen = count, seen

    def __call__(self, obj: Any, display_id: bool = False) -> FakeHandle:
        handle = super().__call__(obj, display_id)
        stop, update = [True], handle.update

        def watched(view: Any) -> None:
            update(view)
            if stop and f'"mini-batches">{self.count}<' in view.html and self.seen():
                stop.clear()
                _thread.interrupt_main()

        handle.update = watched  # type: ignore[method-assign]
        return handle


def _html_counts(html_text: str) -> tuple[int, int]:
    found = re.search(r'"mini-batches">(\d+)/\d+<.*"items">([\d,]+)/', html_text)
    assert found is not None, html_text
    return int(found[1]), int(found[2].replace(",", ""))


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_an_interrupted_jobs_display_and_page_end_at_the_summarys_counts(
    tmp_path: Path, kernel_display: FakeDisplay, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One worker, its first task's mini-batches 0-3 ended (counted live, not committed yet)
    and 4 held: a kernel interrupt then.  The display's last state and the daskscore page's
    showed the 4 live mini-batches (and an ETA) where the summary counted none."""
    from test_dashboard_page import _status
    from test_progress_counts import HELD

    from daskscore.cluster.local import local_cluster
    from daskscore.ui import dashboard

    release = tmp_path / "release"
    settings = {"mini_batch_size": 1, "environment_variables": {"RELEASE": str(release)}}
    dep = write_deployment(tmp_path / "deploy", HELD, settings=settings)
    inputs, out = write_inputs(tmp_path / "in", 24), tmp_path / "out"
    with local_cluster(1, dashboard=True) as handle:
        url = dashboard.page_link(handle.dashboard_link or "") + "/status.json"

        def on_page() -> bool:  # (the page shows the 4 live mini-batches too)
            jobs = (_status(url) or {"jobs": []})["jobs"]
            return any(j.get("mini_batches_done") == 4 for j in jobs)

        display = StoppingDisplay("4/24", on_page)
        monkeypatch.setattr(sys.modules["IPython.display"], "display", display)
        try:
            with pytest.raises(KeyboardInterrupt):
                daskscore.run(dep, inputs, out, client=handle.client)
        finally:
            release.touch()
        s = summary_of(out)
        status = _status(url)
    assert s["status"] == "Interrupted"
    done = (s["total_mini_batches"] - s["not_run_mini_batches"],
            s["succeeded_items"] + s["failed_items"])  # fmt: skip
    last = display.shown[-1][1]
    assert "data-field='state'" in last.html and ">interrupted<" in last.html, last.html
    assert _html_counts(last.html) == done, (last.html, s)
    assert "ETA" not in last.html and "ETA" not in last.text, last.text
    assert status is not None
    (job,) = [j for j in status["jobs"] if j.get("output") == str(out)]
    assert job["status"] == "Interrupted"
    assert (job["mini_batches_done"], job["items_done"]) == done, job
    assert job["eta_s"] is None, job


MIXED_TYPES_SCRIPT = """
import os

import pandas as pd

def run(mini_batch):
    n = int(os.path.basename(mini_batch[0])[1:5])
    return pd.DataFrame({"x": [n if n < 2 else str(n)]})  # (ints, then text: no one type)
"""


def test_a_job_whose_output_cannot_be_written_ends_its_display_failed_saying_why(
    tmp_path: Path, client: Any, kernel_display: FakeDisplay
) -> None:
    """Every mini-batch scored, then the dataset cannot be assembled (a column Parquet cannot
    hold as one type): the display, which said "writing the output" meanwhile, ends "failed"
    with the summary's reason, not "done"."""
    import dask

    from daskscore.errors import OutputFailed

    dep = write_deployment(tmp_path / "deploy", MIXED_TYPES_SCRIPT, settings={"mini_batch_size": 1})
    inputs = write_inputs(tmp_path / "in", 4)
    out = tmp_path / "out"
    with dask.config.set({"dataframe.convert-string": False}), pytest.raises(OutputFailed):
        daskscore.run(dep, inputs, out, client=client, output_format="parquet")
    states = [
        re.search(r"data-field='state'[^>]*>([^<]*)<", view.html)[1]  # type: ignore[index]
        for _, view in kernel_display.shown
    ]
    assert states[-2:] == ["writing the output", "failed"], states
    last = kernel_display.shown[-1][1]
    reason = summary_of(out)["reason"]
    assert "column 'x'" in reason
    assert f'data-field="reason" style="color:#cf222e">{html.escape(reason[:100])}' in last.html
    assert f" | failed: {reason[:100]}" in last.text, last.text
