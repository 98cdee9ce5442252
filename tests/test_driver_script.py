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


@pytest.mark.parametrize("threads", [False, True], ids=["forked-driver", "python-forkserver"])
def test_the_code_folders_module_wins_over_the_drivers_own_of_that_name(
    tmp_path: Path, threads: bool
) -> None:
    """A driver script with a module of its own named like one of the code folder's (both
    have ``utils.py``): the scoring script imports the code folder's, as a fresh process
    would.  The embedded cluster's workers are forked from the driver (no thread yet: they
    have the driver's ``utils`` already) or from Python's fork server.  Afterwards the driver
    still has its own."""
    code = tmp_path / "code"
    (code / "tools").mkdir(parents=True)
    (code / "utils.py").write_text('WHO = "code-folder"\n')
    (code / "tools" / "__init__.py").write_text("")
    (code / "tools" / "names.py").write_text('WHO = "code-folder-package"\n')
    (code / "score.py").write_text(
        "import utils\nimport tools.names\n\ndef init():\n    pass\n\n"
        "def run(mini_batch):\n"
        "    return [f'{utils.WHO}/{tools.names.WHO}' for _ in mini_batch]\n"
    )
    (tmp_path / "utils.py").write_text('WHO = "driver"\n')
    (tmp_path / "tools.py").write_text('WHO = "driver"\n')
    (tmp_path / "deployment.yml").write_text(
        "code_configuration:\n  code: code\n  scoring_script: score.py\n"
        "settings:\n  mini_batch_size: 2\n  max_concurrency_per_instance: 2\n"
    )
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for i in range(4):
        (inputs / f"f{i}.txt").write_text(str(i))
    (tmp_path / "driver.py").write_text(
        "import threading, utils, tools\nimport daskscore\n\n"
        "if __name__ == '__main__':\n"
        + ("    threading.Thread(target=threading.Event().wait, daemon=True).start()\n" * threads)
        + "    result = daskscore.run('deployment.yml', 'inputs', 'out', workers=2)\n"
        "    print(result.status, utils.WHO, tools.WHO)\n"
    )
    proc = subprocess.run(
        [sys.executable, "driver.py"], cwd=tmp_path, capture_output=True, text=True, timeout=180
    )
    shown = f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    assert proc.returncode == 0, shown
    assert proc.stdout.strip().splitlines()[-1] == "Completed driver driver", shown
    rows = (tmp_path / "out" / "predictions.csv").read_text().splitlines()
    assert rows == ["code-folder/code-folder-package"] * 4


@pytest.mark.timeout(240)
@pytest.mark.parametrize("threads", [False, True], ids=["forked-driver", "python-forkserver"])
def test_a_driver_script_without_a_main_guard_runs_once(tmp_path: Path, threads: bool) -> None:
    """The README's snippet saved as a file: ``daskscore.run`` at the script's top level, no
    ``if __name__ == "__main__":``. A worker process never imports it: before, Python's fork
    server (the script has a thread) and each worker a nanny restarted after a timeout (Dask's
    spawn) ran the script again, and its job, in the worker: the job failed to start, or
    restarted workers for ever."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "score.py").write_text(
        "import os, time\n\ndef init():\n    pass\n\n"
        "def run(mini_batch):\n"
        "    for path in mini_batch:\n"
        "        marker = path + '.hung'\n"
        "        if path.endswith('slow.txt') and not os.path.exists(marker):\n"
        "            open(marker, 'w').close()\n"
        "            time.sleep(600)  # past the timeout once: the nanny restarts the worker\n"
        "    return [os.path.basename(p) for p in mini_batch]\n"
    )
    (tmp_path / "deployment.yml").write_text(
        "code_configuration:\n  code: code\n  scoring_script: score.py\n"
        "settings:\n  mini_batch_size: 1\n  max_concurrency_per_instance: 2\n"
        "  retry_settings: {max_retries: 1, timeout: 2}\n"
    )
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for name in ("a.txt", "b.txt", "slow.txt"):
        (inputs / name).write_text(name)
    (tmp_path / "driver.py").write_text(
        "import os, threading\nimport daskscore\n\n"
        "with open('ran.log', 'a') as fh:\n    fh.write(f'{os.getpid()}\\n')\n"
        + ("threading.Thread(target=threading.Event().wait, daemon=True).start()\n" * threads)
        + "result = daskscore.run('deployment.yml', 'inputs', 'out', workers=2)\n"
        "print(result.status, result.succeeded_items, result.failed_items)\n"
    )
    proc = subprocess.run(
        [sys.executable, "driver.py"], cwd=tmp_path, capture_output=True, text=True, timeout=200
    )
    shown = f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    assert proc.returncode == 0, shown
    assert proc.stdout.strip().splitlines()[-1] == "Completed 3 0", shown
    assert len((tmp_path / "ran.log").read_text().split()) == 1, shown
    summary = summary_of(tmp_path / "out")
    assert summary["status"] == "Completed" and summary["succeeded_items"] == 3
    assert (tmp_path / "inputs" / "slow.txt.hung").exists()  # (the restart did happen)
