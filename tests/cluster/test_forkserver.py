"""The embedded cluster's fork server, started from a process that has threads already (a
notebook's kernel, a driver script with a client): Python's own server, which imports the
scoring script's libraries ahead of the workers too, as the command's forked server does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import write_deployment, write_inputs

#: What the worker had imported before the script's own imports ran, and whether the
#: preload list's variable reached it.
SCRIPT = """
    import os
    import sys

    HAD_PIL = "PIL" in sys.modules
    from PIL import Image  # noqa: F401 - a preloadable library

    def run(mini_batch):
        leaked = "DASKSCORE_FORKSERVER_PRELOAD" in os.environ
        return [f"{os.path.basename(p)} {HAD_PIL} {leaked}" for p in mini_batch]
"""

#: A driver with a thread running before daskscore starts its cluster, as in a notebook.
DRIVER = """
import sys
import threading

threading.Thread(target=threading.Event().wait, daemon=True).start()
import daskscore

daskscore.run(sys.argv[1], sys.argv[2], sys.argv[3], workers=2)
"""


def test_pythons_fork_server_imports_the_scripts_libraries(tmp_path: Path) -> None:
    dep = write_deployment(tmp_path / "dep", SCRIPT, settings={"mini_batch_size": 2})
    inputs = write_inputs(tmp_path / "in", 4)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, str(dep), str(inputs), str(out)],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "DASKSCORE_START_METHOD": "forkserver"},
    )
    assert proc.returncode == 0, proc.stderr
    rows = [line.split()[1:] for line in (out / "predictions.csv").read_text().splitlines()]
    assert rows == [["True", "False"]] * 4, "PIL came with the fork; nothing else leaked"
