"""End-to-end tests of the ``daskscore`` command (``python -m daskscore`` in a subprocess).

Jobs that run start their own LocalCluster (a few seconds each), so there are few of them;
usage errors are refused before any cluster starts and are cheap.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, run_cli, write_deployment, write_inputs
from helpers import processed_of, show, summary_of

DIGITS = REPO / "configs" / "digits-cnn"


# --------------------------------------------------------------------------- the real example


def test_digits_cnn_end_to_end(tmp_path):
    pytest.importorskip("torch")  # the example's CNN (the [torch] extra)
    out = tmp_path / "digits"
    proc = run_cli(
        "run",
        "configs/digits-cnn/deployment.yml",
        "--input",
        "configs/digits-cnn/sample-inputs",
        "--output",
        str(out),
    )
    assert proc.returncode == 0, show(proc)
    assert "Traceback" not in proc.stderr, show(proc)
    warning_lines = [line for line in proc.stderr.splitlines() if "warning" in line.lower()]
    assert not warning_lines, show(proc)

    rows = pd.read_csv(
        out / "predictions.csv", sep=" ", header=None, names=["file", "class", "probability"]
    )
    assert len(rows) == 120
    assert rows["file"].tolist() == sorted(p.name for p in (DIGITS / "sample-inputs").iterdir())
    labels = rows["file"].map(lambda name: int(re.search(r"label(\d)", name).group(1)))
    accuracy = (labels == rows["class"]).mean()
    assert accuracy > 0.85, f"accuracy {accuracy:.3f}"
    assert rows["probability"].between(0, 1).all()
    summary = summary_of(out)
    assert summary["status"] == "Completed"
    assert summary["succeeded_items"] == 120 and summary["failed_items"] == 0


# --------------------------------------------------------------------------- one probing job

PROBE_SCRIPT = """
    import argparse
    import json
    import os
    import sys

    HERE = os.path.dirname(os.path.abspath(__file__))
    STATE = {}

    def init():
        parser = argparse.ArgumentParser()
        parser.add_argument("--input", default=None)
        parser.add_argument("--output", default=None)
        parser.add_argument("--workers", default=None)
        args, unknown = parser.parse_known_args()
        with open(os.path.join(HERE, "assets", "suffix.txt")) as fh:
            STATE["suffix"] = fh.read().strip()
        probe = {
            "bi_output": os.environ["AZUREML_BI_OUTPUT_PATH"],
            "argv": list(sys.argv),
            "args": [args.input, args.output, args.workers],
            "unknown": unknown,
            "pid": os.getpid(),
        }
        path = os.path.join(os.environ["AZUREML_BI_OUTPUT_PATH"], f"probe-{os.getpid()}.json")
        with open(path, "w") as fh:
            json.dump(probe, fh)
        print("init done")

    def run(mini_batch):
        print(f"run got {len(mini_batch)} files")
        return [f"{os.path.basename(p)} {STATE['suffix']}" for p in mini_batch]

    def shutdown():
        with open(os.path.join(os.environ["MARKERS"], f"shutdown-{os.getpid()}"), "w") as fh:
            fh.write("bye")
