"""Integration tests of the engine through the Python API (``daskscore.run``).

Every test runs a real job on the module's LocalCluster (two single-threaded worker processes,
the ``client`` fixture of conftest.py) with a scoring script written by the test, and checks
what the Azure batch contract (shared/spec/azure-batch-contract.md) promises the script and
its user: init() once per worker process, the environment, imports, the append_row file, the
books and logs, and the failure of init().
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from conftest import write_deployment, write_inputs
from helpers import processed_of, summary_of

import daskscore

SUMMARY_KEYS = {
    "status",
    "total_items",
    "succeeded_items",
    "failed_items",
    "total_mini_batches",
    "failed_mini_batches",
    "duration_s",
    "failures",
}


# --------------------------------------------------------------------------- helpers


def read_rows(path: Path) -> pd.DataFrame:
    """The append_row file as Microsoft's notebooks read it."""
    return pd.read_csv(path, sep=" ", header=None)


def stems(n: int) -> list[str]:
    return [f"f{i:04d}" for i in range(n)]


def run_job(client: Any, dep: Path, inputs: Path, out: Path, **kwargs: Any) -> Any:
    return daskscore.run(dep, inputs, out, client=client, **kwargs)


# --------------------------------------------------------------------------- init() and shutdown()

PID_LOG_SCRIPT = """
    import os
    import time

    def _log(kind):
        with open(os.environ["PID_LOG"], "a") as fh:
            fh.write(f"{kind} {os.getpid()}\\n")

    def init():
        _log("init")

    def run(mini_batch):
        _log("run")
        time.sleep(0.01)
        return [os.path.basename(p) for p in mini_batch]
"""


def test_init_runs_once_per_worker_process_not_per_mini_batch(client, tmp_path):
    log = tmp_path / "pids.log"
    dep = write_deployment(
        tmp_path / "deploy",
        PID_LOG_SCRIPT,
        settings={"mini_batch_size": 1, "environment_variables": {"PID_LOG": str(log)}},
    )
    inputs = write_inputs(tmp_path / "in", 40)
    result = run_job(client, dep, inputs, tmp_path / "out")

    assert result.status == "Completed"
    assert result.total_mini_batches == 40
    lines = [line.split() for line in log.read_text().splitlines()]
    inits = [int(pid) for kind, pid in lines if kind == "init"]
    runs = [int(pid) for kind, pid in lines if kind == "run"]
    assert len(runs) == 40, "run() is called once per mini-batch"
    assert len(inits) == len(set(inits)), f"init() ran twice in one process: {inits}"
    assert len(inits) == 2, f"init() must run once in each of the 2 worker processes: {inits}"
    for pid in set(runs):
        assert inits.count(pid) == 1, f"process {pid} ran run() but init() {inits.count(pid)}x"
        first_init = lines.index(["init", str(pid)])
        first_run = lines.index(["run", str(pid)])
        assert first_init < first_run, f"process {pid} ran run() before init()"


SHUTDOWN_SCRIPT = """
    import os

    def init():
        pass

    def run(mini_batch):
        return [os.path.basename(p) for p in mini_batch]

    def shutdown():
        marker = os.path.join(os.environ["MARKERS"], f"shutdown-{os.getpid()}")
        with open(marker, "w") as fh:
            fh.write("done")
"""


def test_optional_shutdown_is_called_when_the_job_ends(client, tmp_path):
    """With ``warm=False``: by default a client's workers keep the script initialised for the
    next job, and shutdown() runs when it is replaced (tests/cluster/test_warm.py)."""
    markers = tmp_path / "markers"
    markers.mkdir()
    dep = write_deployment(
        tmp_path / "deploy",
        SHUTDOWN_SCRIPT,
        settings={"environment_variables": {"MARKERS": str(markers)}},
    )
    result = run_job(client, dep, write_inputs(tmp_path / "in", 6), tmp_path / "out", warm=False)

    assert result.status == "Completed"
    found = sorted(p.name for p in markers.iterdir())
    assert len(found) == 2, f"shutdown() should run once in each worker process: {found}"
    assert all((markers / name).read_text() == "done" for name in found)


