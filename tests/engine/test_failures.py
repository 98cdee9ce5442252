"""Fault injection: scoring scripts that raise, hang, crash their process, return too little or
the wrong thing, fail in init(), or meet bad inputs (§5 and §7 of the contract).

Each test checks the verdict (``job_summary.json``), the per-try report
(``logs/sys/job_report/processed_mini-batches.csv``) and that ``predictions.csv`` holds every
succeeded item's row exactly once, in mini-batch order, and no row of a failed mini-batch.

Tests whose scripts kill or hang their worker process run the CLI in a subprocess with its
own cluster, so that a broken cluster cannot spill into the other tests; the others share the
module's ``client``.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from helpers import cli, make_job, summary_of

import daskscore

# --------------------------------------------------------------------------- the script

#: The scoring script of these tests: one row ``<file name> <sum of x>`` per input file.
#: ``init()`` logs its pid to ``$MARKER_DIR/init.log``; ``check(path)`` is the fault each test
#: injects, on the files named in ``$TARGETS`` (comma-separated base names).
SCRIPT = """\
import os
import signal
import time
from pathlib import Path

import pandas as pd

MARKERS = Path(os.environ["MARKER_DIR"])
TARGETS = set(filter(None, os.environ.get("TARGETS", "").split(",")))


def init():
    with open(MARKERS / "init.log", "a") as fh:
        fh.write(f"{{os.getpid()}}\\n")
{init_extra}

def check(path, mini_batch):
{check}

def score(path):
    df = pd.read_csv(path)
    return f"{{Path(path).name}} {{df['x'].sum()}}"


def run(mini_batch):
    for path in mini_batch:
        check(path, mini_batch)
    results = [score(path) for path in mini_batch]
{ret}
"""

RAISE_ON_TARGETS = """\
    name = Path(path).name
    if name in TARGETS:
        raise ValueError(f"bad file {name}")  # the user's raising line
