"""A CSV split that pandas cannot parse, said as the input's error, with the file's line.

A split is parsed as its file's header line followed by the split's byte range (see
:func:`daskscore.io.tabular.read_split`), so the line pandas names in its error (``Expected 2
fields in line 4, saw 3``, ``EOF inside string starting at row 14``) counts from the header,
through the split only; and pandas counts a line break inside a quoted field as no line end.
:func:`read_error` names the file and the line as an editor numbers the file's lines: every
``\\n``, ``\\r\\n`` or lone ``\\r`` ends one.  Which line breaks sit inside quotes is told as the
planner tells it: a line break after an odd number of ``"`` in the text parsed.  A byte that
is not UTF-8 is named by its line and its offset in the file (pandas names its position in a
buffer of its own), with a way to re-encode the file.
"""

from __future__ import annotations

import codecs
import os
import re
from typing import IO, Any

from daskscore.errors import InputError
from daskscore.io import filestamp

_CHUNK = 1 << 20
#: pandas' line numbers: "in line N" (from 1), "at row N" (lines before, as in the C parser)
_NUMBERED = re.compile(r"\b(in line|at row) (\d+)\b")
_PREFIX = "Error tokenizing data. C error: "


def read_error(split: Any, head: bytes, body: bytes, exc: Exception) -> InputError:
    """The error to raise for ``exc``, raised by ``pandas.read_csv`` over ``head + body``
    (``head``: the file's first ``len(head)`` bytes; ``body``: bytes ``split.start`` to
    ``split.stop``): the file and the line in it named, pandas' C-parser preamble left out."""
    if isinstance(exc, UnicodeDecodeError):  # (its position is in a buffer of pandas' own)
        found = not_utf8(split, head, body, exc)
        if found is not None:
            return found
    text = str(exc).strip().removeprefix(_PREFIX)

    def renumbered(match: re.Match[str]) -> str:
        line = int(match.group(2)) + (match.group(1) == "at row")
        return f"{match.group(1).split()[0]} line {file_line(split, head, body, line)}"

    try:
        text, numbered = _NUMBERED.subn(renumbered, text)
    except OSError:  # (the file is gone: pandas' number stays)
        numbered = 0
    where = "" if numbered or split.first_row == 0 else f" (its rows from {split.first_row})"
    return InputError(f"input file '{split.path}'{where} cannot be read as CSV: {text}")


def extra_fields(split: Any, head: bytes, body: bytes, names: int) -> InputError:
    """The error of a split whose first row has more fields than the header has ``names``
    (pandas takes that for an index column: no error of its own), naming the row's line (the
    split's first that is not blank)."""
    blank = body[: len(body) - len(body.lstrip(b" \t\r\n"))]
    try:
        with filestamp.open_planned(split.path, getattr(split, "stamp", None)) as f:
            where = f"line {_breaks_before(f, split.start) + _count_breaks(blank) + 1}"
    except OSError:  # (the file is gone: the split's first row)
        where = f"row {split.first_row}"
    return InputError(
        f"input file '{split.path}' cannot be read as CSV: {where} has more fields than its "
        f"header has names ({names}), so pandas would take the first field of each row for "
        "the index and the row would lose it; name every column in the header, or remove "
        "the extra fields."
    )


def not_utf8(split: Any, head: bytes, body: bytes, exc: UnicodeDecodeError) -> InputError | None:
    """The error of a split holding a byte that is not UTF-8, naming the file's line and the
    byte's offset in the file; None when ``exc`` is not about UTF-8, or ``head + body`` decode
    (pandas' error then stays as it is)."""
    if codecs.lookup(exc.encoding).name != "utf-8":
        return None
    try:
        (head + body).decode("utf-8")
    except UnicodeDecodeError as bad:
        at, found = bad.start, bad
    else:
        return None
    offset = at if at < len(head) else split.start + at - len(head)
    try:
        with filestamp.open_planned(split.path, getattr(split, "stamp", None)) as f:
            where = f"line {_breaks_before(f, offset) + 1} (byte offset {offset} of the file)"
    except OSError:  # (the file is gone: the offset is known still)
        where = f"byte offset {offset} of the file"
    byte = " ".join(f"0x{b:02x}" for b in found.object[found.start : found.end][:4])
    name = os.path.basename(split.path)
    return InputError(
        f"input file '{split.path}' cannot be read as CSV: it is not UTF-8 (tabular mode reads "
        f"CSV files as UTF-8, with or without a byte-order mark): {where} holds {byte} "
        f"({found.reason}). Re-encode the file as UTF-8 from the encoding it was written in, "
        f"e.g. `iconv -f latin1 -t utf-8 {name} > utf8/{name}` (latin1, cp1252, ...), or write "
        "it as UTF-8 or Parquet."
    )


def file_line(split: Any, head: bytes, body: bytes, line: int) -> int:
    """The file's line (from 1) where line ``line`` of ``head + body``, as pandas counts
    them, begins."""
    import numpy as np

    data = head + body
    arr = np.frombuffer(data, dtype=np.uint8)
    quoted = np.cumsum(arr == ord('"'), dtype=np.uint8) & 1  # (parity only: wraps harmlessly)
    ends = _breaks(arr) & (quoted == 0)
    pos = np.flatnonzero(ends)
    if line <= 1 or not len(pos):
        at = 0
    else:
        at = int(pos[min(line - 2, len(pos) - 1)]) + 1
    if at < len(head):
        return _count_breaks(data[:at]) + 1
    with filestamp.open_planned(split.path, getattr(split, "stamp", None)) as f:
        before = _breaks_before(f, split.start)
    return before + _count_breaks(body[: at - len(head)]) + 1


def _breaks(arr: Any) -> Any:
    """Where a line ends in ``arr`` (bytes as uint8): a ``\\n``, or a ``\\r`` not followed
    by one."""
    nl = arr == ord("\n")
    cr = arr == ord("\r")
    cr[:-1] &= ~nl[1:]
    return nl | cr


def _count_breaks(data: bytes) -> int:
    return data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")


def _breaks_before(f: IO[bytes], stop: int) -> int:
    """Line ends in the file's first ``stop`` bytes."""
    f.seek(0)
    count, left, last = 0, stop, b""
    while left > 0 and (piece := f.read(min(_CHUNK, left))):
        count += _count_breaks(piece) - (last == b"\r" and piece[:1] == b"\n")
        last, left = piece[-1:], left - len(piece)
    return count
