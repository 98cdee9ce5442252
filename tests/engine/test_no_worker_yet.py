"""A cluster given with ``client=`` that has no worker yet (it scales up as the job starts):
the job waits for one, saying so, and then asks the workers whether they see the driver's
disk.  It used to ask nobody, conclude that they do not, and ship a job to workers that
shared the disk; with no worker ever, it waited without a word."""

from __future__ import annotations

import threading
from pathlib import Path

from distributed import Client, LocalCluster
from helpers import make_job

import daskscore


def test_a_job_waits_for_a_first_worker_then_finds_the_shared_disk(tmp_path: Path) -> None:
    script = "import os\ndef run(mb):\n    return [os.path.basename(p) for p in mb]\n"
    dep, inputs, out = make_job(tmp_path, script, n_files=4, settings={"mini_batch_size": 2})
    with (
        LocalCluster(n_workers=0, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        later = threading.Timer(2.0, lambda: cluster.scale(1))
        later.start()
        try:
            result = daskscore.run(dep, inputs, out, client=client, progress=False)
        finally:
            later.cancel()
    assert result.status == "Completed" and result.succeeded_items == 4
    log = (out / "logs" / "sys" / "daskscore.txt").read_text()
    assert "the cluster has no worker yet: waiting for one to join" in log, log
    assert "workers share the driver's disk" in log, log
