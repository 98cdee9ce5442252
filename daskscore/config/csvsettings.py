"""``parallel_run_step.settings.json``: the append_row ``to_csv`` arguments a code folder sets,
``{"append_row": {"pandas.DataFrame.to_csv": {"sep": ",", "encoding": "latin-1"}}}``.

Its keys are checked as a deployment file's are (:func:`daskscore.config.settings.unknown_keys`):
a key nobody knows (a misspelt section such as ``append_row.to_csv``, an argument pandas'
``to_csv`` does not take) is an error naming the file, the key and the nearest known one,
before anything runs; with ``lenient`` (``--lenient``) a warning, and the key is ignored.  The
values are tried on a small frame, so that an argument pandas refuses (a two-character ``sep``)
fails the job before it starts rather than every mini-batch as it is written.

``encoding`` and ``errors`` are applied by daskscore to the whole file
(:func:`daskscore.io.rowtext.encode_text`), list returns too; ``compression`` is refused (the
file is assembled from the mini-batches' rows: compress it when the job is done).
"""

from __future__ import annotations

import codecs
import difflib
import json
from pathlib import Path
from typing import Any

from daskscore.errors import ConfigError

SETTINGS_JSON = "parallel_run_step.settings.json"
#: to_csv arguments of the append_row file: Azure writes space-separated, no header, no index.
APPEND_ROW_CSV_DEFAULTS: dict[str, Any] = {"sep": " ", "header": False, "index": False}
SECTION, ARGUMENTS = "append_row", "pandas.DataFrame.to_csv"
#: What an unknown-key error adds once, under the first such key.
#: Names other writers give ``to_csv``'s arguments (too far from them for a spelling match).
ALIASES = {
    "separator": "sep",
    "seperator": "sep",
    "delimiter": "sep",
    "line_terminator": "lineterminator",
}
HINT = (
    " Correct the key, or pass --lenient (lenient=True in Python) to ignore unknown keys with a "
    "warning."
)


def read_csv_settings(
    code: Path, *, lenient: bool = False, warned: list[str] | None = None
) -> dict[str, Any]:
    """The append_row ``to_csv`` arguments, updated by the code folder's
    ``parallel_run_step.settings.json``.

    Parameters
    ----------
    code : Path
        The code folder.
    lenient : bool, default False
        Unknown keys are ignored with a warning (appended to ``warned``) instead of refused.
    warned : list, optional
        Where the warnings of a lenient read go.

    Raises
    ------
    ConfigError
        The file is not such JSON, names a key nobody knows (without ``lenient``: every such
        key, one line each, with the nearest known one), or holds arguments pandas' ``to_csv``
        refuses, an unknown encoding or a compression.
    """
    kwargs = dict(APPEND_ROW_CSV_DEFAULTS)
    path = code / SETTINGS_JSON
    if not path.is_file():
        return kwargs
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        extra = data.get(SECTION, {}).get(ARGUMENTS, {})
    except (ValueError, AttributeError) as exc:
        raise ConfigError(
            f"{path}: expected JSON like "
            '{"append_row": {"pandas.DataFrame.to_csv": {"sep": ","}}}: ' + str(exc)
        ) from None
    if not isinstance(extra, dict):
        raise ConfigError(f"{path}: {SECTION}.{ARGUMENTS}: expected a mapping.")
    unknown = unknown_keys(data, path)
    if unknown and not lenient:
        raise ConfigError("\n".join([unknown[0] + HINT, *unknown[1:]]))
    if warned is not None:
        warned += [f"{text.removesuffix('.')}; it is ignored (lenient)." for text in unknown]
    extra = {k: v for k, v in extra.items() if k in to_csv_arguments()}
    kwargs.update(extra)
    kwargs.pop("path_or_buf", None)
    if extra:
        _check_encoding(path, kwargs)
        _try_csv_settings(path, kwargs, extra)
    return kwargs


