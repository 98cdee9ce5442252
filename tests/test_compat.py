"""daskscore._compat: every private internal of CPython, Dask and tornado that daskscore uses,
each with its fallback; and no other module touches one (an AST walk of the package).

One small cluster in all (the nanny interval); the fork servers start in subprocesses, or are
forked from a stand-in ``multiprocessing.forkserver`` that mimics Python 3.14's.
"""

from __future__ import annotations

import ast
import asyncio
import atexit
import concurrent.futures
import json
import os
import subprocess
import sys
import textwrap
import threading
import types
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import daskscore
from daskscore import _compat

PACKAGE = Path(daskscore.__file__).parent
#: ``os.fork()`` in a process with threads (pytest's, Dask's) warns on Python 3.12+; the child
#: here runs a few lines of ours and exits.
FORK_WITH_THREADS = "ignore:This process .* is multi-threaded:DeprecationWarning"


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


# ----------------------------------------------------------------- the fork server


def fake_forkserver(report_w: int) -> Any:
    """A stand-in for Python 3.14's ``multiprocessing.forkserver``: its ``main`` (run in the
    forked server) writes what it was given to ``report_w``, then returns."""

    def main(listener_fd, alive_r, preload, main_path=None, sys_path=None, *, authkey_r=None):
        key = b"" if authkey_r is None else os.read(authkey_r, _compat.FORKSERVER_AUTHKEY_LEN)
        os.write(report_w, json.dumps({"preload": preload, "key": key.hex()}).encode())

    server = types.SimpleNamespace(
        _lock=threading.Lock(),
        _forkserver_pid=None,
        _forkserver_address=None,
        _forkserver_alive_fd=None,
        _forkserver_authkey=None,
    )
    return types.SimpleNamespace(_forkserver=server, main=main)


def test_the_forkserver_protocol_is_told_by_mains_signature() -> None:
    import multiprocessing.forkserver as real

    expected = "authkey" if sys.version_info >= (3, 14) else "plain"
    assert _compat.forkserver_protocol(real) == expected
    assert _compat.forkserver_protocol(fake_forkserver(-1)) == "authkey"


@pytest.mark.filterwarnings(FORK_WITH_THREADS)
def test_a_python_314_fork_server_gets_its_authkey() -> None:
    """As CPython 3.14's ``ensure_running``: a key made here, read by ``main`` from the pipe
    ``authkey_r``, and kept in ``_forkserver_authkey`` for ``connect_to_new_process``."""
    report_r, report_w = os.pipe()
    module = fake_forkserver(report_w)
    server = module._forkserver
    try:
        ready = lambda: os.write(report_w, b"ready ")  # noqa: E731 - runs in the server
        assert _compat.start_forkserver_by_fork(ready, module) is True
    finally:
        os.close(report_w)
    with os.fdopen(report_r, "rb") as reader:
        said = reader.read()  # until the server has exited
    _, status = os.waitpid(server._forkserver_pid, 0)
    os.close(server._forkserver_alive_fd)
    os.unlink(server._forkserver_address)
    assert os.waitstatus_to_exitcode(status) == 0
    assert said.startswith(b"ready ")
    assert len(server._forkserver_authkey) == _compat.FORKSERVER_AUTHKEY_LEN
    got = json.loads(said[len(b"ready ") :])
    assert got == {"preload": [], "key": server._forkserver_authkey.hex()}
    pid = server._forkserver_pid
    assert _compat.start_forkserver_by_fork(lambda: None, module) is True  # running: kept
    assert server._forkserver_pid == pid


