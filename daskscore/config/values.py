"""One deployment value against its field of :mod:`daskscore.config.settings`: its type, its
range (``minimum``, ``positive``, finite), its choices, and the sizes of ``mini_batch_size``.

The loader checks the deployment file's values here, and each numeric override (``--set``, the
API's keywords) on its own before it is merged, so that both get the same reason, naming the
key, and an override's error says it is an override.  Every error is a
:class:`~daskscore.errors.ConfigError` of one sentence: ``WHERE: KEY: expected ..., got ...``.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from typing import Any

from daskscore.config.settings import RetrySettings, Settings, output_name_problem
from daskscore.config.sizes import parse_mini_batch_size
from daskscore.errors import ConfigError


def check_override(path: list[str], value: Any) -> None:
    """Check an override of a setting on its own, as :func:`validate` checks the file's, so
    that its error names the override, not the file.  A whole section set to a value that is
    not one (``--set settings=5``), and a deployment type other than ``model``, are refused as
    in the file.  (The paths of the code and the model are checked with the file.)"""
    if len(path) == 1 and path[0] in SECTIONS and not isinstance(value, dict):
        raise ConfigError(
            f"override: {path[0]}: expected a mapping, got {kind(value)}; set its keys one by "
            f"one (--set {path[0]}.KEY=VALUE)."
        )
    if path == ["type"] and value != "model":
        raise ConfigError(
            f"override: type: '{value}' deployments are not supported; daskscore runs "
            "'type: model' deployments (a scoring script and a model)."
        )
    if path[:2] == ["settings", "environment_variables"] and len(path) == 3:
        _env_vars({path[2]: value}, "settings.environment_variables", "override")
        return
    field = _field(path)
    if field is None or value is None and path[-1] == "environment_variables":
        return  # (none: as an empty section in the file)
    hint, meta = field
    key = ".".join(path)
    if hint is RetrySettings:
        if not isinstance(value, dict):
            raise ConfigError(f"override: {key}: expected a mapping, got {kind(value)}.")
        for name, sub in value.items():
            if name in _fields(RetrySettings):
                check_override([*path, name], sub)
    else:
        check_value(value, hint, meta, key, "override")


def _field(path: list[str]) -> tuple[Any, Any] | None:
    """The type and metadata of the setting at ``path`` (None: no setting)."""
    if path == ["resources", "instance_count"]:
        cls, name = Settings, "instance_count"
    elif len(path) == 3 and path[:2] == ["settings", "retry_settings"]:
        cls, name = RetrySettings, path[2]
    elif len(path) == 2 and path[0] == "settings":
        cls, name = Settings, path[1]
    else:
        return None
    fields = _fields(cls)
    if name not in fields:
        return None
    return typing.get_type_hints(cls)[name], fields[name].metadata


def override_value(path: list[str], value: Any) -> Any:
    """An override's value as its key's type reads it.  A string for a number (an integer or a
    number of seconds, ``mini_batch_size``) gives the number its digits say (``60``, ``1e3``,
    ``-1``; an integer's, a whole number however written: ``1e3`` is 1000, ``2.5`` stays a
    number for the check to refuse), and is left as it is where they say none; every other
    key keeps its string exactly as typed (an environment variable's ``1:30``, ``0x10``,
    ``no``, ``1.10``, a file name's ``007``): no YAML reading of it.  Other values (the Python
    API's) are left as they are."""
    field = _field(path)
    if not isinstance(value, str) or field is None:
        return value
    hint, meta = field
    if hint in (int, float) or meta.get("size"):
        found = number(value)
        if isinstance(found, float) and hint is not float and found.is_integer():
            found = int(found)
        return value if found is None else found
    return value


_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|[+-]?\.inf|\.nan", re.I)


def number(text: str) -> int | float | None:
    """The number ``text`` writes in ASCII digits (an integer, or a decimal number with an
    exponent or not; YAML's ``.inf`` and ``.nan`` too), or None: ``'--1'``, ``'²'``, ``'1:30'``
    and ``'0x10'`` write none.

    Examples
    --------
    >>> number(" 60 "), number("1e3"), number("-1"), number("²")
    (60, 1000.0, -1, None)
    """
    text = text.strip()
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text.replace(".", "", 1) if text[-1].isalpha() else text)  # (.inf: inf)
    return None


#: The deployment's sections that hold keys of their own.
SECTIONS = ("settings", "resources", "code_configuration")


def _fields(cls: type) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(cls)}


