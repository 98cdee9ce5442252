"""Telling a storage backend's refusal (credentials, access) from a daskscore bug, and saying
it in one paragraph that names the URL.  Imports nothing of the backends: an exception is
known by the module of its class."""

from __future__ import annotations

import os
from typing import Any

from daskscore.errors import InputError

#: Where the exceptions of the storage backends' client libraries come from: one of these is
#: the storage's answer (credentials, access, the service), never a daskscore bug.
BACKEND_MODULES = ("botocore", "aiobotocore", "boto3", "azure.", "google.", "gcsfs", "adlfs")


def backend_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a storage backend's answer: raised by its client library (or a
    :class:`PermissionError`), not by daskscore itself."""
    if isinstance(exc, PermissionError):
        return True
    return any(type(exc).__module__.startswith(m) for m in BACKEND_MODULES)


def _said(exc: BaseException) -> str:
    """``exc`` as the backend said it: its type and its first line, cut to 300 characters (no
    secret is in them)."""
    return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}"


def access_problem(what: str, verb: str, exc: BaseException) -> str:
    """One paragraph: ``what`` (e.g. ``input 's3://b/d'``) could not be reached with the
    credentials found; the backend's own words (their first line: no secret is in them)."""
    return (
        f"{what} cannot be {verb} with the storage credentials found "
        f"({_said(exc)}). Check that credentials are set for it (for example "
        f"AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile for s3://, "
        f"AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT_KEY for az://) and that "
        f"they are allowed to {'read' if verb == 'read' else 'write'} it."
    )


def download_failed(
    exc: BaseException, urls: list[str], remote: list[str], local: list[str]
) -> Any:
    """The :class:`~daskscore.errors.InputError` for a download of ``urls`` (``remote``, their
    paths on the store, to ``local``) that raised ``exc``: it names the input the error names,
    else those not fetched (a batched get need not say which failed), and says ``run()`` was
    not called; None when ``exc`` is not the storage's (a bug of daskscore's, raised as it
    is)."""
    if not (isinstance(exc, OSError) or backend_error(exc)):
        return None
    named = str(getattr(exc, "filename", None) or "").rstrip("/")
    said_of = [u for u, path in zip(urls, remote, strict=True) if named and path == named]
    missing = [u for u, path in zip(urls, local, strict=True) if not os.path.exists(path)]
    shown = said_of or missing or urls
    more = f" (and {len(shown) - 1} more of this mini-batch)" if len(shown) > 1 else ""
    return InputError(
        f"input {shown[0]!r}{more} could not be downloaded ({_said(exc)}); "
        "run() was not called for this mini-batch. The object may have been removed or "
        "changed since the job listed its input, or the worker may lack access to it."
    )
