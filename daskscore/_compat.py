"""The one place where daskscore touches private internals of CPython, Dask and tornado.

Each use sits behind a small function that first checks that the internal is there, in the
shape it expects, and otherwise falls back to public behaviour: a missing or changed internal
costs speed, never a result.  Nothing else in the package reaches into another library's
private names (``tests/test_compat.py`` checks that).  This is the bottom layer: it imports
the standard library only, and Dask or tornado lazily, inside the functions.

:func:`start_forkserver_by_fork`
    ``multiprocessing.forkserver``'s private state (``_forkserver``, its ``_lock``,
    ``_forkserver_pid``, ``_forkserver_address``, ``_forkserver_alive_fd``, the signature of
    ``main``; on Python 3.14+ ``_forkserver_authkey`` and ``main(..., authkey_r=)``).  Why: the
    ``daskscore`` command starts the fork server as a fork of itself, with Dask and daskscore
    imported already, instead of a fresh interpreter that imports them again.  Fallback: it
    does nothing and says so; the caller's ``forkserver.ensure_running()`` starts Python's own
    server (workers then wait for its imports).
:func:`skip_dask_forkserver_preload`
    ``distributed.utils._forkserver_preload_set``.  Why: else Dask replaces daskscore's preload
    list with all its optional packages.  Fallback: unset (a slower worker start).
:func:`nanny_handshake_interval`
    ``distributed.nanny.WorkerProcess._init_msg_interval``.  Why: nannies look for their new
    worker's start-up message every 50 ms; a worker forked ready is up in ~60 ms.  Set only
    while daskscore's own cluster is open, and restored after.  Fallback: left alone.
:func:`http_route_prefix`
    tornado's ``Application.default_router`` and its rules.  Why: tornado has no public way to
    list an application's routes, and the daskscore page goes under Dask's own prefix.
    Fallback: no prefix (the page is served at ``/daskscore``).
:func:`run_exit_steps`
    ``threading._shutdown`` and ``atexit._run_exitfuncs``.  Why: the command does what
    Python's exit does, minus the interpreter's teardown.  Fallback: it does nothing and says
    so; the command then exits the ordinary way (``sys.exit``).
:func:`on_worker_removal`, :func:`adapting`
    ``SpecCluster._update_worker_status`` (closes a lost worker's nanny), ``Cluster._adaptive``.
    Why: a caller's cluster keeps its nannies under a job.  Fallback: Dask's timeout; not known.
:func:`forget_closed_nannies`
    ``distributed.core._expects_comm``'s cache.  Why: it kept every closed nanny alive.
:func:`meter` and :func:`span`
    ``distributed.metrics.context_meter.meter`` and ``distributed.span`` (public, in every
    supported distributed, 2024.8.0 on).  Why: Dask's fine-grained metrics then say how much
    of a task's time went to ``run()``, fetching and writing, under the job's span.
    Fallback: a context that does nothing (the metrics show the task's time undivided).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import inspect
import os
import socket
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

#: Bytes of the key a Python 3.14+ fork server authenticates its clients with (CPython's own
#: length: at most PIPE_BUF, so that one write to an empty pipe carries it).
FORKSERVER_AUTHKEY_LEN = 32
#: What :func:`start_forkserver_by_fork` reads and writes on ``forkserver._forkserver``.
_SERVER_STATE = ("_lock", "_forkserver_pid", "_forkserver_address", "_forkserver_alive_fd")
#: ``forkserver.main``'s positional parameters, in every CPython since 3.4.
_MAIN_PARAMS = ["listener_fd", "alive_r", "preload"]


# ---------------------------------------------------------------- multiprocessing.forkserver


def forkserver_protocol(forkserver: Any) -> str | None:
    """How ``forkserver`` (``multiprocessing.forkserver``, or a stand-in) starts its server.

    Returns ``"authkey"`` (Python 3.14+: ``main(..., *, authkey_r)`` reads a key from a pipe,
    and the client side keeps it in ``_forkserver_authkey``), ``"plain"`` (3.10-3.13), or None
    when the private state or ``main``'s signature is not one this module knows.  Decided by
    ``main``'s signature rather than the Python version, so that a backport is handled too.
    """
    server = getattr(forkserver, "_forkserver", None)
    if server is None or not all(hasattr(server, name) for name in _SERVER_STATE):
        return None
    try:
        params = inspect.signature(forkserver.main).parameters
    except (AttributeError, TypeError, ValueError):
        return None
    if list(params)[:3] != _MAIN_PARAMS:
        return None
    others = [p for name, p in params.items() if name not in _MAIN_PARAMS]
    if any(p.default is p.empty for p in others):
        return None  # a new required argument: this module cannot fill it in
    has_key = "authkey_r" in params
    if has_key != hasattr(server, "_forkserver_authkey"):
        return None
    return "authkey" if has_key else "plain"


def start_forkserver_by_fork(ready: Callable[[], None], forkserver: Any = None) -> bool:
    """Start ``multiprocessing``'s fork server as a ``fork()`` of this process (what
    ``ForkServer.ensure_running`` does with a fresh interpreter), as this process's server.

    The caller makes sure that this process has a single thread.  In the server ``ready()``
    runs first (imports, ``gc.freeze``), then CPython's ``forkserver.main`` serves until every
    client has gone.  On Python 3.14+ the server authenticates its clients: as CPython's own
    ``ensure_running`` does, a key is made here, passed to ``main`` through a pipe
    (``authkey_r``) and kept in ``_forkserver_authkey``.

    Returns True when the server runs (started here, or before).  Fallback: False, having done
    nothing, when the private state is not as expected (:func:`forkserver_protocol`); the
    caller's ``forkserver.ensure_running()`` then starts Python's own server.
    ``forkserver``: the module (tests pass a stand-in).
    """
    if forkserver is None:
        import multiprocessing.forkserver as forkserver
    protocol = forkserver_protocol(forkserver)
    if protocol is None:
        return False
    server = forkserver._forkserver
    with server._lock:
        if server._forkserver_pid is None:
            _fork_server(forkserver, server, ready, with_authkey=protocol == "authkey")
    return True


def _fork_server(
    forkserver: Any, server: Any, ready: Callable[[], None], with_authkey: bool
) -> None:
    """Fork the server (the caller holds ``server._lock``) and fill in ``server``'s state as
    CPython's ``ForkServer.ensure_running`` does."""
    from multiprocessing import connection, resource_tracker

    resource_tracker.ensure_running()
    listener = socket.socket(socket.AF_UNIX)
    address = connection.arbitrary_address("AF_UNIX")
    listener.bind(address)
    if not address.startswith("\0"):  # (Linux's abstract names have no file)
        os.chmod(address, 0o600)
    listener.listen()
    alive_r, alive_w = os.pipe()
    key_r, key_w = os.pipe() if with_authkey else (None, None)
    pid = os.fork()
    if pid == 0:  # the server
        _fresh_client_state(server)
        _serve(forkserver.main, listener.fileno(), alive_r, key_r, [alive_w, key_w], ready)
    os.close(alive_r)
    listener.close()
    if key_r is not None and key_w is not None:
        os.close(key_r)
        server._forkserver_authkey = _send_authkey(key_w)
    server._forkserver_address = address
    server._forkserver_alive_fd = alive_w
    server._forkserver_pid = pid