FORK_HERE = """
import multiprocessing, os
import multiprocessing.forkserver as forkserver
from daskscore import _compat

def ready():
    os.environ["MARK"] = "readied in the server"

def report(conn):
    conn.send((os.getppid(), os.environ.get("MARK")))

if __name__ == "__main__":
    assert _compat.start_forkserver_by_fork(ready) is True
    pid = forkserver._forkserver._forkserver_pid
    forkserver.ensure_running()
    assert forkserver._forkserver._forkserver_pid == pid, "Python's own was started"
    ctx = multiprocessing.get_context("forkserver")
    here, there = ctx.Pipe()
    worker = ctx.Process(target=report, args=(there,))
    worker.start()
    got = here.recv()
    worker.join(60)
    assert worker.exitcode == 0 and got == (pid, "readied in the server"), (worker, got)
    print("forked from", pid)
"""


def test_the_fork_server_forked_from_here_forks_workers(tmp_path: Path) -> None:
    """On this Python: the server is a fork of the calling process, readied by ``ready()``,
    registered as ``multiprocessing``'s own, and it forks a worker that runs its target."""
    script = tmp_path / "fork_here.py"
    script.write_text(FORK_HERE)
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("forked from ")


def _main_with_more(listener_fd: int, alive_r: int, preload: list[str], must: int) -> None:
    """A ``forkserver.main`` with a required argument that _compat cannot know."""


@pytest.mark.parametrize(
    "change", ["no _forkserver", "no _lock", "a new argument", "authkey_r, no _forkserver_authkey"]
)
def test_an_unknown_forkserver_is_left_to_python(change: str) -> None:
    """Fallback: anything unexpected, and nothing is forked (the caller's
    ``forkserver.ensure_running()`` starts Python's own server)."""
    module = fake_forkserver(-1)
    if change == "no _forkserver":
        del module._forkserver
    elif change == "no _lock":
        del module._forkserver._lock
    else:
        del module._forkserver._forkserver_authkey
        if change == "a new argument":  # (and no authkey_r: the argument is all that changed)
            module.main = _main_with_more
    assert _compat.forkserver_protocol(module) is None
    assert _compat.start_forkserver_by_fork(lambda: None, module) is False
    assert getattr(getattr(module, "_forkserver", None), "_forkserver_pid", None) is None


def test_the_command_falls_back_to_pythons_own_fork_server() -> None:
    """A ``forkserver.main`` of an unknown shape: ``prestart_workers`` starts Python's own
    server (a fresh interpreter) rather than a fork of itself."""
    proc = run_python(
        """
        import multiprocessing.forkserver as forkserver
        import psutil
        forkserver.main = lambda listener_fd, alive_r, preload, changed: None
        from daskscore.cluster.forkserver import prestart_workers
        prestart_workers(1)
        server = psutil.Process(forkserver._forkserver._forkserver_pid)
        # (on a loaded machine the new server's command line can lag its start: wait for it)
        import time
        deadline = time.monotonic() + 30
        line = " ".join(server.cmdline())
        while "forkserver import main" not in line and time.monotonic() < deadline:
            time.sleep(0.05)
            line = " ".join(server.cmdline())
        assert "from multiprocessing.forkserver import main" in line, (server.pid, line)
        """,
        DASKSCORE_START_METHOD="forkserver",
    )
    assert proc.returncode == 0, proc.stderr


def test_dasks_preload_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    import distributed.utils

    monkeypatch.setattr(distributed.utils, "_forkserver_preload_set", False)
    assert _compat.skip_dask_forkserver_preload() is True
    assert distributed.utils._forkserver_preload_set is True
    # fallback: a Dask without the flag is left alone
    monkeypatch.delattr(distributed.utils, "_forkserver_preload_set")
    assert _compat.skip_dask_forkserver_preload() is False
    assert not hasattr(distributed.utils, "_forkserver_preload_set")


# ----------------------------------------------------------------- the nannies


def test_the_nanny_interval_is_set_only_inside_local_cluster() -> None:
    """Set for the whole ``with`` body of daskscore's cluster (restarts happen during the job),
    and Dask's own value back after, also when the body raised."""
    from distributed.nanny import WorkerProcess

    from daskscore.cluster.local import HANDSHAKE_POLL_S, local_cluster

    before = WorkerProcess._init_msg_interval
    assert before != HANDSHAKE_POLL_S
    with pytest.raises(RuntimeError, match="the job failed"):
        with local_cluster(1, dashboard=False) as handle:
            assert handle.client.submit(int, "7").result() == 7
            assert WorkerProcess._init_msg_interval == HANDSHAKE_POLL_S
            raise RuntimeError("the job failed")
    assert WorkerProcess._init_msg_interval == before


