"""An ``init()`` that kills its own worker process (``os._exit``, a signal) fails the job as an
``init()`` that raises does (§5 of the contract: the user sees why at once): ``InitFailed``,
exit code 1, the verdict and logs of a failed ``init()``, the staged folder kept so that
``--retry-failed`` runs the job once the script is fixed — with a message saying how the
process ended and what the script printed, and no Dask traceback on the user's screen.

Real jobs on real clusters: the CLI's embedded one (in a subprocess), and a caller's
LocalCluster (its nannies restart the dead workers; the job must not loop on them).
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import pytest
from helpers import cli, make_job, show, summary_of

import daskscore
from daskscore.cluster.local import local_cluster
from daskscore.worker.deaths import (
    describe_exit,
    exit_status,
    read_marks,
    unwatch_exits,
    watch_exits,
)

#: One row ``<file name> <sum of x>`` per input file; ``init()`` prints a line, then does
#: ``{death}`` (nothing, once the script is fixed).
SCRIPT = """\
import os
import signal
from pathlib import Path

import pandas as pd


def init():
    print("loading the model weights")  # the script's last words
{death}

def run(mini_batch):
    return [f"{{Path(p).name}} {{pd.read_csv(p)['x'].sum()}}" for p in mini_batch]
"""

EXITS = "    os._exit(3)\n"
SEGFAULTS = "    os.kill(os.getpid(), signal.SIGSEGV)\n"
FIXED = "    pass\n"


def death_job(tmp_path: Path, death: str, n_files: int = 6) -> tuple[Path, Path, Path]:
    return make_job(
        tmp_path,
        SCRIPT.format(death=death),
        n_files=n_files,
        settings={"mini_batch_size": 2, "retry_settings": {"max_retries": 1}},
    )


def fix_script(dep: Path) -> None:
    (dep.parent / "code" / "score.py").write_text(SCRIPT.format(death=FIXED), encoding="utf-8")


def expected_rows(n_files: int) -> list[str]:
    return [f"f{i:04d}.csv {2 * i + 0.5}" for i in range(n_files)]  # (conftest.write_inputs)


def check_failed_like_init(out: Path, how: str) -> dict:
    """The output folder of a job whose init() killed its process with ``how``."""
    s = summary_of(out)
    assert s["status"] == "Failed"
    assert s["succeeded_items"] == 0
    head = "init() of the scoring script score.py did not return: its worker process died"
    # (where the install mark of the process that died is not read back — seen on a loaded
    # machine, cause not found — the stage is not known: "init() (or its import)", and what
    # it printed is not shown; the verdict, the exit and the kept folder are the same)
    marked = s["init_error"].startswith(head)
    if not marked:
        head = head.replace("init() of", "init() (or its import) of")
    assert s["init_error"].startswith(f"{head} ({how})"), s["init_error"]
    assert s["reason"].startswith(f"{head} ({how})")
    if marked:
        assert "loading the model weights" in s["init_error"]  # what it printed before
    assert "without a Python exception" in s["init_error"]
    result = (out / "logs" / "job_result.txt").read_text()
    assert result.startswith("Job Failed: init() "), result
    assert "of the scoring script score.py" in result.splitlines()[0], result
    assert how in (out / "logs" / "job_error.txt").read_text()
    errors = [p.read_text() for p in (out / "logs" / "user" / "error").glob("*.txt")]
    assert any(head in text for text in errors), errors
    assert not (out / "predictions.csv").exists()
    # as after a raising init(): the staged folder kept for --retry-failed, nothing to resume
    assert (out / ".daskscore-kept").is_dir()
    assert not (out / ".daskscore").exists()
    return s


@pytest.mark.timeout(240)
def test_init_calling_os_exit_fails_the_job_with_its_exit_code_cli(tmp_path: Path) -> None:
    dep, inputs, out = death_job(tmp_path, EXITS)
    proc = cli(dep, inputs, out)
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr
    check_failed_like_init(out, "exit code 3")
    assert "Job Failed: init() of the scoring script score.py did not return" in err
    assert "it exited with code 3" in err
    assert "loading the model weights" in err
    for noise in ("Traceback", "distributed/", "CommClosedError", "internal error", "Future"):
        assert noise not in err, err

    fix_script(dep)  # the documented way on: fix the script, retry the failures
    again = cli(dep, inputs, out, "--retry-failed")
    assert again.returncode == 0, again.stderr
    assert summary_of(out)["status"] == "Completed"
    assert (out / "predictions.csv").read_text().splitlines() == expected_rows(6)
    assert not (out / ".daskscore-kept").exists()


@pytest.mark.timeout(240)
def test_init_killed_by_a_signal_raises_initfailed_on_a_callers_cluster(tmp_path: Path) -> None:
    dep, inputs, out = death_job(tmp_path, SEGFAULTS)
    with local_cluster(1, dashboard=False) as handle:
        with pytest.raises(daskscore.InitFailed) as info:
            daskscore.run(dep, inputs, out, client=handle.client, progress=False)
        exc = info.value
        assert exc.result.status == "Failed"
        assert "killed by signal SIGSEGV (11)" in exc.user_traceback
        assert "a crash in native code" in exc.user_traceback
        assert "distributed/" not in exc.user_traceback
        # "init()", or "init() (or its import)" where the mark of the process that died
        # could not be read: its nanny's restarted process races it on a loaded machine
        assert str(exc).startswith("Job Failed: init() ")
        assert "of the scoring script score.py did not return" in str(exc).splitlines()[0]
        check_failed_like_init(out, "killed by signal SIGSEGV")
        # the plugin is off the cluster: its nanny's new worker runs the next job
        fix_script(dep)
        result = daskscore.run(
            dep, inputs, out, client=handle.client, progress=False, retry_failed=True
        )
    assert result.status == "Completed"
    assert (out / "predictions.csv").read_text().splitlines() == expected_rows(6)


#: ``run()`` of the first mini-batch leaves a flag and kills its process; ``init()`` of the
#: worker its nanny restarts finds the flag and kills that one too, as long as it is there.
RESTART_SCRIPT = """\
import os
from pathlib import Path

