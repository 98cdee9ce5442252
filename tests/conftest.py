"""Shared fixtures: deployment folders written by the tests, input files, and one LocalCluster
per test module (integration tests reuse it; each job installs its own plugin)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

# The storage emulators are session fixtures defined once, here: imported into several test
# modules they would be separate fixtures, each starting its own emulator.
from storage_emulators import azurite, in_ci, moto_env, moto_s3  # noqa: E402, F401

from daskscore.cluster.local import local_cluster

REPO = Path(__file__).resolve().parent.parent

# No job of the suite finds a developer's warm cluster (``daskscore cluster start``): its state
# file is looked for here (nothing is written unless a test starts one; tests/cluster/test_warm.py
# points each of its clusters somewhere else).
os.environ["DASKSCORE_CLUSTER_STATE"] = os.path.join(
    REPO, ".pytest_cache", f"no-warm-cluster-{os.getpid()}", "cluster.json"
)

# ------------------------------------------------------------------ longest files first

#: Seconds each test file took in a whole run (``tests/update_durations.py`` refreshes it).
DURATIONS: dict[str, float] = json.loads((REPO / "tests" / "durations.json").read_text("utf-8"))
#: ... for a file not listed (a new one): about what a file of a few real jobs takes.
NEW_FILE_S = 10.0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the longest test files first (each file's tests in their own order).  The two test
    processes take whole files in this order (``--dist loadfile --no-loadscope-reorder``), so
    the last files to run are short ones and neither process waits long for the other at the
    end; xdist's own order (the files with the most tests first) left about 20 s of one
    process idle."""
    first: dict[str, int] = {}
    for item in items:
        first.setdefault(item.nodeid.split("::", 1)[0], len(first))

    def key(item: pytest.Item) -> tuple[float, int]:
        name = item.nodeid.split("::", 1)[0]
        return -DURATIONS.get(name, NEW_FILE_S), first[name]

    items.sort(key=key)  # (stable: a file's tests keep their order)


# ------------------------------------------------------------------ port 8787 is taken

#: Dask's default dashboard port.  A user's machine often has something on it (a notebook's
#: Dask cluster, a dashboard): the suite holds it for the whole session, so that a cluster a
#: test starts on 8787 fails the test (Dask warns "Port 8787 is already in use" and
#: ``filterwarnings = error`` makes that an error) instead of passing only on quiet machines.
DASHBOARD_PORT = 8787


class PortHolder:
    """A listening socket on :data:`DASHBOARD_PORT`, or the note that another process holds it."""

    def __init__(self, port: int = DASHBOARD_PORT) -> None:
        self.port = port
        self.host: str | None = None  # where we listen; None: not ours (or not held)
        self._sock: socket.socket | None = None

    def take(self, host: str) -> bool:
        """Listen on ``host:port`` instead of where we listen now; whether that worked."""
        self.release()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # (as servers do: connections of an earlier run in TIME_WAIT do not block the bind; a
        # listener there still does)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, self.port))
            sock.listen()
        except OSError:
            sock.close()
            return False
        self._sock, self.host = sock, host
        return True

    def release(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = self.host = None

    def answers(self) -> bool:
        """Whether something (this holder or another process) listens on 127.0.0.1:port."""
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 2):
            return True
        return False

    def take_soon(self, host: str, within: float = 60.0) -> bool:
        """:meth:`take`, tried again for ``within`` seconds: between the release and the bind,
        a job of the other test process that wants a dashboard on 8787 may find it free and
        hold it while it runs."""
        deadline = time.monotonic() + within
        while not self.take(host):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    @contextlib.contextmanager
    def held_on(self, host: str) -> Iterator[None]:
        """Listen on ``host`` for the ``with`` block (when the port is ours), then as before."""
        before = self.host
        if before is not None and before != host:
            assert self.take_soon(host), f"could not move the listener on {self.port} to {host}"
        try:
            yield
        finally:
            if before is not None and self.host != before:
                assert self.take_soon(before)


@pytest.fixture(scope="session", autouse=True)
def dashboard_port_taken() -> Iterator[PortHolder]:
    """Port 8787 is taken for the whole session: on 0.0.0.0 (every address), else on
    127.0.0.1, else by another process already (a user's Dask dashboard)."""
    holder = PortHolder()
    holder.take("0.0.0.0") or holder.take("127.0.0.1")  # else: another process has it
    try:
        yield holder
    finally:
        holder.release()


# ------------------------------------------------------------------ headless Chromium