def test_a_finished_job_leaves_no_events_on_the_scheduler(client, tmp_path):
    """A scheduler keeps every topic's events for its life (a warm cluster's, a notebook's):
    the job's progress topic is dropped when it ends."""
    dep = write_deployment(tmp_path / "deploy", "def run(b):\n    return b\n")
    result = run_job(client, dep, write_inputs(tmp_path / "in", 6), tmp_path / "out")

    assert result.status == "Completed" and result.job_id
    left = [name for name in client.get_events() if result.job_id in name]
    assert left == [], left


INIT_FAILS_SCRIPT = """
    import os

    def load_model():
        raise ValueError("model is broken")

    def init():
        load_model()

    def run(mini_batch):
        with open(os.path.join(os.environ["AZUREML_BI_OUTPUT_PATH"], "run-called"), "a") as fh:
            fh.write("x\\n")
        return mini_batch
"""


def test_init_failure_raises_initfailed_with_the_users_traceback(client, tmp_path):
    dep = write_deployment(tmp_path / "deploy", INIT_FAILS_SCRIPT)
    script = tmp_path / "deploy" / "code" / "score.py"
    out = tmp_path / "out"

    with pytest.raises(daskscore.InitFailed) as info:
        run_job(client, dep, write_inputs(tmp_path / "in", 30), out)

    tb = info.value.user_traceback
    assert tb, "InitFailed must carry the script's traceback"
    assert "ValueError: model is broken" in tb
    assert str(script) in tb
    assert "in init" in tb and "in load_model" in tb
    assert "distributed/" not in tb, tb
    assert "daskscore/" not in tb, tb
    assert isinstance(info.value, daskscore.JobFailed)

    # the verdict is on disk, and nothing was run or retried
    assert summary_of(out)["status"] == "Failed"
    assert info.value.result is not None and info.value.result.status == "Failed"
    assert not (out / "run-called").exists(), "run() must not be called after init() failed"
    assert len(processed_of(out)) == 0, "no mini-batch is run (or retried) after init() failed"
    errors = list((out / "logs" / "user" / "error").glob("*.txt"))
    assert errors, "the full traceback goes to logs/user/error/<worker>.txt"
    assert any("model is broken" in p.read_text() for p in errors)


@pytest.mark.parametrize(
    ("source", "why"),
    [
        ("run = None\n", "binds run = None, not a function"),
        ("init = 5\ndef run(b):\n    return b\n", "binds init = 5, not a function"),
        ("run = lambda: []\n", "run(mini_batch) must take one argument"),
    ],
    ids=["run-none", "init-number", "run-no-argument"],
)
def test_an_entry_azure_cannot_call_fails_the_job_saying_so(client, tmp_path, source, why):
    """Not "init() raised" with daskscore's own frames (run = None), nor a job that completes
    (init = 5 was skipped), nor every mini-batch failing at the call (run taking nothing)."""
    dep = write_deployment(tmp_path / "deploy", source)
    with pytest.raises(daskscore.InitFailed) as info:
        run_job(client, dep, write_inputs(tmp_path / "in", 4), tmp_path / "out")
    text = str(info.value)
    assert why in text and "importing the scoring script score.py failed" in text, text
    assert "Traceback" not in text and "daskscore/" not in text, text
    assert len(processed_of(tmp_path / "out")) == 0


# --------------------------------------------------------------------------- the environment

