"""Real storage emulators for the tests: Azurite (Azure Blob) and moto's S3 server.

Both run as separate processes on 127.0.0.1 with a free port, in memory, and are stopped at
the end of the session.  Use the session fixtures in a test module with::

    from storage_emulators import azurite, moto_s3  # noqa: F401  (pytest fixtures)

Each yields a dict with what a client needs (``storage_options`` for fsspec, ``env`` for a
subprocess) and, while it lives, exports the environment variables with which code that only
sees a URL (``az://container/path``, ``s3://bucket/key``) reaches the emulator:

* Azure: ``AZURE_STORAGE_CONNECTION_STRING`` (adlfs reads it when no credentials are given);
* S3: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION`` and
  ``AWS_ENDPOINT_URL`` (botocore >= 1.31 reads it, so s3fs needs no ``endpoint_url``).

Azurite comes from npm: ``$DASKSCORE_AZURITE`` (a path to ``azurite-blob``), else the cache
folder ``${XDG_CACHE_HOME:-~/.cache}/daskscore-test/azurite`` (``$DASKSCORE_TEST_CACHE``
replaces ``.../daskscore-test``; installed there with ``npm`` on first use, about 186 MB, as
``.ci/emulators.sh`` does; ``DASKSCORE_TEST_NO_DOWNLOAD=1`` skips instead), else
``azurite-blob`` on ``PATH``.  It needs node and npm (Debian: ``apt-get install nodejs npm``).
moto needs ``moto[server]``.  When an emulator cannot be had, its tests are skipped with a
message that says how to get it, except in CI (``$CI`` set), where they fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path
from typing import Any, NoReturn

import pytest
from helpers import tail

HOST = "127.0.0.1"
START_TIMEOUT = 60.0
AZURITE_SPEC = "azurite@3"
#: Azurite's well-known development account (public, the same in every Azurite)
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
MOTO_KEY = MOTO_SECRET = "testing"
MOTO_REGION = "us-east-1"
#: ``python -m moto.server``, less moto's own ``Server`` header: werkzeug sends one too, and
#: aiohttp's strict parser (``python -X dev``; every mode in aiohttp 3.13.4) rejects a response
#: with two (getmoto/moto#9930, aio-libs/aiohttp#12297).
MOTO_SERVER = """
import signal, sys
from werkzeug.serving import run_simple
from moto.server import DomainDispatcherApplication, create_backend_app

moto_app = DomainDispatcherApplication(create_backend_app)

def app(environ, start_response):
    def start(status, headers, exc_info=None):
        headers = [h for h in headers if h[0].lower() != "server"]
        return start_response(status, headers, exc_info)
    return moto_app(environ, start)

signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
run_simple(sys.argv[1], int(sys.argv[2]), app, threaded=True)
"""


def in_ci() -> bool:
    """Whether the tests run in CI (``$CI`` set to something other than ``0``/``false``)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(message: str) -> NoReturn:
    """Skip the test (on a developer's machine) or fail it (in CI): an emulator is missing."""
    if in_ci():
        pytest.fail(f"{message} (CI is set: emulators are required)", pytrace=False)
    pytest.skip(message)


