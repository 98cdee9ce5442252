"""The typed model of an Azure ML batch deployment: every setting, its type, default and meaning.

These dataclasses are the one place where deployment settings are defined; the loader
(:mod:`daskscore.config.loader`), the CLI's ``--set`` overrides, the Python API's keyword overrides
and the docs all read them from here.  Field metadata carries the description and the
constraints (``minimum``, ``positive``, ``choices``) that validation enforces.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from daskscore.config.sizes import MiniBatchSize

#: Top-level keys of an Azure ML batch deployment that only mean something in the cloud:
#: accepted and ignored.
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
        "id",
        "deployment_name",
    }
)
#: Keys inside ``model`` and ``resources`` that Azure ML reads and daskscore does not: accepted
#: and ignored.
CLOUD_ONLY_NESTED = (
    "model.version",
    "model.type",
    "model.description",
    "model.tags",
    "model.properties",
    "model.flavors",
    "model.stage",
    "model.utc_time_created",
    "resources.instance_type",
    "resources.properties",
    "resources.shm_size",
    "resources.docker_args",
    "resources.locations",
    "resources.max_instance_count",
)
OUTPUT_ACTIONS = ("append_row", "summary_only")
LOGGING_LEVELS = ("debug", "info", "warning", "error", "critical")


class UnknownKeyWarning(UserWarning):
    """A deployment file holds a key that neither daskscore nor Azure ML knows (or one key
    twice), loaded with ``lenient=True`` (``--lenient``): it is ignored (the first of the two).
    Without ``lenient`` such a key is a :class:`~daskscore.errors.ConfigError`."""


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
        metadata=_doc(
            "Seconds one run() call, or a mini-batch's download from object storage, may "
            "take before it is abandoned.",
            positive=True,
        ),
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
        default="predictions.csv",
        metadata=_doc("The append_row file, inside the output folder.", file_name=True),
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


#: What daskscore itself writes in a job's output folder (``io.outputdir`` and ``ui.report``
#: name them there; ``tests/config`` checks they agree): the predictions may not take one of
#: these names, nor one starting with ``.daskscore``.
OWN_OUTPUT_NAMES = {
    "job_summary.json": "the job's summary",
    "report.html": "the job's report",
    "failed_items.csv": "the job's list of failed items",
    "logs": "the job's logs folder",
    ".daskscore": "the job's staging folder",
}


def output_name_problem(name: str) -> str | None:
    """Why the predictions cannot be called ``name`` in the output folder (the name of the
    append_row file, or of a dataset folder), or None.

    Examples
    --------
    >>> output_name_problem("predictions.csv") is None
    True
    >>> output_name_problem("report.html")
    "'report.html' is the name of the job's report, which daskscore writes in the output folder"
    """
    if name in (".", "..") or any(c in name for c in ("/", "\\", "\0")):
        return (
            f"{name!r} is not a plain file name: the predictions go in the output folder itself, "
            "so the name has no '/' or '\\' and is not '.' or '..'"
        )
    folded = name.casefold()
    for own, what in OWN_OUTPUT_NAMES.items():
        if folded == own:
            return f"{name!r} is the name of {what}, which daskscore writes in the output folder"
    if folded.startswith(".daskscore"):
        return f"{name!r} starts as the folders daskscore keeps in the output folder do"
    return None


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
    warnings : tuple of str
        What loading it warned about: the unknown keys a ``lenient`` load ignored (and its
        plan: those of ``parallel_run_step.settings.json``), kept in the job's log and summary.
    lenient : bool
        Loaded with ``lenient=True``: ``parallel_run_step.settings.json``'s unknown keys too.
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
    warnings: tuple[str, ...] = field(default=(), compare=False)
    lenient: bool = field(default=False, compare=False)

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
#: The settings' own names: at the top level of a legacy file (no ``type:``) they are settings.
SETTING_NAMES = frozenset(f.name for f in fields(Settings))
TOP_KEYS = ["type", "model", "code_configuration", "resources", "settings"]
KNOWN_KEYS = (
    TOP_KEYS
    + SETTINGS_KEYS
    + [
        "model.name",
        "model.path",
        "code_configuration.code",
        "code_configuration.scoring_script",
        "resources.instance_count",
    ]
    + list(CLOUD_ONLY_NESTED)
    + sorted(CLOUD_ONLY_KEYS)
)
#: Sections whose keys are checked one by one (``environment_variables``, ``tags``,
#: ``properties`` and ``environment`` hold whatever the user likes).
_SECTIONS = ("settings", "settings.retry_settings", "model", "code_configuration", "resources")
#: What an unknown-key error adds once, under the first such key.
UNKNOWN_HINT = (
    " Azure ML refuses unknown keys too; correct the key, or pass --lenient (lenient=True in "
    "Python) to ignore unknown keys with a warning."
)


#: ParallelRunStep's (and parallel jobs') names of settings: the key each became, and how it
#: differs (by spelling alone ``allowed_failed_percent`` looks most like ``output_file_name``).
RENAMED_KEYS = {
    "allowed_failed_count": ("settings.error_threshold", "counts failed items, not mini-batches"),
    "allowed_failed_percent": ("settings.error_threshold", "counts failed items, not a percentage"),
    "mini_batch_error_threshold": ("settings.error_threshold", "counts failed items"),
    "run_invocation_timeout": ("settings.retry_settings.timeout", ""),
    "run_max_try": (
        "settings.retry_settings.max_retries",
        "counts the retries after the first try: run_max_try - 1",
    ),
    "process_count_per_node": ("settings.max_concurrency_per_instance", ""),
    "node_count": ("resources.instance_count", ""),
    "append_row_file_name": ("settings.output_file_name", ""),
    "entry_script": ("code_configuration.scoring_script", ""),
    "source_directory": ("code_configuration.code", ""),
}


def closest_key(key: str) -> str | None:
    """The known key nearest to ``key``: the key a ParallelRunStep name became
    (:data:`RENAMED_KEYS`), the same name in another section (``settings.timeout`` ->
    ``settings.retry_settings.timeout``), else the closest among the keys of its own section,
    among all keys, and by the last part of the name alone; never a section the key is in
    (``settings`` for ``settings.foo_bar``: the key is already there)."""
    parent, _, leaf = key.rpartition(".")
    if leaf in RENAMED_KEYS:
        return RENAMED_KEYS[leaf][0]
    keys = [k for k in KNOWN_KEYS if not key.startswith(k + ".")]
    for known in keys:
        if known.rpartition(".")[2] == leaf and known != key:
            return known
    siblings = {k.rpartition(".")[2]: k for k in keys if k.rpartition(".")[0] == parent}
    match = difflib.get_close_matches(leaf, list(siblings), n=1, cutoff=0.6)
    if match:
        return siblings[match[0]]
    others = [k for k in keys if k.rpartition(".")[0] != parent]  # (siblings: by leaf, above)
    match = difflib.get_close_matches(key, others, n=1, cutoff=0.6)
    if match:
        return match[0]
    by_leaf: dict[str, str] = {}
    for known in keys:  # (settings first: 'instance_count' is settings.instance_count)
        by_leaf.setdefault(known.rpartition(".")[2], known)
    match = difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.6)
    return by_leaf[match[0]] if match else None


def nearest_key(key: str) -> str:
    """`` (did you mean 'KEY'?)`` for the known key nearest to ``key``, or ``""``; for a
    ParallelRunStep name, how the key differs from it."""
    match = closest_key(key)
    if not match:
        return ""
    leaf = key.rpartition(".")[2]
    if leaf not in RENAMED_KEYS:
        return f" (did you mean '{match}'?)"
    differs = RENAMED_KEYS[leaf][1]
    differs = f"; {match.rpartition('.')[2]} {differs}" if differs else ""
    return f" (did you mean '{match}'? {leaf} is its ParallelRunStep / parallel job name{differs})"


def unknown_keys(raw: dict[str, Any], where: str) -> list[str]:
    """One message per key of a raw deployment dict that neither daskscore nor Azure ML knows
    (top-level and nested, in the file's order), each naming the file, the key and the nearest
    known key; none for the cloud-only keys (:data:`CLOUD_ONLY_KEYS`, :data:`CLOUD_ONLY_NESTED`).

    In a legacy file (no ``type:``) the settings' names are top-level keys; in a ``type: model``
    file they belong under ``settings:``, and one at the top level is named as misplaced.

    Examples
    --------
    >>> unknown_keys({"type": "model", "setings": {}}, "d.yml")
    ["d.yml: unknown key 'setings' (did you mean 'settings'?)."]
    """
    legacy = raw.get("type") is None
    found = []
    for key in map(str, raw):
        if key in CLOUD_ONLY_KEYS or key in TOP_KEYS or (legacy and key in SETTING_NAMES):
            continue
        if key in SETTING_NAMES:
            found.append(
                f"{where}: unknown key '{key}' (did you mean 'settings.{key}'? In a 'type: "
                "model' file the settings go under settings:)."
            )
        else:
            found.append(f"{where}: unknown key '{key}'{nearest_key(key)}.")
    sections = [(name, _get(raw, name)) for name in _SECTIONS]
    if legacy:
        sections.append(("settings.retry_settings", raw.get("retry_settings")))
    for name, section in sections:
        if isinstance(section, dict):
            for key in map(str, section):
                dotted = f"{name}.{key}"
                if dotted not in KNOWN_KEYS:
                    found.append(f"{where}: unknown key '{dotted}'{nearest_key(dotted)}.")
    return found


def _get(raw: dict[str, Any], dotted: str) -> Any:
    node: Any = raw
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node