def test_overlapping_nanny_intervals_restore_once() -> None:
    """Two clusters open on two threads: the first in sets, the last out restores."""
    from distributed.nanny import WorkerProcess

    before = WorkerProcess._init_msg_interval
    first, second = (_compat.nanny_handshake_interval(0.001) for _ in range(2))
    first.__enter__()
    entered = threading.Thread(target=second.__enter__)
    entered.start()
    entered.join()
    first.__exit__(None, None, None)
    assert WorkerProcess._init_msg_interval == 0.001, "the second is still open"
    second.__exit__(None, None, None)
    assert WorkerProcess._init_msg_interval == before


def test_a_dask_without_the_nanny_interval_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from distributed.nanny import WorkerProcess

    monkeypatch.delattr(WorkerProcess, "_init_msg_interval")
    with _compat.nanny_handshake_interval(0.001):
        assert not hasattr(WorkerProcess, "_init_msg_interval")
    assert not hasattr(WorkerProcess, "_init_msg_interval")


# ----------------------------------------------------------------- tornado


def _dask_app(prefix: str) -> Any:
    """A scheduler's HTTP application as Dask builds it, with ``--dashboard-prefix``."""
    from distributed.http.routing import RoutingApplication
    from distributed.http.utils import get_handlers

    return RoutingApplication(get_handlers(None, ["distributed.http.health"], prefix=prefix))


async def _get(app: Any, paths: list[str]) -> list[bytes]:
    """``app`` served on 127.0.0.1 (a free port) for as long as ``paths`` take to fetch."""
    from tornado.httpserver import HTTPServer
    from tornado.netutil import bind_sockets

    sockets = bind_sockets(0, "127.0.0.1")
    server = HTTPServer(app)
    server.add_sockets(sockets)
    base = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"

    def fetch(path: str) -> bytes:
        with urllib.request.urlopen(base + path, timeout=10) as response:  # noqa: S310
            return bytes(response.read())

    try:
        return [await asyncio.to_thread(fetch, path) for path in paths]
    finally:
        server.stop()
        await server.close_all_connections()