def cache_dir() -> Path:
    """``${XDG_CACHE_HOME:-~/.cache}/daskscore-test``; ``$DASKSCORE_TEST_CACHE`` overrides."""
    if os.environ.get("DASKSCORE_TEST_CACHE"):
        return Path(os.environ["DASKSCORE_TEST_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "daskscore-test"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def azurite_where() -> str:
    """How to get Azurite, for a skip message: what it needs and where the download goes."""
    return (
        "Azurite (the Azure Blob emulator of the az:// tests) needs node and npm: on Debian "
        "`sudo apt-get install nodejs npm`, or run .ci/emulators.sh; the tests then download "
        f"it from npm ({AZURITE_SPEC}, about 186 MB) into {cache_dir() / 'azurite'} on first "
        "use (DASKSCORE_TEST_CACHE moves it; DASKSCORE_AZURITE=/path/to/azurite-blob uses "
        "one you have)"
    )


def downloads_allowed() -> bool:
    """Whether the tests may download Azurite (``DASKSCORE_TEST_NO_DOWNLOAD`` unset or 0)."""
    return os.environ.get("DASKSCORE_TEST_NO_DOWNLOAD", "").strip().lower() in ("", "0", "false")


def azurite_binary(install: bool = True) -> Path | None:
    """The ``azurite-blob`` executable, installed with npm into :func:`cache_dir` if needed."""
    if os.environ.get("DASKSCORE_AZURITE"):
        return Path(os.environ["DASKSCORE_AZURITE"])
    prefix = cache_dir() / "azurite"
    binary = prefix / "node_modules" / ".bin" / "azurite-blob"
    if binary.exists():
        return binary
    on_path = shutil.which("azurite-blob")
    if on_path:
        return Path(on_path)
    if not install or not downloads_allowed() or shutil.which("npm") is None:
        return None
    prefix.mkdir(parents=True, exist_ok=True)
    cmd = ["npm", "install", "--prefix", str(prefix), "--no-audit", "--no-fund", AZURITE_SPEC]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0 or not binary.exists():
        unavailable(
            f"npm install {AZURITE_SPEC} into {prefix} failed (npm needs to reach its registry; "
            "or point DASKSCORE_AZURITE at an azurite-blob you have):\n"
            f"{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    return binary


@contextlib.contextmanager
def _process(
    name: str, cmd: list[str], port: int, log: Path, cwd: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``cmd`` (output to ``log``) until the ``with`` ends; wait until ``port`` answers;
    yield the process."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd
        )
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with code {proc.returncode} while starting; "
                        f"its log ({log}):\n{tail(log, chars=3000)}"
                    )
                with contextlib.suppress(OSError), socket.create_connection((HOST, port), 0.5):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{name} did not answer on {HOST}:{port} within {START_TIMEOUT:.0f} s; "
                        f"its log ({log}):\n{tail(log, chars=3000)}"
                    )
                time.sleep(0.1)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@contextlib.contextmanager
def exported(env: dict[str, str]) -> Iterator[None]:
    """Set the environment variables ``env`` for the ``with`` block; restore them after it."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def clear_fsspec_instances(*protocols: str) -> None:
    """Drop fsspec's cached filesystem instances of ``protocols``; their finalizers close
    their HTTP sessions now, while the event loop still runs (no ResourceWarning later)."""
    import gc

    import fsspec

    for protocol in protocols:
        with contextlib.suppress(ImportError, ValueError):
            fsspec.get_filesystem_class(protocol).clear_instance_cache()
    gc.collect()


@contextlib.contextmanager
def run_azurite(workdir: Path) -> Iterator[dict[str, Any]]:
    """Start Azurite's blob service (in memory); yield the connection details.

    The log goes to ``workdir/azurite.log``.  While the ``with`` block runs,
    ``AZURE_STORAGE_CONNECTION_STRING`` points at it.
    """
    if shutil.which("node") is None and not os.environ.get("DASKSCORE_AZURITE"):
        unavailable(f"node is missing. {azurite_where()}")
    binary = azurite_binary()
    if binary is None:
        if not downloads_allowed():
            unavailable(
                f"Azurite is not installed and DASKSCORE_TEST_NO_DOWNLOAD is set. {azurite_where()}"
            )
        unavailable(f"Azurite is not installed and npm is missing. {azurite_where()}")
    port = free_port()
    endpoint = f"http://{HOST}:{port}/{AZURITE_ACCOUNT}"
    conn = (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
        f"AccountKey={AZURITE_KEY};BlobEndpoint={endpoint};"
    )
    cmd = [
        str(binary),
        *("--loose", "--skipApiVersionCheck", "--inMemoryPersistence", "--disableTelemetry"),
        *("--blobHost", HOST, "--blobPort", str(port)),
    ]
    info: dict[str, Any] = {
        "protocol": "az",
        "account_name": AZURITE_ACCOUNT,
        "account_key": AZURITE_KEY,
        "blob_endpoint": endpoint,
        "connection_string": conn,
        "port": port,
        "storage_options": {"connection_string": conn},
        "env": {"AZURE_STORAGE_CONNECTION_STRING": conn},
        "log": workdir / "azurite.log",
    }
    with _process("Azurite", cmd, port, info["log"], workdir), exported(info["env"]):
        try:
            yield info
        finally:
            clear_fsspec_instances("az")


@contextlib.contextmanager
def run_moto_s3(workdir: Path) -> Iterator[dict[str, Any]]:
    """Start moto's server (as ``python -m moto.server`` would); yield the S3 details.

    The log goes to ``workdir/moto.log``.  While the ``with`` block runs, the ``AWS_*``
    variables (credentials, region, ``AWS_ENDPOINT_URL``) point at it.
    """
    if find_spec("moto") is None or find_spec("flask") is None or find_spec("s3fs") is None:
        unavailable(
            "moto's S3 server and s3fs are needed for the s3:// tests: pip install -e '.[test]' "
            "(or pip install 'moto[server]' s3fs)"
        )
    port = free_port()
    endpoint = f"http://{HOST}:{port}"
    cmd = [sys.executable, "-c", MOTO_SERVER, HOST, str(port)]
    info: dict[str, Any] = {
        "protocol": "s3",
        "endpoint_url": endpoint,
        "key": MOTO_KEY,
        "secret": MOTO_SECRET,
        "region_name": MOTO_REGION,
        "port": port,
        "storage_options": {
            "key": MOTO_KEY,
            "secret": MOTO_SECRET,
            "client_kwargs": {"endpoint_url": endpoint, "region_name": MOTO_REGION},
        },
        "env": {
            "AWS_ACCESS_KEY_ID": MOTO_KEY,
            "AWS_SECRET_ACCESS_KEY": MOTO_SECRET,
            "AWS_DEFAULT_REGION": MOTO_REGION,
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_EC2_METADATA_DISABLED": "true",
        },
        "log": workdir / "moto.log",
    }
    # a developer's session token or profile must not reach the emulator
    hidden = {k: os.environ.pop(k) for k in ("AWS_SESSION_TOKEN", "AWS_PROFILE") if k in os.environ}
    try:
        with _process("moto", cmd, port, info["log"], workdir) as proc, exported(info["env"]):
            info["process"] = proc
            try:
                yield info
            finally:
                clear_fsspec_instances("s3")
    finally:
        os.environ.update(hidden)


def unique_name(prefix: str = "t") -> str:
    """A fresh container/bucket name (lower case, 3-63 characters)."""
    return f"{prefix}{uuid.uuid4().hex[:20]}"


def make_container(info: dict[str, Any], name: str | None = None) -> str:
    """Create a container in Azurite (``info`` from :func:`run_azurite`); return ``az://name``."""
    import fsspec

    name = name or unique_name()
    fs = fsspec.filesystem("az", **info["storage_options"])
    fs.mkdir(name)
    fs.invalidate_cache()
    return f"az://{name}"


def make_bucket(info: dict[str, Any], name: str | None = None) -> str:
    """Create a bucket in moto (``info`` from :func:`run_moto_s3`); return ``s3://name``."""
    import fsspec

    name = name or unique_name()
    # s3fs sends client_kwargs' region_name as LocationConstraint, and S3 (moto too) rejects
    # "us-east-1" there: create the bucket with a filesystem that names no region.
    options = dict(info["storage_options"])
    options["client_kwargs"] = {
        k: v for k, v in options.get("client_kwargs", {}).items() if k != "region_name"
    }
    fs = fsspec.filesystem("s3", **options)
    fs.mkdir(name)
    fs.invalidate_cache()
    return f"s3://{name}"


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Azurite for the whole session; see :func:`run_azurite`."""
    with run_azurite(tmp_path_factory.mktemp("azurite")) as info:
        yield info


#: The session's moto server, once started (:func:`moto_s3`): :func:`moto_env` exports its
#: variables again for each test.
SESSION_MOTO: list[dict[str, Any]] = []


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """moto's S3 server for the whole session; see :func:`run_moto_s3`."""
    with run_moto_s3(tmp_path_factory.mktemp("moto")) as info:
        SESSION_MOTO.append(info)
        try:
            yield info
        finally:
            SESSION_MOTO.remove(info)


@pytest.fixture(autouse=True)
def moto_env() -> Iterator[None]:
    """Each test starts with the session moto server's variables exported (a test of another
    server, or one that set an endpoint of its own, may have left others: twice in CI a later
    S3 test on the same process listed its bucket at another endpoint); restored after it."""
    if not SESSION_MOTO:
        yield
        return
    info = SESSION_MOTO[-1]
    proc = info.get("process")
    if proc is not None and proc.poll() is not None:  # (said, not hidden: what ended it?)
        pytest.fail(
            f"the session's moto server (pid {proc.pid}, port {info['port']}) exited with "
            f"{proc.returncode} before this test: an earlier test of this process ended it"
        )
    env = info["env"]
    if any(os.environ.get(k) != v for k, v in env.items()):
        clear_fsspec_instances("s3")
    with exported(env):
        yield
