"""Telling a storage backend's refusal (credentials, access) from a daskscore bug, and saying
it in one paragraph that names the URL.  Imports nothing of the backends: an exception is
known by the module of its class."""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any
from urllib.parse import urlsplit

from daskscore.errors import InputError

#: Where the exceptions of the storage backends' client libraries come from: one of these is
#: the storage's answer (credentials, access, the service), never a daskscore bug.  With them,
#: the HTTP libraries under them, whose errors of a transfer (a body cut short, a connection
#: dropped mid-answer) reach daskscore as they are: aiohttp's (s3fs, adlfs, gcsfs), and
#: requests' and urllib3's (google-auth, the synchronous Azure SDK).
BACKEND_MODULES = (
    *("botocore", "aiobotocore", "boto3", "azure.", "google.", "gcsfs", "adlfs"),
    *("aiohttp.", "requests.", "urllib3."),
)


#: The backends' errors of a connection that could not be made (or was cut): botocore's,
#: Azure's (its request never answered), aiohttp's (under s3fs, adlfs and gcsfs)
UNREACHABLE = frozenset(
    {"EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError",
     "ServiceRequestError", "ClientConnectorError", "ClientConnectorDNSError"}
)  # fmt: skip


def backend_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a storage backend's answer: raised by its client library, or an
    :class:`OSError` made of one (s3fs turns botocore's errors into ``OSError``,
    ``FileNotFoundError``: a 503, a bucket missing), or a :class:`PermissionError`, a
    timeout, a connection that could not be made; not a bug of daskscore's."""
    if isinstance(exc, (PermissionError, asyncio.TimeoutError)) or unreachable(exc) is not None:
        return True  # (a timeout: fsspec's FSTimeoutError, the loop's; an OSError from 3.11)
    if isinstance(exc, OSError):
        return any(_from_backend(error) for error in _chain(exc))
    return _from_backend(exc)


def _from_backend(exc: BaseException) -> bool:
    return any(type(exc).__module__.startswith(m) for m in BACKEND_MODULES)


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what caused it, or was being handled when it was raised (botocore keeps
    the error of a failed connection in its ``kwargs``); at most 20 (a cycle ends too)."""
    found: list[BaseException] = []
    error: BaseException | None = exc
    while error is not None and len(found) < 20 and error not in found:
        found.append(error)
        inner = (getattr(error, "kwargs", None) or {}).get("error")
        nested = inner if isinstance(inner, BaseException) else None
        error = error.__cause__ or error.__context__ or nested
    return found


def http_status(exc: BaseException) -> int | None:
    """The HTTP status of the storage's answer that ``exc`` (or what caused it) reports:
    botocore's ``response``, Azure's ``status_code``, aiohttp's ``status``; None if none."""
    for error in _chain(exc):
        response = getattr(error, "response", None)
        meta = response.get("ResponseMetadata", {}) if isinstance(response, dict) else {}
        for status in (meta.get("HTTPStatusCode"), getattr(error, "status_code", None)):
            if isinstance(status, int) and status >= 400:
                return status
        status = getattr(error, "status", None)
        if _from_backend(error) and isinstance(status, int) and status >= 400:
            return status
    return None


#: The storage's error codes of a bucket or container that does not exist
_NO_STORE = {"NoSuchBucket": "bucket", "ContainerNotFound": "container"}


def _missing_store(exc: BaseException) -> str | None:
    """``"bucket"`` or ``"container"`` when ``exc`` (or what caused it) is the storage saying
    that the URL's bucket or container does not exist (botocore's and Azure's error codes,
    or their words); else None."""
    for error in _chain(exc):
        response = getattr(error, "response", None)
        code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
        code = code or getattr(error, "error_code", None)  # (Azure's)
        if isinstance(code, str) and code in _NO_STORE:
            return _NO_STORE[code]
        said = str(error).lower()
        for kind in ("bucket", "container"):
            if f"specified {kind} does not exist" in said:
                return kind
    return None


def unreachable(exc: BaseException) -> str | None:
    """When ``exc`` (or what caused it) says the storage could not be reached (connection
    refused or cut, a name that does not resolve, a connect timeout): the endpoint, as
    ``scheme://host:port`` or ``host:port`` ("" when no error names it); else None."""
    found, endpoint = False, ""
    for error in _chain(exc):
        name = type(error).__name__
        if isinstance(error, (ConnectionError, socket.gaierror)) or name in UNREACHABLE:
            found = True
        url = (getattr(error, "kwargs", None) or {}).get("endpoint_url")  # (botocore's)
        host, port = getattr(error, "host", None), getattr(error, "port", None)  # (aiohttp's)
        if not endpoint and isinstance(url, str) and "://" in url:
            parts = urlsplit(url)
            endpoint = f"{parts.scheme}://{parts.netloc}"
        elif not endpoint and isinstance(host, str) and host:
            endpoint = f"{host}:{port}" if port else host
    return endpoint if found else None


def _said(exc: BaseException) -> str:
    """``exc`` as the backend said it: its type and its first line, cut to 300 characters (no
    secret is in them); for a plain ``OSError`` made of a backend's error, that error's."""
    if type(exc).__module__ == "builtins" and isinstance(exc, OSError):
        exc = next((e for e in _chain(exc) if _from_backend(e)), exc)
    return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}"