def _in_own_thread(fn: Any) -> Any:
    """``fn()`` on a thread of its own: no event loop runs there, whatever this test process's
    main thread was left with by an earlier test."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result(timeout=60)


@pytest.mark.parametrize("prefix", ["", "/dask"])
def test_the_page_goes_under_dasks_prefix(prefix: str) -> None:
    from daskscore.ui import dashboard

    app = _dask_app(prefix or "/")
    assert _compat.http_route_prefix(app) == prefix
    scheduler = types.SimpleNamespace(http_application=app, get_events=lambda topic: ())
    assert dashboard.install_page(scheduler) is True
    assert dashboard.install_page(scheduler) is False
    page, status = _in_own_thread(
        lambda: asyncio.run(_get(app, [f"{prefix}/daskscore", f"{prefix}/daskscore/status.json"]))
    )
    assert b"daskscore jobs on this scheduler" in page
    assert json.loads(status)["jobs"] == []


def test_an_unknown_router_means_no_prefix() -> None:
    """Fallback: no ``default_router`` (or rules of another shape), no health route: ``""``."""
    assert _compat.http_route_prefix(object()) == ""
    odd = types.SimpleNamespace(default_router=types.SimpleNamespace(rules=[object()]))
    assert _compat.http_route_prefix(odd) == ""
    assert _compat.http_route_prefix(_dask_app("/dask"), "/no-such-route") == ""


# ----------------------------------------------------------------- CPython's exit


def test_the_exit_steps_run_in_pythons_order(monkeypatch: pytest.MonkeyPatch) -> None:
    done: list[str] = []
    monkeypatch.setattr(threading, "_shutdown", lambda: done.append("threads"))
    monkeypatch.setattr(atexit, "_run_exitfuncs", lambda: done.append("handlers"))
    assert _compat.run_exit_steps() is True
    assert done == ["threads", "handlers"]
    # fallback: one of them missing, and neither is run
    monkeypatch.delattr(threading, "_shutdown")
    assert _compat.run_exit_steps() is False
    assert done == ["threads", "handlers"]


def test_the_command_exits_the_ordinary_way_without_them() -> None:
    """Fallback of ``leave()``: ``sys.exit``, which waits for the threads and runs the exit
    handlers itself; the status is kept."""
    proc = run_python(
        """
        import atexit, threading, time
        del atexit._run_exitfuncs
        from daskscore.cli import leave
        atexit.register(lambda: print('handler ran'))
        threading.Thread(target=lambda: (time.sleep(0.2), print('thread done'))).start()
        leave(3)
        """
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "thread done\nhandler ran\n", "")


# ----------------------------------------------------------------- nowhere else

#: Names that no module but _compat may mention, however it reaches them.
KNOWN_INTERNALS = {"default_router", "_forkserver", "_init_msg_interval", "_run_exitfuncs"}
KNOWN_INTERNALS |= {"_shutdown", "_forkserver_preload_set"}
#: Underscored but documented, public API.
PUBLIC_UNDERSCORED = {"os._exit"}
ATTRIBUTE_CALLS = {"getattr", "setattr", "hasattr", "delattr"}


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _imports(tree: ast.AST) -> dict[str, str]:
    """Every name a module binds by importing, and what it is (``nanny``: distributed.nanny);
    daskscore's own modules (and relative imports) left out: their privates are ours."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                bound = alias.asname or alias.name.split(".")[0]
                names[bound] = alias.name if alias.asname else bound
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return {k: v for k, v in names.items() if v.split(".")[0] != "daskscore"}


def _annotations(tree: ast.AST) -> set[int]:
    """The nodes of type annotations: never evaluated (``from __future__ import annotations``)."""
    roots: list[ast.AST | None] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            every = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
            roots += [node.returns, *(a.annotation for a in every if a is not None)]
        elif isinstance(node, ast.AnnAssign):
            roots.append(node.annotation)
    return {id(n) for root in roots if root is not None for n in ast.walk(root)}


def _dotted(node: ast.expr, imports: dict[str, str]) -> str | None:
    """``a.b.c`` with ``a`` replaced by what it was imported as; None unless ``a`` is one
    (``self``, a local object)."""
    attrs: list[str] = []
    while isinstance(node, ast.Attribute):
        attrs.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name) or node.id not in imports:
        return None
    return ".".join([imports[node.id], *reversed(attrs)])


def _use(node: ast.AST, imports: dict[str, str]) -> list[str]:
    """What ``node`` touches of another library's privates, or of :data:`KNOWN_INTERNALS`."""
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        if node.module.split(".")[0] == "daskscore":
            return []
        return [f"{node.module}.{a.name}" for a in node.names if _is_private(a.name)]
    if isinstance(node, ast.Name):
        return [node.id] if node.id in KNOWN_INTERNALS else []
    if isinstance(node, ast.Attribute):
        base, name = _dotted(node.value, imports), node.attr
    elif (
        isinstance(node, ast.Call)
        and getattr(node.func, "id", None) in ATTRIBUTE_CALLS
        and len(node.args) > 1
        and isinstance(node.args[1], ast.Constant)
        and isinstance(node.args[1].value, str)
    ):
        base, name = _dotted(node.args[0], imports), node.args[1].value
    else:
        return []
    dotted = f"{base or '<object>'}.{name}"
    if (name in KNOWN_INTERNALS or (base and _is_private(name))) and (
        dotted not in PUBLIC_UNDERSCORED
    ):
        return [dotted]
    return []


