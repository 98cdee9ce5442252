"""An ``init()`` that does not return: the job says where it is, and ``--init-timeout`` gives it
up with the stack where it waited (``daskscore.engine.slowinit``).

Real jobs: the ``daskscore`` command with its embedded cluster in a subprocess, and the same
command in this process where the first note's delay is shortened."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import cli, cli_args, make_job, show

from daskscore import cli as daskscore_cli
from daskscore.config.options import JobOptions
from daskscore.engine import slowinit
from daskscore.errors import UsageError

pytestmark = pytest.mark.timeout(240)

HANGS = """
import ctypes, os, time

def init():
    if os.environ["HANG"] == "sleep":
        time.sleep(300)  # waits on something that never comes
    else:
        ctypes.PyDLL(None).sleep(300)  # a C call that keeps the GIL

def run(mini_batch):
    return [os.path.basename(p) for p in mini_batch]
"""


@pytest.mark.parametrize("hang", ["sleep", "gil"])
def test_init_past_init_timeout_fails_the_job_showing_where_it_waited(
    tmp_path: Path, hang: str
) -> None:
    dep, inputs, out = make_job(tmp_path, HANGS, n_files=4, env={"HANG": hang})

    proc = cli(dep, inputs, out, "--init-timeout", "3", timeout=150)

    assert proc.returncode == 1, show(proc)
    err = proc.stderr
    assert "init() of the scoring script score.py did not return within --init-timeout (3 s)" in (
        err
    ), show(proc)
    if hang == "sleep":  # the workers say where init() is: the user's own line
        assert "on worker-0, worker-1 (at score.py, line 6, in init: time.sleep(300)" in err, err
        stack = f'File "{dep.parent / "code" / "score.py"}", line 6, in init'
        assert stack in err and "Stack of init() on worker-0 when it was given up" in err, err
    else:  # a worker whose init() keeps the GIL cannot say
        assert "holds the GIL" in err, show(proc)
    assert "Traceback" not in err, show(proc)  # (no traceback of daskscore's own)
    summary = json.loads((out / "job_summary.json").read_text())
    assert summary["status"] == "Failed"
    assert "did not return within --init-timeout" in json.dumps(summary)


SLOW = """
import os, time

def init():
    time.sleep(3)

def run(mini_batch):
    return [os.path.basename(p) for p in mini_batch]
"""


def test_a_slow_init_is_noted_with_where_it_is_and_the_job_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(slowinit, "SLOW_INIT_S", 1.0)
    dep, inputs, out = make_job(tmp_path, SLOW, n_files=4)

    code = daskscore_cli.main(cli_args(dep, inputs, out))

    err = capsys.readouterr().err
    assert code == 0, err
    assert (out / "predictions.csv").read_text().split() == [f"f{i:04d}.csv" for i in range(4)]
    log = (out / "logs" / "sys" / "daskscore.txt").read_text()
    for text in (err, log):
        assert "the scoring script has been installing for 1 s" in text, text
        assert (
            "worker-0 and worker-1 are in init() (at score.py, line 5, in init: time.sleep(3))"
            in (text)
        )
        assert "--init-timeout SECONDS gives it up" in text, text


@pytest.mark.parametrize("value", [0, -1.5, float("nan"), "30"])
def test_init_timeout_must_be_a_number_of_seconds_above_0(value: object) -> None:
    with pytest.raises(UsageError, match="init_timeout="):
        JobOptions(init_timeout=value)  # type: ignore[arg-type]


def test_open_session_gives_up_init_past_init_timeout(tmp_path: Path) -> None:
    """The lazy-frame API takes the same limit; its cluster's hung worker is restarted, and
    the same client scores the next session."""
    from distributed import Client, LocalCluster

    import daskscore
    from daskscore.errors import InitFailed

    dep, inputs, _ = make_job(tmp_path, HANGS, n_files=2, env={"HANG": "sleep"})
    fine, _, _ = make_job(tmp_path / "fine", SLOW.replace("time.sleep(3)", "pass"), n_files=1)
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        with pytest.raises(
            InitFailed, match=r"did not return within --init-timeout \(2 s\)"
        ) as info:
            daskscore.open_session(dep, inputs, client=client, init_timeout=2)
        assert "score.py, line 6, in init: time.sleep(300)" in str(info.value)
        frame = daskscore.score(fine, inputs, client=client)
        assert sorted(frame["prediction"].compute()) == ["f0000.csv", "f0001.csv"]