ENV_PROBE_SCRIPT = """
    import argparse
    import glob
    import json
    import os
    import sys

    def _read_first(paths):
        if not paths:
            return None
        with open(paths[0], "rb") as fh:
            return fh.read().decode()

    def _snapshot(where):
        model_dir = os.environ["AZUREML_MODEL_DIR"]
        parser = argparse.ArgumentParser()
        parser.add_argument("--input", default=None)
        parser.add_argument("--output", default=None)
        args, unknown = parser.parse_known_args()
        here = os.path.dirname(os.path.abspath(__file__))
        with open(os.path.join(here, "labels.txt")) as fh:
            label = fh.read().strip()
        return {
            "where": where,
            "pid": os.getpid(),
            "model_dir": model_dir,
            "folder_join": os.path.join(model_dir, "model", "model.pt"),
            "folder_join_exists": os.path.isfile(os.path.join(model_dir, "model", "model.pt")),
            "file_join_exists": os.path.isfile(os.path.join(model_dir, "model.pkl")),
            "glob_pt": sorted(glob.glob(f"{model_dir}/*/*.pt")),
            "listing": sorted(os.listdir(model_dir)),
            "model_bytes": _read_first(
                glob.glob(f"{model_dir}/*.pkl") + glob.glob(f"{model_dir}/*/*.pt")
            ),
            "bi_output": os.environ.get("AZUREML_BI_OUTPUT_PATH"),
            "bi_output_isdir": os.path.isdir(os.environ.get("AZUREML_BI_OUTPUT_PATH", "")),
            "flag": os.environ.get("MY_FLAG"),
            "flag_at_import": FLAG_AT_IMPORT,
            "number": os.environ.get("MY_NUMBER"),
            "argv": list(sys.argv),
            "args": [args.input, args.output],
            "unknown": unknown,
            "label": label,
        }

    def _dump(info):
        path = os.path.join(
            os.environ["AZUREML_BI_OUTPUT_PATH"], f"probe-{info['where']}-{os.getpid()}.json"
        )
        with open(path, "w") as fh:
            json.dump(info, fh)

    SEEN_IN_INIT = None
    FLAG_AT_IMPORT = os.environ.get("MY_FLAG")

    def init():
        global SEEN_IN_INIT
        SEEN_IN_INIT = _snapshot("init")
        _dump(SEEN_IN_INIT)

    def run(mini_batch):
        _dump(_snapshot("run"))
        return [f"{os.path.basename(p)} {SEEN_IN_INIT['flag']}" for p in mini_batch]
"""


def _probes(out: Path, where: str) -> list[dict[str, Any]]:
    found = [json.loads(p.read_text()) for p in sorted(out.glob(f"probe-{where}-*.json"))]
    assert found, f"the script wrote no probe from {where}()"
    return found


def test_environment_folder_model_env_vars_argv_and_file(client, tmp_path):
    root = tmp_path / "deploy"
    dep = write_deployment(
        root,
        ENV_PROBE_SCRIPT,
        settings={"environment_variables": {"MY_FLAG": "on", "MY_NUMBER": 3}},
        extra_code={"labels.txt": "from-file\n", "decoy.pt": "not the model"},
        model_files={"model.pt": b"weights"},
        model_path="model",
    )
    # decoys elsewhere in the deployment folder: the model glob must not find them
    (root / "decoy.pt").write_bytes(b"decoy")
    (root / "other").mkdir()
    (root / "other" / "decoy.pt").write_bytes(b"decoy")
    out = tmp_path / "out"
    result = run_job(client, dep, write_inputs(tmp_path / "in", 5), out)
    assert result.status == "Completed"

    for info in _probes(out, "init") + _probes(out, "run"):
        where = info["where"]
        model_dir = info["model_dir"]
        assert info["folder_join_exists"], f"{where}: $AZUREML_MODEL_DIR/model/model.pt missing"
        assert info["glob_pt"] == [info["folder_join"]], (
            f"{where}: glob($AZUREML_MODEL_DIR/*/*.pt) must find exactly the model: "
            f"{info['glob_pt']} (listing {info['listing']})"
        )
        assert info["listing"] == ["model"], f"{where}: model dir holds {info['listing']}"
        assert info["model_bytes"] == "weights", where
        assert model_dir
        # settings.environment_variables, set before init()
        assert info["flag"] == "on", where
        assert info["flag_at_import"] == "on", "environment_variables are set before the import"
        assert info["number"] == "3", where
        # the output folder
        assert info["bi_output"] == str(out.resolve()), where
        assert Path(info["bi_output"]).is_absolute() and info["bi_output_isdir"], where
        # the script's own argv; __file__-relative paths
        assert info["unknown"] == [] and info["args"] == [None, None], (where, info["argv"])
        assert not any(a.startswith("-") for a in info["argv"][1:]), info["argv"]
        assert info["label"] == "from-file"

    # env vars are visible to run() (rows carry the value init() saw)
    rows = read_rows(result.predictions)
    assert rows[0].tolist() == [f"{s}.csv" for s in stems(5)]
    assert set(rows[1]) == {"on"}