CHROMIUM = Path(os.environ.get("DASKSCORE_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _missing(message: str) -> None:
    if in_ci():
        pytest.fail(f"{message} (CI is set: the browser test is required)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """Headless Chromium from Debian's package, launched by Playwright."""
    if not CHROMIUM.exists():
        _missing(
            f"headless Chromium is missing at {CHROMIUM}: install Debian's chromium package "
            "(sudo apt-get install chromium), or set DASKSCORE_TEST_CHROMIUM to a Chromium or "
            "Chrome executable; the tests never download a browser (no `playwright install`)"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing(
            "playwright is not installed (pip install -e '.[test]'); the browser itself "
            "is Debian's chromium package (sudo apt-get install chromium)"
        )
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def write_deployment(
    root: Path,
    script: str,
    *,
    settings: dict[str, Any] | None = None,
    extra_code: dict[str, str] | None = None,
    model_files: dict[str, bytes | str] | None = None,
    model_path: str | None = "model",
    script_name: str = "score.py",
    raw: dict[str, Any] | None = None,
) -> Path:
    """Write ``root/deployment.yml``, ``root/code/<script_name>`` and a model folder.

    ``script`` is dedented; ``settings`` are merged over a small default (2 workers).
    ``raw`` replaces the whole YAML document when given.
    """
    root.mkdir(parents=True, exist_ok=True)
    code = root / "code"
    code.mkdir(exist_ok=True)
    (code / script_name).write_text(textwrap.dedent(script), encoding="utf-8")
    for name, text in (extra_code or {}).items():
        path = code / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    if model_path is not None:
        files = model_files if model_files is not None else {"model.pt": b"weights"}
        model_dir = root / model_path
        if len(files) == 1 and model_path.endswith((".pkl", ".pt", ".bin")):
            model_dir.write_bytes(next(iter(files.values())))  # a single-file model
        else:
            model_dir.mkdir(parents=True, exist_ok=True)
            for name, content in files.items():
                target = model_dir / name
                target.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(content, str):
                    target.write_text(content)
                else:
                    target.write_bytes(content)
    doc = raw
    if doc is None:
        doc = {
            "$schema": "https://azuremlschemas.azureedge.net/latest/modelBatchDeployment.schema.json",
            "name": "test-deployment",
            "endpoint_name": "test-endpoint",
            "type": "model",
            "code_configuration": {"code": "code", "scoring_script": script_name},
            "compute": "azureml:cpu-cluster",
            "resources": {"instance_count": 1},
            "settings": {
                "max_concurrency_per_instance": 2,
                "mini_batch_size": 10,
                **(settings or {}),
            },
        }
        if model_path is not None:
            doc["model"] = {"name": "test-model", "path": model_path}
    path = root / "deployment.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def write_inputs(folder: Path, n: int, *, ext: str = ".csv", width: int = 4) -> Path:
    """``n`` small CSV files ``f0000.csv`` ... with a column ``x`` holding the file's number."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"f{i:0{width}d}{ext}").write_text(f"x\n{i}\n{i + 0.5}\n")
    return folder


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 240, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m daskscore ARGS`` in a subprocess; return the completed process."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "daskscore", *args],
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """A LocalCluster of two single-threaded worker processes, shared by a test module."""
    with local_cluster(2, dashboard=False) as handle:
        yield handle.client


@pytest.fixture
def deployment_factory(tmp_path: Path):
    def make(script: str, **kwargs: Any) -> Path:
        return write_deployment(tmp_path / "deploy", script, **kwargs)

    return make


@pytest.fixture
def sessions(client: Any) -> Iterator[list[Any]]:
    """The ``score()`` sessions a test opens (closed afterwards), the module's ``client`` the
    current one."""
    opened: list[Any] = []
    with client.as_current():
        yield opened
    for session in opened:
        session.close()


@pytest.fixture
def warm_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment of commands that share a warm cluster (``daskscore cluster start``);
    it is stopped at the end, and whatever of it outlives that is killed."""
    import psutil

    env = {"DASKSCORE_CLUSTER_STATE": str(tmp_path / "state" / "cluster.json")}
    yield env
    state = Path(env["DASKSCORE_CLUSTER_STATE"])
    if state.exists():
        pids = json.loads(state.read_text())["pids"]
        run_cli("cluster", "stop", env=env, timeout=120)
        for pid in pids:  # whatever went wrong above, leave nothing behind
            with contextlib.suppress(psutil.NoSuchProcess):
                process = psutil.Process(pid)
                if process.status() != psutil.STATUS_ZOMBIE:
                    process.kill()
