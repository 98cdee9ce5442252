"""A ``TMPDIR`` too long for a socket path: the fork server's socket goes into ``/tmp``.

On Python 3.11 ``multiprocessing`` puts the fork server's AF_UNIX socket under ``TMPDIR``
(``<TMPDIR>/pymp-XXXXXXXX/listener-XXXXXXXX``); past 107 bytes the bind failed and the job with
it ("internal error: OSError: AF_UNIX path too long") before anything ran.  A real command,
its own embedded cluster."""

from __future__ import annotations

from pathlib import Path

from conftest import run_cli
from helpers import cli_args, make_job, show, summary_of

SCRIPT = """
    import os

    def run(mini_batch):
        return [os.path.basename(p) for p in mini_batch]
"""


def test_a_job_runs_with_a_tmpdir_too_long_for_a_socket(tmp_path: Path) -> None:
    dep, inputs, out = make_job(tmp_path, SCRIPT, n_files=4, settings={"mini_batch_size": 2})
    long = tmp_path / ("t" * 60) / ("u" * 60)
    long.mkdir(parents=True)
    assert len(str(long)) > 107
    proc = run_cli(*cli_args(dep, inputs, out), env={"TMPDIR": str(long)})
    assert proc.returncode == 0, show(proc)
    assert summary_of(out)["succeeded_items"] == 4
    assert (out / "predictions.csv").read_text().split() == [f"f{i:04d}.csv" for i in range(4)]