def test_single_file_model_is_under_its_own_name(client, tmp_path):
    dep = write_deployment(
        tmp_path / "deploy",
        ENV_PROBE_SCRIPT,
        extra_code={"labels.txt": "x"},
        model_files={"model.pkl": b"pickled"},
        model_path="model.pkl",
    )
    out = tmp_path / "out"
    result = run_job(client, dep, write_inputs(tmp_path / "in", 3), out)
    assert result.status == "Completed"
    for info in _probes(out, "init"):
        assert info["file_join_exists"], "$AZUREML_MODEL_DIR/model.pkl must exist"
        assert info["listing"] == ["model.pkl"]
        assert info["model_bytes"] == "pickled"


def test_symbolic_links_keep_their_own_names(client, tmp_path):
    """A model folder, a scoring script and a single input file that are symbolic links (a
    model store's versions, a shared script, a cache of hashed files) are seen under the names
    the deployment and the command give them, as Azure, which copies them, shows them."""
    root = tmp_path / "deploy"
    dep = write_deployment(root, ENV_PROBE_SCRIPT, extra_code={"labels.txt": "x"}, model_path=None)
    store = tmp_path / "store" / "v3"
    store.mkdir(parents=True)
    (store / "model.pt").write_bytes(b"weights")
    (root / "model").symlink_to(store, target_is_directory=True)
    shared = tmp_path / "shared" / "score_impl.py"  # (no labels.txt beside it)
    shared.parent.mkdir()
    os.replace(root / "code" / "score.py", shared)
    (root / "code" / "score.py").symlink_to(shared)
    raw = yaml.safe_load(dep.read_text())
    raw["model"] = {"path": "model"}
    dep.write_text(yaml.safe_dump(raw))
    inputs = write_inputs(tmp_path / "in", 1)
    link = tmp_path / "named-input.csv"
    link.symlink_to(next(inputs.iterdir()))
    out = tmp_path / "out"

    result = run_job(client, dep, link, out)

    assert result.status == "Completed"
    for info in _probes(out, "init") + _probes(out, "run"):
        assert info["listing"] == ["model"], info["listing"]
        assert info["folder_join_exists"] and info["model_bytes"] == "weights"
        assert info["label"] == "x", "__file__ is the link's path, beside labels.txt"
    assert read_rows(result.predictions)[0].tolist() == ["named-input.csv"]


def test_code_folder_is_importable_modules_and_subpackages(client, tmp_path):
    script = """
        import os
        from my_helper import double
        from helpers.text import shout

        def init():
            pass

        def run(mini_batch):
            return [f"{shout(os.path.basename(p))} {double(21)}" for p in mini_batch]
    """
    dep = write_deployment(
        tmp_path / "deploy",
        script,
        extra_code={
            "my_helper.py": "def double(x):\n    return 2 * x\n",
            "helpers/__init__.py": "",
            "helpers/text.py": "def shout(s):\n    return s.upper()\n",
        },
    )
    result = run_job(client, dep, write_inputs(tmp_path / "in", 4), tmp_path / "out")
    assert result.status == "Completed"
    rows = read_rows(result.predictions)
    assert rows[0].tolist() == [f"{s}.csv".upper() for s in stems(4)]
    assert rows[1].tolist() == [42] * 4


def test_a_second_job_on_the_same_cluster_imports_its_own_helpers(client, tmp_path):
    script = """
        from my_helper import VALUE

        def init():
            pass

        def run(mini_batch):
            return [VALUE for _ in mini_batch]
    """
    inputs = write_inputs(tmp_path / "in", 4)
    for value in ("first", "second"):
        dep = write_deployment(
            tmp_path / f"deploy-{value}",
            script,
            extra_code={"my_helper.py": f"VALUE = {value!r}\n"},
        )
        result = run_job(client, dep, inputs, tmp_path / f"out-{value}")
        assert read_rows(result.predictions)[0].tolist() == [value] * 4


