"""append_row's text: what ``run()`` returned as Azure appends it to the output file (a list: a
line per element; a DataFrame: ``to_csv`` lines, with the options of
``parallel_run_step.settings.json``), formatted one mini-batch at a time or, for DataFrames of
plain columns, at the sink's flush with their neighbours (:class:`Rows`), to the same bytes.
:class:`~daskscore.io.writers.AppendRowSink` commits them."""

from __future__ import annotations

import codecs
import contextlib
import csv
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from daskscore.protocol import MiniBatchRecord

_LINE_BREAKS = re.compile(r"\r\n|\r|\n")


class FormatError(ValueError):
    """A mini-batch's DataFrame that ``to_csv`` refuses with the job's options (those of
    ``parallel_run_step.settings.json``): its mini-batch fails, not the job."""


def format_rows(result: Any, csv_kwargs: Mapping[str, Any]) -> bytes:
    """The append_row bytes of one mini-batch's result, as Azure writes them: a list gives one
    line per element (its ``str()``, line breaks made spaces), a DataFrame ``to_csv`` lines (a
    frame of rows without columns: an empty line each, as ``to_csv`` writes it; a value that
    holds a carriage return quoted, :func:`frame_text`).  A numpy array is written whole, on
    one line (:func:`whole_arrays`).  The text is encoded as the ``encoding`` of
    ``csv_kwargs`` says (UTF-8 by default), without a byte order mark (:func:`encode_text`)."""
    if isinstance(result, list) and all(type(v) in _PLAIN for v in result):
        return _format_rows(result, csv_kwargs)  # (no array to print: numpy's options unset)
    with whole_arrays():
        return _format_rows(result, csv_kwargs)


#: Types whose ``str()`` numpy's print options leave alone (a mini-batch of these is formatted
#: without setting them, a few microseconds each time).
_PLAIN = frozenset({str, int, float, bool, type(None)})


def whole_arrays() -> contextlib.AbstractContextManager[Any]:
    """A context in which ``str()`` of a numpy array gives every value on one line: numpy's
    own cuts an array of over 1,000 values short with ``...``, and wraps lines at 75
    characters."""
    np = sys.modules.get("numpy")  # (a script that never imports numpy returns no arrays)
    if np is None:
        return contextlib.nullcontext()
    return np.printoptions(threshold=sys.maxsize, linewidth=sys.maxsize)


def _format_rows(result: Any, csv_kwargs: Mapping[str, Any]) -> bytes:
    if not isinstance(result, list):  # a DataFrame: normalize_result let nothing else through
        if len(result) == 0 and not csv_kwargs.get("header", False):
            return b""
        try:
            text = frame_text(result, csv_kwargs)
        except (csv.Error, ValueError, TypeError) as exc:
            options = ", ".join(f"{k}={v!r}" for k, v in csv_kwargs.items())
            raise FormatError(
                f"the rows run() returned cannot be written as append_row text with the to_csv "
                f"options ({options}; parallel_run_step.settings.json sets them): "
                f"{type(exc).__name__}: {exc}; the rows of this mini-batch are not written. "
                "Change the options (an escapechar with quoting 3, say) or the values in run()."
            ) from None
        return encode_text(text, csv_kwargs)
    if not result:
        return b""
    return encode_text("\n".join(map(_one_line, result)) + "\n", csv_kwargs)


#: ``to_csv`` arguments daskscore applies itself, to the text ``to_csv`` returns.
APPLIED = ("encoding", "errors")


def frame_text(frame: Any, csv_kwargs: Mapping[str, Any]) -> str:
    """``frame.to_csv`` text with the job's options, a value that holds a carriage return
    quoted.  ``to_csv`` quotes a value that holds a character of its line terminator (``\n``
    by default), not a lone ``\r``: unquoted, readers (pandas' among them) end the row there
    and the rest of the row becomes one of its own.  Such a frame is written again with a line
    terminator that holds ``\r`` too, whose occurrences outside quotes (the rows' ends) are
    then put back as they were.  The text of a frame without carriage returns is unchanged."""
    kwargs = {"lineterminator": "\n", **csv_kwargs}
    for key in APPLIED:
        kwargs.pop(key, None)
    text = frame.to_csv(**kwargs)
    end = kwargs["lineterminator"]
    if "\r" not in text or "\r" in end:
        return text
    if kwargs.get("quoting") == csv.QUOTE_NONE and not kwargs.get("escapechar"):
        return text  # (nothing may be quoted or escaped: written raw, as Azure writes it)
    wide = "\r" + end
    quote = None if kwargs.get("quoting") == csv.QUOTE_NONE else kwargs.get("quotechar") or '"'
    ends = _row_ends(wide, quote, kwargs.get("escapechar"))
    text = frame.to_csv(**{**kwargs, "lineterminator": wide})
    return ends.sub(lambda m: end if m.group(0) == wide else m.group(0), text)


