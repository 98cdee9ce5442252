"""The typed model of an Azure ML batch deployment: every setting, its type, default and meaning.

These dataclasses are the one place where deployment settings are defined; the loader
(:mod:`daskscore.config.loader`), the CLI's ``--set`` overrides, the Python API's keyword overrides
and the docs all read them from here.  Field metadata carries the description and the
constraints (``minimum``, ``positive``, ``choices``) that validation enforces.
"""

from __future__ import annotations

import difflib
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from daskscore.config.sizes import MiniBatchSize

#: Keys that only mean something in the cloud: accepted and ignored.
CLOUD_ONLY_KEYS = frozenset(
    {
        "$schema",
        "name",
        "endpoint_name",
        "description",
        "tags",
        "environment",
        "compute",
        "properties",
        "deployment_name",
    }
)
OUTPUT_ACTIONS = ("append_row", "summary_only")
LOGGING_LEVELS = ("debug", "info", "warning", "error", "critical")


class UnknownKeyWarning(UserWarning):
    """A deployment file holds a key that daskscore does not know; it is ignored."""


def _doc(text: str, **extra: Any) -> dict[str, Any]:
    return {"doc": text, **extra}


@dataclass(frozen=True)
class RetrySettings:
    """``settings.retry_settings``: how failed or timed-out mini-batches are retried."""

    max_retries: int = field(
        default=3,
        metadata=_doc(
            "Retries of a failed or timed-out mini-batch after its first try.", minimum=0
        ),
    )
    timeout: float = field(
        default=30.0,
        metadata=_doc("Seconds one run() call may take before it is abandoned.", positive=True),
    )


@dataclass(frozen=True)
class Settings:
    """``settings``: how the job runs. Defaults are Azure ML's."""

    instance_count: int = field(
        default=1, metadata=_doc("Machines (also resources.instance_count).", minimum=1)
    )
    max_concurrency_per_instance: int = field(
        default=1, metadata=_doc("Worker processes per machine.", minimum=1)
    )
    mini_batch_size: int | str = field(
        default=10,
        metadata=_doc(
            "Files per mini-batch; in tabular mode a byte size ('10MB', KB = 1024) or rows "
            "('500 rows').",
            minimum=1,
            size=True,
        ),
    )
    output_action: str = field(
        default="append_row",
        metadata=_doc(
            "append_row: write what run() returns; summary_only: only count it.",
            choices=OUTPUT_ACTIONS,
        ),
    )
    output_file_name: str = field(
        default="predictions.csv", metadata=_doc("The append_row file, inside the output folder.")
    )
    retry_settings: RetrySettings = field(default_factory=RetrySettings)
    error_threshold: int = field(
        default=-1,
        metadata=_doc(
            "Failed items allowed over the job before it aborts; -1 allows any.", minimum=-1
        ),
    )
    logging_level: str = field(
        default="info", metadata=_doc("Log level of the job's logs.", choices=LOGGING_LEVELS)
    )
    environment_variables: dict[str, str] = field(
        default_factory=dict, metadata=_doc("Set in every worker before init().")
    )

    @property
    def mini_batch(self) -> MiniBatchSize:
        """``mini_batch_size``, typed: files per mini-batch, or a tabular byte or row size."""
        return MiniBatchSize(self.mini_batch_size)


@dataclass(frozen=True)
class Model:
    """The model: ``name`` and its ``path``: a local folder or file, or a URL (``s3://``,
    ``az://``, ...) that every worker fetches into its own cache."""

    path: Path | str
    name: str | None = None

    @property
    def is_url(self) -> bool:
        return isinstance(self.path, str)


#: Environment variables whose names contain one of these hold secrets: their values are never
#: written to a log.
SECRET_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD")
#: Shorter values are not masked: masking "1" or "on" would garble every log line.
MIN_SECRET_LENGTH = 4


def secret_values(env: dict[str, str]) -> tuple[str, ...]:
    """The values of the secret variables of ``env``, and every form they take once written
    down (see :func:`written_forms`), longest first: what :func:`redact` masks.

    Examples
    --------
    >>> secret_values({"DB_PASSWORD": "a<bc", "HOME": "/root"})
    ('a&lt;bc', 'a%3Cbc', 'a<bc')
    """
    found = {
        str(v)
        for k, v in env.items()
        if any(m in k.upper() for m in SECRET_MARKERS) and len(str(v)) >= MIN_SECRET_LENGTH
    }
    forms = set().union(*map(written_forms, found)) if found else set()
    return tuple(sorted(forms, key=lambda f: (-len(f), f)))