def private_uses(source: str) -> list[str]:
    """The private internals of other libraries that ``source`` touches (annotations aside)."""
    tree = _compat.parse_source(source)
    imports, skip = _imports(tree), _annotations(tree)
    return [use for node in ast.walk(tree) if id(node) not in skip for use in _use(node, imports)]


@pytest.mark.parametrize(
    "source",
    [
        "import threading\nthreading._shutdown()",
        "import atexit as a\na._run_exitfuncs()",
        "from multiprocessing import forkserver\nforkserver._forkserver._lock",
        "def f():\n from distributed import nanny as n\n n.WorkerProcess._init_msg_interval = 0",
        "import distributed.utils\ndistributed.utils._forkserver_preload_set = True",
        "def f(app):\n    return app.default_router.rules",
        "from distributed.versions import _version_cached",
        "import threading\ngetattr(threading, '_shutdown')()",
    ],
)
def test_the_check_catches_a_private_internal(source: str) -> None:
    assert private_uses(source)


@pytest.mark.parametrize(
    "source",
    [
        "import os\nos._exit(0)",
        "class A:\n    def f(self):\n        return self._x",
        "def f(app):\n    app._daskscore_page = True\n    return getattr(app, '_daskscore_page')",
        "from daskscore import _compat\n_compat.run_exit_steps()",
        "import argparse\ndef f(sub: argparse._SubParsersAction) -> None: ...",
    ],
)
def test_the_check_lets_our_own_privates_be(source: str) -> None:
    assert private_uses(source) == []


def test_no_module_but_compat_touches_private_internals() -> None:
    found = {
        str(path.relative_to(PACKAGE)): uses
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != PACKAGE / "_compat.py"
        if (uses := private_uses(path.read_text(encoding="utf-8")))
    }
    assert found == {}, "move these into daskscore/_compat.py"


def test_a_spurious_ast_recursion_mismatch_is_parsed_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """CPython 3.11's AST builder shares its recursion depth between threads (gh-106905): a
    sound parse may fail with this SystemError while another thread formats a traceback."""
    real, calls = ast.parse, []

    def flaky(source: Any, filename: str = "<unknown>") -> Any:
        calls.append(filename)
        if len(calls) == 1:
            raise SystemError("AST constructor recursion depth mismatch (before=144, after=163)")
        return real(source, filename=filename)

    monkeypatch.setattr(ast, "parse", flaky)
    tree = _compat.parse_source("def run(mini_batch):\n    return mini_batch\n", "score.py")
    assert [node.name for node in tree.body] == ["run"] and len(calls) == 2

    def broken(source: Any, filename: str = "<unknown>") -> Any:
        raise SystemError("something else")

    monkeypatch.setattr(ast, "parse", broken)
    with pytest.raises(SystemError, match="something else"):
        _compat.parse_source("x = 1")


def test_cluster_internals_fall_back_to_dasks_own_handling() -> None:
    class Bare:  # (a cluster object without the internals: nothing wrapped, adapting unknown)
        pass

    assert _compat.on_worker_removal(Bare(), lambda original, op, msg: None) is None
    assert _compat.adapting(Bare()) is None

    class Spec:
        def __init__(self, state: str | None) -> None:
            adaptive = types.SimpleNamespace(state=state, periodic_callback=object())
            self._adaptive = adaptive if state else None
            self.seen: list[tuple[str, str]] = []

        def _update_worker_status(self, op: str, msg: str) -> None:
            self.seen.append((op, msg))

    cluster = Spec("running")
    assert _compat.adapting(cluster) is True
    assert _compat.adapting(Spec("stopped")) is False and _compat.adapting(Spec(None)) is False
    undo = _compat.on_worker_removal(cluster, lambda original, op, msg: original(op, msg + "!"))
    assert undo is not None
    cluster._update_worker_status("remove", "a")
    undo()
    cluster._update_worker_status("remove", "b")
    assert cluster.seen == [("remove", "a!"), ("remove", "b")]
    assert "_update_worker_status" not in vars(cluster)
