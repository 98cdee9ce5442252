"""A worker process that dies in run() is named by how it ended (on the embedded cluster,
whose nannies say it): its exit code, or the signal that killed it."""

from __future__ import annotations

from pathlib import Path

from helpers import cli, make_job, show, summary_of

SCRIPT = """
import ctypes, os

def init():
    pass

def run(mini_batch):
    names = [os.path.basename(p) for p in mini_batch]
    if "f0001.csv" in names:
        os._exit(7)
    if "f0003.csv" in names:
        ctypes.string_at(0)  # a crash in native code
    return names
"""


def test_a_death_in_run_names_its_exit_code_or_signal(tmp_path: Path) -> None:
    dep, inputs, out = make_job(
        tmp_path,
        SCRIPT,
        n_files=5,
        settings={"mini_batch_size": 1, "retry_settings": {"max_retries": 0}},
    )

    proc = cli(dep, inputs, out)

    assert proc.returncode == 0, show(proc)  # (error_threshold -1: the job completes)
    errors = {f["mini_batch_id"]: f["error"] for f in summary_of(out)["failures"]}
    assert set(errors) == {1, 3}
    assert "died during run(): it exited with code 7" in errors[1], errors[1]
    assert "os._exit(7)" in errors[1]
    assert "killed by signal SIGSEGV" in errors[3] and "native code" in errors[3], errors[3]
    assert (out / "predictions.csv").read_text().split() == ["f0000.csv", "f0002.csv", "f0004.csv"]
