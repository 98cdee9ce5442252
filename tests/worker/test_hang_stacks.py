"""A ``run()`` stopped for its timeout leaves the stack of the hung call: every thread of its
process in ``logs/user/error/<worker>.txt``, and the ``run()`` thread's frames of the code folder
(file, line, function, source line) in the try's error in ``job_summary.json`` and
``failed_items.csv``.

Both ways a timeout is enforced: the in-process watchdog (``time.sleep`` lets it have the GIL)
and the worker's nanny (``ctypes.PyDLL(None).sleep`` keeps the GIL, so only the worker's
``faulthandler`` timer, a C thread, can dump the stack), on a shared disk (the ledger carries
the text) and shipped (the scheduler's note carries it; the killed worker's error log stays in
its own folder).  Real ``daskscore run`` processes.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import cli, make_job, show, summary_of

from daskscore.io.ledger import LedgerWriter, make_staging, read_ledger
from daskscore.worker import stacks

N_FILES, SIZE, TIMEOUT_S = 6, 2, 3

SCRIPT = """\
import ctypes
import os
import time
from pathlib import Path


def stuck():
    if os.environ["HANG"] == "ctypes":
        ctypes.PyDLL(None).sleep(100)
    time.sleep(100)


def run(mini_batch):
    if any(Path(p).name == "f0002.csv" for p in mini_batch):
        stuck()
    return [Path(p).name for p in mini_batch]
"""
_LINES = SCRIPT.splitlines()
#: the line of each hanging call in SCRIPT, and of the call of stuck() in run()
LINE = {
    "ctypes": 1 + next(i for i, t in enumerate(_LINES) if "PyDLL" in t),
    "sleep": 1 + next(i for i, t in enumerate(_LINES) if "time.sleep(100)" in t),
}
CALL = 1 + next(i for i, t in enumerate(_LINES) if t.strip() == "stuck()")


def _job(tmp_path: Path, hang: str) -> tuple[Path, Path, Path]:
    return make_job(
        tmp_path,
        SCRIPT,
        n_files=N_FILES,
        settings={
            "mini_batch_size": SIZE,
            "retry_settings": {"max_retries": 0, "timeout": TIMEOUT_S},
        },
        env={"HANG": hang},
    )


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    "hang,transport",
    [("sleep", "shared"), ("ctypes", "shared"), ("sleep", "shipped"), ("ctypes", "shipped")],
)
def test_the_stack_of_a_timed_out_run_is_in_the_logs_and_the_summary(
    tmp_path: Path, hang: str, transport: str
) -> None:
    dep, inputs, out = _job(tmp_path, hang)
    extra = ["--no-shared-filesystem"] if transport == "shipped" else []
    proc = cli(dep, inputs, out, *extra, timeout=200)
    assert proc.returncode == 0, show(proc)
    line = LINE[hang]
    source = SCRIPT.splitlines()[line - 1].strip()

    (failure,) = summary_of(out)["failures"]
    assert failure["mini_batch_id"] == 1 and failure["status"] == "RUN_TIMEOUT"
    error = failure["error"]
    script = str(
        (dep.parent / "code" / "score.py").resolve()
    )  # the code folder as the user knows it
    assert f'File "{script}", line {line}, in stuck\n    {source}' in error, error
    assert f'File "{script}", line {CALL}, in run\n    stuck()' in error, error
    last = error.splitlines()[-1]
    assert f"in stuck (score.py, line {line}: {source})" in last, error
    with open(out / "failed_items.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["error"] for r in rows} == {last}

    if transport == "shipped":
        return  # (the error log was the killed worker's own, in its own folder)
    errors = "".join(p.read_text() for p in (out / "logs" / "user" / "error").glob("*.txt"))
    assert "Every thread of the process then:" in errors, errors
    dump = errors.split("Every thread of the process then:", 1)[1]
    assert f'File "{script}", line {line} in stuck' in dump, errors  # faulthandler's form
    assert "Thread 0x" in dump and "in run_task" in dump, errors  # every thread, ours too


def test_a_dump_is_read_back_as_the_run_threads_frames(tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "score.py").write_text("import time\n\ndef stuck():\n    time.sleep(100)\n")
    dump = (
        "Thread 0x00000000000000aa (most recent call first):\n"
        '  File "/usr/lib/python3.11/threading.py", line 331 in wait\n\n'
        "Thread 0x00000000000000bb (most recent call first):\n"
        f'  File "{code}/score.py", line 4 in stuck\n'
        f'  File "{code}/score.py", line 9 in run\n'
        '  File "/site/daskscore/worker/task.py", line 194 in _call_run\n'
    )
    assert stacks.run_frames(dump, 0xBB, str(code)) == [
        (f"{code}/score.py", 9, "run"),
        (f"{code}/score.py", 4, "stuck"),
    ]
    # the thread unknown: the thread with frames in the code folder
    assert stacks.run_frames(dump, None, str(code))[-1][2] == "stuck"
    error = stacks.timeout_error(dump, 0xBB, str(code), 3)
    assert error.splitlines()[-1].startswith(
        "run() exceeded retry_settings.timeout (3 s) in stuck (score.py, line 4: time.sleep(100))"
    )
    assert stacks.timeout_error("", 0xBB, str(code), 3) == ""


TIMER_SCRIPT = """
import sys, threading, time
from pathlib import Path
from daskscore.worker import stacks

dump = stacks.StackDump(Path(sys.argv[1]))
release = threading.Event()

def hung_here():
    release.wait(30)

worker = threading.Thread(target=hung_here)
worker.start()
try:
    dump.arm(0.1)  # fires 0.1 + DUMP_AFTER_S later
    deadline = time.monotonic() + 20
    while "hung_here" not in stacks.read_dump(dump.path) and time.monotonic() < deadline:
        time.sleep(0.1)
    text = stacks.read_dump(dump.path)
    assert f"line {hung_here.__code__.co_firstlineno + 1} in hung_here" in text, text
    assert not text.startswith("Timeout")
    dump.arm(0.1)  # fired already: armed again, the file emptied
    assert stacks.read_dump(dump.path) == ""
    dump.disarm()
    time.sleep(0.1 + stacks.DUMP_AFTER_S + 0.5)
    assert stacks.read_dump(dump.path) == ""
finally:
    release.set()
    worker.join()
    dump.close()
assert not dump.path.exists()
print("ok")
"""


def test_the_timer_dumps_a_thread_that_keeps_running_and_not_after_disarm(
    tmp_path: Path,
) -> None:
    """In a process of its own, as in a worker: ``faulthandler``'s timer is one per process,
    and the test runner's process has threads of its own that its dump would walk."""
    proc = subprocess.run(
        [sys.executable, "-c", TIMER_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout + proc.stderr


def test_a_timeout_line_carries_its_error_through_the_ledger(tmp_path: Path) -> None:
    make_staging(tmp_path)
    writer = LedgerWriter(tmp_path, "r01a000001")
    writer.started(3, 1, "worker-0", 12.0)
    error = 'run() exceeded ...\n  File "x.py", line 2, in stuck\nrun() timed out "quoted"'
    writer.timed_out(3, error)
    writer.close()
    state = read_ledger(tmp_path, "r01a000001")
    assert state.running == (3, 1) and state.timed_out and state.error == error
    line = (tmp_path / "ledger" / "r01a000001.log").read_text().splitlines()[-1]
    assert line == f"T 3 {json.dumps(error)}"  # one line, one write
