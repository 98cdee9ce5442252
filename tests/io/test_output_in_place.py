"""A job's output is put in place without a window where it is lost or mistaken for the
script's (:mod:`daskscore.io.inplace`), whatever instant the job is stopped or killed at.

The jobs are real ``daskscore run`` processes, stopped from inside at the instant the test
picks: the CLI's own entry point runs with one call wrapped (a ``python -c`` program, as in
``tests/engine/test_staging_removal.py``) to SIGKILL the job's process group there, or to send
the driver SIGINT (a Ctrl-C) there.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO
from helpers import cli, cli_args, make_job, show, summary_of

N_FILES = 12
SCRIPT = """
    import os
    import pandas as pd

    FLAGS = os.environ["FLAGS"]


    def run(mini_batch):
        rows = []
        for path in mini_batch:
            name = os.path.basename(path)
            if os.path.exists(os.path.join(FLAGS, "raise-" + name)):
                raise ValueError("bad input " + name)
            x = pd.read_csv(path)["x"]
            rows.append({"file": name, "group": "g" + str(int(x[0]) % 3), "total": x.sum()})
        return pd.DataFrame(rows, columns=["file", "group", "total"])
"""

#: ``python -c`` of the CLI, stopped ($STOP_HOW: ``kill``, the process group SIGKILLed, or
#: ``ctrl-c``, SIGINT to the driver) at $STOP_AT:
#: ``written``: a dataset's files all written, not yet in place;
#: ``in-place``: the new dataset just renamed to its name;
#: ``aside``: the previous output just moved out of the way of the new one;
#: ``replace``: an append_row file whole, about to replace the previous one.
STOPPED_AT = """\
import os, signal, sys
from pathlib import Path

from daskscore import cli
from daskscore.io import datasets

DRIVER, AT = os.getpid(), os.environ["STOP_AT"]


def stop():
    if os.getpid() != DRIVER:
        return
    if os.environ["STOP_HOW"] == "kill":
        os.killpg(0, signal.SIGKILL)  # the driver, its fork server and its workers
    os.kill(DRIVER, signal.SIGINT)


write_dataset, rename, replace = datasets.write_dataset, os.rename, os.replace


def written_then_stopped(*args, **kwargs):
    files = write_dataset(*args, **kwargs)
    stop()
    return files


def renamed_then_stopped(src, dst, *args, **kwargs):
    rename(src, dst, *args, **kwargs)
    src, dst = Path(src), Path(dst)
    if AT == "in-place" and src.name == "dataset" and src.parent.name == ".daskscore":
        stop()
    if AT == "aside" and dst.parent.name == "replaced":
        stop()


def stopped_then_replaced(src, dst, *args, **kwargs):
    if Path(src).name == "predictions.csv.partial":
        stop()
    replace(src, dst, *args, **kwargs)


if AT == "written":
    datasets.write_dataset = written_then_stopped
elif AT == "replace":
    os.replace = stopped_then_replaced
else:
    os.rename = renamed_then_stopped