"""


def test_probe_argv_file_paths_one_worker_mini_batch_size_and_set(tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    dep = write_deployment(
        tmp_path / "deploy",
        PROBE_SCRIPT,
        settings={"mini_batch_size": 10, "environment_variables": {"MARKERS": str(markers)}},
        extra_code={"assets/suffix.txt": "from-file\n"},
    )
    n = 20
    inputs = write_inputs(tmp_path / "in", n)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    out = elsewhere / "out"
    proc = run_cli(
        "run",
        str(dep),
        "--input",
        str(inputs),
        "--output",
        "out",  # relative to the working directory
        "--workers",
        "1",
        "--mini-batch-size",
        "7",
        "--set",
        "settings.output_file_name=x.csv",
        "--no-progress",
        "--no-dashboard",
        cwd=elsewhere,  # not the code folder: paths from __file__ must still work
    )
    assert proc.returncode == 0, show(proc)
    assert "Traceback" not in proc.stderr, show(proc)

    # --set settings.output_file_name
    assert (out / "x.csv").is_file(), show(proc)
    assert not (out / "predictions.csv").exists()
    rows = pd.read_csv(out / "x.csv", sep=" ", header=None)
    assert rows[0].tolist() == [f"f{i:04d}.csv" for i in range(n)]
    assert set(rows[1]) == {"from-file"}

    # --mini-batch-size 7: ceil(20 / 7) mini-batches
    processed = processed_of(out)
    assert len(processed) == math.ceil(n / 7) == 3
    assert processed["total"].tolist() == [7, 7, 6]
    assert set(processed["status"]) == {"RUN_DONE"}
    assert summary_of(out)["total_mini_batches"] == 3

    # --workers 1: one process ran init(), and it saw its own argv, not ours
    probes = [json.loads(p.read_text()) for p in out.glob("probe-*.json")]
    assert len(probes) == 1, probes
    probe = probes[0]
    assert probe["bi_output"] == str(out.resolve()), "AZUREML_BI_OUTPUT_PATH is absolute"
    assert probe["unknown"] == [] and probe["args"] == [None, None, None], probe
    for ours in ("--input", "--output", "--workers", "--set", "--mini-batch-size", str(inputs)):
        assert ours not in probe["argv"], probe["argv"]
    assert len(set(processed["worker"])) == 1

    # print() goes to logs/user/stdout/<worker>.txt; shutdown() ran when the job ended
    stdout = "".join(p.read_text() for p in (out / "logs" / "user" / "stdout").glob("*.txt"))
    assert "init done" in stdout and "run got 7 files" in stdout and "run got 6 files" in stdout
    assert [p.name for p in markers.iterdir()] == [f"shutdown-{probe['pid']}"]


# --------------------------------------------------------------------------- output folder


SIMPLE_SCRIPT = """
    import os

    def init():
        pass

    def run(mini_batch):
        return [os.path.basename(p) for p in mini_batch]