# --------------------------------------------------------------------------- what run() returns


def test_list_returns_fewer_than_files_count_failed_items(client, tmp_path):
    # each mini-batch returns one row fewer than it got: that file counts as failed
    script = """
        import os

        def init():
            pass

        def run(mini_batch):
            return [os.path.basename(p) for p in mini_batch[:-1]]
    """
    n, size = 23, 5
    dep = write_deployment(
        tmp_path / "deploy", script, settings={"mini_batch_size": size, "error_threshold": -1}
    )
    out = tmp_path / "out"
    result = run_job(client, dep, write_inputs(tmp_path / "in", n), out)

    batches = math.ceil(n / size)
    assert result.status == "Completed"
    assert result.total_items == n
    assert result.failed_items == batches
    assert result.succeeded_items == n - batches
    summary = summary_of(out)
    assert summary["failed_items"] == batches and summary["succeeded_items"] == n - batches
    assert summary["status"] == "Completed"
    expected = [f"{s}.csv" for i, s in enumerate(stems(n)) if (i + 1) % size != 0 and i != n - 1]
    rows = read_rows(result.predictions)
    assert rows[0].tolist() == expected, "every returned row exactly once, in order"


def test_dataframe_returning_more_rows_than_files_writes_them_all(client, tmp_path):
    script = """
        import os
        import pandas as pd

        def init():
            pass

        def run(mini_batch):
            frames = []
            for p in mini_batch:
                df = pd.read_csv(p)
                df.insert(0, "file", os.path.basename(p))
                frames.append(df)
            return pd.concat(frames)
    """
    n = 12
    dep = write_deployment(tmp_path / "deploy", script, settings={"mini_batch_size": 5})
    result = run_job(client, dep, write_inputs(tmp_path / "in", n), tmp_path / "out")

    assert result.status == "Completed"
    assert result.succeeded_items == n and result.failed_items == 0
    rows = read_rows(result.predictions)
    assert len(rows) == 2 * n
    assert rows.shape[1] == 2, "no index column, no header"
    assert rows[0].tolist() == [f"{s}.csv" for s in stems(n) for _ in range(2)]
    assert rows[1].tolist() == [v for i in range(n) for v in (i, i + 0.5)]


ORDER_SCRIPT = """
    import os
    import time
    import pandas as pd

    SLOW = {"f0000", "f0027", "f0039"}

    def init():
        pass

    def run(mini_batch):
        names = [os.path.splitext(os.path.basename(p))[0] for p in mini_batch]
        if SLOW & set(names):
            time.sleep(0.4)
        with open(os.environ["DONE_LOG"], "a") as fh:
            fh.write(names[0] + "\\n")
        return pd.DataFrame(
            {
                "file": names,
                "x": [int(pd.read_csv(p)["x"].iloc[0]) for p in mini_batch],
                "tag": [f"t{len(mini_batch)}" for _ in names],
            }
        )
"""


def test_append_row_format_and_order_whatever_the_completion_order(client, tmp_path):
    done_log = tmp_path / "done.log"
    n = 50
    dep = write_deployment(
        tmp_path / "deploy",
        ORDER_SCRIPT,
        settings={"environment_variables": {"DONE_LOG": str(done_log)}},
    )
    result = run_job(
        client, dep, write_inputs(tmp_path / "in", n), tmp_path / "out", mini_batch_size=3
    )
    assert result.status == "Completed"
    assert result.total_mini_batches == math.ceil(n / 3)

    completed = done_log.read_text().split()
    assert completed != sorted(completed), "precondition: mini-batches completed out of order"

    text = result.predictions.read_text()
    assert text.splitlines()[0] == "f0000 0 t3", "space-separated, no header, no index"
    rows = read_rows(result.predictions)
    assert rows.shape == (n, 3)
    assert rows[0].tolist() == stems(n), "rows in mini-batch order, each exactly once"
    assert rows[1].tolist() == list(range(n))
    assert rows[2].tolist() == ["t3"] * 48 + ["t2"] * 2