def _serve(
    main: Callable[..., Any],
    listener_fd: int,
    alive_r: int,
    key_r: int | None,
    unused: list[int | None],
    ready: Callable[[], None],
) -> NoReturn:
    """The fork server's side of the fork: serve until every client has gone, then exit;
    never return into the caller's code."""
    code = 0
    try:
        for fd in unused:
            if fd is not None:
                os.close(fd)
        ready()
        main(listener_fd, alive_r, [], **({} if key_r is None else {"authkey_r": key_r}))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0
    except BaseException:  # noqa: BLE001 - never return into the driver's code
        code = 1
    finally:
        os._exit(code)


def _fresh_client_state(server: Any) -> None:
    """In the forked server: its ``ForkServer`` client state as a fresh process has it, for the
    workers forked from it.  The lock was held by the parent when it forked (a worker's script
    that started a fork server of its own, ``multiprocessing.get_context("forkserver")``, waited
    on it for ever), and the preload list is the driver's (the script's own server would import
    Dask and ready itself as this one).  Fallback: left as it is where the attributes differ."""
    if hasattr(server, "_lock"):
        server._lock = threading.Lock()
    if isinstance(getattr(server, "_preload_modules", None), list):
        server._preload_modules = ["__main__"]


def _send_authkey(key_w: int) -> bytes:
    """A fresh key, written to the server's key pipe (which is closed after)."""
    try:
        key = os.urandom(FORKSERVER_AUTHKEY_LEN)
        os.write(key_w, key)
    finally:
        os.close(key_w)
    return key


def skip_dask_forkserver_preload() -> bool:
    """Tell Dask that the fork server's preload list is set already (else its first forkserver
    context imports every optional package it knows of and replaces the list with them).
    Returns whether it was set; a Dask without ``_forkserver_preload_set``: False, left alone
    (a slower start, the same results)."""
    import distributed.utils

    if not hasattr(distributed.utils, "_forkserver_preload_set"):
        return False
    distributed.utils._forkserver_preload_set = True
    return True


# ---------------------------------------------------------------- distributed.nanny

_MISSING = object()
_nanny_lock = threading.Lock()
#: How many :func:`nanny_handshake_interval` contexts are open, and the value they replaced.
_nanny_held: dict[str, Any] = {"open": 0, "saved": _MISSING}


