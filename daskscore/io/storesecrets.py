"""The environment variables the storage backends read (credentials, endpoints, their
settings), and the secret values among them that a job's logs mask.  Imports nothing of the
backends."""

from __future__ import annotations

import json
import os
from typing import Any

from daskscore.config.settings import secret_values

#: environment variable with extra storage options, a JSON object
OPTIONS_ENV = "DASKSCORE_STORAGE_OPTIONS"

#: The environment variables the storage backends read credentials, endpoints and their
#: settings from: botocore's (``AWS_*``), the Azure SDK's and adlfs's (``AZURE_*``), Google's
#: and gcsfs's (``GOOGLE_*``, ``GCSFS_*``, ``STORAGE_EMULATOR_HOST``), and
#: ``DASKSCORE_STORAGE_OPTIONS``: what a warm cluster's workers take from the job's driver
STORAGE_PREFIXES = ("AWS_", "AZURE_", "GOOGLE_", "GCSFS_")
STORAGE_NAMES = frozenset({OPTIONS_ENV, "STORAGE_EMULATOR_HOST"})
#: Keys of ``DASKSCORE_STORAGE_OPTIONS`` (any case) and parts of a connection string whose
#: values are secrets, masked in the job's logs (:func:`job_secrets`)
_SECRET_PARTS = ("key", "secret", "token", "password", "credential", "connection_string", "sas")
_CONNECTION_SECRETS = ("accountkey", "sharedaccesssignature", "sharedaccesskey")


def is_storage_variable(name: str) -> bool:
    """Whether the environment variable ``name`` is one a storage backend reads."""
    return name in STORAGE_NAMES or name.startswith(STORAGE_PREFIXES)


def storage_environment() -> dict[str, str]:
    """This process's storage variables (:func:`is_storage_variable`): what a warm cluster's
    workers, started from another shell, need to read and write the URLs as this job does."""
    return {k: v for k, v in os.environ.items() if is_storage_variable(k)}


def storage_view(driver: dict[str, str]) -> dict[str, str | None]:
    """The storage variables a worker process sets for a job whose driver has ``driver``: the
    driver's, over the process's own.  The process's others are kept: unsetting them each
    time the job is made current again also unset those the script's own ``init()`` set
    (``AWS_DEFAULT_REGION``), which a warm job taking the script over never sets again."""
    return dict(driver)


def storage_secrets(env: dict[str, str] | None) -> dict[str, str]:
    """Storage variables ``env``, and the secret values inside those whose names do not say
    so (a connection string's key or signature, the ``secret`` of ``DASKSCORE_STORAGE_OPTIONS``)
    under names that :func:`daskscore.config.secret_values` masks, as it masks the variables
    named ``*KEY*``, ``*SECRET*``, ``*TOKEN*``."""
    found: list[str] = []
    for name, value in (env or {}).items():
        if "CONNECTION_STRING" in name.upper():
            found += [value, *_connection_secrets(value)]
        elif name == OPTIONS_ENV:
            found += _option_secrets(value)
    return {**(env or {}), **{f"STORAGE_SECRET_{i}": v for i, v in enumerate(found) if v}}


def job_secrets(
    variables: dict[str, str], storage_env: dict[str, str] | None = None
) -> tuple[str, ...]:
    """What a job's logs mask, longest first (see :func:`daskscore.config.secret_values`): the
    secrets of ``variables`` (``settings.environment_variables``) and of the storage variables
    the job sees: this process's, with ``storage_env`` (a warm cluster's job's) over them.

    Where the secrets come from is not where they are set: only ``storage_env`` is set on a
    worker (:func:`storage_view`), these are only masked."""
    seen = {**storage_environment(), **(storage_env or {})}
    forms = {*secret_values(storage_secrets(seen)), *secret_values(variables)}
    return tuple(sorted(forms, key=lambda f: (-len(f), f)))


def _connection_secrets(text: str) -> list[str]:
    parts = (part.partition("=") for part in text.split(";"))
    return [v for k, _, v in parts if k.strip().lower() in _CONNECTION_SECRETS]


def _option_secrets(raw: str) -> list[str]:
    try:
        doc: Any = json.loads(raw)
    except ValueError:
        return [raw]
    found: list[str] = []
    stack: list[tuple[str, Any]] = [("", doc)]
    while stack:
        key, value = stack.pop()
        if isinstance(value, dict):
            stack += [(str(k).lower(), v) for k, v in value.items()]
        elif isinstance(value, list):
            stack += [(key, v) for v in value]
        elif isinstance(value, str) and any(part in key for part in _SECRET_PARTS):
            found += [value, *_connection_secrets(value)]
    return found