def test_parallel_run_step_settings_json_changes_the_format(client, tmp_path):
    script = """
        import os
        import pandas as pd

        def init():
            pass

        def run(mini_batch):
            names = [os.path.splitext(os.path.basename(p))[0] for p in mini_batch]
            return pd.DataFrame({"file": names, "n": [int(s[1:]) for s in names]})
    """
    settings_json = json.dumps(
        {"append_row": {"pandas.DataFrame.to_csv": {"sep": ",", "index": True}}}
    )
    dep = write_deployment(
        tmp_path / "deploy",
        script,
        settings={"mini_batch_size": 2},
        extra_code={"parallel_run_step.settings.json": settings_json},
    )
    result = run_job(client, dep, write_inputs(tmp_path / "in", 5), tmp_path / "out")
    assert result.status == "Completed"
    assert result.predictions.read_text().splitlines() == [
        "0,f0000,0",
        "1,f0001,1",
        "0,f0002,2",
        "1,f0003,3",
        "0,f0004,4",
    ]


def test_rows_the_to_csv_options_cannot_write_fail_their_mini_batch_alone(client, tmp_path):
    """quoting 3 (QUOTE_NONE) without an escapechar refuses a value holding the separator: that
    mini-batch fails, naming the options; the job's other rows are written.  (Formatted later
    with its neighbours, it ended the whole job with an internal error and no output.)  A
    frame of rows without columns writes an empty line per row, as to_csv does, so that the
    rows counted are the lines written."""
    script = """
        import os
        import pandas as pd

        def init():
            pass

        def run(mini_batch):
            names = [os.path.splitext(os.path.basename(p))[0] for p in mini_batch]
            if "f0002" in names:
                return pd.DataFrame({"file": [n + ",x" for n in names]})
            if "f0004" in names:
                return pd.DataFrame(index=range(len(names)))
            return pd.DataFrame({"file": names})
    """
    settings_json = json.dumps(
        {"append_row": {"pandas.DataFrame.to_csv": {"sep": ",", "quoting": 3}}}
    )
    dep = write_deployment(
        tmp_path / "deploy",
        script,
        settings={
            "mini_batch_size": 2,
            "error_threshold": -1,
            "retry_settings": {"max_retries": 0},
        },
        extra_code={"parallel_run_step.settings.json": settings_json},
    )
    result = run_job(client, dep, write_inputs(tmp_path / "in", 6), tmp_path / "out")
    assert result.status == "Completed"
    assert result.predictions.read_text().split("\n") == ["f0000", "f0001", "", "", ""]
    summary = summary_of(tmp_path / "out")
    assert (summary["succeeded_items"], summary["failed_items"]) == (4, 2)
    assert summary["rows_written"] == 4
    (failure,) = summary["failures"]
    assert failure["mini_batch_id"] == 1
    assert failure["error"].startswith("FormatError: the rows run() returned cannot be written")
    assert "quoting=3" in failure["error"] and "escapechar" in failure["error"]


def test_output_file_name_override(client, tmp_path):
    script = """
        import os

        def init():
            pass

        def run(mini_batch):
            return [os.path.basename(p) for p in mini_batch]
    """
    dep = write_deployment(tmp_path / "deploy", script)
    out = tmp_path / "out"
    result = run_job(
        client,
        dep,
        write_inputs(tmp_path / "in", 4),
        out,
        set={"settings.output_file_name": "x.csv"},
    )
    assert result.status == "Completed"
    assert result.predictions == out / "x.csv"
    assert (out / "x.csv").is_file()
    assert not (out / "predictions.csv").exists()
    assert read_rows(out / "x.csv")[0].tolist() == [f"{s}.csv" for s in stems(4)]


SUMMARY_ONLY_SCRIPT = """
    import os
    import pandas as pd

    def init():
        pass

    def run(mini_batch):
        out_dir = os.environ["AZUREML_BI_OUTPUT_PATH"]
        written = []
        for p in mini_batch:
            stem = os.path.splitext(os.path.basename(p))[0]
            df = pd.read_csv(p)
            df["doubled"] = df["x"] * 2
            target = os.path.join(out_dir, stem + ".parquet")
            df.to_parquet(target)
            written.append(target)
        return written
"""