@contextlib.contextmanager
def nanny_handshake_interval(seconds: float) -> Iterator[None]:
    """While open, this process's nannies look for a new worker's start-up message every
    ``seconds`` (``WorkerProcess._init_msg_interval``: 50 ms in Dask 2024.8-2026.8), for starts
    and restarts alike; restored on close.  Contexts may overlap, on any thread: the first in
    sets, the last out restores.  Fallback: a Dask without that attribute is left alone."""
    from distributed import nanny

    cls = getattr(nanny, "WorkerProcess", None)
    if cls is None or not hasattr(cls, "_init_msg_interval"):
        yield
        return
    with _nanny_lock:
        if _nanny_held["open"] == 0:
            _nanny_held["saved"] = cls.__dict__.get("_init_msg_interval", _MISSING)
            cls._init_msg_interval = seconds
        _nanny_held["open"] += 1
    try:
        yield
    finally:
        with _nanny_lock:
            _nanny_held["open"] -= 1
            if _nanny_held["open"] == 0:
                saved, _nanny_held["saved"] = _nanny_held["saved"], _MISSING
                if saved is _MISSING:  # inherited: uncover the base class's value
                    del cls._init_msg_interval
                else:
                    cls._init_msg_interval = saved


# ---------------------------------------------------------------- tornado


def http_route_prefix(app: Any, route: str = "/health") -> str:
    """The prefix Dask put before its own HTTP routes (``--dashboard-prefix``, e.g. ``/dask``),
    read off ``route`` among the routes of ``app``, a scheduler's tornado ``http_application``.

    tornado has no public way to list an application's routes: this walks
    ``Application.default_router.rules`` (undocumented), each rule's ``target.rules``, and their
    ``matcher.regex`` (``tornado.routing.PathMatches``).  Fallback: ``""`` when the route is not
    found or that structure is not there: the page is then served without a prefix.
    """
    ending = route + "$"
    try:
        for rule in app.default_router.rules:
            for inner in getattr(rule.target, "rules", []):
                regex = getattr(inner.matcher, "regex", None)
                if regex is not None and regex.pattern.endswith(ending):
                    return str(regex.pattern[: -len(ending)])
    except (AttributeError, TypeError):
        pass
    return ""


# ---------------------------------------------------------------- CPython's exit


def run_exit_steps() -> bool:
    """Do what Python's own exit does before it tears the interpreter down: wait for the
    threads still running (``threading._shutdown``, which also shuts ``concurrent.futures``'
    pools down), then run the exit handlers (``atexit._run_exitfuncs``).

    Both are private, and in every CPython from 3.4 to 3.14.  Returns True when done.
    Fallback: False, having done neither, when either is missing (another Python): the caller
    then exits the ordinary way (``sys.exit``), which does both, and the teardown.
    """
    shutdown = getattr(threading, "_shutdown", None)
    run_exitfuncs = getattr(atexit, "_run_exitfuncs", None)
    if not (callable(shutdown) and callable(run_exitfuncs)):
        return False
    shutdown()
    run_exitfuncs()
    return True


# ---------------------------------------------------------------- Dask's fine-grained metrics


