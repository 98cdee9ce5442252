"""The command's lines wrapped to the terminal (:mod:`daskscore.ui.termtext`)."""

from __future__ import annotations

import pytest

from daskscore.ui.termtext import fit, say

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


def test_control_characters_of_a_file_name_are_written_out(capsys: pytest.CaptureFixture) -> None:
    """A file name holding an escape sequence must not colour (or rewrite) the terminal."""
    say("failed: /in/x\x1b[31mRED\x1b[0m.txt and /in/a\rb.txt\n\tnext line")
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\r" not in err
    assert "/in/x\\x1b[31mRED\\x1b[0m.txt and /in/a\\rb.txt\n\tnext line" in err


def test_a_stream_whose_reader_went_away_takes_every_line_quietly() -> None:
    """A closed pipe (``daskscore run ... | head``): the command's lines and the progress
    display are dropped, the job goes on; the stream then writes to ``os.devnull``, so its
    flush at exit fails nothing either."""
    import os

    from daskscore.ui.progress import Progress

    read, written = os.pipe()
    stream = open(written, "w")  # noqa: SIM115 - closed below, after the writes
    os.close(read)
    say("Scoring 4 files", stream)
    progress = Progress(4, 4, stream=stream)
    progress.add_done(4, 4)
    progress.draw(force=True)
    progress.close()
    say("Job Completed", stream)
    assert os.path.samestat(os.fstat(written), os.stat(os.devnull))
    stream.close()


@pytest.mark.parametrize(
    "char", ["\u202e", "\u202a", "\u2066", "\u2069", "\u200e", "\u200f", "\u061c", "\u200b", "\x9b"]
)
def test_bidi_and_other_format_characters_of_a_file_name_are_written_out(
    capsys: pytest.CaptureFixture, char: str
) -> None:
    """A right-to-left override (and the other bidirectional controls, zero-width and C1
    control characters) would show another name than the file's: written out, as Python
    writes them; letters of any script are kept."""
    say(f"failed: /in/zz{char}txt.exe and /in/été-中文.csv")
    err = capsys.readouterr().err
    assert char not in err
    assert f"/in/zz{repr(char)[1:-1]}txt.exe and /in/été-中文.csv" in err
