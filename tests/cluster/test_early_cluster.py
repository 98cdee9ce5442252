"""The cluster that starts while the driver plans (:class:`daskscore.cluster.local.EarlyCluster`),
interrupted by Ctrl-C while it starts: closed once its start has ended, never during it.

The Ctrl-C is a real SIGINT to the main thread, so the scenario runs in a process of its own:
an interrupted wait in the test process itself could leave it in a state later tests see."""

from __future__ import annotations

import subprocess
import sys

SCENARIO = """
import contextlib, signal, threading, time
from daskscore.cluster.local import EarlyCluster

events = []
release = threading.Event()

@contextlib.contextmanager
def slow_cluster():
    events.append("start")
    release.wait(10)  # the workers booting
    events.append("started")
    try:
        yield "handle"
    finally:
        events.append("closed")

early = EarlyCluster(slow_cluster())
main = threading.main_thread().ident

def ctrl_c_then_let_it_start():
    time.sleep(0.3)
    signal.pthread_kill(main, signal.SIGINT)  # Ctrl-C: a real signal, a blocking wait ends
    time.sleep(0.5)
    release.set()

threading.Thread(target=ctrl_c_then_let_it_start, daemon=True).start()
try:
    with early:
        print("entered")  # (never reached)
except KeyboardInterrupt:
    print("interrupted")
print(" ".join(events))
"""


def test_ctrl_c_while_the_cluster_starts_closes_it_after_its_start() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCENARIO], capture_output=True, text=True, timeout=60, check=False
    )
    # Python 3.11's Thread.join, interrupted, returned early the next time: the cluster was
    # closed while it started ("generator already executing", an internal error)
    assert proc.stdout.split("\n")[:2] == ["interrupted", "start started closed"], (
        proc.stdout + proc.stderr
    )
