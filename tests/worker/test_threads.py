"""Intra-op threads of an embedded cluster's workers: capped at cores // workers, unless the
deployment or the script chose their own."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import cli, make_job, show

from daskscore.worker.threads import chosen_threads, cpu_count

#: torch is imported at the top: the fork server preloads it, and every worker inherits it
#: loaded (the case where the cap is set through torch itself, after init())
REPORTS_THREADS = """
import os, torch

def init():
    if os.environ.get("SET_IN_INIT"):
        torch.set_num_threads(1)

def run(mini_batch):
    return [f"{os.path.basename(p)} {torch.get_num_threads()}" for p in mini_batch]
"""


@pytest.mark.parametrize(
    ("env", "workers", "threads"),
    [
        ({"OMP_NUM_THREADS": "1"}, 1, 1),
        ({"SET_IN_INIT": "1"}, 1, 1),
        ({}, 2, max(1, cpu_count() // 2)),
    ],
    ids=["deployment", "init", "cap"],
)
def test_the_scripts_own_thread_count_is_kept(
    tmp_path: Path, env: dict[str, str], workers: int, threads: int
) -> None:
    """One worker on a machine of several cores: the cap would be every core; the script's
    one thread (set by the deployment's OMP_NUM_THREADS, or by init()) holds instead.  A
    script that chose nothing gets the cap."""
    pytest.importorskip("torch")
    if cpu_count() < 2:
        pytest.skip("one core: the cap is one thread too")
    dep, inputs, out = make_job(tmp_path, REPORTS_THREADS, n_files=2, env=env)

    proc = cli(dep, inputs, out, "--workers", str(workers))

    assert proc.returncode == 0, show(proc)
    rows = (out / "predictions.csv").read_text().splitlines()
    assert {row.split()[1] for row in rows} == {str(threads)}, rows


def test_the_deployments_thread_variables_are_read_in_order() -> None:
    assert chosen_threads({"OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "3"}) == 3
    assert chosen_threads({"OMP_NUM_THREADS": "2"}, ("OMP_NUM_THREADS",)) == 2
    assert chosen_threads({"OMP_NUM_THREADS": "auto", "MKL_NUM_THREADS": "0"}) is None