"""


def test_existing_output_refused_with_exit_2_then_overwritten(tmp_path):
    dep = write_deployment(tmp_path / "deploy", SIMPLE_SCRIPT)
    inputs = write_inputs(tmp_path / "in", 4)
    out = tmp_path / "out"
    out.mkdir()
    (out / "predictions.csv").write_text("old rows\n")
    (out / "job_summary.json").write_text("{}\n")
    args = ["run", str(dep), "--input", str(inputs), "--output", str(out), "--no-progress"]

    refused = run_cli(*args, "--no-dashboard")
    assert refused.returncode == 2, show(refused)
    assert "--overwrite" in refused.stderr, show(refused)
    assert "Traceback" not in refused.stderr, show(refused)
    assert (out / "predictions.csv").read_text() == "old rows\n"

    replaced = run_cli(*args, "--no-dashboard", "--overwrite")
    assert replaced.returncode == 0, show(replaced)
    rows = pd.read_csv(out / "predictions.csv", sep=" ", header=None)
    assert rows[0].tolist() == [f"f{i:04d}.csv" for i in range(4)]
    assert summary_of(out)["status"] == "Completed"


# --------------------------------------------------------------------------- usage errors


def _bad_yaml(tmp_path: Path) -> tuple[list[str], list[str]]:
    dep = write_deployment(tmp_path / "deploy", SIMPLE_SCRIPT)
    dep.write_text("type: model\nsettings: [mini_batch_size: 10\n  oops: {\n")
    return ["run", str(dep), "--input", str(write_inputs(tmp_path / "in", 2))], [
        "deployment.yml",
        "YAML",
    ]


def _missing_script(tmp_path: Path) -> tuple[list[str], list[str]]:
    dep = write_deployment(tmp_path / "deploy", SIMPLE_SCRIPT)
    text = dep.read_text().replace("scoring_script: score.py", "scoring_script: nope.py")
    dep.write_text(text)
    return ["run", str(dep), "--input", str(write_inputs(tmp_path / "in", 2))], [
        "nope.py",
        "code_configuration.scoring_script",
    ]


def _script_without_run(tmp_path: Path) -> tuple[list[str], list[str]]:
    script = """
        def init():
            pass

        def score(mini_batch):
            return mini_batch
    """
    dep = write_deployment(tmp_path / "deploy", script)
    return ["run", str(dep), "--input", str(write_inputs(tmp_path / "in", 2))], [
        "score.py",
        "run(",
    ]


def _missing_input(tmp_path: Path) -> tuple[list[str], list[str]]:
    dep = write_deployment(tmp_path / "deploy", SIMPLE_SCRIPT)
    missing = tmp_path / "no-such-input"
    return ["run", str(dep), "--input", str(missing)], [str(missing)]


def _empty_input(tmp_path: Path) -> tuple[list[str], list[str]]:
    dep = write_deployment(tmp_path / "deploy", SIMPLE_SCRIPT)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".hidden").write_text("dot-files do not count")
    return ["run", str(dep), "--input", str(empty)], [str(empty)]


def _carry_in_file_mode(tmp_path: Path) -> tuple[list[str], list[str]]:
    dep = write_deployment(tmp_path / "deploy", SIMPLE_SCRIPT)
    inputs = str(write_inputs(tmp_path / "in", 2))
    return ["run", str(dep), "--input", inputs, "--carry-columns", "a"], ["--carry-columns"]


def _carry_unknown_column(tmp_path: Path) -> tuple[list[str], list[str]]:
    dep = write_deployment(tmp_path / "deploy", SIMPLE_SCRIPT)
    inputs = write_inputs(tmp_path / "in", 2)
    args = ["run", str(dep), "--input", str(inputs), "--tabular", "--carry-columns", "nope"]
    return args, ["--carry-columns", "'nope'", str((inputs / "f0000.csv").resolve()), "are x,"]


@pytest.mark.parametrize(
    "case",
    [
        _bad_yaml,
        _missing_script,
        _script_without_run,
        _missing_input,
        _empty_input,
        _carry_in_file_mode,
        _carry_unknown_column,
    ],
    ids=[
        "bad-yaml",
        "missing-script",
        "script-without-run",
        "missing-input",
        "empty-input",
        "carry-in-file-mode",
        "carry-unknown-column",
    ],
)
def test_usage_errors_exit_2_with_one_paragraph_and_no_traceback(tmp_path, case):
    args, mentions = case(tmp_path)
    out = tmp_path / "out"
    proc = run_cli(*args, "--output", str(out), "--no-dashboard", timeout=60)  # (phases said)
    assert proc.returncode == 2, show(proc)
    err = proc.stderr.strip()
    assert err.startswith("daskscore: error: "), show(proc)  # (no "starting 1 worker…" first)
    assert "Traceback" not in err, show(proc)
    assert "\n\n" not in err, f"expected one paragraph:\n{err}"
    for text in mentions:
        assert text in err, f"the message should name {text!r}:\n{err}"
    assert not (out / "job_summary.json").exists(), "nothing runs on a usage error"


# --------------------------------------------------------------------------- init() fails

INIT_FAILS_SCRIPT = """
    import os

    def init():
        raise ValueError("model is broken")

    def run(mini_batch):
        with open(os.path.join(os.environ["AZUREML_BI_OUTPUT_PATH"], "run-called"), "a") as fh:
            fh.write("x\\n")
        return mini_batch
