"""Helpers shared by the test modules (import them with ``from helpers import ...``): reading a
job's summary and per-try report, writing a job (deployment and inputs) and running it with
the CLI, and what assertion messages show (a finished process, the tail of a log file).

Fixtures and the deployment writer are in ``conftest.py``; this module holds plain functions.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

# ``import conftest``, not ``from conftest import ...``: conftest imports storage_emulators,
# which imports this module while conftest is still being imported.
import conftest

if TYPE_CHECKING:
    import pandas as pd


def summary_of(out: Path) -> dict[str, Any]:
    """A finished job's ``job_summary.json`` (``out``: its output folder)."""
    return json.loads((out / "job_summary.json").read_text(encoding="utf-8"))


def processed_of(out: Path) -> pd.DataFrame:
    """A finished job's ``processed_mini-batches.csv``: one row per try of a mini-batch."""
    import pandas as pd  # not at the top: conftest imports this module in every session

    return pd.read_csv(out / "logs" / "sys" / "job_report" / "processed_mini-batches.csv")


def show(proc: subprocess.CompletedProcess[str]) -> str:
    """A finished CLI process, for an assertion message: exit code, stdout and stderr."""
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


def make_job(
    root: Path,
    script: str,
    *,
    n_files: int,
    settings: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> tuple[Path, Path, Path]:
    """Write a job under ``root``: ``deploy/`` (``script``, ``settings``), ``n_files`` inputs
    in ``in/``; return (deployment.yml, input folder, output folder ``out``, not yet made).

    ``settings`` are merged over ``error_threshold: -1`` (a job runs every mini-batch unless
    the test says otherwise); ``env`` goes into ``environment_variables``, under the ones
    ``settings`` names.
    """
    merged: dict[str, Any] = {"error_threshold": -1, **(settings or {})}
    merged["environment_variables"] = {
        **(env or {}),
        **merged.get("environment_variables", {}),
    }
    dep = conftest.write_deployment(root / "deploy", script, settings=merged)
    inputs = conftest.write_inputs(root / "in", n_files)
    return dep, inputs, root / "out"


def cli_args(dep: Path, inputs: Path, out: Path, *extra: str) -> list[str]:
    """``daskscore run`` of a job on 2 workers, with no progress bar and no dashboard."""
    return [
        "run",
        str(dep),
        "--input",
        str(inputs),
        "--output",
        str(out),
        "--workers",
        "2",
        "--no-progress",
        "--no-dashboard",
        *extra,
    ]


def cli(
    dep: Path, inputs: Path, out: Path, *extra: str, timeout: float = 150
) -> subprocess.CompletedProcess[str]:
    """Run :func:`cli_args` in a subprocess (its own cluster); return the completed process."""
    return conftest.run_cli(*cli_args(dep, inputs, out, *extra), timeout=timeout)


def tail(path: Path, *, lines: int | None = None, chars: int | None = None) -> str:
    """The end of a log file — its last ``lines`` lines, or its last ``chars`` characters —
    for an assertion message; a note in parentheses when it cannot be read."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"({exc})"
    if lines is not None:
        text = "\n".join(text.splitlines()[-lines:])
    if chars is not None:
        text = text[-chars:]
    return text


def worker_job(tmp_path: Path, **job: Any) -> Any:
    """A ``WorkerJob`` for running tasks in this process: ``code/score.py`` (``run`` returns
    its mini-batch), a fresh staging folder, output and logs under ``tmp_path``; ``job``: more
    of its fields."""
    import uuid

    from daskscore.io.ledger import make_staging
    from daskscore.protocol import WorkerJob

    code, staging = tmp_path / "code", tmp_path / "staging"
    code.mkdir(parents=True, exist_ok=True)
    (code / "score.py").write_text("def run(mb):\n    return mb\n")
    make_staging(staging)
    return WorkerJob(
        job_id=f"j{uuid.uuid4().hex[:8]}",
        code=str(code),
        script=str(code / "score.py"),
        model_path=None,
        output=str(tmp_path / "out"),
        logs=str(tmp_path / "logs"),
        staging=str(staging),
        **job,
    )


def start_cli(*args: str, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """``python -m daskscore ARGS`` started in its own session (to be killed whole with
    :func:`kill_tree`), its output discarded."""
    import sys

    return subprocess.Popen(
        [sys.executable, "-m", "daskscore", *args],
        cwd=cwd or conftest.REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process of :func:`start_cli` and every process it started, as a power cut
    would; reap it."""
    import os
    import signal

    import psutil

    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    for p in family:
        with contextlib.suppress(psutil.Error):
            p.kill()


def wait_until(condition: Any, proc: subprocess.Popen[bytes], what: str, timeout: float = 60):
    """Poll ``condition()`` until it holds; fail naming ``what`` when ``proc`` ends first or
    ``timeout`` seconds pass."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the job ended before {what}"
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def sigterm_when(
    ready: Any, *argv: str, env: dict[str, str] | None = None, sig: int = signal.SIGTERM
) -> tuple[int, str]:
    """``daskscore ARGV`` in a subprocess (``env``: its whole environment), sent SIGTERM (or
    ``sig``: SIGINT, a Ctrl-C) once ``ready()``; its exit status and standard error."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "daskscore", *argv],
        cwd=conftest.REPO,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while not ready():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.05)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    return proc.returncode, err