import pandas as pd

FLAG = Path(os.environ["FLAG"])


def init():
    if FLAG.exists():
        print("the model is gone")
        os._exit(2)


def run(mini_batch):
    if any(Path(p).name == "f0000.csv" for p in mini_batch) and not FLAG.exists():
        FLAG.touch()
        os._exit(1)
    return [f"{Path(p).name} {pd.read_csv(p)['x'].sum()}" for p in mini_batch]
"""


def _restart_job(tmp_path: Path, script: str) -> tuple[Path, Path, Path]:
    """A job of 6 files, 2 a mini-batch, whose ``script`` is :data:`RESTART_SCRIPT`'s kind."""
    return make_job(
        tmp_path,
        script,
        n_files=6,
        settings={"mini_batch_size": 2, "retry_settings": {"max_retries": 2}},
        env={"FLAG": str(tmp_path / "flag")},
    )


@pytest.mark.timeout(240)
def test_a_restarted_worker_whose_init_kills_it_fails_the_job(tmp_path: Path) -> None:
    dep, inputs, out = _restart_job(tmp_path, RESTART_SCRIPT)
    with local_cluster(1, dashboard=False) as handle:
        with pytest.raises(daskscore.InitFailed) as info:
            daskscore.run(dep, inputs, out, client=handle.client, progress=False)
        assert "did not return: its worker process died (exit code 2)" in str(info.value)
        assert "the model is gone" in info.value.user_traceback
        assert summary_of(out)["status"] == "Failed"
        code = dep.parent / "code" / "score.py"  # the fix: init() no longer exits
        code.write_text(RESTART_SCRIPT.replace("os._exit(2)", "pass"), encoding="utf-8")
        handle.client.wait_for_workers(1, timeout=120)  # (its nanny's new worker)
        result = daskscore.run(
            dep, inputs, out, client=handle.client, progress=False, retry_failed=True
        )
    assert result.status == "Completed"
    assert (out / "predictions.csv").read_text().splitlines() == expected_rows(6)