"""


def test_init_failure_exit_1_with_the_users_traceback(tmp_path):
    dep = write_deployment(tmp_path / "deploy", INIT_FAILS_SCRIPT)
    script = tmp_path / "deploy" / "code" / "score.py"
    out = tmp_path / "out"
    proc = run_cli(
        "run",
        str(dep),
        "--input",
        str(write_inputs(tmp_path / "in", 20)),
        "--output",
        str(out),
        "--no-progress",
        "--no-dashboard",
    )
    assert proc.returncode == 1, show(proc)
    err = proc.stderr
    assert "ValueError: model is broken" in err, show(proc)
    assert "Traceback (most recent call last)" in err, "the user's traceback, not just a message"
    assert str(script) in err and "in init" in err, show(proc)
    assert "distributed/" not in err and "daskscore/plugin.py" not in err, show(proc)

    errors = list((out / "logs" / "user" / "error").glob("*.txt"))
    assert errors, "logs/user/error/<worker>.txt holds the full traceback"
    full = "".join(p.read_text() for p in errors)
    assert "Traceback (most recent call last)" in full and "model is broken" in full
    assert str(script) in full

    assert summary_of(out)["status"] == "Failed"
    assert len(processed_of(out)) == 0, "fails fast: no mini-batch is run or retried"
    assert not (out / "run-called").exists()


def test_the_command_exits_like_sys_exit_without_the_teardown(tmp_path):
    """``leave()`` skips the interpreter's teardown but not what users rely on at exit:
    running threads are waited for, then exit handlers run, buffered standard streams are
    flushed (a pipe, no PYTHONUNBUFFERED), the status is kept, and a string status is printed
    and becomes 1."""
    code = (
        "import atexit, sys, threading, time; from daskscore.cli import leave\n"
        "atexit.register(lambda: print('handler ran'))\n"
        "sys.stdout.write('buffered ' * 1000)\n"
        "threading.Thread(target=lambda: (time.sleep(0.3), print('thread done'))).start()\n"
        "leave(int(sys.argv[1]) if sys.argv[1].isdigit() else sys.argv[1])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    for status, rc in (("0", 0), ("3", 3), ("went wrong", 1)):
        proc = subprocess.run(
            [sys.executable, "-c", code, status], capture_output=True, text=True, env=env
        )
        assert proc.returncode == rc
        assert proc.stdout.count("buffered") == 1000
        assert proc.stdout.endswith("thread done\nhandler ran\n")
        assert proc.stderr == ("went wrong\n" if rc == 1 else "")
    usage = subprocess.run(
        [sys.executable, "-m", "daskscore", "run"], capture_output=True, text=True, env=env
    )
    assert usage.returncode == 2 and "required" in usage.stderr


def test_the_command_freezes_what_it_imported() -> None:
    """The command moves its imports (Dask, daskscore) out of the garbage collector's walks
    before it runs a job: a full collection of the driver walked them all, 40 ms each time;
    what the job makes later is still collected."""
    code = (
        "import gc, sys; import daskscore.cli as cli\n"
        "cli.main = lambda: print(gc.get_freeze_count()) or 0\n"
        "cli.entry()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) > 10_000


#: ``python -c`` of the ``daskscore`` console script that sends itself SIGINT (a Ctrl-C) as
#: module $CTRL_C_AT is first imported: in the first half second, while the command's imports
#: run.
CTRL_C_AS_IT_IMPORTS = """\
import os, signal, sys


class CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == os.environ["CTRL_C_AT"]:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None


sys.meta_path.insert(0, CtrlC())
sys.argv[0] = "daskscore"
from daskscore.__main__ import entry

