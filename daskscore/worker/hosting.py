"""The worker process as the script's host: where it differs from the process Azure runs a
scoring script in, made alike where it can be, explained where it cannot.

* **Child processes.**  A worker process that a nanny started is the script's own (see
  :func:`daskscore.worker.plugin._own_process`): :func:`ordinary_process` gives it the
  platform's default ``multiprocessing`` start method, as a fresh Python process has (a worker
  inherits the one it was started with: spawn or forkserver, whose children import the
  driver's main module again, seconds each).  Its workers are not daemonic on daskscore's
  own clusters (:data:`daskscore.cluster.local.NOT_DAEMONIC`); on a caller's cluster they may
  be, and Python then forbids them children: :func:`hint` says what to set.
* **The main thread.**  ``init()`` and ``run()`` run in a thread of the worker, not in its
  main thread (which serves Dask's event loop), so ``signal.signal()`` raises there; Python
  runs signal handlers in the main thread only, so no handler the script sets could interrupt
  its own ``run()`` anyway.  :func:`hint` names the call and what to use instead.
  A SIGINT of the process (``_thread.interrupt_main()``, ``os.kill(os.getpid(), SIGINT)``,
  as a library's own timeout may send) raised ``KeyboardInterrupt`` in that main thread and
  closed the worker (and, where the worker was forked from the ``daskscore`` command, ran its
  handler): :func:`interrupt_script_on_sigint` raises it in the thread running ``run()``,
  where a script that ran in a main thread would get it, and nowhere else.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import signal
import threading
from collections.abc import Callable
from typing import Any

from daskscore.protocol import exception_text

logger = logging.getLogger(__name__)

#: The start of the message of Python's refusal of a daemonic process's child.
DAEMONIC = "daemonic processes are not allowed to have children"
#: ... and of ``signal.signal()`` called outside the main thread.
NOT_MAIN = "signal only works in main thread"

DAEMONIC_HINT = (
    "daskscore: this worker process is daemonic, and Python forbids a daemonic process "
    "children (multiprocessing.Pool, concurrent.futures.ProcessPoolExecutor, a torch "
    "DataLoader with num_workers > 0). daskscore's own clusters (the embedded one, `daskscore "
    "cluster start`) start workers that are not; on your own cluster set Dask's "
    "distributed.worker.daemon to False where the workers' nannies start: "
    "`DASK_DISTRIBUTED__WORKER__DAEMON=False dask worker ...` (or `worker: {daemon: false}` "
    "under `distributed:` in the Dask configuration file), or run `dask worker --no-nanny`."
)

SIGNAL_HINT = (
    "daskscore: init() and run() run in a thread of the worker process, not in its main "
    "thread, so signal.signal() cannot be called there (Python runs signal handlers in the "
    "main thread only: a SIGALRM handler could not interrupt run() anyway). For a per-item "
    "timeout, use a concurrent.futures.ThreadPoolExecutor's future.result(timeout=...) or a "
    "child process; for the whole run() call, daskscore already enforces "
    "settings.retry_settings.timeout. A script that must also run standalone can guard the "
    "call: `if threading.current_thread() is threading.main_thread(): signal.signal(...)`."
)


def hint(exc: BaseException) -> str:
    """What to do about ``exc`` (or an exception it was raised from), when it is one of the
    failures that come of the script's host rather than of the script: a paragraph to put
    after its traceback (starting with a blank line); ``""`` otherwise."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        text = exception_text(cause, with_type=False)
        if isinstance(cause, AssertionError) and DAEMONIC in text:
            return f"\n\n{DAEMONIC_HINT}"
        if isinstance(cause, ValueError) and NOT_MAIN in text:
            return f"\n\n{SIGNAL_HINT}"
        cause = cause.__cause__ or cause.__context__
    return ""


#: Signals whose handler, when a process the worker was forked from set one, goes back to the
#: default action in the worker: a fresh process's (SIGINT keeps Python's own, a callable too).
RESET_SIGNALS = ("SIGTERM", "SIGHUP")


def ordinary_process() -> None:
    """Make this worker process, for the script, what a fresh Python process is: the
    platform's default ``multiprocessing`` start method (``fork`` on Linux up to Python 3.13:
    a ``Pool`` in ``run()`` starts in milliseconds, as on Azure), and the default action of
    SIGTERM and SIGHUP.  A worker inherits the start method it was started with, and the
    signal handlers of the process it was forked from (the warm cluster's server stops on
    SIGTERM: its handler only sets an event, so a ``Pool``'s forked workers ignored
    ``Pool.terminate()`` and the ``with mp.Pool()`` block waited on them for ever).  Dask's
    own processes name their start method explicitly, and Dask's nanny ends a worker with
    SIGTERM expecting the default action: nothing of Dask's changes.  Call from the main
    thread (a worker's plugin setup)."""
    try:
        multiprocessing.set_start_method(None, force=True)
    except Exception:  # noqa: BLE001 - the script keeps the inherited method
        logger.debug("multiprocessing's start method stays as inherited", exc_info=True)
    if threading.current_thread() is not threading.main_thread():
        return
    for name in RESET_SIGNALS:
        sig = getattr(signal, name, None)
        try:
            if sig is not None and callable(signal.getsignal(sig)):  # (inherited by a fork)
                signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            logger.debug("%s keeps its inherited handler", name, exc_info=True)


def interrupt_script_on_sigint(script_thread: Callable[[], int | None]) -> None:
    """Make SIGINT in this worker process raise ``KeyboardInterrupt`` in the thread that
    ``script_thread()`` names (the one running ``run()`` now), not in the main thread, whose
    event loop is Dask's; with no ``run()`` running it is logged and ignored.  Call from the
    main thread (a worker's plugin setup)."""
    if threading.current_thread() is not threading.main_thread():
        return

    def interrupt(signum: int, frame: Any) -> None:
        target = script_thread()
        if target is None:
            logger.warning("SIGINT ignored: no run() is running in this worker")
            return
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(target), ctypes.py_object(KeyboardInterrupt)
        )

    try:
        signal.signal(signal.SIGINT, interrupt)
    except (OSError, ValueError):
        logger.debug("SIGINT keeps its handler", exc_info=True)
