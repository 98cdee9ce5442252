"""The embedded cluster: a LocalCluster sized for scoring, and connecting to an existing one.

Like ``LocalCluster.__init__`` itself, this only turns friendly arguments (a number of worker
processes) into LocalCluster's, then delegates.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import dask
from distributed import Client, LocalCluster

#: Environment variables that cap the intra-op threads of numpy's BLAS, OpenMP (torch) and
#: friends.  Set in each worker process before it starts, so that workers × threads ≤ cores:
#: two processes each running a multi-threaded library on two cores run 4x slower.
THREAD_ENV_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)
DASHBOARD_PORT = 8787
#: Dask's nannies set MALLOC_TRIM_THRESHOLD_=65536 in workers to fight fragmentation in
#: long-lived ETL workers.  Setting any glibc malloc variable also switches off glibc's
#: dynamic mmap threshold, so every buffer of 128 KiB or more (numpy arrays, torch
#: activations) is mmap'ed and unmapped again: measured 1.3x slower numpy/torch scoring.
#: Scoring workers live for one job; glibc's defaults serve them better.
NANNY_ENV_UNSET = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}


def cpu_count() -> int:
    """Cores this process may use (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def intra_op_threads(workers: int) -> int:
    """Threads each worker's numerical libraries may use: cores // workers, at least 1."""
    return max(1, cpu_count() // max(1, workers))


def _free_port(port: int) -> int:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return 0
    return port


def dashboard_available() -> bool:
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return False
    return True


def dashboard_link(client: Client) -> str | None:
    """The dashboard link of a running scheduler, or None when it serves no dashboard."""
    import urllib.request

    try:
        link = client.dashboard_link
        with urllib.request.urlopen(link, timeout=2) as response:  # noqa: S310 - our own URL
            return link if response.status == 200 else None
    except Exception:  # noqa: BLE001 - no dashboard there (or no bokeh): no link
        return None


@dataclass
class ClusterHandle:
    """A client, and the cluster daskscore started for it (``None`` for an existing one)."""

    client: Client
    cluster: LocalCluster | None
    dashboard_link: str | None

    @property
    def workers(self) -> int:
        return len(self.client.scheduler_info(n_workers=-1)["workers"])


@contextlib.contextmanager
def local_cluster(
    workers: int, *, dashboard: bool = True, **kwargs: Any
) -> Iterator[ClusterHandle]:
    """Start a LocalCluster of ``workers`` single-threaded processes on loopback.

    Intra-op threads are capped per worker; the dashboard (if bokeh is installed) listens on
    127.0.0.1 only.  Worker and scheduler logs go to the ``distributed`` logger, not to stderr.
    """
    threads = intra_op_threads(workers)
    env = {name: str(threads) for name in THREAD_ENV_VARS}
    with_dashboard = dashboard and dashboard_available()
    # The scheduler always serves HTTP (health, metrics); bind it to loopback, on 8787 when
    # that is free and the dashboard is wanted, else on any free port, without a warning.
    port = _free_port(DASHBOARD_PORT) if with_dashboard else 0
    with warnings.catch_warnings(), dask.config.set(NANNY_ENV_UNSET):
        # another job may take 8787 between our check and the bind; Dask then picks a free
        # port itself, and the link below is the real one
        warnings.filterwarnings("ignore", message=r"Port \d+ is already in use")
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=f"127.0.0.1:{port}",
            scheduler_kwargs={"dashboard": with_dashboard},
            silence_logs=logging.CRITICAL,
            env=env,
            **kwargs,
        )
    client = Client(cluster, set_as_default=False)
    try:
        yield ClusterHandle(client, cluster, cluster.dashboard_link if with_dashboard else None)
    finally:
        client.close()
        cluster.close()


@contextlib.contextmanager
def existing_cluster(address: str) -> Iterator[ClusterHandle]:
    """Connect to a running scheduler at ``address``."""
    client = Client(address, set_as_default=False)
    try:
        yield ClusterHandle(client, None, dashboard_link(client))
    finally:
        client.close()
