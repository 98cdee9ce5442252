"""Reading a deployment file: YAML into a dict, with every error naming the file and the line,
and every key given twice in one mapping found (YAML itself would keep the last silently: a
second ``settings:`` section would replace the first whole).

:func:`daskscore.config.loader.check_deployment` makes each duplicate an error, or a warning
when lenient, as it does an unknown key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from daskscore.config.values import kind
from daskscore.errors import ConfigError


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a deployment file into a dict; errors name the file and the line."""
    return read_yaml_checked(path)[0]


def read_yaml_checked(path: str | os.PathLike[str]) -> tuple[dict[str, Any], list[str]]:
    """Read a deployment file into a dict, and say where each key given twice in one mapping
    is (:func:`duplicate_keys`).

    Raises
    ------
    ConfigError
        The file is missing, not UTF-8, not valid YAML (naming the line), empty, or not a
        mapping.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: deployment file not found.")
    try:
        loader = yaml.SafeLoader(p.read_text(encoding="utf-8"))
        try:
            node = loader.get_single_node()
            duplicates = duplicate_keys(node, str(p)) if node is not None else []
            raw = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{p}: not valid YAML{where}: {problem}.") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not a UTF-8 text file ({exc.reason}).") from None
    if raw is None:
        raise ConfigError(f"{p}: the deployment file is empty.")
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping of keys at the top level, got {kind(raw)}.")
    return raw, duplicates


def duplicate_keys(node: yaml.Node, where: str) -> list[str]:
    """Where each key given again in a mapping of the YAML tree ``node`` is, in the order of
    the file: ``d.yml: duplicate key 'settings.mini_batch_size' (lines 4 and 9)``, one each
    (:func:`duplicate_problem` makes it an error, :func:`duplicate_warning` a warning).  Keys
    a merge (``<<: *base``) brings in are not counted: a key of the mapping's own may replace
    them."""
    found: list[str] = []
    seen: set[int] = set()

    def walk(node: yaml.Node, prefix: str) -> None:
        if id(node) in seen:  # (an alias: its node was walked where it was anchored)
            return
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, f"{prefix}[{index}]")
        elif isinstance(node, yaml.MappingNode):
            lines: dict[tuple[str, str], int] = {}
            for key, value in node.value:
                name = str(key.value) if isinstance(key, yaml.ScalarNode) else None
                dotted = f"{prefix}.{name}" if prefix else str(name)
                line = key.start_mark.line + 1
                if name is not None and key.tag != "tag:yaml.org,2002:merge":
                    if (key.tag, name) in lines:
                        first = lines[key.tag, name]
                        found.append(
                            f"{where}: duplicate key '{dotted}' (lines {first} and {line})"
                        )
                    else:
                        lines[key.tag, name] = line
                walk(value, dotted)

    walk(node, "")
    return found


def duplicate_problem(where: str) -> str:
    """A duplicate key (as :func:`duplicate_keys` says where it is) as an error."""
    return (
        f"{where}: YAML keeps only the last, so the first would be silently ignored; remove one "
        "(or pass --lenient, lenient=True in Python, to use the last with a warning)."
    )


def duplicate_warning(where: str) -> str:
    """A duplicate key (as :func:`duplicate_keys` says where it is) as a lenient warning."""
    return f"{where}: the last is used, the first ignored (lenient)."