def to_csv_arguments() -> frozenset[str]:
    """The arguments pandas' ``DataFrame.to_csv`` takes, as the installed pandas names them."""
    import inspect

    import pandas as pd

    return frozenset(inspect.signature(pd.DataFrame.to_csv).parameters) - {"self"}


def unknown_keys(data: dict[str, Any], path: Path) -> list[str]:
    """One message per key of the file nobody knows, naming the file, the key and the nearest
    known key: besides ``append_row``, ``append_row.pandas.DataFrame.to_csv`` and the arguments
    of ``to_csv``, nothing is read."""
    found = []
    sections: list[tuple[str, Any, list[str]]] = [("", data, [SECTION])]
    section = data.get(SECTION)
    if isinstance(section, dict):
        sections.append((f"{SECTION}.", section, [ARGUMENTS]))
        if isinstance(section.get(ARGUMENTS), dict):
            names = sorted(to_csv_arguments())
            sections.append((f"{SECTION}.{ARGUMENTS}.", section[ARGUMENTS], names))
    for prefix, node, known in sections:
        for key in map(str, node):
            if key in known:
                continue
            match = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            if key in ALIASES and ALIASES[key] in known:
                match = [ALIASES[key]]
            if not match and len(known) == 1:  # (the one key a section may hold: say it)
                match = known
            near = f" (did you mean '{prefix}{match[0]}'?)" if match else ""
            found.append(f"{path}: unknown key '{prefix}{key}'{near}.")
    return found


def _check_encoding(path: Path, kwargs: dict[str, Any]) -> None:
    """An ``encoding`` Python has a text codec for, ``errors`` a handler it knows, and no
    ``compression``."""
    where = f"{path}: {SECTION}.{ARGUMENTS}"
    encoding, errors = kwargs.get("encoding"), kwargs.get("errors")
    try:
        if encoding is not None:
            "".encode(str(encoding))  # (a codec, and one of text: not 'base64')
            codecs.getincrementalencoder(str(encoding))
        if errors is not None:
            codecs.lookup_error(str(errors))
    except (LookupError, TypeError) as exc:
        raise ConfigError(
            f"{where}: encoding={encoding!r}, errors={errors!r}: {exc}; use a text encoding "
            "Python knows (utf-8, utf-16, latin-1, cp1252, ...) and an errors handler such as "
            "'strict', 'replace' or 'backslashreplace'."
        ) from None
    if kwargs.get("compression") not in (None, "infer"):
        raise ConfigError(
            f"{where}: compression={kwargs['compression']!r}: the append_row file is assembled "
            "from each mini-batch's rows as text, and is not compressed; leave compression out "
            "and compress the file once the job is done."
        )


def _try_csv_settings(path: Path, kwargs: dict[str, Any], extra: dict[str, Any]) -> None:
    """Refuse ``to_csv`` arguments pandas does not take (a two-character ``sep``) before the
    job starts, by writing a small frame with them: else every mini-batch would fail as it is
    written.  Arguments whose fit depends on the columns run() returns (``columns``; ``header``
    or ``index_label`` as lists) are not tried."""
    import pandas as pd

    tried = {
        k: v
        for k, v in kwargs.items()
        if k != "columns" and not (k in ("header", "index_label") and isinstance(v, list))
    }
    # (its text holds no character of the separator or quote: quoting=3 with no escapechar is
    # refused only for the values of the mini-batches that hold one, as they are written)
    special = f"{tried.get('sep', ' ')}{tried.get('quotechar', chr(34))}"
    text = [c for c in "xyzuvw" if c not in special][:2]
    frame = pd.DataFrame({"a": [1, 2], "b": [0.5, None], "c": text})
    try:
        frame.to_csv(**{"lineterminator": "\n", **tried})
    except Exception as exc:  # noqa: BLE001 - any refusal of pandas', shown with the file's name
        given = ", ".join(f"{k}={v!r}" for k, v in extra.items())
        raise ConfigError(
            f"{path}: {SECTION}.{ARGUMENTS}: pandas' to_csv does not take these "
            f"arguments ({given}): {type(exc).__name__}: {exc}"
        ) from None