"""


def fault_job(
    tmp_path: Path,
    *,
    n_files: int,
    check: str = "    pass\n",
    ret: str = "    return results\n",
    init_extra: str = "",
    targets: tuple[str, ...] = (),
    settings: dict[str, Any] | None = None,
) -> tuple[Path, Path, Path, Path]:
    """Write the job of :data:`SCRIPT` with ``check``, ``ret`` and ``init_extra`` put in;
    return (deployment.yml, input, output, marker dir)."""
    markers = tmp_path / "markers"
    markers.mkdir()
    script = SCRIPT.format(check=check, ret=ret, init_extra=init_extra)
    env = {"MARKER_DIR": str(markers), "TARGETS": ",".join(targets)}
    dep, inputs, out = make_job(tmp_path, script, n_files=n_files, settings=settings, env=env)
    return dep, inputs, out, markers


# --------------------------------------------------------------------------- reading results


def name(i: int) -> str:
    return f"f{i:04d}.csv"


def expected_row(i: int) -> str:
    return f"{name(i)} {2 * i + 0.5}"  # write_inputs: x = i and i + 0.5


def batches_of(n_files: int, size: int) -> list[list[int]]:
    return [list(range(s, min(s + size, n_files))) for s in range(0, n_files, size)]


def read_tries(out: Path) -> dict[int, list[dict[str, str]]]:
    """processed_mini-batches.csv, grouped by mini-batch, each group in try order."""
    path = out / "logs" / "sys" / "job_report" / "processed_mini-batches.csv"
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    grouped: dict[int, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        grouped[int(row["mini_batch_id"])].append(row)
    for tries in grouped.values():
        tries.sort(key=lambda r: int(r["try"]))
    return dict(grouped)


def statuses(tries: list[dict[str, str]]) -> list[tuple[int, str]]:
    return [(int(r["try"]), r["status"]) for r in tries]


def prediction_lines(out: Path) -> list[str]:
    return (out / "predictions.csv").read_text().splitlines()


def assert_rows_once(out: Path, indices: list[int]) -> None:
    """predictions.csv holds exactly the rows of ``indices``, once each, in order."""
    lines = prediction_lines(out)
    assert lines == [expected_row(i) for i in sorted(indices)]


def assert_tries(
    tries: dict[int, list[dict[str, str]]], n_batches: int, special: dict[int, list[str]]
) -> None:
    """Every mini-batch not in ``special`` has one try, RUN_DONE; ``special`` lists statuses."""
    assert sorted(tries) == list(range(n_batches))
    for mb in range(n_batches):
        want = special.get(mb, ["RUN_DONE"])
        assert statuses(tries[mb]) == list(enumerate(want, start=1)), f"mini-batch {mb}"


def init_lines(markers: Path) -> list[str]:
    return (markers / "init.log").read_text().split()


# --------------------------------------------------------------------------- 1. run() raises


def test_raising_mini_batch_is_retried_then_failed_and_job_goes_on(tmp_path, client):
    n, size = 30, 5
    dep, inputs, out, _ = fault_job(
        tmp_path,
        n_files=n,
        check=RAISE_ON_TARGETS,
        targets=(name(7), name(21)),  # mini-batches 1 and 4
        settings={"mini_batch_size": size, "retry_settings": {"max_retries": 2}},
    )
    result = daskscore.run(dep, inputs, out, client=client)

    batches = batches_of(n, size)
    s = summary_of(out)
    assert s == json.loads(json.dumps(result.summary, default=str))
    assert result.status == s["status"] == "Completed"
    assert s["succeeded_items"] == 20
    assert s["failed_items"] == 10
    assert s["failed_mini_batches"] == 2
    assert s["total_mini_batches"] == 6
    assert [f["mini_batch_id"] for f in s["failures"]] == [1, 4]
    for f, bad in zip(s["failures"], (7, 21), strict=True):
        mb = f["mini_batch_id"]
        assert f["status"] == "RUN_EXCEPTION"
        assert f["tries"] == 3
        assert f["failed"] == 5
        assert [Path(p).name for p in f["files"]] == [name(i) for i in batches[mb]]
        assert f"ValueError: bad file {name(bad)}" in f["error"]
        assert "# the user's raising line" in f["error"]  # the script's frame is shown
        assert "daskscore/tasks.py" not in f["error"]

    tries = read_tries(out)
    assert_tries(tries, 6, {1: ["RUN_EXCEPTION"] * 3, 4: ["RUN_EXCEPTION"] * 3})
    assert tries[1][0]["error"] == f"ValueError: bad file {name(7)}"
    assert_rows_once(out, [i for mb in (0, 2, 3, 5) for i in batches[mb]])

    errors = "".join(p.read_text() for p in (out / "logs" / "user" / "error").glob("*.txt"))
    assert errors.count(f"bad file {name(7)}") >= 3
    job_error = (out / "logs" / "job_error.txt").read_text()
    assert "mini-batch 1" in job_error and "mini-batch 4" in job_error


BAD_STR_ERROR = """\
class ServiceError(Exception):
    def __str__(self):
        return f"[{self.status}] {self.detail}"  # fields set on some code paths only
"""


def test_an_exception_whose_str_raises_fails_its_mini_batch_only(tmp_path, client):
    """A script's exception whose ``__str__`` itself raises is the failure of its mini-batch,
    shown as Python shows it, not an error of the whole job (which lost every row)."""
    n, size = 15, 5
    check = """\
    if Path(path).name in TARGETS:
        raise ServiceError()
"""
    dep, inputs, out, _ = fault_job(
        tmp_path,
        n_files=n,
        check=check,
        init_extra=BAD_STR_ERROR.replace("class", "\nclass"),
        targets=(name(6),),  # mini-batch 1
        settings={"mini_batch_size": size, "retry_settings": {"max_retries": 0}},
    )
    result = daskscore.run(dep, inputs, out, client=client)

    assert result.status == "Completed"
    s = summary_of(out)
    assert (s["succeeded_items"], s["failed_items"]) == (10, 5)
    [failure] = s["failures"]
    assert failure["mini_batch_id"] == 1 and failure["status"] == "RUN_EXCEPTION"
    assert "ServiceError: <exception str() failed>" in failure["error"]
    assert "raise ServiceError()" in failure["error"]  # the script's own line
    assert_rows_once(out, [*range(0, 5), *range(10, 15)])


def test_init_raising_an_exception_whose_str_raises_is_the_init_failure(tmp_path, client):
    dep, inputs, out, _ = fault_job(
        tmp_path,
        n_files=4,
        init_extra="    raise ServiceError()\n" + BAD_STR_ERROR,
        settings={"mini_batch_size": 2},
    )
    with pytest.raises(daskscore.JobFailed) as caught:
        daskscore.run(dep, inputs, out, client=client)
    s = summary_of(out)
    assert s["status"] == "Failed" and s["succeeded_items"] == 0
    shown = str(caught.value) + json.dumps(s)
    assert "ServiceError: <exception str() failed>" in shown
    assert "failed inside daskscore" not in shown


# --------------------------------------------------------------------------- 2. flaky run()


def test_mini_batch_failing_once_succeeds_on_retry_rows_written_once(tmp_path, client):
    n, size = 20, 4
    flaky = """\
    first = MARKERS / (Path(mini_batch[0]).name + ".tried")
    if not first.exists():  # only the first attempt of each mini-batch fails
        first.write_text("1")
        raise RuntimeError("transient failure")