def _row_ends(wide: str, quote: str | None, escape: str | None) -> re.Pattern[str]:
    """A pattern that finds ``wide`` outside quoted values (``quote``: None where nothing is
    quoted) and escaped characters."""
    e = re.escape(escape) if escape else ""
    found = [f"{e}." if escape else "", re.escape(wide)]
    if quote:
        q = re.escape(quote)
        inside = f"{e}.|{q}{q}|[^{q}{e}]" if escape else f"{q}{q}|[^{q}]"
        found.insert(1, f"{q}(?:{inside})*{q}")
    return re.compile("|".join(p for p in found if p), re.DOTALL)


def _names_escaped(exc: UnicodeError) -> tuple[str, int]:
    """The encoding error handler of append_row text: a file name that is not UTF-8 (a lone
    surrogate, ``\udcff``) is written with a backslash escape; any other character the
    encoding cannot write is an error."""
    if isinstance(exc, UnicodeEncodeError):
        bad = exc.object[exc.start : exc.end]
        if all("\ud800" <= c <= "\udfff" for c in bad):
            return codecs.backslashreplace_errors(exc)
    raise exc


codecs.register_error("daskscore.names", _names_escaped)


def encode_text(text: str, csv_kwargs: Mapping[str, Any]) -> bytes:
    """``text`` in the ``encoding`` of the job's ``to_csv`` options (UTF-8 by default), with
    their ``errors`` (a file name that is not UTF-8 escaped, else an error); without the byte
    order mark of an encoding that has one (``utf-16``): the file starts with it once
    (:func:`file_head`), however many mini-batches follow.

    Raises
    ------
    FormatError
        A character the encoding cannot write, naming it and the encoding.
    """
    encoding = csv_kwargs.get("encoding")
    if not encoding:
        return text.encode("utf-8", "backslashreplace")  # a non-UTF-8 file name: \udcff
    encoder = codecs.getincrementalencoder(encoding)(csv_kwargs.get("errors") or "daskscore.names")
    encoder.encode("")  # (the byte order mark, if any: the file's head, not each part's)
    try:
        return encoder.encode(text, final=True)
    except UnicodeEncodeError as exc:
        char = exc.object[exc.start]
        raise FormatError(
            f"the rows run() returned hold {char!r} (U+{ord(char):04X}), which the encoding "
            f"{encoding!r} (parallel_run_step.settings.json sets it) cannot write; the rows of "
            "this mini-batch are not written. Choose an encoding that holds it (utf-8 holds "
            'every character), add "errors": "replace" (or "backslashreplace") beside '
            '"encoding", or return other text from run().'
        ) from None


def file_head(csv_kwargs: Mapping[str, Any]) -> bytes:
    """The bytes the append_row file starts with: the byte order mark of the job's
    ``encoding`` (``utf-16``, ``utf-32``, ``utf-8-sig``), once; else nothing."""
    encoding = csv_kwargs.get("encoding")
    return codecs.getincrementalencoder(encoding)().encode("") if encoding else b""


def decoded(data: bytes, csv_kwargs: Mapping[str, Any]) -> str:
    """append_row bytes (a part's, without the file's head) as text, to show them."""
    encoding = csv_kwargs.get("encoding") or "utf-8"
    return (file_head(csv_kwargs) + data).decode(encoding, errors="replace").lstrip("\ufeff")


def _one_line(item: Any) -> str:
    text = str(item)
    if "\n" in text or "\r" in text:
        text = _LINE_BREAKS.sub(" ", text)
    return text


@dataclass
class Rows:
    """A mini-batch's DataFrame result, formatted at the flush with its neighbours'
    (:meth:`AppendRowSink.flush`): a copy, so that what ``run()`` does to its frame later
    changes nothing."""

    frame: Any
    #: the job's ``to_csv`` options (one object for all of a job's mini-batches: not copied)
    kwargs: Mapping[str, Any]
    #: the columns' names and dtypes: frames of the same kind are formatted together
    kind: tuple[Any, ...]
    #: bytes it may take, for the sink's flush size until it is formatted
    estimate: int


