"""The driver-script example runs as documented: its own client and LocalCluster, then
``daskscore.run(..., client=client)`` and ``daskscore.score(..., client=client)`` on it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from helpers import summary_of

DRIVER = REPO / "configs" / "driver-script" / "driver.py"


def test_driver_script_scores_the_digits(tmp_path: Path) -> None:
    pytest.importorskip("torch")  # the example's CNN (the [torch] extra)
    out = tmp_path / "out"
    # run from another folder: the script finds the example from its own location
    proc = subprocess.run(
        [sys.executable, str(DRIVER), "--output", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    shown = f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    assert proc.returncode == 0, shown
    assert "Traceback" not in proc.stderr, shown

    assert "run(): Completed: 120 of 120 items succeeded, 0 failed" in proc.stdout, shown
    assert "score(): 120 rows" in proc.stdout, shown

    summary = summary_of(out)
    assert summary["status"] == "Completed"
    assert summary["succeeded_items"] == 120 and summary["failed_items"] == 0
    rows = (out / "predictions.csv").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 120
    assert [r.split(" ")[0] for r in rows] == sorted(
        p.name for p in (REPO / "configs" / "digits-cnn" / "sample-inputs").iterdir()
    )