entry()
"""


@pytest.mark.parametrize("module", ["dask", "distributed", "yaml"])
def test_ctrl_c_while_the_command_imports_says_one_line(tmp_path: Path, module: str) -> None:
    """Ctrl-C as the command starts (Dask, distributed, YAML being imported) prints one line and
    exits 130, as later: no traceback of the imports it cut short, and nothing written."""
    out = tmp_path / "out"
    args = ["run", str(tmp_path / "deployment.yml"), "--input", str(tmp_path), "-o", str(out)]
    proc = subprocess.run(
        [sys.executable, "-c", CTRL_C_AS_IT_IMPORTS, *args],
        cwd=REPO,
        env={**os.environ, "CTRL_C_AT": module},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 130, show(proc)
    assert proc.stderr.splitlines() == [
        "daskscore: interrupted as the command started: nothing was run, and no output folder "
        "was changed."
    ], show(proc)
    assert not out.exists()


def test_ctrl_c_while_the_arguments_are_read_says_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from daskscore import cli

    def ctrl_c() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_parser", ctrl_c)
    try:
        code = cli.main(["run", "deployment.yml", "-i", "in", "-o", "out"])
    except KeyboardInterrupt:
        pytest.fail("the Ctrl-C escaped the command")
    assert code == 130
    assert capsys.readouterr().err == cli.STARTING


# --------------------------------------------------------------------------- impossible options


@pytest.mark.parametrize("workers", ["-1", "0"])
def test_workers_below_one_is_a_usage_error_not_a_hang(tmp_path: Path, workers: str) -> None:
    """``--workers -1`` waited forever for workers that never came; ``--workers 0`` quietly
    ran 2.  Both are refused at once, naming the option and the value."""
    dep = write_deployment(tmp_path / "deploy", SIMPLE_SCRIPT)
    out = tmp_path / "out"
    proc = run_cli(
        *("run", str(dep), "--input", str(write_inputs(tmp_path / "in", 4))),
        *("--output", str(out), "--no-progress", "--no-dashboard", "--workers", workers),
        timeout=120,  # a hang guard: the refusal takes no cluster
    )
    assert proc.returncode == 2, show(proc)
    assert "argument --workers" in proc.stderr and repr(workers) in proc.stderr, show(proc)
    assert "Traceback" not in proc.stderr, show(proc)
    assert not out.exists(), "nothing runs on a usage error"


@pytest.mark.parametrize(
    ("command", "option"),
    [("run", "--input"), ("run", "--output"), ("validate", "--input")],
    ids=["run-input", "run-output", "validate-input"],
)
def test_an_input_or_output_given_twice_is_a_usage_error(
    tmp_path: Path, command: str, option: str
) -> None:
    """``--input A --input B`` scored B alone, without a word about A: refused, naming both."""
    dep = write_deployment(tmp_path / "deploy", SIMPLE_SCRIPT)
    first, second = write_inputs(tmp_path / "inA", 2), write_inputs(tmp_path / "inB", 2)
    if option == "--output":
        first, second = tmp_path / "outA", tmp_path / "outB"
    args = [command, str(dep), *(option, str(first)), *(option, str(second))]
    if command == "run":
        args += ["--no-progress", "--no-dashboard"]
        args += [] if option == "--output" else ["--output", str(tmp_path / "out")]
        args += ["--input", str(first)] if option == "--output" else []
    proc = run_cli(*args, timeout=120)
    assert proc.returncode == 2, show(proc)
    err = proc.stderr.strip().splitlines()[-1]
    assert f"{option}" in err and "given twice" in err, show(proc)
    assert repr(str(first)) in err and repr(str(second)) in err, show(proc)
    assert "Traceback" not in proc.stderr, show(proc)
    assert not any(p.exists() for p in (tmp_path / "out", tmp_path / "outA", tmp_path / "outB"))


def test_overwrite_with_resume_is_a_usage_error(tmp_path: Path) -> None:
    """``--overwrite --resume`` let --overwrite win and discard an interrupted job's progress;
    it is refused, and the folder is left as it was."""
    dep = write_deployment(tmp_path / "deploy", SIMPLE_SCRIPT)
    out = tmp_path / "out"
    (out / ".daskscore").mkdir(parents=True)
    (out / ".daskscore" / "ledger-r01.jsonl").write_text('{"mini_batch": 0}\n')
    (out / "predictions.csv").write_text("f0000.csv\n")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    proc = run_cli(
        *("run", str(dep), "--input", str(write_inputs(tmp_path / "in", 4))),
        *("--output", str(out), "--no-progress", "--no-dashboard", "--overwrite", "--resume"),
        timeout=120,
    )
    assert proc.returncode == 2, show(proc)
    assert "--resume" in proc.stderr and "--overwrite" in proc.stderr, show(proc)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def _exit(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``daskscore ARGV`` in this process: its exit code and stderr."""
    from daskscore import cli

    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    return code, capsys.readouterr().err


@pytest.fixture
def nothing_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """A job or a warm cluster that would start fails the test instead (and cannot hang)."""
    import daskscore.cli
    from daskscore.cluster import warm

    def started(*args: object, **kwargs: object) -> None:
        raise AssertionError("it started: the option was not checked")

    monkeypatch.setattr(daskscore.cli, "execute", started)
    monkeypatch.setattr(warm, "act", started)


NUMERIC_OPTIONS = [
    ("run", "--workers", "-1"),
    ("run", "--workers", "0"),
    ("run", "--workers", "1.5"),
    ("run", "--mini-batch-size", "0"),
    ("run", "--mini-batch-size", "-3"),
    ("run", "--instance-count", "0"),
    ("run", "--rows-per-file", "0"),
    ("run", "--prefetch", "-1"),
    ("run", "--prefetch", "two"),
    ("run", "--prefetch-mb", "0"),
    ("run", "--prefetch-mb", "-8"),
    ("run", "--prefetch-mb", "nan"),
    ("run", "--prefetch-mb", "inf"),
    ("run", "--resources", "GPU=-1"),
    ("run", "--resources", "GPU=0"),
    ("run", "--resources", "GPU=nan"),
    ("validate", "--mini-batch-size", "0"),
    ("validate", "--rows", "-1"),
    ("cluster start", "--workers", "0"),
    ("cluster start", "--workers", "-2"),
    ("cluster start", "--resources", "GPU=-1"),
]