def build(cls: type, values: dict[str, Any], prefix: str, where: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: {prefix}: expected a mapping, got {kind(values)}.")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in values or values[f.name] is None and f.name == "environment_variables":
            continue
        key = f"{prefix}.{f.name}"
        value = values[f.name]
        if hints[f.name] is RetrySettings:
            kwargs[f.name] = build(RetrySettings, value or {}, key, where)
        else:
            kwargs[f.name] = check_value(value, hints[f.name], f.metadata, key, where)
    return cls(**kwargs)


def check_value(value: Any, hint: Any, meta: Any, key: str, where: str) -> Any:
    def fail(expected: str) -> typing.NoReturn:
        raise ConfigError(f"{where}: {key}: expected {expected}, got {kind(value)}.")

    if meta.get("size"):
        return _check_size(value, meta, key, where)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if not (isinstance(value, str) and _INT.fullmatch(value.strip())):
                fail(_int_phrase(meta))
            value = int(value)
    elif hint is float:
        if isinstance(value, str) and number(value) is not None:
            value = number(value)  # (as the integers' settings take "10")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail("a number of seconds" if meta.get("positive") else "a number")
        value = float(value)
        if not math.isfinite(value):  # YAML's .nan and .inf
            fail("a positive number of seconds" if meta.get("positive") else "a finite number")
    elif hint is str:
        if not isinstance(value, str) or not value:
            fail("a non-empty string")
        if "choices" in meta:
            value = value.lower()
            if value not in meta["choices"]:
                fail("one of " + ", ".join(meta["choices"]))
        problem = output_name_problem(value) if meta.get("file_name") else None
        if problem:
            raise ConfigError(f"{where}: {key}: {problem}; choose another name.")
    elif typing.get_origin(hint) is dict:
        return _env_vars(value, key, where)
    if "minimum" in meta and value < meta["minimum"]:
        fail(_int_phrase(meta))
    if meta.get("positive") and value <= 0:
        fail("a positive number of seconds")
    return value


_SIZE = re.compile(r"^\s*(\d+(\.\d+)?\s*([kmgt]i?b?|b)|rows?\s*:\s*\d+|\d+\s*rows?)\s*$", re.I)


def _check_size(value: Any, meta: Any, key: str, where: str) -> int | str:
    """mini_batch_size: a positive integer (files), or a byte size / row count (tabular)."""
    try:
        return mini_batch_size(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {key}: {exc}") from None


def mini_batch_size(value: Any) -> int | str:
    """``value`` as ``mini_batch_size`` holds it: a positive integer (files per mini-batch; an
    integer's digits too), or a byte size / row count, stripped.  The command's
    ``--mini-batch-size`` takes the same.

    Raises
    ------
    ValueError
        Saying what is expected, and what ``value`` is.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    if isinstance(value, str) and re.fullmatch("[0-9]+", value.strip()) and int(value) >= 1:
        return int(value)
    if isinstance(value, str) and _SIZE.match(value) and _positive_size(value):
        return value.strip()
    raise ValueError(
        "expected a positive integer (files per mini-batch), or for tabular inputs a byte size "
        f"such as '10MB' or a row count such as '500 rows'; got {kind(value)}."
    )


def _positive_size(value: str) -> bool:
    """Whether a byte size or row count is at least 1 (not "0MB", "0 rows", "0.0001KB")."""
    try:
        parse_mini_batch_size(value)
    except ConfigError:
        return False
    return True


def _int_phrase(meta: Any) -> str:
    low = meta.get("minimum")
    if low == 1:
        return "a positive integer"
    if low == 0:
        return "an integer >= 0"
    return f"an integer >= {low}" if low is not None else "an integer"


def _env_vars(value: Any, key: str, where: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ConfigError(
            f"{where}: {key}: expected a mapping of names to values, got {kind(value)}."
        )
    out = {}
    for name, val in value.items():
        if val is None or isinstance(val, (dict, list)):
            raise ConfigError(
                f"{where}: {key}.{name}: expected a string or number, got {kind(val)}."
            )
        text = str(val).lower() if isinstance(val, bool) else str(val)
        problem = _env_problem(str(name), text)
        if problem:
            raise ConfigError(f"{where}: {key}.{name}: {problem}.")
        out[str(name)] = text
    return out


def _env_problem(name: str, value: str) -> str | None:
    """Why ``name=value`` cannot be set in a process's environment (None: it can)."""
    if not name:
        return "an environment variable needs a name (this one is empty)"
    if "=" in name:
        return "an environment variable's name cannot hold '=' (the environment is NAME=VALUE)"
    if "\0" in name or "\0" in value:
        return "an environment variable cannot hold a NUL character"
    return None


def kind(value: Any) -> str:
    names = {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "true/false",
        int: "an integer",
        float: "a number",
        type(None): "nothing",
    }
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"{names.get(type(value), type(value).__name__)} ({shown})"
