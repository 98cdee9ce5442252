"""Scanning a CSV file's bytes as pandas' parser reads them: where its header ends, where each
row ends, and whether it may be cut between rows at all (see :mod:`daskscore.io.tabular` for
the rules, documented there once).  Pure functions on bytes, no pandas."""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterator
from functools import cache
from typing import IO, TYPE_CHECKING

from daskscore.errors import InputError

if TYPE_CHECKING:
    import numpy as np

_CHUNK = 1 << 20  # bytes read at a time when scanning a CSV file


@cache
def _blank() -> np.ndarray:
    """Bytes a blank line may hold (pandas skips such lines), as a lookup table."""
    import numpy as np

    table = np.zeros(256, dtype=bool)
    table[[ord(" "), ord("\t"), ord("\r"), ord("\n")]] = True
    return table


class Unsplittable(Exception):
    """A CSV file holds a line that a byte range must not be cut after."""


#: A line end as pandas' parser sees one: ``\r\n``, ``\n``, or a lone ``\r``
_LINE_END = re.compile(rb"\r\n?|\n")
_BOM = b"\xef\xbb\xbf"


def data_start(f: IO[bytes]) -> int:
    """Offset just past the header (the first non-blank line, a UTF-8 byte-order mark before it
    not counting, and a lone ``\r`` ending a line as for pandas); the file's size if none
    ends."""
    f.seek(0)
    buf, pos = b"", 0
    while True:
        piece = f.read(_CHUNK)
        buf += piece
        while (end := _LINE_END.search(buf, pos)) is not None:
            if piece and end.end() == len(buf) and buf.endswith(b"\r"):
                break  # (a "\r\n" cut by the read: read on)
            line = buf[pos : end.start()]
            if (line.removeprefix(_BOM) if pos == 0 else line).strip(b" \t\r"):
                return end.end()
            pos = end.end()
        if not piece:
            return len(buf)


#: How compressed files begin (bzip2: its block size digit, then a block's or the stream end's
#: magic number: a text beginning "BZh" is not one), the format's name, and a command that
#: writes the file plain (``{name}``: the file's name).
_COMPRESSED = (
    (re.compile(rb"\x1f\x8b"), "gzip", "gzip -dc {name} > plain/{name}"),
    (re.compile(rb"BZh[1-9](1AY&SY|\x17rE8P\x90)"), "bzip2", "bzip2 -dc {name} > plain/{name}"),
    (re.compile(rb"\x28\xb5\x2f\xfd"), "zstd", "zstd -dc {name} > plain/{name}"),
    (re.compile(rb"\xfd7zXZ\x00"), "xz", "xz -dc {name} > plain/{name}"),
    (re.compile(rb"PK\x03\x04"), "zip", "unzip -d plain {name}"),
)


def refuse_compressed(f: IO[bytes], path: str) -> None:
    """Raise :class:`InputError` when the file begins as a gzip, bzip2, zstd, xz or zip file
    does, whatever its name: tabular mode cuts a CSV file into byte ranges of its text and
    reads them with pandas, which a compressed file's bytes are not (its NUL bytes made it
    look UTF-16)."""
    f.seek(0)
    magic = f.read(10)
    found = next((c for c in _COMPRESSED if c[0].match(magic)), None)
    if found is None:
        return
    _, kind, command = found
    name = os.path.basename(path)
    raise InputError(
        f"input file '{path}' is {kind}-compressed (its first bytes say so), not a plain CSV "
        "file: tabular mode cuts a CSV file into byte ranges of its text, which a compressed "
        f"file cannot be cut into, and does not decompress it. Decompress it first, e.g. "
        f"`{command.format(name=name)}`, or write it as Parquet (whose own compression "
        "tabular mode reads)."
    )


#: Byte-order marks of UTF-32 and UTF-16 (longest first: UTF-32-LE's begins as UTF-16-LE's)
_WIDE_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)


def refuse_wide(f: IO[bytes], path: str, header_end: int) -> None:
    """Raise :class:`InputError` when the file is UTF-16 or UTF-32: its byte-order mark says
    so, or a quarter or more of its header line's bytes (its first ``header_end``) are NUL, as
    in ASCII text in either.  Its lines cannot be found nor counted byte by byte (a ``\\n`` is
    two or four bytes there), and pandas would read it as UTF-8, which it is not."""
    f.seek(0)
    head = f.read(min(header_end, _CHUNK))
    found = next((name for bom, name in _WIDE_BOMS if head.startswith(bom)), None)
    if found is not None:
        said = f"{found} (its byte-order mark says so)"
    elif head and head.count(b"\x00") * 4 >= len(head):
        said = "UTF-16 or UTF-32 (its header line holds NUL bytes between its characters)"
    else:
        return
    name = os.path.basename(path)
    raise InputError(
        f"input file '{path}' is {said}, not UTF-8: tabular mode reads CSV files as UTF-8, "
        f"with or without a byte-order mark. Re-encode it, e.g. `iconv -f {found or 'UTF-16'} "
        f"-t UTF-8 {name} > utf8/{name}`, or write it as UTF-8 (pandas: "
        "to_csv(..., encoding='utf-8'))."
    )


def _row_ends(block: bytes, base: int, cut: bool = True) -> np.ndarray:
    """Offsets just past the ``\\n`` of the non-blank lines of ``block`` (whole lines).
    ``cut``: raise :class:`Unsplittable` where the file must not be cut."""
    if cut and block.count(b"\r") != block.count(b"\r\n"):
        raise Unsplittable  # pandas ends a line at a lone '\r' too
    import numpy as np

    arr = np.frombuffer(block, dtype=np.uint8)
    nl = np.flatnonzero(arr == ord("\n"))
    starts = np.concatenate(([0], nl[:-1] + 1))
    if cut and b'"' in block:
        quotes = np.concatenate(([0], np.cumsum(arr == ord('"'))))
        in_line = quotes[nl] - quotes[starts]
        if np.any(in_line % 2) or _quoted_line_break(block):
            raise Unsplittable  # a line break may sit inside a quoted field
    if not len(nl):
        return nl
    filled = np.logical_or.reduceat(~_blank()[arr[: nl[-1] + 1]], starts)  # (a line's bytes)
    return nl[filled] + (base + 1)


def _quoted_line_break(block: bytes) -> bool:
    """Whether a quoted field of ``block`` (whole lines) holds a line break though every line
    has an even number of ``"``: a ``"`` inside an unquoted field is a plain character, so
    parity alone is fooled by ``1,x"y,"abc`` + ``def",z``.  :mod:`csv` reads quotes as pandas
    does; each line must be one record (about 20 ms a MB, for blocks holding a ``"``)."""
    reader = csv.reader(io.StringIO(block.decode("latin-1"), newline=""))
    try:
        records = sum(1 for _ in reader)
    except csv.Error:  # (a NUL byte, a huge field: read whole, as pandas would)
        return True
    return records != reader.line_num


def row_end_blocks(f: IO[bytes], start: int, size: int, cut: bool = True) -> Iterator[np.ndarray]:
    """Row end offsets from ``start`` to the end of the file, one array per chunk read."""
    f.seek(start)
    tail, base = b"", start
    while piece := f.read(_CHUNK):
        data = tail + piece
        end = data.rfind(b"\n") + 1
        if end:
            yield _row_ends(data[:end], base, cut)
        tail, base = data[end:], base + end
    if tail:  # a last line without a line end
        yield _row_ends(tail + b"\n", base, cut).clip(max=size)