@pytest.mark.parametrize(("command", "option", "value"), NUMERIC_OPTIONS)
def test_every_numeric_option_refuses_what_cannot_be_meant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], nothing_starts: None,
    command: str, option: str, value: str,
) -> None:  # fmt: skip
    dep = write_deployment(tmp_path / "deploy", SIMPLE_SCRIPT)
    inputs = write_inputs(tmp_path / "in", 2)
    argv = {
        "run": ["run", str(dep), "-i", str(inputs), "-o", str(tmp_path / "out")],
        "validate": ["validate", str(dep), "-i", str(inputs)],
        "cluster start": ["cluster", "start"],
    }[command]
    code, err = _exit([*argv, f"{option}={value}"], capsys)
    assert code == 2, err
    assert f"argument {option}" in err and value in err, err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("setting", "key"),
    [
        ("mini_batch_size=-3", "settings.mini_batch_size"),
        ("mini_batch_size=0 rows", "settings.mini_batch_size"),
        ("settings.mini_batch_size=0MB", "settings.mini_batch_size"),
        ("retry_settings.max_retries=-1", "settings.retry_settings.max_retries"),
        ("max_concurrency_per_instance=0", "settings.max_concurrency_per_instance"),
        ("instance_count=0", "settings.instance_count"),
        ("resources.instance_count=-1", "resources.instance_count"),
        ("timeout=0", "settings.retry_settings.timeout"),
        ("timeout=.nan", "settings.retry_settings.timeout"),
        ("timeout=.inf", "settings.retry_settings.timeout"),
        ("error_threshold=-2", "settings.error_threshold"),
    ],
)
def test_numeric_set_values_are_usage_errors_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], nothing_starts: None,
    setting: str, key: str,
) -> None:  # fmt: skip
    """``--set`` numbers get the checks of the deployment file, and the error says that the
    value came from an override, not from the file."""
    dep = write_deployment(tmp_path / "deploy", SIMPLE_SCRIPT)
    inputs = str(write_inputs(tmp_path / "in", 2))
    for command in (["run", str(dep), "-i", inputs, "-o", str(tmp_path / "out")],
                    ["validate", str(dep), "-i", inputs]):  # fmt: skip
        code, err = _exit([*command, "--set", setting], capsys)
        assert code == 2, err
        assert f"override: {key}: expected" in err, err
        assert "Traceback" not in err and not (tmp_path / "out").exists()


TABLE_SCRIPT = """
    def init():
        pass

    def run(mini_batch):
        return [f"{x}" for x in mini_batch["x"]]
"""


@pytest.mark.parametrize(("size", "mini_batches"), [("3 rows", 4), ("2KB", 3)])
def test_mini_batch_size_takes_what_the_key_takes(
    tmp_path: Path, size: str, mini_batches: int
) -> None:
    """A tabular size was refused by the option (a positive integer only), though the key
    (and --set) took it."""
    dep = write_deployment(tmp_path / "deploy", TABLE_SCRIPT)
    table = tmp_path / "in" / "t.csv"
    table.parent.mkdir()
    n = 10 if size == "3 rows" else 500  # (500 rows of ~10 bytes: ~5 KB)
    table.write_text("x\n" + "".join(f"r{i:08d}\n" for i in range(n)))
    out = tmp_path / "out"
    proc = run_cli("run", str(dep), "-i", str(table.parent), "-o", str(out),
                   "--mini-batch-size", size, "--workers", "1", "--no-progress")  # fmt: skip
    assert proc.returncode == 0, show(proc)
    summary = summary_of(out)
    assert summary["total_mini_batches"] == mini_batches and summary["succeeded_items"] == n
    assert (out / "predictions.csv").read_text().split() == [f"r{i:08d}" for i in range(n)]


