"""Dask's worker processes start without the caller's ``__main__``.

A process started by ``spawn`` or by Python's fork server first imports the parent's main
module again (as ``__mp_main__``), so that objects pickled from it resolve.  A Dask worker
needs none of it (Dask ships a task's functions with cloudpickle, by value for those of
``__main__``), and the caller's main module may be a script that calls ``daskscore.run`` at
its top level, without ``if __name__ == "__main__":``, as the README's snippet saved as a
file does: each worker then ran the whole job again in itself, and failed to start.  The
``daskscore`` command's fork server is a fork of the command, whose main module it already
has; Python's own server (a process with threads: a notebook, a script with a thread) and
``spawn`` (a nanny restarting its worker) send the main module's name or path to each new
process.  For Dask's worker processes (named by the nanny) they are left out.
"""

from __future__ import annotations

from typing import Any

#: The name a Dask nanny gives the process of its worker.
WORKER_PROCESS = "Dask Worker process"
_MAIN_KEYS = ("init_main_from_path", "init_main_from_name")


def workers_skip_main() -> None:
    """Make ``multiprocessing`` start Dask's worker processes without importing the caller's
    main module (once per process; other processes it starts are left as they are)."""
    from multiprocessing import spawn

    if getattr(spawn.get_preparation_data, "skips_main", False):
        return
    original = spawn.get_preparation_data

    def get_preparation_data(name: str) -> dict[str, Any]:
        data = original(name)
        if str(name).startswith(WORKER_PROCESS):
            for key in _MAIN_KEYS:
                data.pop(key, None)
        return data

    get_preparation_data.skips_main = True  # type: ignore[attr-defined]
    spawn.get_preparation_data = get_preparation_data
