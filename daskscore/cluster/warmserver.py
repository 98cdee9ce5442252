"""The warm cluster's server process (``daskscore cluster start`` runs it detached): the
cluster, its state file, and its close.

At SIGTERM (``daskscore cluster stop``) each worker is given :data:`SHUTDOWN_S` seconds to
close — to uninstall the scripts it keeps initialised, whose ``shutdown()`` runs — before its
nanny kills it (Dask's own nanny close gives 4 s).  A worker killed so is written to the log
as a line that starts with :data:`CUT`, which ``cluster stop`` reads back to say so.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from daskscore.cluster.local import local_cluster, parse_resources
from daskscore.cluster.warmstate import CorruptState, WarmState, remove_state
from daskscore.worker.threads import intra_op_threads

#: Seconds each worker has to close at ``cluster stop`` (its scripts' ``shutdown()``
#: included) before it is killed.
SHUTDOWN_S = 30.0
#: The start of the log line that names the workers killed in their close.
CUT = "shutdown cut short:"


def serve(path: Path, workers: int, dashboard: bool, resources: dict[str, float]) -> int:
    """Run the warm cluster until SIGTERM (or SIGINT), or until the state file no longer
    names this process (it was removed, another cluster's replaced it, it is corrupt); then
    close it and remove the state file."""
    import importlib.util

    import psutil

    from daskscore.cluster.forkserver import prestart_workers
    from daskscore.worker.script import PRELOADABLE

    stop_event = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop_event.set())
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # forked from this process while it has a single thread; it imports the usual scoring
    # libraries once, for every worker (and every worker that restarts)
    prestart_workers(workers, [name for name in PRELOADABLE if importlib.util.find_spec(name)])
    me = psutil.Process()
    with local_cluster(workers, dashboard=dashboard, resources=resources or None) as handle:
        state = WarmState(
            address=handle.client.scheduler.address,
            pid=os.getpid(),
            created=me.create_time(),
            workers=workers,
            threads=intra_op_threads(workers),
            dashboard_link=handle.dashboard_link,
            resources=dict(resources),
            pids=[os.getpid(), *(p.pid for p in me.children(recursive=True))],
            log=str(path.with_suffix(".log")),
            started=time.time(),
        )
        state.write(path)
        print(f"warm cluster up at {state.address} (process {state.pid})", flush=True)
        try:
            while not stop_event.wait(1.0):
                try:
                    current = WarmState.read(path)
                except CorruptState:
                    current = None
                if current is None or current.pid != state.pid:
                    print("the state file no longer names this cluster: closing", flush=True)
                    break
            killed = handle.cluster.sync(_close_workers, handle.cluster, SHUTDOWN_S)
            if killed:
                print(
                    f"{CUT} worker process(es) {', '.join(map(str, killed))} had not closed "
                    f"after {SHUTDOWN_S:g} s (a script's shutdown() still running) and were "
                    "killed",
                    flush=True,
                )
        finally:
            remove_state(path, state.pid)
    print("warm cluster closed", flush=True)
    return 0


async def _close_workers(cluster: Any, grace: float) -> list[int]:
    """Close every nanny of ``cluster``, giving its worker ``grace`` seconds to close; the
    pids of the workers killed once that was over."""
    processes = []
    for nanny in list(cluster.workers.values()):
        process = getattr(getattr(nanny, "process", None), "process", None)
        if process is not None:
            processes.append(process)
    # (a nanny waits 0.8 x its timeout for its worker to close, then kills it)
    closes = [
        nanny.close(timeout=grace / 0.8, reason="daskscore-cluster-stop")
        for nanny in list(cluster.workers.values())
        if hasattr(nanny, "close")
    ]
    await asyncio.gather(*closes, return_exceptions=True)
    return [p.pid for p in processes if p.exitcode == -signal.SIGKILL]


def main(argv: list[str] | None = None) -> int:
    """The server process (:data:`daskscore.cluster.warm.SERVER_MAIN`): ``--state PATH
    --workers N [--dashboard] [--resources ...]``."""
    parser = argparse.ArgumentParser(prog="daskscore-warm-cluster")
    parser.add_argument("--state", required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--dashboard", action="store_true")
    parser.add_argument("--resources", default=None)
    args = parser.parse_args(argv)
    return serve(Path(args.state), args.workers, args.dashboard, parse_resources(args.resources))