@pytest.mark.parametrize("value", ["0 rows", "10 parsecs", "0", "-2", "1.5"])
def test_mini_batch_size_refuses_what_the_key_refuses_in_its_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], nothing_starts: None, value: str
) -> None:
    dep = write_deployment(tmp_path / "deploy", SIMPLE_SCRIPT)
    inputs = str(write_inputs(tmp_path / "in", 2))
    for command in (["run", str(dep), "-i", inputs, "-o", str(tmp_path / "out")],
                    ["validate", str(dep), "-i", inputs]):  # fmt: skip
        code, key_err = _exit([*command, "--set", f"mini_batch_size={value}"], capsys)
        assert code == 2, key_err
        said = key_err.split("override: settings.mini_batch_size: ", 1)[1].splitlines()[0]
        code, err = _exit([*command, "--mini-batch-size", value], capsys)
        assert code == 2, err
        assert f"argument --mini-batch-size: {said}" in err, err
        assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_a_script_s_file_of_the_output_s_name_is_kept_and_said_after_the_verdict(
    tmp_path: Path,
) -> None:
    script = """
        import os

        def run(mini_batch):
            out = os.path.join(os.environ["AZUREML_BI_OUTPUT_PATH"], "predictions.csv")
            with open(out, "a") as fh:
                fh.writelines(f"side {os.path.basename(p)}\\n" for p in mini_batch)
            return [os.path.basename(p) for p in mini_batch]
    """
    dep = write_deployment(tmp_path / "deploy", script, settings={"mini_batch_size": 2})
    inputs, out = write_inputs(tmp_path / "in", 5), tmp_path / "out"
    proc = run_cli("run", str(dep), "-i", str(inputs), "-o", str(out), "--no-progress")
    assert proc.returncode == 0, show(proc)
    lines = proc.stderr.splitlines()
    said = [line for line in lines if line.startswith("daskscore: warning: ")]
    assert len(said) == 1 and "'predictions.from-script.csv'" in said[0], show(proc)
    assert lines.index(said[0]) == 1 + next(
        i for i, line in enumerate(lines) if line.startswith("Job Completed")
    )
    assert len((out / "predictions.from-script.csv").read_text().splitlines()) == 5
    assert (out / "predictions.csv").read_text().split() == [f"f{i:04d}.csv" for i in range(5)]


@pytest.mark.parametrize(("extra", "lines"), [((), 2), (("--no-progress",), 1)])
def test_a_closed_output_pipe_ends_what_is_written_not_the_job(
    tmp_path: Path, extra: tuple[str, ...], lines: int
) -> None:
    """``daskscore run ... 2>&1 | head -2``: once the reader has gone, the command's lines are
    dropped quietly; the job runs to its end, writes every output, and exits with its own
    status.  (Before, the next line's ``BrokenPipeError`` ended the driver: exit 1, and no
    summary or predictions where that line came before they were written.)"""
    script = """
        import os, time

        def run(mini_batch):
            time.sleep(0.2)
            return [os.path.basename(p) for p in mini_batch]
    """
    dep = write_deployment(tmp_path / "deploy", script, settings={"mini_batch_size": 1})
    inputs, out = write_inputs(tmp_path / "in", 6), tmp_path / "out"
    args = ["run", str(dep), "-i", str(inputs), "-o", str(out), "--workers", "2"]
    driver = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "daskscore", *args, "--no-dashboard", *extra],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert driver.stdout is not None
    read = [driver.stdout.readline() for _ in range(lines)]
    driver.stdout.close()  # (head has its lines)
    assert driver.wait(timeout=150) == 0, read
    s = summary_of(out)
    assert (s["status"], s["succeeded_items"]) == ("Completed", 6), s
    assert sorted((out / "predictions.csv").read_text().split()) == sorted(
        f"f{i:04d}.csv" for i in range(6)
    )
    assert (out / "report.html").is_file()
    log = (out / "logs" / "sys" / "daskscore.txt").read_text()
    assert "all mini-batches settled" in log and "assembled " in log, log[-2000:]


@pytest.mark.parametrize("command", ["validate", "replay"])
def test_validate_and_replay_to_a_closed_pipe_end_with_their_own_status(
    tmp_path: Path, command: str
) -> None:
    """``daskscore validate ... | head -1``: the command goes on to its own end and status
    once its reader has gone (it ended with ``internal error: BrokenPipeError``, exit 1)."""
    script = """
        import os

        def run(mini_batch):
            return [os.path.basename(p) for p in mini_batch]
    """
    dep = write_deployment(tmp_path / "deploy", script, settings={"mini_batch_size": 2})
    inputs, out = write_inputs(tmp_path / "in", 4), tmp_path / "out"
    if command == "validate":
        args = ["validate", str(dep), "--input", str(inputs)]
    else:
        ran = run_cli("run", str(dep), "-i", str(inputs), "-o", str(out), "--workers", "1")
        assert ran.returncode == 0, ran.stderr
        args = ["replay", str(out), "--mini-batch", "1"]
    proc = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "daskscore", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # (the reader has gone before the first line)
    with proc.stderr:
        err = proc.stderr.read()
    assert proc.wait(timeout=150) == 0, err
    assert "internal error" not in err and "BrokenPipeError" not in err, err