def access_problem(what: str, verb: str, exc: BaseException) -> str:
    """One paragraph: ``what`` (e.g. ``input 's3://b/d'``) could not be reached with the
    credentials found, or its storage endpoint could not be reached at all (named), or its
    bucket or container does not exist (or it is not there), or the service failed the
    request (a 5xx answer, throttling); the backend's own words (their first line: no secret
    is in them)."""
    endpoint = unreachable(exc)
    if endpoint is not None:
        where = f"the storage endpoint {endpoint}" if endpoint else "its storage endpoint"
        return (
            f"{what} cannot be {verb}: {where} cannot be reached ({_said(exc)}). Check the "
            "endpoint's address (AWS_ENDPOINT_URL for s3://, the account or connection "
            "string for az://, DASKSCORE_STORAGE_OPTIONS), that the service is running, and "
            "the network from this machine to it."
        )
    status = http_status(exc)
    kind = _missing_store(exc)
    if kind or status == 404 or isinstance(exc, FileNotFoundError):
        if kind:
            return (
                f"{what} cannot be {verb}: its {kind} does not exist ({_said(exc)}). Create "
                f"the {kind} first (daskscore writes into one, it does not make it), or check "
                f"the URL's {kind} name and the account or endpoint the credentials are for."
            )
        return (
            f"{what} cannot be {verb}: the storage says it is not there ({_said(exc)}). Check "
            "the URL, and the account or endpoint the credentials are for."
        )
    if status is not None and (status >= 500 or status == 429):
        return (
            f"{what} cannot be {verb}: the storage service failed the request (HTTP {status}, "
            f"{_said(exc)}), after its client's retries. It is busy (throttling) or failing, "
            "not refusing the credentials: run the job again later, and check the service's "
            "status if it goes on."
        )
    return (
        f"{what} cannot be {verb} with the storage credentials found "
        f"({_said(exc)}). Check that credentials are set for it (for example "
        f"AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile for s3://, "
        f"AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT_KEY for az://) and that "
        f"they are allowed to {'read' if verb == 'read' else 'write'} it."
    )


def download_failed(
    exc: BaseException,
    urls: list[str],
    remote: list[str],
    local: list[str],
    fs: Any = None,
    timeout: float | None = None,
) -> Any:
    """The :class:`~daskscore.errors.InputError` for a download of ``urls`` (``remote``, their
    paths on ``fs``, to ``local``) that raised ``exc``: it names the input the error names,
    else those not fetched that the store no longer has, else those not fetched whole (a
    batched get need not say which failed, and stops the others wherever they were; a body
    cut short leaves what came), and says ``run()`` was not called; None when ``exc`` is not
    the storage's (a bug of daskscore's, raised as it is).  A download cancelled past its
    ``timeout`` (fsspec's ``FSTimeoutError``) says so: :func:`download_late`."""
    if timeout is not None and type(exc).__name__ == "FSTimeoutError":
        return download_late(urls, local, timeout)
    if not (isinstance(exc, OSError) or backend_error(exc)):
        return None
    named = str(getattr(exc, "filename", None) or "").rstrip("/")
    said_of = [u for u, path in zip(urls, remote, strict=True) if named and path == named]
    missing = [(urls[i], remote[i]) for i in ([] if said_of else _unfetched(fs, remote, local))]
    gone = [u for u, path in missing if _gone(fs, path)]
    shown = said_of or gone or [u for u, _ in missing] or urls
    more = f" (and {len(shown) - 1} more of this mini-batch)" if len(shown) > 1 else ""
    return InputError(
        f"input {shown[0]!r}{more} could not be downloaded ({_said(exc)}); "
        "run() was not called for this mini-batch. The object may have been removed or "
        "changed since the job listed its input, the worker may lack access to it, or the "
        "transfer failed (a connection cut, an answer cut short)."
    )


def download_late(urls: list[str], local: list[str], timeout: float) -> InputError:
    """The :class:`~daskscore.errors.InputError` of a download given up past ``timeout``: it
    names the inputs not there (all of them when each is, in part), the store not asked
    again (it may be the one that does not answer)."""
    shown = [u for u, to in zip(urls, local, strict=True) if not os.path.exists(to)] or urls
    more = f" (and {len(shown) - 1} more of this mini-batch)" if len(shown) > 1 else ""
    return InputError(
        f"its input {shown[0]!r}{more} was not downloaded within the timeout ({timeout:g} s, "
        "retry_settings.timeout); run() was not called for this try. The storage did not "
        "answer in time (a stalled connection, a request the service holds, or fails while "
        "its client retries), or the mini-batch's files take longer to download than that: "
        "then raise the timeout."
    )


def _unfetched(fs: Any, remote: list[str], local: list[str]) -> list[int]:
    """The indexes of the files not fetched whole: not at ``local``, or there but not of the
    size the store ``fs`` says (asked only here, once a download failed; not asked when it
    cannot say)."""
    there = [i for i, to in enumerate(local) if os.path.exists(to)]
    missing = [i for i in range(len(local)) if i not in set(there)]
    if fs is None or not there:
        return missing
    try:
        for i in there:
            fs.invalidate_cache(remote[i])
        sizes = fs.sizes([remote[i] for i in there])
    except Exception:  # noqa: BLE001 - the store cannot say: what is there counts as fetched
        return missing
    short = [i for i, size in zip(there, sizes, strict=True) if os.path.getsize(local[i]) != size]
    return sorted(missing + short)


def _gone(fs: Any, path: str) -> bool:
    """Whether the store ``fs`` says ``path`` is not there (False when it cannot say)."""
    if fs is None:
        return False
    try:
        fs.invalidate_cache(path)
        return not fs.exists(path)
    except Exception:  # noqa: BLE001 - the store cannot say: not named on this ground
        return False