#: ``to_csv`` options with which a row's text depends on that row alone.
_ROW_BY_ROW = {
    "sep", "header", "index", "na_rep", "float_format", "quoting", "quotechar",
    "escapechar", "doublequote", "decimal", "lineterminator", "encoding",
}  # fmt: skip
#: Encodings that write every character (a file name that is not UTF-8 escaped): text
#: encoded at the flush cannot fail there.
_WHOLE_ENCODINGS = ("utf-8", "utf-16", "utf-32")


def defer_rows(result: Any, csv_kwargs: Mapping[str, Any]) -> Rows | None:
    """``result`` as :class:`Rows` when formatting it with others gives each row the same
    text as formatting it alone: a DataFrame without header or index of numbers, booleans and
    text (pandas' string dtype), with options that format row by row.  Else None: it is
    formatted now (dates are not deferred: ``to_csv`` leaves out a column's times when all of
    them are midnight, a choice made over the whole column)."""
    pd = sys.modules.get("pandas")  # (a script returning lists never imports pandas)
    if pd is None or not isinstance(result, pd.DataFrame) or result.empty:
        return None
    from daskscore._compat import column_dtypes

    if (
        csv_kwargs.get("header")
        or csv_kwargs.get("index", True)
        or not _ROW_BY_ROW.issuperset(csv_kwargs)
        # (without quotes, a value holding the separator is refused: formatted now, that fails
        # this mini-batch, where formatted at the flush it would fail the task)
        or csv_kwargs.get("quoting") == csv.QUOTE_NONE
    ):
        return None
    if not isinstance(csv_kwargs.get("float_format", ""), str):
        return None
    encoding = csv_kwargs.get("encoding")
    if encoding and not codecs.lookup(encoding).name.startswith(_WHOLE_ENCODINGS):
        return None  # (a character it cannot write fails this mini-batch: encoded now)
    dtypes = column_dtypes(result)
    for dtype in dtypes:
        if not (getattr(dtype, "kind", "") in "iufb" or isinstance(dtype, pd.StringDtype)):
            return None
    # (the names too: concat aligns columns by name)
    kind = (tuple(result.columns), dtypes)
    # a copy of the values, kept until formatted: the script may change the frame it returned
    # meanwhile, even through an array it made the frame from with copy=False (which
    # copy-on-write does not see)
    return Rows(result.copy(), csv_kwargs, kind, len(result) * (12 * len(dtypes) + 1))


def formatted(buffer: list[tuple[MiniBatchRecord, bytes | Rows]]) -> list[bytes]:
    """The bytes of each entry of a sink's buffer, in order: runs of :class:`Rows` of one
    kind and options formatted together."""
    out: list[bytes] = []
    run: list[Rows] = []
    for _, item in buffer:
        if run and not (
            isinstance(item, Rows) and item.kind == run[0].kind and item.kwargs == run[0].kwargs
        ):
            out.extend(_format_together(run))
            run = []
        if isinstance(item, Rows):
            run.append(item)
        else:
            out.append(item)
    if run:
        out.extend(_format_together(run))
    return out


def _format_together(run: list[Rows]) -> list[bytes]:
    """One ``to_csv`` for ``run``, cut into each frame's lines; where the text does not have
    one line per row (a value with a line break in it), each frame alone."""
    import pandas as pd

    if len(run) > 1:
        kwargs = {"lineterminator": "\n", **run[0].kwargs}
        end = kwargs["lineterminator"]
        frames = [rows.frame for rows in run]
        whole = pd.concat(frames, ignore_index=True)
        text = whole.to_csv(**{k: v for k, v in kwargs.items() if k not in APPLIED})
        lines = text.split(end)
        # (a carriage return, quoted by frame_text: each frame alone)
        if len(lines) == len(whole) + 1 and lines[-1] == "" and ("\r" in end or "\r" not in text):
            out, at = [], 0
            for frame in frames:
                text = end.join(lines[at : at + len(frame)]) + end
                out.append(encode_text(text, run[0].kwargs))
                at += len(frame)
            return out
    return [format_rows(rows.frame, rows.kwargs) for rows in run]
