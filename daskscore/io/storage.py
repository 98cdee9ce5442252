"""Inputs and outputs at fsspec URLs: Azure Blob/ADLS (``az://``, ``abfs://``), S3, GCS.

Every function takes a URL and optional ``storage_options`` (keyword arguments of the fsspec
filesystem).  Without them, credentials are found the usual way of each backend: adlfs reads
``AZURE_STORAGE_CONNECTION_STRING`` (or ``AZURE_STORAGE_ACCOUNT_NAME`` / ``..._KEY``,
service principal variables), s3fs/botocore read ``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``,
``~/.aws``... and ``DASKSCORE_STORAGE_OPTIONS`` (JSON) adds options of our own, see
:func:`storage_options_from_env`.

The backend packages are optional extras, imported only when a URL needs them (fsspec's own
registry is lazy in the same way); a missing one is a :class:`~daskscore.errors.UsageError`
that says what to install.  fsspec itself is imported lazily too: the CLI starts faster.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import json
import os
import posixpath
import re
import sys
import time
from collections import Counter
from collections.abc import Iterable
from fnmatch import fnmatch
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daskscore.errors import InputError, UsageError
from daskscore.io import storeaccess
from daskscore.io.storesecrets import OPTIONS_ENV, storage_environment

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

#: protocol -> (module to import, pip package, daskscore extra)
BACKENDS: dict[str, tuple[str, str, str]] = {
    **dict.fromkeys(("az", "abfs", "abfss"), ("adlfs", "adlfs", "azure")),
    **dict.fromkeys(("s3", "s3a"), ("s3fs", "s3fs", "s3")),
    **dict.fromkeys(("gs", "gcs"), ("gcsfs", "gcsfs", "gcs")),
}
#: the options of these protocols are shared in ``DASKSCORE_STORAGE_OPTIONS``
FAMILY = {"abfs": "az", "abfss": "az", "s3a": "s3", "gcs": "gs"}
LOCAL_PROTOCOLS = frozenset({"file", "local"})
_PROTOCOL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


def _protocols(url: str) -> list[str]:
    """Protocols of a (possibly chained, ``a::b://...``) URL; ``file`` for a plain path."""
    matches = (_PROTOCOL.match(part) for part in url.split("::"))
    return [m.group(1).lower() if m else "file" for m in matches]


def is_remote(path: str) -> bool:
    """Whether ``path`` is a URL with a protocol other than ``file``/``local``.

    Examples
    --------
    >>> is_remote("az://container/in"), is_remote("/data/in"), is_remote("file:///data")
    (True, False, False)
    """
    return any(p not in LOCAL_PROTOCOLS for p in _protocols(os.fspath(path)))


def backend_modules(url: str | os.PathLike[str]) -> list[str]:
    """The fsspec backend modules a URL is read with (``["s3fs"]`` for ``s3://``), for a
    worker to import before it starts; none for local paths or protocols fsspec has built in.
    """
    return [BACKENDS[p][0] for p in _protocols(os.fspath(url)) if p in BACKENDS]


def storage_options_from_env(protocol: str) -> dict[str, Any]:
    """Storage options for ``protocol`` taken from the environment.

    ``DASKSCORE_STORAGE_OPTIONS`` holds a JSON object, either keyed by protocol
    (``{"s3": {...}, "az": {...}}``; ``abfs``/``abfss`` read ``az``, ``s3a`` reads ``s3``,
    ``gcs`` reads ``gs``) or flat (``{"anon": true}``), then used for every remote protocol.
    For S3 with a botocore older than 1.31 (which does not read ``AWS_ENDPOINT_URL`` itself),
    ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` become ``endpoint_url``.

    Raises
    ------
    UsageError
        The variable is not a JSON object.
    """
    options: dict[str, Any] = {}
    raw = os.environ.get(OPTIONS_ENV, "").strip()
    if raw:
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise UsageError(f"{OPTIONS_ENV} is not valid JSON: {exc}.") from None
        if not isinstance(doc, dict):
            raise UsageError(f"{OPTIONS_ENV} must be a JSON object, not {type(doc).__name__}.")
        key = protocol if protocol in doc else FAMILY.get(protocol, protocol)
        if isinstance(doc.get(key), dict):
            options.update(doc[key])
        elif not any(isinstance(v, dict) for v in doc.values()) and protocol not in LOCAL_PROTOCOLS:
            options.update(doc)
    if FAMILY.get(protocol, protocol) == "s3" and "endpoint_url" not in options:
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint and not _botocore_reads_endpoint_env():
            options["endpoint_url"] = endpoint
    return options


@functools.cache
def _botocore_reads_endpoint_env() -> bool:
    """botocore >= 1.31 resolves ``AWS_ENDPOINT_URL`` itself (asked once per process: reading
    a package's metadata costs ~1.5 ms, once per downloaded file before)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        major, minor = (int(x) for x in version("botocore").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return False
    return (major, minor) >= (1, 31)


#: A digest of the storage variables the cached filesystems were made with (see below)
_MADE_WITH: list[str | None] = [None]


def refresh_filesystems() -> None:
    """Drop fsspec's cached filesystems (of the backends imported) when the storage variables
    changed since the last call: a filesystem, and the client it holds, keeps the credentials
    it was made with, and a warm worker's next job may bring others (see :func:`storage_view`)."""
    now = hashlib.sha256(json.dumps(sorted(storage_environment().items())).encode()).hexdigest()
    if _MADE_WITH[0] == now:
        return
    _MADE_WITH[0] = now
    for protocol, (module, _, _) in BACKENDS.items():
        if module in sys.modules:
            import fsspec

            try:
                fsspec.get_filesystem_class(protocol).clear_instance_cache()
            except (ImportError, ValueError):  # (a backend that cannot load: nothing cached)
                continue


def _require_backend(protocol: str, verb: str) -> None:
    if protocol not in BACKENDS:
        return
    module, package, extra = BACKENDS[protocol]
    try:
        importlib.import_module(module)
    except ImportError as exc:
        why = "" if exc.name == module else f" (importing {module} failed: {exc})"
        raise UsageError(
            f"{verb} {protocol}:// needs {package}: pip install 'daskscore[{extra}]'{why}"
        ) from exc


#: What the first part of a URL of these protocols names, and how such a URL is written
_BUCKETS = {
    **dict.fromkeys(("az", "abfs", "abfss"), "container"),
    **dict.fromkeys(("s3", "s3a", "gs", "gcs"), "bucket"),
}


def _require_bucket(url: str, verb: str) -> None:
    """Refuse an object-storage URL that names no bucket or container (``s3://``,
    ``az:///x``, ``abfs://@account.dfs.core.windows.net``): its backend would refuse it with
    a bare ``ValueError``, or list the whole account."""
    for part in url.split("::"):
        match = _PROTOCOL.match(part)
        protocol = match.group(1).lower() if match else ""
        if protocol not in _BUCKETS:
            continue
        first = part[match.end() :].split("/", 1)[0] if match else ""
        if not first.split("@", 1)[0]:
            kind = _BUCKETS[protocol]
            raise UsageError(
                f"{verb} '{url}': the URL names no {kind}; write it {protocol}://{kind}/path "
                f"(a {kind} and a path in it; the {kind} alone, {protocol}://{kind}, is a "
                "folder too)."
            )


def _refuse_signed(url: str, verb: str) -> None:
    """Refuse an http(s) URL with a query string: an Azure SAS URL or a presigned S3 URL,
    whose signature would be written, as the URL is, into the job's summary, recipe, logs and
    report, and whose query would end the name of the file ``run()`` gets.  It is named
    without its query (the secret)."""
    for part in url.split("::"):
        match = _PROTOCOL.match(part)
        if match and match.group(1).lower() in ("http", "https") and "?" in part:
            shown = url.split("?", 1)[0] + "?…"
            raise UsageError(
                f"{verb} '{shown}': an http(s) URL with a query string (an Azure SAS URL, a "
                "presigned S3 URL) is not supported: its signature would be written into the "
                "job's summary, logs and report. Give the object storage's own URL, az:// or "
                "abfs:// (Azure), s3:// or gs://, and its credentials in the environment: for "
                "a SAS token, AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_SAS_TOKEN (the "
                "query string), or a connection string with SharedAccessSignature= in "
                "AZURE_STORAGE_CONNECTION_STRING; their secrets are masked in the job's logs."
            )


def filesystem(
    url: str, storage_options: dict[str, Any] | None = None, *, verb: str = "reading"
) -> tuple[AbstractFileSystem, str]:
    """The fsspec filesystem of ``url`` and the path within it (without the protocol).

    Parameters
    ----------
    url : str
        A URL (``az://container/path``, ``s3://bucket/key``) or a local path.
    storage_options : dict, optional
        Filesystem options; they override those of :func:`storage_options_from_env`.
    verb : str
        How the error message names the use (``"reading"``, ``"writing"``).

    Raises
    ------
    UsageError
        The backend package of the protocol is not installed, or the protocol is unknown, or
        the URL names no bucket or container (``s3://``, ``az://``: asked nothing of them).
    """
    from fsspec.core import url_to_fs

    refresh_filesystems()  # (a filesystem cached under other credentials, another endpoint)
    url = os.fspath(url)
    protocols = _protocols(url)
    for protocol in protocols:
        _require_backend(protocol, verb)
    _require_bucket(url, verb)
    _refuse_signed(url, verb)
    options = {**storage_options_from_env(protocols[-1]), **(storage_options or {})}
    try:
        return url_to_fs(url, **options)
    except ImportError as exc:
        raise UsageError(f"{verb} {url} needs a package that is missing: {exc}") from exc
    except ValueError as exc:
        if "protocol" not in str(exc).lower():
            raise
        raise UsageError(f"{verb} {url}: {exc}") from exc


def list_files(url: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """The files under ``url``, recursively, as sorted full URLs.

    A file URL gives ``[url]`` (a remote URL ending in ``/`` is a folder, whatever the store
    says of it).  Names with a path segment (below ``url``) that starts with a dot are skipped,
    and so are folder markers (:func:`_folder_markers`).  The URLs keep ``url``'s own spelling
    (protocol, account host), so they can be given to :func:`download` with the same
    ``storage_options``; local paths come back as absolute paths.

    Raises
    ------
    InputError
        ``url`` does not exist or cannot be read, or it holds no files.
    """
    fs, root = filesystem(url, storage_options)
    fs.invalidate_cache()  # the whole listing cache: a container made since is visible
    try:
        info = fs.info(root)
        remote = is_remote(url)
        if info["type"] != "directory" and not (remote and url.endswith("/")):
            return [url if remote else root]
        found = fs.find(root, withdirs=False, detail=True)
        markers = _folder_markers(fs, found) if remote else set()
    except FileNotFoundError:
        raise InputError(f"input '{url}' does not exist.") from None
    except PermissionError as exc:
        raise InputError(f"input '{url}' cannot be read: {exc}") from None
    except Exception as exc:
        if not storeaccess.backend_error(exc):
            raise
        raise InputError(storeaccess.access_problem(f"input '{url}'", "read", exc)) from exc
    base = (url if is_remote(url) else root).rstrip("/")
    prefix = root.rstrip("/") + "/"
    files = []
    for path, entry in found.items():
        rel = path[len(prefix) :] if path.startswith(prefix) else posixpath.basename(path)
        if entry.get("type") == "directory" or not rel or path in markers:
            continue
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        files.append(f"{base}/{rel}")
    if not files:
        raise InputError(f"input folder '{url}' holds no files (dot-files are skipped).")
    files.sort()
    return files


def _folder_markers(fs: AbstractFileSystem, found: dict[str, dict[str, Any]]) -> set[str]:
    """The entries of a remote listing (``fs.find(..., detail=True)``) that are folder
    markers (``images/``, as the AWS console's "Create folder" makes): named with a final
    ``/`` (s3fs), or, as adlfs drops it, the folder of other entries, or a zero-byte entry
    the store, asked once, says is a folder (a real zero-byte file costs that question)."""
    folders: set[str] = set()
    for path in found:
        parts = path.rstrip("/").split("/")
        folders.update("/".join(parts[:i]) for i in range(1, len(parts)))
    markers = {path for path in found if path.endswith("/") or path in folders}
    for path, entry in found.items():
        if path not in markers and entry.get("type") != "directory" and not entry.get("size"):
            with contextlib.suppress(FileNotFoundError):  # (gone since: its download says so)
                if fs.info(path).get("type") == "directory":
                    markers.add(path)
    return markers


def local_names(urls: Iterable[str]) -> dict[str, str]:
    """Relative local names for ``urls``: the base name, or ``<hash>/<base name>`` for names
    that occur more than once (the hash is of the whole URL, so the name does not depend on
    the order of ``urls``).

    Examples
    --------
    >>> local_names(["s3://b/x.csv", "s3://b/y.csv"])
    {'s3://b/x.csv': 'x.csv', 's3://b/y.csv': 'y.csv'}
    """
    bases = {u: posixpath.basename(u.split("::")[-1].rstrip("/")) or "file" for u in urls}
    counts = Counter(bases.values())
    names = {}
    for u, base in bases.items():
        if counts[base] > 1:
            base = hashlib.sha1(u.encode("utf-8")).hexdigest()[:10] + "/" + base
        names[u] = base
    return names


def download(
    urls: list[str],
    dest_dir: str | os.PathLike[str],
    storage_options: dict[str, Any] | None = None,
    timeout: float | None = None,
) -> list[str]:
    """Fetch ``urls`` into ``dest_dir``; return the local paths, in the order of ``urls``.

    Each file keeps its base name; names that occur more than once go to a folder named by a
    short hash of their URL (see :func:`local_names`).  Files of one filesystem are fetched
    with one ``fs.get`` call (concurrent for the async backends).  Local paths are not
    copied: they come back as they are.  ``timeout``: the seconds the whole download may take
    on the async backends (every object store's): past them it is cancelled, an
    :class:`InputError` that says so (None: no bound).
    """
    dest = Path(dest_dir)
    names = local_names(u for u in urls if is_remote(u))
    groups: dict[int, tuple[AbstractFileSystem, list[str], list[str], list[str]]] = {}
    # one filesystem per protocol and bucket, where stripping the protocol gives what
    # url_to_fs gives (not for chained URLs): resolving one per URL cost ~2 ms a file
    resolved: dict[str, AbstractFileSystem] = {}
    for url, name in names.items():
        fs = resolved.get(_root(url)) if "::" not in url else None
        if fs is None:
            fs, path = filesystem(url, storage_options)
            if "::" not in url and fs._strip_protocol(url) == path:
                resolved[_root(url)] = fs
        else:
            path = fs._strip_protocol(url)
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        group = groups.setdefault(id(fs), (fs, [], [], []))
        group[1].append(path)
        group[2].append(str(target))
        group[3].append(url)
    deadline = None if timeout is None else time.monotonic() + timeout
    for fs, remote, local, asked in groups.values():
        left: dict[str, float] = {}  # (fsspec cancels the download on its loop past it)
        if deadline is not None and getattr(fs, "async_impl", False):
            left = {"timeout": max(deadline - time.monotonic(), 1e-3)}
        try:
            fs.get(remote, local, **left)
        except Exception as exc:  # noqa: BLE001 - the storage's answer: said, naming the input
            late = timeout if left else None
            failed = storeaccess.download_failed(exc, asked, remote, local, fs, late)
            if failed is None:
                raise
            raise failed from exc
    return [str(dest / names[u]) if u in names else u for u in urls]


def _root(url: str) -> str:
    """``protocol://netloc`` of a URL: the part that chooses its filesystem instance."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"


def upload_tree(
    local_dir: str | os.PathLike[str],
    url: str,
    storage_options: dict[str, Any] | None = None,
    *,
    exclude: tuple[str, ...] = (),
    last: tuple[str, ...] = (),
) -> int:
    """Upload the files under ``local_dir`` to ``url``, keeping their relative layout.

    Parameters
    ----------
    exclude : tuple of str
        Glob patterns; a file is left out when a pattern matches its relative path (``/``
        separated) or any of its path segments (``"*.tmp"``, ``"logs"``, ``"sys/*.txt"``).
    last : tuple of str
        Relative paths uploaded only once every other file has landed (a job's summary: a
        folder with one holds a finished job); not at all if an earlier one failed.

    Returns
    -------
    int
        The number of files uploaded.
    """
    root = Path(local_dir)
    if not root.is_dir():
        raise NotADirectoryError(f"'{local_dir}' is not a folder")
    local, rels = [], []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        names = (rel, *rel.split("/"))
        if not any(fnmatch(name, pat) for pat in exclude for name in names):
            local.append(str(path))
            rels.append(rel)
    if not local:
        return 0
    fs, base = filesystem(url, storage_options, verb="writing")
    remote = [f"{base.rstrip('/')}/{rel}" for rel in rels]
    if not is_remote(url):
        for parent in sorted({posixpath.dirname(r) for r in remote}):
            fs.makedirs(parent, exist_ok=True)
    after = [i for i, rel in enumerate(rels) if rel in last]
    first = [i for i in range(len(rels)) if i not in set(after)]
    for group in (first, after):  # (one concurrent put each: the last ones after the rest)
        if group:
            fs.put([local[i] for i in group], [remote[i] for i in group])
    fs.invalidate_cache(base)
    return len(local)


def open_output(
    url: str, mode: str = "wb", storage_options: dict[str, Any] | None = None, **kwargs: Any
) -> Any:
    """Open the file at ``url`` for writing (an fsspec file object; use it in ``with``).

    Parent folders of a local path are created.  ``kwargs`` go to ``fs.open`` (for example
    ``encoding`` or ``newline`` in text mode).
    """
    writing = "r" not in mode
    fs, path = filesystem(url, storage_options, verb="writing" if writing else "reading")
    if writing and not is_remote(url):
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
    return fs.open(path, mode, **kwargs)
