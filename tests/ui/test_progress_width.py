"""The terminal bar fits the terminal (fields dropped by priority), mini-batches are counted
as the workers report each one ended, late news of a finished task is not counted twice, a
resumed job starts from what was done, and the current rate is shown beside the average."""

from __future__ import annotations

import io
import re

import pytest

from daskscore.ui.barline import fit_bar, plain_line
from daskscore.ui.progress import Progress

BIG = {
    "mini_batches_done": 123_456,
    "mini_batches_total": 240_000,
    "failed_mini_batches": 12,
    "items_done": 2_540_000,
    "items_total": 3_600_000,
    "items_per_s": 1234.5,
    "items_per_s_now": 2000.0,
    "elapsed_s": 4000,
    "eta_s": 600,
    "running": [(7, 125.0), (12, 100.0)],
}


@pytest.mark.parametrize("width", [20, 40, 59, 79, 119, 200])
def test_the_bar_never_is_wider_than_asked_and_keeps_the_count(width: int) -> None:
    bar = fit_bar(BIG, width)
    assert len(bar) <= width
    if width >= 59:
        assert "71% 123456/240000 mini-batches, 12 failed" in bar
        assert bar.startswith("[")


def test_fields_are_dropped_by_priority() -> None:
    assert "ETA 10m00s" in fit_bar(BIG, 79) and "items/s" not in fit_bar(BIG, 79)
    wide = fit_bar(BIG, 119)
    assert "ETA 10m00s" in wide and "2,000 items/s" in wide and "elapsed" not in wide
    full = plain_line(BIG)  # (the line off a terminal: everything)
    assert "2,540,000/3,600,000 items | 2,000 items/s | avg 1,234/s | elapsed 1h06m" in full
    assert full.endswith("waiting on mini-batch 7 (running 2m05s), 12 (1m40s)")


def test_one_mini_batch_is_singular() -> None:
    one = {**BIG, "mini_batches_done": 0, "mini_batches_total": 1, "failed_mini_batches": 0}
    assert plain_line(one).startswith("0/1 mini-batch |")


def test_mini_batches_count_as_the_workers_report_them() -> None:
    p = Progress(10, 100, enabled=False)
    p.add_live(20, "t1", mini_batches=2)  # a task of 5 mini-batches: 2 ended so far
    p.add_live(10, "t2", mini_batches=1)
    assert (p.mini_batches, p.items) == (3, 30)
    p.end_attempt("t1")  # t1 came back with its 5 mini-batches
    p.add_done(5, 50)
    assert (p.mini_batches, p.items) == (6, 60)
    p.add_live(30, "t1", mini_batches=3)  # its last event, late: already counted
    assert (p.mini_batches, p.items) == (6, 60)


def test_a_resumed_job_starts_from_what_was_done() -> None:
    p = Progress(10, 100, enabled=False)
    p.resumed(8, 80, failed_mini_batches=1)
    s = p.snapshot()
    assert (s["mini_batches_done"], s["items_done"], s["failed_mini_batches"]) == (8, 80, 1)
    assert s["items_per_s"] == 0.0  # (not this run's: no rate)
    p.add_done(2, 20)
    assert p.snapshot()["mini_batches_done"] == 10


def test_a_terminal_bar_fits_the_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    for columns in (60, 80, 120):
        monkeypatch.setenv("COLUMNS", str(columns))
        stream = Tty()
        p = Progress(240_000, 3_600_000, stream=stream)
        p.add_live(2_540_000, "t", mini_batches=123_456)
        p.draw(force=True)
        frames = [re.sub(r"\x1b\[K", "", f) for f in stream.getvalue().split("\r") if f]
        assert frames and all(len(f) < columns for f in frames), (columns, frames)


def test_a_cluster_without_workers_is_said_beside_the_count() -> None:
    stalled = {**BIG, "alert": "no worker for 40s"}
    assert plain_line(stalled).startswith("123456/240000 mini-batches, 12 failed | no worker for")
    assert "failed | no worker for 40s | ETA" in fit_bar(stalled, 119)  # (kept before the ETA)
    progress = Progress(4, 4, stream=io.StringIO())
    progress.alert = "no worker for 40s"
    assert progress.snapshot()["alert"] == "no worker for 40s"