"""
    dep, inputs, out, markers = fault_job(
        tmp_path,
        n_files=n,
        check=flaky,
        settings={"mini_batch_size": size, "retry_settings": {"max_retries": 1}},
    )
    result = daskscore.run(dep, inputs, out, client=client)

    s = summary_of(out)
    assert result.status == s["status"] == "Completed"
    assert s["succeeded_items"] == n
    assert s["failed_items"] == 0
    assert s["failed_mini_batches"] == 0
    assert s["retried_mini_batches"] == 5
    assert s["failures"] == []
    tries = read_tries(out)
    assert_tries(tries, 5, {mb: ["RUN_EXCEPTION", "RUN_DONE"] for mb in range(5)})
    assert tries[0][0]["error"] == "RuntimeError: transient failure"
    assert_rows_once(out, list(range(n)))
    assert len(list(markers.glob("*.tried"))) == 5
    assert (out / "logs" / "job_error.txt").read_text().strip() == "No errors."


# --------------------------------------------------------------------------- 3. run() hangs


@pytest.mark.slow
@pytest.mark.timeout(200)
def test_hanging_run_times_out_worker_restarted_and_init_runs_again(tmp_path):
    n, size = 20, 2
    hang = """\
    if Path(path).name in TARGETS:
        time.sleep(1000)
"""
    dep, inputs, out, markers = fault_job(
        tmp_path,
        n_files=n,
        check=hang,
        targets=(name(3),),  # mini-batch 1
        settings={"mini_batch_size": size, "retry_settings": {"timeout": 2, "max_retries": 1}},
    )
    proc = cli(dep, inputs, out)
    assert proc.returncode == 0, proc.stderr

    s = summary_of(out)
    assert s["status"] == "Completed"
    assert s["succeeded_items"] == n - 2
    assert s["failed_items"] == 2
    assert s["failed_mini_batches"] == 1
    (failure,) = s["failures"]
    assert failure["mini_batch_id"] == 1
    assert failure["status"] == "RUN_TIMEOUT"
    assert failure["tries"] == 2
    assert [Path(p).name for p in failure["files"]] == [name(2), name(3)]
    assert "timeout" in failure["error"]

    tries = read_tries(out)
    assert_tries(tries, n // size, {1: ["RUN_TIMEOUT", "RUN_TIMEOUT"]})
    assert_rows_once(out, [i for i in range(n) if i not in (2, 3)])

    # two workers started, and a timeout restarted one: init() ran again in the fresh process
    # (the process restarted after the last timeout may not get to init() before the job ends)
    pids = init_lines(markers)
    assert len(pids) > 2, pids
    assert len(set(pids)) == len(pids)  # once per process
    assert "mini-batch 1" in proc.stderr and "RUN_TIMEOUT" in proc.stderr


@pytest.mark.timeout(200)
def test_a_timed_out_trys_time_is_not_the_restart_and_init_after_it(tmp_path):
    """One worker, a slow init(): the try that timed out was charged once the restarted worker
    had run init() again, and its recorded time (elapsed_s, run_s) included both."""
    hang_once = """\
    flag = MARKERS / "hung"
    if Path(path).name in TARGETS and not flag.exists():
        flag.touch()
        time.sleep(1000)