@pytest.mark.timeout(240)
def test_an_init_failing_after_a_restart_keeps_what_was_scored(tmp_path: Path) -> None:
    """The job fails, and says how much was scored before; those rows are in the output,
    and --retry-failed runs the rest once the script is fixed."""
    script = RESTART_SCRIPT.replace('"f0000.csv"', '"f0004.csv"')
    script = script.replace(
        'print("the model is gone")\n        os._exit(2)', 'raise RuntimeError("the model is gone")'
    )
    assert "RuntimeError" in script and "f0004" in script
    dep, inputs, out = _restart_job(tmp_path, script)
    with local_cluster(1, dashboard=False) as handle:
        with pytest.raises(daskscore.InitFailed) as info:
            daskscore.run(dep, inputs, out, client=handle.client, progress=False)
        s = summary_of(out)
        scored = s["succeeded_items"]
        assert 0 < scored < 6, s
        assert f"started again during the job; {scored} of 6 items were scored" in s["reason"]
        assert "nothing was scored" not in str(info.value)
        assert (out / "predictions.csv").read_text().splitlines() == expected_rows(6)[:scored]
        code = dep.parent / "code" / "score.py"
        code.write_text(script.replace('raise RuntimeError("the model is gone")', "pass"))
        handle.client.wait_for_workers(1, timeout=120)
        result = daskscore.run(
            dep, inputs, out, client=handle.client, progress=False, retry_failed=True
        )
    assert result.status == "Completed"
    assert (out / "predictions.csv").read_text().splitlines() == expected_rows(6)


#: ``init()`` notes each call (its pid, a line of ``CALLS``), prints, then ends its process
#: with ``os._exit({code})``.
COUNTED = """\
import os


def init():
    with open(os.environ["CALLS"], "a") as fh:
        fh.write(f"{{os.getpid()}}\\n")
    print("loading the model weights", flush=True)
    os._exit({code})


def run(mini_batch):
    return mini_batch
"""


@pytest.mark.timeout(240)
@pytest.mark.parametrize("code", [3, 0])
def test_an_init_that_ends_its_process_is_not_run_again_and_again(
    tmp_path: Path, code: int
) -> None:
    """The plugin stayed on the scheduler until Dask's broadcast of it failed, and the job had
    asked the nannies how the process ended (nothing, for an exit with status 0): the nannies'
    restarted processes ran init() into the same death 5 to 60 times, and the error showed
    the same printed line from each of them."""
    calls = tmp_path / "calls.txt"
    dep, inputs, out = make_job(
        tmp_path, COUNTED.format(code=code), n_files=4, env={"CALLS": str(calls)}
    )
    proc = cli(dep, inputs, out)  # (2 workers)
    assert proc.returncode == 1, show(proc)
    ran = len(calls.read_text().splitlines())
    assert 1 <= ran <= 2 * 2, f"init() ran {ran} times on 2 workers\n{show(proc)}"
    error = summary_of(out)["init_error"]
    assert "did not return: its worker process died" in error, error
    assert error.count("loading the model weights") == 1, error
    if code:
        assert "(exit code 3)" in error and "it exited with code 3" in error, error
    else:
        assert "a process that exits with status 0" in error, error
    assert proc.stderr.count("loading the model weights") == 1, show(proc)


#: As :data:`RESTART_SCRIPT`, the restarted worker's ``init()`` ending it with status 0,
#: which its nanny does not log.
RESTART_EXITS_0 = RESTART_SCRIPT.replace("os._exit(2)", "os._exit(0)")


@pytest.mark.timeout(240)
def test_a_restarted_worker_whose_init_exits_with_status_0_fails_the_job(tmp_path: Path) -> None:
    dep, inputs, out = _restart_job(tmp_path, RESTART_EXITS_0)
    with local_cluster(1, dashboard=False) as handle:
        with pytest.raises(daskscore.InitFailed) as info:
            daskscore.run(dep, inputs, out, client=handle.client, progress=False)
    assert "did not return: its worker process died" in str(info.value)
    assert info.value.user_traceback.count("the model is gone") == 1, info.value.user_traceback


def test_exit_statuses_are_read_from_the_nannys_log_lines() -> None:
    nanny_log = logging.getLogger("distributed.nanny")
    watch_exits()
    try:
        nanny_log.info("Worker process %d exited with status %d", 5151, 3)
        nanny_log.info("Worker process %d was killed by signal %d", 5152, signal.SIGSEGV)
    finally:
        unwatch_exits()
    assert exit_status(5151) == 3
    assert exit_status(5152) == -signal.SIGSEGV
    assert describe_exit(3) == "exit code 3"
    assert describe_exit(-signal.SIGSEGV) == "killed by signal SIGSEGV (11)"
    assert describe_exit(-signal.SIGKILL, number=False) == "killed by signal SIGKILL"
    assert describe_exit(None) == ""


