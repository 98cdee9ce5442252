"""The command's lines wrapped to the terminal (:mod:`daskscore.ui.termtext`)."""

from __future__ import annotations

import pytest

from daskscore.ui.termtext import fit

VERDICT = "Job Completed: 120 of 120 items succeeded, 0 failed, in 0.6 s. Peak 95 MB (40 %)."


@pytest.mark.parametrize("width", range(40, len(VERDICT) + 2))
def test_a_number_keeps_its_unit_on_its_line(width: int) -> None:
    """Wrapped at any width, a number and its unit stay together ("0.6 s.", "95 MB"), every
    line fits, and the words are the line's, in order, with single spaces."""
    out = fit(VERDICT, width)
    lines = out.split("\n")
    assert all(len(line) <= width for line in lines), out
    assert " ".join(line.strip() for line in lines) == VERDICT
    for unit in ("s.", "MB", "%).", "%"):
        assert not any(line.strip().startswith(unit) for line in lines[1:]), out
    assert "\u00a0" not in out