"""
    dep, inputs, out, _ = fault_job(
        tmp_path,
        n_files=4,
        check=hang_once,
        init_extra="    time.sleep(3)  # (run again by the restarted worker)\n",
        targets=(name(1),),  # mini-batch 0
        settings={"mini_batch_size": 2, "retry_settings": {"timeout": 2, "max_retries": 1}},
    )
    proc = cli(dep, inputs, out, "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    tries = read_tries(out)
    assert statuses(tries[0]) == [(1, "RUN_TIMEOUT"), (2, "RUN_DONE")]
    timed_out = tries[0][0]
    assert float(timed_out["elapsed_s"]) <= 2.0 and float(timed_out["run_s"]) <= 2.0, timed_out
    assert_rows_once(out, list(range(4)))


GENERATOR_FAULTS = {
    "hang": ("        time.sleep(1000)\n", "RUN_TIMEOUT", "timeout"),
    "exit": ("        os._exit(7)\n", "PROCESS_DIED", "exited with code 7"),
}


@pytest.mark.timeout(200)
@pytest.mark.parametrize("fault", sorted(GENERATOR_FAULTS))
def test_a_generator_runs_work_is_watched_as_a_lists_is(tmp_path, fault):
    """run() written as a generator (``yield`` per file, as Azure's own examples do) does its
    work as it is consumed: that is inside the try's timeout and death watch. Before, a hang
    there ran past the timeout for ever, and a death was one try, its exit code unknown."""
    code, status, said = GENERATOR_FAULTS[fault]
    dep, inputs, out, _ = fault_job(
        tmp_path,
        n_files=6,
        check=f"    if Path(path).name in TARGETS:\n{code}",
        ret="    yield from results\n",
        targets=(name(3),),  # mini-batch 1
        settings={"mini_batch_size": 2, "retry_settings": {"timeout": 3, "max_retries": 1}},
    )
    proc = cli(dep, inputs, out, "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    tries = read_tries(out)
    assert_tries(tries, 3, {1: [status, status]})
    assert all(said in t["error"] for t in tries[1]), tries[1]
    assert_rows_once(out, [0, 1, 4, 5])


# --------------------------------------------------------------------------- 4. run() crashes

CRASHES = {
    "os_exit": "os._exit(1)",
    "sigkill": "os.kill(os.getpid(), signal.SIGKILL)",
}


@pytest.mark.slow
@pytest.mark.timeout(200)
@pytest.mark.parametrize("how", sorted(CRASHES))
def test_crashing_run_is_charged_alone_and_job_completes(tmp_path, how):
    n, size = 40, 2
    crash = f"""\
    if Path(path).name in TARGETS:
        {CRASHES[how]}
"""
    dep, inputs, out, markers = fault_job(
        tmp_path,
        n_files=n,
        check=crash,
        # mini-batch 1 (files 2, 3): the first task carries mini-batches 0, 1 and 2, so 0 ran
        # before the crash in the same process, and 2 was still to come
        targets=(name(3),),
        settings={"mini_batch_size": size, "retry_settings": {"max_retries": 2, "timeout": 60}},
    )
    proc = cli(dep, inputs, out)
    assert proc.returncode == 0, proc.stderr

    s = summary_of(out)
    assert s["status"] == "Completed"
    assert s["succeeded_items"] == n - 2
    assert s["failed_items"] == 2
    assert s["failed_mini_batches"] == 1
    (failure,) = s["failures"]
    assert failure["mini_batch_id"] == 1
    assert failure["status"] == "PROCESS_DIED"
    assert failure["tries"] == 3
    assert [Path(p).name for p in failure["files"]] == [name(2), name(3)]
    assert "died" in failure["error"]

    # the neighbours of the crashed mini-batch (same task) are not charged
    tries = read_tries(out)
    assert_tries(tries, n // size, {1: ["PROCESS_DIED"] * 3})
    assert_rows_once(out, [i for i in range(n) if i not in (2, 3)])
    # the crashes restarted processes, whose init() ran (the last one may be too late for it)
    assert len(init_lines(markers)) > 2


LOST_ONCE = {
    "os_exit": ("os._exit(1)", "PROCESS_DIED"),
    "timeout": ("time.sleep(1000)", "RUN_TIMEOUT"),
}


@pytest.mark.slow
@pytest.mark.timeout(200)
@pytest.mark.parametrize("how", sorted(LOST_ONCE))
def test_process_lost_once_then_retry_succeeds_committed_rows_kept_once(tmp_path, how):
    n, size = 40, 2
    action, status = LOST_ONCE[how]
    # mini-batches 0 and 1 are slow, so that the task carrying 0, 1 and 2 commits their rows
    # (flushes every second) before mini-batch 2 loses its process on its first try
    check = f"""\
    name = Path(path).name
    if name < "f0004.csv":
        time.sleep(0.35)
    marker = MARKERS / (name + ".lost")
    if name in TARGETS and not marker.exists():
        marker.write_text("1")
        {action}
"""
    dep, inputs, out, markers = fault_job(
        tmp_path,
        n_files=n,
        check=check,
        targets=(name(5),),  # mini-batch 2
        settings={"mini_batch_size": size, "retry_settings": {"max_retries": 1, "timeout": 3}},
    )
    proc = cli(dep, inputs, out)
    assert proc.returncode == 0, proc.stderr

    s = summary_of(out)
    assert s["status"] == "Completed"
    assert (s["succeeded_items"], s["failed_items"], s["failed_mini_batches"]) == (n, 0, 0)
    assert s["retried_mini_batches"] == 1
    assert s["failures"] == []
    tries = read_tries(out)
    assert_tries(tries, n // size, {2: [status, "RUN_DONE"]})
    assert_rows_once(out, list(range(n)))
    assert (markers / (name(5) + ".lost")).exists()


# --------------------------------------------------------------------------- 5. too few / many


def test_run_returning_too_few_items_counts_the_missing_as_failed(tmp_path, client):
    n, size = 11, 5  # mini-batches of 5, 5 and 1
    dep, inputs, out, _ = fault_job(
        tmp_path, n_files=n, ret="    return results[:-1]\n", settings={"mini_batch_size": size}
    )
    result = daskscore.run(dep, inputs, out, client=client)

    s = summary_of(out)
    assert result.status == s["status"] == "Completed"
    assert s["succeeded_items"] == 8
    assert s["failed_items"] == 3
    assert s["failed_mini_batches"] == 0  # they ran; they only returned too little
    assert s["partial_mini_batches"] == 3
    assert s["rows_written"] == 8
    assert [(f["mini_batch_id"], f["status"], f["failed"]) for f in s["failures"]] == [
        (0, "RUN_DONE", 1),
        (1, "RUN_DONE", 1),
        (2, "RUN_DONE", 1),
    ]
    tries = read_tries(out)
    assert_tries(tries, 3, {})
    assert [(r[0]["succeeded"], r[0]["failed"]) for _, r in sorted(tries.items())] == [
        ("4", "1"),
        ("4", "1"),
        ("0", "1"),
    ]
    assert_rows_once(out, [0, 1, 2, 3, 5, 6, 7, 8])


def test_run_returning_more_items_is_accepted(tmp_path, client):
    n, size = 6, 3
    dep, inputs, out, _ = fault_job(
        tmp_path,
        n_files=n,
        ret="    return results + ['extra row']\n",
        settings={"mini_batch_size": size},
    )
    result = daskscore.run(dep, inputs, out, client=client)

    s = summary_of(out)
    assert result.status == "Completed"
    assert (s["succeeded_items"], s["failed_items"], s["rows_written"]) == (6, 0, 8)
    assert s["failures"] == []
    assert prediction_lines(out) == [
        *[expected_row(i) for i in range(3)],
        "extra row",
        *[expected_row(i) for i in range(3, 6)],
        "extra row",
    ]


# --------------------------------------------------------------------------- 6. error_threshold

THRESHOLD_FAILING = (3, 8, 13)  # mini-batches of 5 files whose every file raises


def _threshold_job(tmp_path: Path) -> tuple[Path, Path, Path]:
    targets = tuple(name(i) for mb in THRESHOLD_FAILING for i in range(mb * 5, mb * 5 + 5))
    dep, inputs, out, _ = fault_job(
        tmp_path,
        n_files=100,
        check=RAISE_ON_TARGETS,
        targets=targets,
        settings={
            "mini_batch_size": 5,
            "error_threshold": 7,
            "retry_settings": {"max_retries": 1},
        },
    )
    return dep, inputs, out


def _check_threshold_outcome(out: Path, s: dict[str, Any]) -> None:
    assert s["status"] == "Failed"
    assert "error_threshold" in s["reason"]
    assert s["failed_items"] > 7
    failed = [f["mini_batch_id"] for f in s["failures"]]
    assert failed and set(failed) <= set(THRESHOLD_FAILING)
    assert all(f["status"] == "RUN_EXCEPTION" and f["failed"] == 5 for f in s["failures"])
    tries = read_tries(out)
    done = sorted(mb for mb, rows in tries.items() if rows[-1]["status"] == "RUN_DONE")
    assert not set(done) & set(THRESHOLD_FAILING)
    for mb in done:
        assert statuses(tries[mb]) == [(1, "RUN_DONE")]
    # what succeeded before the abort is on disk, once, and counted
    succeeded = [i for mb in done for i in range(mb * 5, mb * 5 + 5)]
    assert s["succeeded_items"] == len(succeeded)
    assert_rows_once(out, succeeded)
    job_error = (out / "logs" / "job_error.txt").read_text()
    assert "error_threshold" in job_error
    assert f"mini-batch {failed[0]}" in job_error


def test_error_threshold_exceeded_fails_the_job_api(tmp_path, client):
    dep, inputs, out = _threshold_job(tmp_path)
    with pytest.raises(daskscore.ErrorThresholdExceeded) as info:
        daskscore.run(dep, inputs, out, client=client)
    exc = info.value
    assert isinstance(exc, daskscore.JobFailed)
    assert exc.result.summary["status"] == "Failed"
    assert exc.result.status == "Failed"
    assert "error_threshold" in str(exc)
    assert "# the user's raising line" in (exc.user_traceback or "")
    s = summary_of(out)
    assert s == json.loads(json.dumps(exc.result.summary, default=str))
    _check_threshold_outcome(out, s)


@pytest.mark.timeout(200)
def test_error_threshold_exceeded_fails_the_job_cli(tmp_path):
    dep, inputs, out = _threshold_job(tmp_path)
    proc = cli(dep, inputs, out)
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr
    s = summary_of(out)
    _check_threshold_outcome(out, s)
    assert "error_threshold" in err
    assert f"mini-batch {s['failures'][0]['mini_batch_id']}" in err
    assert 'raise ValueError(f"bad file {name}")' in err  # the user's traceback
    assert "ValueError: bad file" in err
    assert "distributed/" not in err
    assert "daskscore/" not in err.replace(str(out), "")  # no daskscore frames either


# --------------------------------------------------------------------------- 7. init() raises
# (an init() that kills its own process: test_init_deaths.py)

INIT_RAISES = """\
    load_model()


def load_model():
    raise RuntimeError("cannot load the model weights")  # init's raising line
"""


def _check_init_outcome(out: Path) -> None:
    s = summary_of(out)
    assert s["status"] == "Failed"
    assert "cannot load the model weights" in s["init_error"]
    assert s["succeeded_items"] == 0
    tries = read_tries(out)
    assert sum(len(t) for t in tries.values()) <= 2  # nothing, or hardly anything, was tried
    errors = list((out / "logs" / "user" / "error").glob("worker-*.txt"))
    assert errors
    text = errors[0].read_text()
    assert "init()" in text and "RuntimeError: cannot load the model weights" in text
    assert "init's raising line" in text
    assert not (out / "predictions.csv").exists()


def test_init_raising_fails_the_job_at_once_api(tmp_path, client):
    dep, inputs, out, _ = fault_job(tmp_path, n_files=10, init_extra=INIT_RAISES)
    with pytest.raises(daskscore.InitFailed) as info:
        daskscore.run(dep, inputs, out, client=client)
    exc = info.value
    assert "RuntimeError: cannot load the model weights" in exc.user_traceback
    assert "init's raising line" in exc.user_traceback
    assert "distributed/" not in exc.user_traceback
    assert "daskscore/" not in exc.user_traceback
    assert exc.result.status == "Failed"
    assert exc.result.predictions is None
    _check_init_outcome(out)


@pytest.mark.timeout(200)
def test_init_raising_fails_the_job_at_once_cli(tmp_path):
    dep, inputs, out, _ = fault_job(tmp_path, n_files=10, init_extra=INIT_RAISES)
    proc = cli(dep, inputs, out)
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr
    assert "init()" in err
    assert "RuntimeError: cannot load the model weights" in err
    assert 'raise RuntimeError("cannot load the model weights")' in err
    assert "Traceback" in err
    assert "distributed/" not in err
    _check_init_outcome(out)


# --------------------------------------------------------------------------- 8. wrong return type


@pytest.mark.parametrize(
    ("returned", "words"),
    [("None", ["None", "list"]), ("'scored'", ["str", "list"])],
    ids=["none", "string"],
)
def test_run_returning_wrong_type_fails_the_mini_batch_clearly(tmp_path, client, returned, words):
    n, size = 6, 3
    dep, inputs, out, _ = fault_job(
        tmp_path,
        n_files=n,
        ret=f"    return {returned}\n",
        settings={"mini_batch_size": size, "retry_settings": {"max_retries": 1}},
    )
    result = daskscore.run(dep, inputs, out, client=client)

    s = summary_of(out)
    assert result.status == "Completed"  # error_threshold -1
    assert (s["succeeded_items"], s["failed_items"], s["failed_mini_batches"]) == (0, 6, 2)
    for f in s["failures"]:
        assert f["failed"] == 3
        assert f["tries"] == 2
        assert f["status"] == "RUN_EXCEPTION"
        last = f["error"].strip().splitlines()[-1]
        for word in words:
            assert word in last, last
        # the user's fault, told without daskscore's own frames (contract §5: user frames only)
        assert "daskscore/" not in f["error"], f["error"]
    tries = read_tries(out)
    assert_tries(tries, 2, {0: ["RUN_EXCEPTION"] * 2, 1: ["RUN_EXCEPTION"] * 2})
    assert "run() returned" in tries[0][0]["error"]
    assert prediction_lines(out) == []


# --------------------------------------------------------------------------- 9. bad inputs


def _usage_error(proc: Any) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert "daskscore: error:" in proc.stderr
    return proc.stderr


def test_missing_input_path_is_a_usage_error(tmp_path):
    dep, _, out, _ = fault_job(tmp_path, n_files=1)
    missing = tmp_path / "no-such-input"
    err = _usage_error(cli(dep, missing, out))
    assert str(missing) in err and "does not exist" in err


def test_empty_input_folder_is_a_usage_error(tmp_path):
    dep, _, out, _ = fault_job(tmp_path, n_files=1)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".hidden").write_text("x\n1\n")  # dot-files do not count
    err = _usage_error(cli(dep, empty, out))
    assert str(empty) in err and "no files" in err


def test_output_path_that_is_a_file_is_a_usage_error(tmp_path):
    dep, inputs, _, _ = fault_job(tmp_path, n_files=1)
    target = tmp_path / "out.txt"
    target.write_text("not a folder")
    err = _usage_error(cli(dep, inputs, target))
    assert str(target) in err and "is a file" in err
    assert target.read_text() == "not a folder"


def test_malformed_input_file_fails_its_mini_batch_naming_the_file(tmp_path, client):
    n, size = 9, 3
    dep, inputs, out, _ = fault_job(
        tmp_path,
        n_files=n,
        settings={"mini_batch_size": size, "retry_settings": {"max_retries": 0}},
    )
    bad = inputs / name(4)
    bad.write_text("x,y\n1,2\n3,4,5,6,7\n")
    result = daskscore.run(dep, inputs, out, client=client)

    s = summary_of(out)
    assert result.status == "Completed"
    assert (s["succeeded_items"], s["failed_items"], s["failed_mini_batches"]) == (6, 3, 1)
    (failure,) = s["failures"]
    assert failure["mini_batch_id"] == 1
    assert str(bad) in failure["files"]
    assert "Error tokenizing data" in failure["error"]  # pandas' own message
    assert "pd.read_csv(path)" in failure["error"]  # the script's line that read it
    assert name(4) in (out / "logs" / "job_error.txt").read_text()
    tries = read_tries(out)
    assert_tries(tries, 3, {1: ["RUN_EXCEPTION"]})
    assert "Error tokenizing data" in tries[1][0]["error"]
    assert_rows_once(out, [0, 1, 2, 6, 7, 8])