def _python_forms(value: str) -> set[str]:
    """``value`` as Python writes it inside a longer text: itself, and inside the quotes of a
    ``repr()`` / ``ascii()`` of a str or of its UTF-8 bytes (``'`` escaped or not: the quote a
    repr picks depends on the whole string, a traceback's ``KeyError: '...'`` say)."""
    forms = {value}
    for shown in (repr(value + '"')[1:-2], ascii(value + '"')[1:-2]):
        forms |= {shown, shown.replace("\\'", "'")}
    shown = repr(value.encode("utf-8", "backslashreplace") + b'"')[2:-2]
    return forms | {shown, shown.replace("\\'", "'")}


def _text_forms(value: str) -> set[str]:
    """``value`` inside a JSON string, HTML (``html.escape`` and the numeric entities other
    escapers write), a CSV field and a URL."""
    import html
    import json
    from urllib.parse import quote, quote_plus

    bare = html.escape(value, quote=False)
    forms = {
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        value.replace('"', '""'),
        quote(value, safe=""),
        quote_plus(value, safe=""),
        bare,
    }
    for dq in ("&quot;", "&#34;"):
        for sq in ("&#x27;", "&#39;"):
            forms.add(bare.replace('"', dq).replace("'", sq))
    return forms


def written_forms(value: str) -> set[str]:
    """Every form of a secret ``value`` that a log or a report may hold: the value, its
    ``repr()`` forms, and each of those escaped for JSON, HTML, CSV or a URL."""
    forms = _python_forms(value)
    return forms.union(*map(_text_forms, forms))


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every secret value (each form :func:`secret_values` gave) replaced by
    ``***``."""
    for value in secrets:
        if value in text:
            text = text.replace(value, "***")
    return text


@dataclass(frozen=True)
class Deployment:
    """A validated deployment.

    Attributes
    ----------
    source : Path or None
        The YAML file it came from (``None`` when built in Python).
    model : Model or None
        The model; ``None`` when the deployment names none.
    code : Path
        The code folder, put on ``sys.path`` of every worker.
    scoring_script : Path
        The scoring script, inside ``code``.
    settings : Settings
        Everything else, with Azure's defaults.
    """

    code: Path
    scoring_script: Path
    model: Model | None = None
    settings: Settings = field(default_factory=Settings)
    source: Path | None = None

    @property
    def worker_count(self) -> int:
        """Worker processes of the whole job: instances × processes per instance."""
        return self.settings.instance_count * self.settings.max_concurrency_per_instance


# --------------------------------------------------------------------------- key tables


def _settings_keys(cls: type, prefix: str) -> list[str]:
    keys = []
    for f in fields(cls):
        if f.name == "retry_settings":
            keys += _settings_keys(RetrySettings, f"{prefix}retry_settings.")
        keys.append(prefix + f.name)
    return keys


SETTINGS_KEYS = _settings_keys(Settings, "settings.")
TOP_KEYS = ["type", "model", "code_configuration", "resources", "settings"]
KNOWN_KEYS = (
    TOP_KEYS
    + SETTINGS_KEYS
    + [
        "model.name",
        "model.path",
        "model.version",
        "model.type",
        "model.description",
        "code_configuration.code",
        "code_configuration.scoring_script",
        "resources.instance_count",
        "resources.properties",
    ]
)


def nearest_key(key: str) -> str:
    leaf = key.rsplit(".", 1)[-1]
    match = difflib.get_close_matches(key, KNOWN_KEYS, n=1, cutoff=0.6)
    if not match:
        by_leaf = {k.rsplit(".", 1)[-1]: k for k in KNOWN_KEYS}
        leaf_match = difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.6)
        match = [by_leaf[leaf_match[0]]] if leaf_match else []
    return f" (did you mean '{match[0]}'?)" if match else ""


def warn_unknown(where: str, key: str) -> None:
    warnings.warn(
        f"{where}: unknown key '{key}'{nearest_key(key)}; it is ignored.",
        UnknownKeyWarning,
        stacklevel=4,
    )