sys.argv[0] = "daskscore"
cli.entry()
"""


def stopped_at(point: str, how: str, args: list[str], log: Path) -> int:
    """``daskscore ARGS`` stopped at ``point`` (see :data:`STOPPED_AT`); its exit status."""
    with open(log, "w") as err:
        proc = subprocess.run(
            [sys.executable, "-c", STOPPED_AT, *args],
            cwd=REPO,
            env={**os.environ, "STOP_AT": point, "STOP_HOW": how},
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
            timeout=150,
        )
    expected = -signal.SIGKILL if how == "kill" else 128 + signal.SIGINT
    assert proc.returncode == expected, log.read_text()
    return proc.returncode


def _job(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    flags = tmp_path / "flags"
    flags.mkdir()
    dep, inputs, out = make_job(
        tmp_path,
        SCRIPT,
        n_files=N_FILES,
        settings={"mini_batch_size": 2, "retry_settings": {"max_retries": 0}},
        env={"FLAGS": str(flags)},
    )
    return dep, inputs, out, flags


def files_in(output: Path) -> list[str]:
    """The ``file`` column of every row of the output (a dataset folder or an append_row file),
    sorted."""
    if output.is_file():
        return sorted(line.split(" ", 1)[0] for line in output.read_text().splitlines())
    parts = sorted(p for p in output.rglob("*") if p.is_file())
    frames = [
        pd.read_parquet(p, columns=["file"]) if p.suffix == ".parquet" else pd.read_csv(p)
        for p in parts
    ]
    return sorted(pd.concat(frames)["file"]) if frames else []


def snapshot(output: Path) -> dict[str, bytes]:
    paths = [output] if output.is_file() else sorted(output.rglob("*"))
    return {str(p.relative_to(output.parent)): p.read_bytes() for p in paths if p.is_file()}


def script_copies(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if "from-script" in p.name)


ALL_FILES = [f"f{i:04d}.csv" for i in range(N_FILES)]


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("extra", "point", "how"),
    [
        (("--output-format", "parquet", "--partition-on", "group"), "written", "kill"),
        (("--output-format", "csv"), "written", "ctrl-c"),
        ((), "replace", "kill"),
    ],
    ids=["parquet-partitioned-killed", "csv-ctrl-c", "append_row-killed"],
)
def test_a_retry_pass_stopped_as_it_writes_its_output_leaves_the_previous_one(
    tmp_path: Path, extra: tuple[str, ...], point: str, how: str
) -> None:
    """The previous pass's output stays, as its summary names it, until the new one is whole;
    the next pass replaces it (its own: nothing is set aside as the script's)."""
    dep, inputs, out, flags = _job(tmp_path)
    (flags / "raise-f0003.csv").touch()
    proc = cli(dep, inputs, out, *extra)
    assert proc.returncode == 0, show(proc)
    before = summary_of(out)
    assert before["failed_mini_batches"] == 1, before
    predictions = Path(before["predictions"])
    kept = snapshot(predictions)
    assert files_in(predictions) == [f for f in ALL_FILES if f not in ("f0002.csv", "f0003.csv")]

    (flags / "raise-f0003.csv").unlink()  # the fix
    stopped_at(point, how, cli_args(dep, inputs, out, *extra, "--retry-failed"), tmp_path / "log")
    assert summary_of(out) == before, "the previous pass's summary stands"
    assert predictions.exists(), "the output the summary names is gone"
    assert snapshot(predictions) == kept, "the output is the previous pass's"

    proc = cli(dep, inputs, out, *extra, "--retry-failed")
    assert proc.returncode == 0, show(proc)
    s = summary_of(out)
    assert (s["succeeded_items"], s["failed_items"], s["warnings"]) == (N_FILES, 0, []), s
    assert files_in(predictions) == ALL_FILES
    assert not script_copies(out), "the job's own output was taken for the script's"
    assert not [p.name for p in out.iterdir() if p.name.startswith(".daskscore")]


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("how", ["kill", "ctrl-c"])
def test_a_job_stopped_as_its_dataset_is_put_in_place_resumes_without_a_copy(
    tmp_path: Path, how: str
) -> None:
    """Stopped right after its dataset was renamed to its name: ``--resume`` knows the folder
    for the job's own (noted before the rename), and writes it again, once."""
    dep, inputs, out, _ = _job(tmp_path)
    extra = ("--output-format", "parquet", "--partition-on", "group")
    stopped_at("in-place", how, cli_args(dep, inputs, out, *extra), tmp_path / "log")

    proc = cli(dep, inputs, out, *extra, "--resume")
    assert proc.returncode == 0, show(proc)
    assert "from-script" not in proc.stderr, show(proc)
    s = summary_of(out)
    assert (s["succeeded_items"], s["warnings"]) == (N_FILES, []), s
    assert not script_copies(out), "the job's own dataset was kept as the script's"
    assert files_in(out / "predictions") == ALL_FILES


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_retry_pass_killed_between_the_renames_is_settled_by_the_next(tmp_path: Path) -> None:
    """Killed once it moved the previous dataset out of the way, before the new one took its
    name: the next job there puts the previous one back, then goes on."""
    dep, inputs, out, flags = _job(tmp_path)
    extra = ("--output-format", "parquet")
    (flags / "raise-f0003.csv").touch()
    proc = cli(dep, inputs, out, *extra)
    assert proc.returncode == 0, show(proc)
    before = summary_of(out)
    kept = snapshot(out / "predictions")
    (flags / "raise-f0003.csv").unlink()
    stopped_at(
        "aside", "kill", cli_args(dep, inputs, out, *extra, "--retry-failed"), tmp_path / "log"
    )
    assert summary_of(out) == before
    assert not (out / "predictions").exists()
    aside = out / ".daskscore" / "replaced" / "predictions"
    assert snapshot(aside) == kept, "the previous dataset is kept whole in the staging folder"
    refused = cli(dep, inputs, out, *extra)  # (a plain run: refused, the folder as it was)
    assert refused.returncode == 2 and snapshot(aside) == kept, show(refused)

    proc = cli(dep, inputs, out, *extra, "--retry-failed")
    assert proc.returncode == 0, show(proc)
    s = summary_of(out)
    assert (s["succeeded_items"], s["warnings"]) == (N_FILES, []), s
    assert files_in(out / "predictions") == ALL_FILES
    assert not script_copies(out)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".daskscore")]
