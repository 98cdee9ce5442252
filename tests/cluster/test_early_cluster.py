"""The cluster that starts while the driver plans (:class:`daskscore.cluster.local.EarlyCluster`),
interrupted by Ctrl-C while it starts: closed once its start has ended, never during it."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from daskscore.cluster.local import EarlyCluster


def test_ctrl_c_while_the_cluster_starts_closes_it_after_its_start() -> None:
    events: list[str] = []
    release = threading.Event()

    @contextlib.contextmanager
    def slow_cluster() -> Iterator[str]:
        events.append("start")
        release.wait(10)  # the workers booting
        events.append("started")
        try:
            yield "handle"
        finally:
            events.append("closed")

    early = EarlyCluster(slow_cluster())

    main = threading.main_thread().ident
    assert main is not None and threading.get_ident() == main

    def ctrl_c_then_let_it_start() -> None:
        time.sleep(0.3)
        signal.pthread_kill(main, signal.SIGINT)  # Ctrl-C: a real signal, a blocking wait ends
        time.sleep(0.5)
        release.set()

    threading.Thread(target=ctrl_c_then_let_it_start, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        with early:
            pass  # (never reached)
    # Python 3.11's Thread.join, interrupted, returned early the next time: the cluster was
    # closed while it started ("generator already executing", an internal error)
    assert events == ["start", "started", "closed"]