def test_summary_only_script_writes_its_own_files(client, tmp_path):
    n = 17
    dep = write_deployment(
        tmp_path / "deploy",
        SUMMARY_ONLY_SCRIPT,
        settings={"output_action": "summary_only", "mini_batch_size": 4},
    )
    out = tmp_path / "out"
    result = run_job(client, dep, write_inputs(tmp_path / "in", n), out)

    assert result.status == "Completed"
    assert result.predictions is None
    assert not (out / "predictions.csv").exists()
    for i, stem in enumerate(stems(n)):
        df = pd.read_parquet(out / f"{stem}.parquet")
        assert df["x"].tolist() == [i, i + 0.5]
        assert df["doubled"].tolist() == [2 * i, 2 * i + 1.0]
    summary = summary_of(out)
    assert summary["status"] == "Completed"
    assert summary["total_items"] == n
    assert summary["succeeded_items"] == n
    assert summary["failed_items"] == 0
    assert summary["total_mini_batches"] == math.ceil(n / 4)
    assert summary["failed_mini_batches"] == 0


# --------------------------------------------------------------------------- books and logs


def test_job_summary_processed_mini_batches_and_stdout_logs(client, tmp_path):
    script = """
        import logging
        import os

        def init():
            print("init says hello")

        def run(mini_batch):
            for p in mini_batch:
                print(f"scoring {os.path.basename(p)}")
            logging.getLogger("user").info("logged a mini-batch")
            return [os.path.basename(p) for p in mini_batch]
    """
    n = 25
    dep = write_deployment(tmp_path / "deploy", script, settings={"mini_batch_size": 4})
    out = tmp_path / "out"
    result = run_job(client, dep, write_inputs(tmp_path / "in", n), out)
    assert result.status == "Completed"

    summary = summary_of(out)
    assert SUMMARY_KEYS <= set(summary), SUMMARY_KEYS - set(summary)
    assert summary["status"] == "Completed"
    assert summary["total_items"] == n
    assert summary["succeeded_items"] == n
    assert summary["failed_items"] == 0
    assert summary["total_mini_batches"] == 7
    assert summary["failed_mini_batches"] == 0
    assert summary["failures"] == []
    assert isinstance(summary["duration_s"], (int, float)) and summary["duration_s"] >= 0
    # the same counts as attributes of the result
    assert result.summary == summary
    assert (result.total_items, result.succeeded_items, result.failed_items) == (n, n, 0)

    processed = processed_of(out)
    assert sorted(processed["mini_batch_id"].tolist()) == list(range(7))
    assert set(processed["status"]) == {"RUN_DONE"}
    assert processed["total"].sum() == n

    stdout_dir = out / "logs" / "user" / "stdout"
    logs = list(stdout_dir.glob("*.txt"))
    assert logs, "print() output goes to logs/user/stdout/<worker>.txt"
    assert all(re.fullmatch(r"worker-\d+\.txt", p.name) for p in logs), logs
    text = "".join(p.read_text() for p in logs)
    for stem in stems(n):
        assert f"scoring {stem}.csv" in text
    assert "init says hello" in text
    assert "logged a mini-batch" in text


