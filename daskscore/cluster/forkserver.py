"""How the embedded cluster's worker processes come to be: forked from a fork server that is
started early (while the driver lists the inputs) and readied in advance.

In the ``daskscore`` command the server is a ``fork()`` of the command itself, made before it
has any thread; elsewhere (a notebook, a test run) it is Python's own fork server.  Either way
it imports Dask, daskscore's task code and, where it can, the scoring script's heavy
libraries once, makes Dask's version report once, and freezes what it imported out of the
garbage collector's walks; every worker forked from it starts with all of that done.
"""

from __future__ import annotations

import functools
import gc
import os
import threading

from daskscore import _compat
from daskscore.cluster.local import start_method, warm_versions
from daskscore.worker.threads import THREAD_ENV_VARS, intra_op_threads

#: Modules the fork server imports once, for every worker it forks: Dask's worker and
#: daskscore's task code (numpy comes with them); the last one readies the server to fork.
FORKSERVER_PRELOAD = ["distributed", "daskscore.worker.task", "daskscore.cluster.forkprep"]
#: The scoring script's libraries for Python's own fork server to import too, comma-separated
#: in its environment (read, and removed, by :mod:`daskscore.cluster.forkprep`): a module
#: there that raises is skipped, where one in the preload list would end the server.
PRELOAD_ENV = "DASKSCORE_FORKSERVER_PRELOAD"


def prestart_workers(workers: int, preload: list[str] | None = None) -> None:
    """Start the fork server now, so that workers can be forked from it the moment the cluster
    asks for them.

    In a process with no other thread yet (the ``daskscore`` command), the server is a
    ``fork()`` of this process itself: it has Dask and daskscore imported already, and a
    single-threaded process has no lock held by another thread for its children to inherit.
    Elsewhere (a notebook, a test run) it is Python's own fork server, a fresh interpreter that
    imports :data:`FORKSERVER_PRELOAD` while this process lists the inputs, ``preload`` too (in a
    notebook, whose kernel has threads, this is the path: without it every worker imported the
    script's torch itself, at the same time, in ``init()``).  Its environment
    carries the workers' intra-op thread caps and not Dask's ``MALLOC_TRIM_THRESHOLD_``.
    ``preload``: modules the forked server imports before it serves (the scoring script's torch,
    say — see :data:`daskscore.worker.script.PRELOADABLE`), while this process goes on, so that no
    worker imports them again.  Nothing happens unless workers are to be forked from it; a
    running server is kept.
    """
    if start_method() != "forkserver":
        return
    import multiprocessing
    import multiprocessing.forkserver as forkserver

    short_socket_folder()

    threads = str(intra_op_threads(workers))
    names = (*THREAD_ENV_VARS, "MALLOC_TRIM_THRESHOLD_", PRELOAD_ENV)
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update({name: threads for name in THREAD_ENV_VARS})
    os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    os.environ[PRELOAD_ENV] = ",".join(preload or [])
    try:
        multiprocessing.get_context("forkserver").set_forkserver_preload(FORKSERVER_PRELOAD)
        # Dask would otherwise import its optional packages here to build its own preload list
        _compat.skip_dask_forkserver_preload()
        if threading.active_count() == 1 and hasattr(os, "fork"):
            _compat.start_forkserver_by_fork(functools.partial(ready_server, preload or []))
        forkserver.ensure_running()  # a no-op when the server above runs (Python's own if not)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


#: The longest temporary folder whose fork server socket (``<folder>/pymp-XXXXXXXX/listener-
#: XXXXXXXX``) fits an AF_UNIX address (107 bytes on Linux).
SOCKET_FOLDER_MAX = 70


def short_socket_folder() -> None:
    """Make ``multiprocessing``'s temporary folder, where the fork server's socket goes, in
    ``/tmp`` when ``TMPDIR`` is too long for a socket path (Python 3.11 fails with "AF_UNIX
    path too long", and the job with it; Python 3.12 picks a short folder itself).  A folder
    made earlier is kept."""
    import tempfile
    from multiprocessing import util

    if len(tempfile.gettempdir()) <= SOCKET_FOLDER_MAX or not os.path.isdir("/tmp"):
        return
    saved = tempfile.tempdir
    tempfile.tempdir = "/tmp"
    try:
        util.get_temp_dir()  # (made now, removed when this process exits)
    finally:
        tempfile.tempdir = saved


def ready_server(preload: list[str]) -> None:
    """In a fork server, before it serves: import ``preload`` (a module that fails to import is
    left to the worker to report), then :func:`prepare_to_fork`."""
    os.environ.pop(PRELOAD_ENV, None)  # (not for the workers to inherit)
    for name in preload:
        try:
            __import__(name)
        except BaseException:  # noqa: BLE001 - the worker will say it
            pass
    prepare_to_fork()


def prepare_to_fork() -> None:
    """Ready a fork server for forking workers: Dask's version report made once
    (:func:`daskscore.cluster.local.warm_versions`), and everything imported so far moved out of the
    garbage collector's sight (``gc.freeze``).

    A worker's first full collection otherwise walked every object of Dask, daskscore and
    the preloaded libraries (torch: 0.1 s per worker, on the path of the job), and touched
    their pages, which the worker then copied from the server.  The objects live as long as
    the worker anyway."""
    warm_versions()
    gc.freeze()