def test_a_mark_removed_while_the_marks_are_read_leaves_the_others(tmp_path: Path) -> None:
    """A restarted worker process removes its mark when its install returns; the mark of the
    process that died, read at that moment, must still be found (it names the stage, so the
    error says ``init()`` rather than ``init() (or its import)``)."""
    (tmp_path / "101.json").write_text('{"pid": 101, "stage": "init()"}', encoding="utf-8")
    # a name listed whose file is gone by the time it is read
    (tmp_path / "102.json").symlink_to(tmp_path / "removed.json")
    assert read_marks(tmp_path) == [{"pid": 101, "stage": "init()"}]


#: Job A's ``run()`` holds its worker (the one worker) until the test says, then kills it.
KILLER_SCRIPT = """\
import os
import time
from pathlib import Path

import pandas as pd

STARTED, GO = Path(os.environ["STARTED"]), Path(os.environ["GO"])


def run(mini_batch):
    if not GO.exists():
        STARTED.touch()
        while not GO.exists():
            time.sleep(0.05)
        os._exit(4)
    return [f"{Path(p).name} {pd.read_csv(p)['x'].sum()}" for p in mini_batch]
"""


@pytest.mark.timeout(240)
def test_a_worker_killed_by_another_jobs_run_does_not_fail_an_install(tmp_path: Path) -> None:
    """Two jobs on one client: job B's script is being installed (its install waits for its
    turn behind job A's run()) when A's run() kills the worker.  B's install never started
    there: B is not failed as an init() that killed its worker; both jobs complete."""
    import threading

    started, go = tmp_path / "started", tmp_path / "go"
    env = {"STARTED": str(started), "GO": str(go)}
    settings = {"mini_batch_size": 2, "retry_settings": {"max_retries": 2}}
    dep_a, in_a, out_a = make_job(
        tmp_path / "a", KILLER_SCRIPT, n_files=4, settings=settings, env=env
    )
    dep_b, in_b, out_b = death_job(tmp_path / "b", FIXED)
    with local_cluster(1, dashboard=False) as handle:
        client, results = handle.client, {}

        def job(name: str, dep: Path, inputs: Path, out: Path) -> None:
            try:
                results[name] = daskscore.run(dep, inputs, out, client=client, progress=False)
            except Exception as exc:  # noqa: BLE001 - asserted below
                results[name] = exc

        first = threading.Thread(target=job, args=("a", dep_a, in_a, out_a))
        first.start()
        while not started.exists():  # (A's run() holds the worker's turn)
            first.join(0.05)
        second = threading.Thread(target=job, args=("b", dep_b, in_b, out_b))
        second.start()

        def registered(dask_scheduler=None) -> bool:  # noqa: ANN001 - Dask's keyword
            names = {n for n in dask_scheduler.worker_plugins if n.startswith("daskscore-")}
            return len(names - {"daskscore-warm"}) >= 2  # (A's and B's, not the keeper's)

        while not client.run_on_scheduler(registered):  # (B's plugin sent, its install held)
            second.join(0.05)
        go.touch()  # A's run() kills the worker, B's install pending on it
        first.join(200)
        second.join(200)
    assert getattr(results["a"], "status", None) == "Completed", results
    assert getattr(results["b"], "status", None) == "Completed", results
    assert (out_b / "predictions.csv").read_text().splitlines() == expected_rows(6)
    assert summary_of(out_a)["failures"] == []


def test_a_question_to_the_workers_is_asked_again_when_a_worker_dies_as_it_is_asked(
    tmp_path: Path,
) -> None:
    """A job's start asks the workers what they see (whether they share its disk): a worker
    whose process died as it was asked failed the job with Dask's CommClosedError; the
    question is asked again of the workers there once the nanny's new process joins."""
    from daskscore.engine.probe import ask_workers

    def ends_its_process_once(marker: str) -> str:  # (local: sent by value to the worker)
        import os

        if not os.path.exists(marker):  # the first call ends the worker's process
            open(marker, "w").close()
            os._exit(1)
        return "answered"

    marker = str(tmp_path / "asked")
    with local_cluster(1, dashboard=False) as handle:
        answers = ask_workers(handle.client, ends_its_process_once, marker)
    assert list(answers.values()) == ["answered"], answers