def test_existing_output_is_refused_then_overwritten(client, tmp_path):
    script = """
        import os

        def init():
            pass

        def run(mini_batch):
            return [os.path.basename(p) for p in mini_batch]
    """
    dep = write_deployment(tmp_path / "deploy", script)
    out = tmp_path / "out"
    first = run_job(client, dep, write_inputs(tmp_path / "in5", 5), out)
    assert first.status == "Completed"

    small = write_inputs(tmp_path / "in3", 3)
    with pytest.raises(daskscore.OutputError) as info:
        run_job(client, dep, small, out)
    assert "overwrite" in str(info.value)
    assert isinstance(info.value, daskscore.UsageError)
    assert len(read_rows(out / "predictions.csv")) == 5, "a refused job leaves the output alone"

    again = run_job(client, dep, small, out, overwrite=True)
    assert again.status == "Completed"
    assert read_rows(out / "predictions.csv")[0].tolist() == [f"{s}.csv" for s in stems(3)]
    assert summary_of(out)["total_items"] == 3


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"overwrite": True, "resume": True}, ["overwrite", "resume"]),
        ({"workers": 0}, ["workers=0"]),
        ({"workers": -1}, ["workers=-1"]),
        ({"rows_per_file": 0, "output_format": "parquet"}, ["rows_per_file=0"]),
        ({"prefetch": -1}, ["prefetch=-1"]),
        ({"prefetch_mb": math.nan}, ["prefetch_mb=nan"]),
        ({"resources": "GPU=-1"}, ["GPU=-1.0"]),
        ({"max_retries": -1}, ["override: settings.retry_settings.max_retries"]),
        ({"set": {"mini_batch_size": "0 rows"}}, ["override: settings.mini_batch_size"]),
    ],
    ids=[
        "overwrite-resume",
        "workers-0",
        "workers-minus-1",
        "rows_per_file-0",
        "prefetch-minus-1",
        "prefetch_mb-nan",
        "resources-minus-1",
        "max_retries-minus-1",
        "set-mini_batch_size-0-rows",
    ],
)
def test_the_api_refuses_what_cannot_be_meant_before_anything_runs(client, tmp_path, kwargs, named):
    """daskscore.run() checks what the command checks: overwrite with resume (overwrite used
    to win and discard an interrupted job's progress), and numbers that cannot be meant."""
    dep = write_deployment(
        tmp_path / "deploy", "def init():\n    pass\n\ndef run(b):\n    return b\n"
    )
    out = tmp_path / "out"
    with pytest.raises(daskscore.UsageError) as info:
        run_job(client, dep, write_inputs(tmp_path / "in", 3), out, **kwargs)
    for text in named:
        assert text in str(info.value), str(info.value)
    assert not out.exists(), "nothing ran"


CONCURRENCY_SCRIPT = """
    import os
    import threading
    import time

    _guard = threading.Lock()
    _active = 0
    peak = 0

    def run(mini_batch):
        global _active, peak
        with _guard:
            _active += 1
            peak = max(peak, _active)
        time.sleep(0.02)
        with _guard:
            _active -= 1
        return [f"{os.path.basename(p)} {peak}" for p in mini_batch]
"""


@pytest.mark.parametrize("listener", ["0.0.0.0", "127.0.0.1"])
def test_run_is_never_called_concurrently_in_one_process(tmp_path, dashboard_port_taken, listener):
    """A worker with several threads (a cluster someone else started) still runs one
    mini-batch at a time per process, as Azure does: scripts keep one model in a global and
    are not written to be thread-safe.

    The cluster is started while something listens on port 8787 (on every address, then on
    loopback only), as on a machine where a Dask dashboard runs: it binds port 0."""
    from distributed import Client, LocalCluster

    dep = write_deployment(tmp_path / "dep", CONCURRENCY_SCRIPT, settings={"mini_batch_size": 1})
    inputs = write_inputs(tmp_path / "in", 40)
    if not dashboard_port_taken.answers():  # (the other test process held it, and is done)
        dashboard_port_taken.take("0.0.0.0") or dashboard_port_taken.take("127.0.0.1")
    assert dashboard_port_taken.answers(), "something listens on 8787 during the whole suite"
    with (
        dashboard_port_taken.held_on(listener),
        LocalCluster(
            n_workers=1,
            threads_per_worker=4,
            processes=True,
            host="127.0.0.1",
            # (None still serves the dashboard, on 8787: any free port instead)
            dashboard_address="127.0.0.1:0",
        ) as lc,
        Client(lc) as client,
    ):
        result = daskscore.run(dep, inputs, tmp_path / "out", client=client)
    rows = result.predictions.read_text().splitlines()
    assert len(rows) == 40
    assert {row.split()[1] for row in rows} == {"1"}
