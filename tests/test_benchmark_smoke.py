"""The benchmark harness keeps working: ``benchmarks/run.py --quick`` (tiny sizes, one repeat).

Not a timing test: it checks that every method runs every workload and that daskscore's
output is byte-identical to the sequential loop's and the Pool's (the harness itself stops
on the first differing line), and that peak memory was sampled for the driver and the workers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow


def test_quick_benchmark_runs_every_method_with_identical_outputs(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "run.py"),
            "--quick",
            "--data-dir",
            str(tmp_path / "data"),
            "--runs-dir",
            str(tmp_path / "runs"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((tmp_path / "runs" / "results-quick.json").read_text())
    runs = results["runs"]
    by_workload: dict[str, dict[str, dict]] = {}
    for run in runs:
        assert run["rc"] == 0
        by_workload.setdefault(run["workload"], {})[run["method"]] = run
    assert set(by_workload) == {"W1", "W1L", "W2", "SCALING", "MEMORY", "SKEW"}
    for workload, methods in by_workload.items():
        assert {"seq", "pool", "pool-tuned", "daskscore"} <= set(methods), workload
        digests = {m["sha256"] for m in methods.values()}
        assert len(digests) == 1, f"{workload}: outputs differ between methods"
        assert methods["daskscore"]["lines"] > 0
        assert methods["daskscore"]["driver_peak_mb"] > 0
        # both workers found and sampled (results.json's "sampled" lists every process that
        # looked like one: in a loaded run the command's `uname -p` child, forked for Dask's
        # version report, once sat 0.65 s before its exec beside the fork server; the harness
        # leaves such copies out; at least two keeps this about finding the workers)
        assert methods["daskscore"]["workers_seen"] >= 2, (workload, methods["daskscore"])
        assert len(methods["daskscore"]["worker_peaks_mb"]) >= 2
        assert methods["daskscore"]["worker_peak_mb"] == max(
            methods["daskscore"]["worker_peaks_mb"]
        )
    assert by_workload["SCALING"]["daskscore-w1"]["workers_seen"] >= 1
    assert "| W1 " in proc.stdout and "daskscore / sequential" in proc.stdout
