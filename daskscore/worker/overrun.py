"""A ``run()`` call past ``retry_settings.timeout``: what the watchdog does about it.

On a worker process of its own the watchdog ends the process, as Azure does (the nanny starts
a fresh one, whose plugin calls ``init()`` again); the try is charged ``RUN_TIMEOUT`` from its
ledger, with the stack of the hung call.  A worker that shares its process with a Dask
scheduler — an in-process cluster, ``LocalCluster(processes=False)`` in a notebook or a driver
script — must not: ending the process would end the user's kernel, scheduler and all, without
a word.  There the call is left to finish (a thread cannot be stopped from outside), the
worker's error log and the job log say so at the deadline, and when ``run()`` returns (or
raises) the try counts as timed out: ``RUN_TIMEOUT``, its result dropped, retried as any
timed-out try.  Meanwhile other jobs' calls in the process need not wait for it
(:mod:`daskscore.worker.turn`); the job's own do.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from daskscore import _compat
from daskscore.worker.deaths import end_children
from daskscore.worker.stacks import on_timeout
from daskscore.worker.turn import TURN

logger = logging.getLogger(__name__)

#: Exit status of a process ended by the watchdog (distinct from Azure's 42, and from crashes).
TIMEOUT_EXIT_STATUS = 75


def timed_out(runtime: Any, mini_batch: int, ledger: Any) -> None:
    """The watchdog's act on ``runtime``'s call in flight, past its deadline."""
    job = runtime.job
    dump, error = on_timeout(runtime.stacks, runtime.run_thread, job.code, job.timeout)
    error = runtime.shown(error)
    if not runtime.nanny and _compat.scheduler_in_process():
        error = error.replace("the worker process was restarted", "the call was left to finish")
        error = error.replace("when it was stopped", "at its timeout")
        runtime.overran = error or (
            f"run() exceeded retry_settings.timeout ({job.timeout:g} s); it could not be "
            "stopped (an in-process cluster), so its result is dropped"
        )
        note = (
            f"run() of mini-batch {mini_batch} is past retry_settings.timeout "
            f"({job.timeout:g} s). This worker shares its process with the cluster's scheduler "
            "(an in-process cluster, processes=False), which is not ended: the call is left to "
            "finish, and its try counts as timed out when it returns."
        )
        logger.warning("%s", note)
        runtime.write_error(f"run() of mini-batch {mini_batch}", f"{note}\n{error}".rstrip())
        TURN.overran(runtime)  # (other jobs' calls need not wait for it)
        return
    try:
        ledger.timed_out(mini_batch, error)
        runtime.write_error(
            f"run() of mini-batch {mini_batch}",
            f"timed out after {job.timeout:g} s "
            "(retry_settings.timeout); the worker process is restarted."
            + (f"\n{error}" if error else "")
            + (f"\nEvery thread of the process then:\n{dump.rstrip()}" if dump else ""),
        )
        runtime.flush_output()
    finally:
        end_children()
        os._exit(TIMEOUT_EXIT_STATUS)