class TaskMeters:
    """Seconds by label for Dask's fine-grained metrics, added up while a task runs its
    mini-batches and reported once, at its end (:meth:`report`, still inside the task: the
    same ``("execute", <prefix>, label, "seconds")`` as :func:`meter`).  A ``meter`` block
    per mini-batch cost ~10 µs, a tenth of a 10-row mini-batch's own work.
    Fallback: nothing is reported when ``context_meter`` is not there."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, label: str, seconds: float) -> None:
        self.seconds[label] = self.seconds.get(label, 0.0) + seconds

    def report(self) -> None:
        seconds, self.seconds = self.seconds, {}
        try:
            from distributed.metrics import context_meter
        except ImportError:
            return
        for label, value in seconds.items():
            context_meter.digest_metric(label, value, "seconds")


def span(*tags: str) -> contextlib.AbstractContextManager[Any]:
    """The tasks submitted in the block belong to the span ``tags`` (``distributed.span``).
    Fallback: a context that does nothing, when ``distributed.span`` is not there."""
    try:
        from distributed import span as dask_span
    except ImportError:
        return contextlib.nullcontext()
    return dask_span(*tags)


def column_dtypes(frame: Any) -> tuple[Any, ...]:
    """The dtype of each column of a pandas DataFrame, in order: from its block manager (3 µs;
    ``frame.dtypes`` builds a Series: 65 µs, paid per mini-batch of ``append_row`` output).
    Fallback: ``frame.dtypes``."""
    try:
        return tuple(frame._mgr.get_dtypes())
    except Exception:  # noqa: BLE001 - another pandas: the public way
        return tuple(frame.dtypes)


def thread_frame(ident: int) -> Any:
    """The frame that thread ``ident`` of this process runs now (None: no such thread), from
    ``sys._current_frames()``, what ``faulthandler`` and debuggers read too."""
    return sys._current_frames().get(ident)


def unsubscribe_topic(client: Any, topic: str) -> None:
    """``client.unsubscribe_topic(topic)``, and its handler dropped: Dask's unsubscribes at the
    scheduler but keeps the handler (a bound method of whatever subscribed, kept alive with
    everything it holds, one per job on a client that runs many)."""
    try:
        client.unsubscribe_topic(topic)
    finally:
        handlers = getattr(client, "_event_handlers", None)
        if isinstance(handlers, dict):
            handlers.pop(topic, None)


def _forget_on_scheduler(
    topics: list[str], metadata: list[list[str]], dask_scheduler: Any = None
) -> int:
    """Run on the scheduler: drop ``topics`` (their events) and the ``metadata`` entries (key
    paths, the last one removed from its parent); the number of topics dropped."""
    dropped = 0
    broker = getattr(dask_scheduler, "_broker", None)
    found = getattr(broker, "_topics", None)
    if isinstance(found, dict):  # (distributed's Broker keeps every topic ever named)
        for name in topics:
            dropped += found.pop(name, None) is not None
        for name, kept in list(found.items()):  # (an earlier job's, named again by its late
            if str(name).startswith("daskscore-") and not (kept.events or kept.subscribers):
                found.pop(name)  # unsubscribe: the Broker's dict makes what it is asked for)
    for keys in metadata:
        parent = getattr(dask_scheduler, "task_metadata", None)
        for key in keys[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if isinstance(parent, dict):
            parent.pop(keys[-1], None)
    return dropped


def forget_topics(
    client: Any, topics: Sequence[str], metadata: Sequence[Sequence[str]] = ()
) -> None:
    """Drop a finished job's event topics and metadata (and earlier jobs' empty topics) from the
    scheduler, which keeps them for its life; best effort: Dask has no call for it."""
    try:
        client.run_on_scheduler(_forget_on_scheduler, list(topics), [list(k) for k in metadata])
    except Exception:  # noqa: BLE001 - nothing depends on it
        pass


def scheduler_in_process() -> bool:
    """Whether a Dask scheduler runs in this process (``Scheduler._instances``): an in-process
    cluster's worker, whose process is its user's (a notebook's kernel), not the worker's to
    end.  False where that cannot be told (taken for a process of its own)."""
    try:
        from distributed import Scheduler

        return bool(len(Scheduler._instances))
    except Exception:  # noqa: BLE001
        return False


def parse_source(source: str | bytes, filename: str = "<unknown>") -> Any:
    """``ast.parse(source)``, tried again on CPython's spurious ``SystemError: AST constructor
    recursion depth mismatch``: before 3.12.1 (gh-106905) the AST builder keeps its recursion
    depth in state every thread shares, so a traceback formatted on another thread meanwhile
    (Python 3.11 parses source lines for its carets) can make a sound parse fail."""
    import ast

    for attempt in range(4):
        try:
            return ast.parse(source, filename=filename)
        except SystemError as exc:
            if "recursion depth mismatch" not in str(exc) or attempt == 3:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def on_worker_removal(cluster: Any, around: Callable[..., Any]) -> Callable[[], None] | None:
    """``around(original, op, msg)`` takes SpecCluster ``cluster``'s worker updates (looked up on
    the instance) until the function returned is called; None where it cannot (not wrapped)."""
    original = getattr(cluster, "_update_worker_status", None)
    if not callable(original) or "_update_worker_status" in vars(cluster):  # (someone's own)
        return None
    cluster._update_worker_status = update = functools.partial(around, original)

    def undo() -> None:
        if vars(cluster).get("_update_worker_status") is update:
            del cluster._update_worker_status  # (the class's again)

    return undo


def adapting(cluster: Any) -> bool | None:
    """Whether ``cluster.adapt()`` is on (it may start workers); None where not known."""
    if "_adaptive" not in vars(cluster):
        return None
    adaptive = cluster._adaptive  # (2026.8 keeps one "stopped"; 2024.8 drops its callback)
    alive = getattr(adaptive, "periodic_callback", None) is not None
    return alive and getattr(adaptive, "state", "running") not in ("inactive", "stopped")


def forget_closed_nannies() -> None:
    """Clear ``distributed.core._expects_comm`` (an unbounded cache keyed on bound methods: a
    job's closed nannies, ~0.2 MB, kept for the process's life).  Fallback: nothing."""
    from distributed import core

    getattr(getattr(core, "_expects_comm", None), "cache_clear", lambda: None)()
