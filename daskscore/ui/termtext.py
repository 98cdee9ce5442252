"""The command's own lines on a terminal: wrapped to its width at spaces, never inside a path.

Off a terminal (a log file, CI) lines are printed whole, one message per line, for ``grep``.
On one, a line wider than the terminal is wrapped at spaces, its continuation indented; a
path or URL is never cut (one longer than the terminal gets a line of its own), a command to
copy (``...: daskscore replay ...``) gets a line of its own, whole, and the user's traceback
is printed as Python printed it.

>>> print(fit("Results: /a/rather/long/path/predictions.csv", 30))
Results:
  /a/rather/long/path/predictions.csv
>>> print(fit("Run it again here: daskscore replay /out --mini-batch 6", 30))
Run it again here:
  daskscore replay /out --mini-batch 6
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import textwrap
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

_TRACEBACK = re.compile(r"^(\s*)Traceback \(most recent call last\):")
#: a command to copy after a label: kept whole on a line of its own
_COMMAND = re.compile(r"^(\s*)(.*?:) (daskscore \S.*)$")


def fit(text: str, width: int) -> str:
    """``text`` with each line wrapped to ``width`` columns (see the module's doc)."""
    out: list[str] = []
    tb: int | None = None  # the indent of a traceback's header, from it to its last line
    for line in text.split("\n"):
        indent = len(line) - len(line.lstrip())
        header = _TRACEBACK.match(line)
        if header:
            tb = len(header.group(1))
        elif tb is not None and (not line.strip() or indent > tb):
            pass  # (its frames)
        elif tb is not None and indent == tb:
            tb = None  # (its last line, the exception: as it is)
            out.append(line)
            continue
        else:
            tb = None
        out.extend([line] if tb is not None or len(line) <= width else _wrap(line, width))
    return "\n".join(out)


#: the space between a number and its unit ("0.6 s.", "95 MB"): never a place to wrap
_UNIT_SPACE = re.compile(r"(?<=\d) (?=(?:s|ms|µs|min|h|B|KB|MB|GB|TB|%)(?:[.,;:)]|\s|$))")
#: what stands for it while the line is wrapped (as wide as a space, and not one)
_KEEP = "\u00a0"


def _wrap(line: str, width: int) -> list[str]:
    if _KEEP in line:
        return _fold(line, width)
    return [part.replace(_KEEP, " ") for part in _fold(_UNIT_SPACE.sub(_KEEP, line), width)]


def _fold(line: str, width: int) -> list[str]:
    lead = line[: len(line) - len(line.lstrip())]
    more = lead + "  "
    command = _COMMAND.match(line)
    if command:
        label = textwrap.wrap(
            command.group(2),
            width,
            initial_indent=lead,
            subsequent_indent=more,
            break_long_words=False,
            break_on_hyphens=False,
        )
        return [*label, more + command.group(3)]
    return textwrap.wrap(
        line.strip(),
        width,
        initial_indent=lead,
        subsequent_indent=more,
        break_long_words=False,
        break_on_hyphens=False,
    ) or [line]


#: what may be a control character: any but printable ASCII, line ends and tabs (a fast test)
_ODD = re.compile(r"[^\x20-\x7e\n\t]")
#: the Unicode categories written out: controls (ESC, C1's CSI) and format characters (the
#: bidirectional overrides and isolates, U+202A-U+202E, U+2066-U+2069, U+200E, U+200F, U+061C,
#: which reorder what follows them on the screen; zero-width spaces and joiners)
_WRITTEN_OUT = ("Cc", "Cf")


def shown(text: str) -> str:
    """``text`` with its control and format characters written as Python writes them
    (``\\x1b``, ``\\u202e``): a file name's escape sequence would colour the terminal, its
    right-to-left override show another name.  Line ends and tabs are kept."""
    return _ODD.sub(_written_out, text)


def _written_out(match: re.Match[str]) -> str:
    char = match.group()
    return repr(char)[1:-1] if unicodedata.category(char) in _WRITTEN_OUT else char


def escapes_allowed() -> bool:
    """Whether a terminal may be sent escape sequences (colours, erasing a line): not one
    whose ``TERM`` is ``dumb`` (an editor's shell, a plain console)."""
    return os.environ.get("TERM") != "dumb"


def write(text: str, stream: TextIO | None = None) -> None:
    """Write ``text`` on ``stream`` (standard error) and flush it.  A reader that went away
    (``daskscore run ... | head -2``) ends what is written there, quietly: the stream writes
    to ``os.devnull`` from then on (see :func:`closed`), and the job goes on."""
    stream = stream or sys.stderr
    try:
        stream.write(text)
        stream.flush()
    except BrokenPipeError:
        closed(stream)


def closed(stream: TextIO) -> None:
    """The reader of ``stream`` went away: point its descriptor at ``os.devnull``, as Python's
    documentation advises for a closed pipe, so that what it still holds, what is written
    later and the flush at exit fail nothing."""
    try:
        fd = stream.fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
    except (AttributeError, OSError, ValueError):  # (no descriptor: nothing to point)
        return
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)
    try:
        stream.flush()
    except (OSError, ValueError):
        pass


class QuietOnClose:
    """``stream``, whose writes and flushes end quietly once its reader went away (see
    :func:`closed`); anything else is the stream's."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except BrokenPipeError:
            closed(self.stream)
            return len(text)

    def flush(self) -> None:
        try:
            self.stream.flush()
        except BrokenPipeError:
            closed(self.stream)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


@contextmanager
def quiet_when_closed() -> Iterator[None]:
    """Standard output and error that a closed reader ends quietly while the block runs
    (``daskscore validate ... | head -3``: the command goes on to its end and its own exit
    status, not an internal ``BrokenPipeError``)."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = QuietOnClose(sys.stdout), QuietOnClose(sys.stderr)  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


def say(text: str, stream: TextIO | None = None, style: str | None = None) -> None:
    """Print ``text`` on ``stream`` (standard error), fitted to it when it is a terminal; its
    control characters are written out (a file name may hold an escape sequence).  ``style``:
    an SGR code (``"1;31"``, bold red) the text is drawn with on a terminal, unless
    ``NO_COLOR`` is set or ``TERM`` is ``dumb``.  A closed stream is skipped (:func:`write`)."""
    stream = stream or sys.stderr
    text = shown(text)
    if hasattr(stream, "isatty") and stream.isatty():
        text = fit(text, max(40, shutil.get_terminal_size().columns - 1))
        if style and "NO_COLOR" not in os.environ and escapes_allowed():
            text = "\n".join(f"\033[{style}m{line}\033[0m" for line in text.split("\n"))
    write(text + "\n", stream)
