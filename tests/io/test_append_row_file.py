"""The append_row file of whole jobs: it reads back as the rows run() returned, whatever they
hold; it is written in the ``encoding`` of ``parallel_run_step.settings.json`` (a byte order
mark once, at its start, however it was assembled); and a file of its name the scoring script
wrote into ``AZUREML_BI_OUTPUT_PATH`` is kept beside it, with a warning, never replaced.

Every job runs on the module's LocalCluster (the ``client`` fixture), on the shared disk or
shipped (``shared_filesystem=False``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from conftest import write_deployment, write_inputs
from helpers import summary_of

import daskscore

N_FILES = 7  # mini-batches of 2: 4 of them, the last of one file
SETTINGS_JSON = "parallel_run_step.settings.json"

# run() returns a DataFrame (KIND=frame) or a list (KIND=list) with a row per file; TEXT is a
# JSON list of label texts, given out in turn; a file named in RAISE (a flag file's path, while
# it exists) makes run() raise; SIDE names files (comma-separated) the script appends a line
# per file to in AZUREML_BI_OUTPUT_PATH.
SCRIPT = """
    import json
    import os

    import pandas as pd

    TEXT = json.loads(os.environ.get("TEXT", '["cat"]'))

    def init():
        pass

    def run(mini_batch):
        names = [os.path.basename(p) for p in mini_batch]
        flag = os.environ.get("RAISE", "")
        if flag and os.path.exists(flag) and open(flag).read() in names:
            raise ValueError("bad input")
        for side in filter(None, os.environ.get("SIDE", "").split(",")):
            path = os.path.join(os.environ["AZUREML_BI_OUTPUT_PATH"], side)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "a") as fh:
                fh.writelines(f"side {n}\\n" for n in names)
        labels = [TEXT[int(n[1:5]) % len(TEXT)] for n in names]
        if os.environ.get("KIND") == "list":
            return [f"{n} {label}" for n, label in zip(names, labels)]
        return pd.DataFrame({"file": names, "label": labels, "score": 0.25})
"""


def _job(
    tmp_path: Path, env: dict[str, str], to_csv: dict[str, object] | None = None
) -> tuple[Path, Path]:
    settings = {"mini_batch_size": 2, "environment_variables": env}
    settings["retry_settings"] = {"max_retries": 0}
    dep = write_deployment(tmp_path / "deploy", SCRIPT, settings=settings)
    if to_csv is not None:
        doc = {"append_row": {"pandas.DataFrame.to_csv": to_csv}}
        (tmp_path / "deploy" / "code" / SETTINGS_JSON).write_text(json.dumps(doc))
    return dep, write_inputs(tmp_path / "in", N_FILES)


def _expected(text: list[str]) -> pd.DataFrame:
    names = [f"f{i:04d}.csv" for i in range(N_FILES)]
    labels = [text[i % len(text)] for i in range(N_FILES)]
    return pd.DataFrame({"file": names, "label": labels, "score": 0.25})


# --------------------------------------------------------------------------- what reads back


@pytest.mark.parametrize("shipped", [False, True], ids=["shared", "shipped"])
def test_a_value_with_a_carriage_return_reads_back_as_returned(
    client: object, tmp_path: Path, shipped: bool
) -> None:
    """A label of a Windows file split on "\\n" ends in "\\r": unquoted, pandas ended the row
    there (and made "0.25" a row of its own).  Now quoted; the other rows keep their bytes."""
    text = ["cat\r", "dog", "mac\rline", "win\r\nline"]
    dep, inputs = _job(tmp_path, {"TEXT": json.dumps(text)})
    out = tmp_path / "out"
    result = daskscore.run(
        dep, inputs, out, client=client, shared_filesystem=False if shipped else None
    )
    assert result.status == "Completed" and result.succeeded_items == N_FILES
    data = (out / "predictions.csv").read_bytes()
    back = pd.read_csv(out / "predictions.csv", sep=" ", header=None)
    assert back.values.tolist() == _expected(text).values.tolist()
    assert b'f0000.csv "cat\r" 0.25\nf0001.csv dog 0.25\n' in data
    assert b"f0005.csv dog 0.25\n" in data


# --------------------------------------------------------------------------- encoding


@pytest.mark.parametrize("kind", ["frame", "list"])
@pytest.mark.parametrize("encoding", ["latin-1", "utf-16", "utf-8-sig", "cp1252"])
def test_the_settings_json_encoding_is_the_file_s(
    client: object, tmp_path: Path, encoding: str, kind: str
) -> None:
    """The file is what pandas writes with the encoding (Azure's writer is to_csv): a byte
    order mark once, at the start, however many mini-batches and workers wrote parts."""
    text = ["café", "naïve", "ß"]
    dep, inputs = _job(tmp_path, {"TEXT": json.dumps(text), "KIND": kind}, {"encoding": encoding})
    out = tmp_path / "out"
    result = daskscore.run(dep, inputs, out, client=client)
    assert result.status == "Completed" and result.succeeded_items == N_FILES
    expected, want = _expected(text), tmp_path / "want.csv"
    if kind == "frame":
        expected.to_csv(want, sep=" ", header=False, index=False, encoding=encoding)
    else:  # (a line per element, its str(): as written to a file opened with the encoding)
        with open(want, "w", encoding=encoding, newline="") as fh:
            fh.writelines(f"{line}\n" for line in expected.file + " " + expected.label)
    assert (out / "predictions.csv").read_bytes() == want.read_bytes()


def test_a_character_the_encoding_cannot_write_fails_its_mini_batch(
    client: object, tmp_path: Path
) -> None:
    text = ["cat", "€uro"]  # f0001, f0003, f0005: mini-batches 0, 1, 2
    env = {"TEXT": json.dumps(text)}
    dep, inputs = _job(tmp_path, env, {"encoding": "latin-1"})
    result = daskscore.run(dep, inputs, tmp_path / "out", client=client)
    assert result.failed_mini_batches == 3 and result.succeeded_items == 1
    error = result.failures[0]["error"]
    assert error.startswith("FormatError: ") and "'€' (U+20AC)" in error, error
    assert "'latin-1'" in error and '"errors": "replace"' in error, error
    assert (tmp_path / "out" / "predictions.csv").read_bytes() == b"f0006.csv cat 0.25\n"
    dep, inputs = _job(tmp_path / "b", env, {"encoding": "latin-1", "errors": "replace"})
    result = daskscore.run(dep, inputs, tmp_path / "b" / "out", client=client)
    assert result.status == "Completed" and result.succeeded_items == N_FILES
    assert b"f0001.csv ?uro 0.25\n" in (tmp_path / "b" / "out" / "predictions.csv").read_bytes()


@pytest.mark.parametrize("shipped", [False, True], ids=["shared", "shipped"])
def test_an_encoded_file_assembled_again_by_a_retry_has_one_byte_order_mark(
    client: object, tmp_path: Path, shipped: bool
) -> None:
    """--retry-failed assembles the file from the kept parts of the first pass and its own."""
    flag = tmp_path / "raise"
    flag.write_text("f0002.csv")
    text = ["ünï", "cödé"]
    env = {"TEXT": json.dumps(text), "RAISE": str(flag)}
    dep, inputs = _job(tmp_path, env, {"encoding": "utf-16"})
    out, share = tmp_path / "out", False if shipped else None
    first = daskscore.run(dep, inputs, out, client=client, shared_filesystem=share)
    assert first.failed_mini_batches == 1
    flag.unlink()
    again = daskscore.run(
        dep, inputs, out, client=client, retry_failed=True, shared_filesystem=share
    )
    assert again.status == "Completed" and again.succeeded_items == N_FILES
    data = (out / "predictions.csv").read_bytes()
    assert data.startswith(b"\xff\xfe") and data.count(b"\xff\xfe") == 1
    back = pd.read_csv(out / "predictions.csv", sep=" ", header=None, encoding="utf-16")
    assert back.values.tolist() == _expected(text).values.tolist()
    # (the job's own files, the first pass's report and failed items too: replaced)
    assert not list(out.glob("*.from-script*")) and not summary_of(out)["warnings"]


# --------------------------------------------------------------------------- a script's file


@pytest.mark.parametrize("shipped", [False, True], ids=["shared", "shipped"])
def test_a_file_of_the_output_s_name_the_script_wrote_is_kept_beside_it(
    client: object, tmp_path: Path, shipped: bool
) -> None:
    dep, inputs = _job(tmp_path, {"SIDE": "predictions.csv", "KIND": "list"})
    out = tmp_path / "out"
    result = daskscore.run(
        dep, inputs, out, client=client, shared_filesystem=False if shipped else None
    )
    assert result.status == "Completed"
    rows = (out / "predictions.csv").read_text().splitlines()
    assert rows == [f"f{i:04d}.csv cat" for i in range(N_FILES)]
    side = (out / "predictions.from-script.csv").read_text().splitlines()
    assert side and all(line.startswith("side f00") for line in side)
    if not shipped:  # (shipped, the folder's later file of a name replaces the earlier)
        assert sorted(side) == [f"side f{i:04d}.csv" for i in range(N_FILES)]
    (warning,) = summary_of(out)["warnings"]
    assert "'predictions.csv'" in warning and "'predictions.from-script.csv'" in warning
    assert "AZUREML_BI_OUTPUT_PATH" in warning and "settings.output_file_name" in warning
    assert warning in (out / "logs" / "sys" / "daskscore.txt").read_text()
    assert "predictions.from-script.csv" in (out / "report.html").read_text()


@pytest.mark.parametrize("shipped", [False, True], ids=["shared", "shipped"])
def test_files_of_the_names_daskscore_writes_beside_the_output_the_script_wrote_are_kept(
    client: object, tmp_path: Path, shipped: bool
) -> None:
    """The script's failed_items.csv was deleted (or replaced), its report.html and
    job_summary.json replaced by daskscore's, with no warning."""
    flag = tmp_path / "raise"
    flag.write_text("f0002.csv")  # (mini-batch 1 fails: daskscore writes its failed items)
    names = ["report.html", "failed_items.csv", "job_summary.json"]
    env = {"SIDE": ",".join(names), "KIND": "list", "RAISE": str(flag)}
    dep, inputs = _job(tmp_path, env)
    out = tmp_path / "out"
    result = daskscore.run(
        dep, inputs, out, client=client, shared_filesystem=False if shipped else None
    )
    assert result.failed_mini_batches == 1
    warnings = summary_of(out)["warnings"]  # (daskscore's summary: it reads as JSON)
    assert len(warnings) == len(names), warnings
    log = (out / "logs" / "sys" / "daskscore.txt").read_text()
    for name in names:
        stem, ext = os.path.splitext(name)
        side = (out / f"{stem}.from-script{ext}").read_text().splitlines()
        assert side and all(line.startswith("side f00") for line in side), name
        (warning,) = [w for w in warnings if f"its own '{name}'" in w]
        assert f"'{stem}.from-script{ext}'" in warning and "AZUREML_BI_OUTPUT_PATH" in warning
        assert warning in log
        assert "side f00" not in (out / name).read_text(), name  # (daskscore's own)
    failed = result.failed_items_frame()
    assert sorted(failed["file"].map(os.path.basename)) == ["f0002.csv", "f0003.csv"]
    assert "report.from-script.html" in (out / "report.html").read_text()


def test_a_script_s_dataset_folder_of_the_output_s_name_is_kept_beside_it(
    client: object, tmp_path: Path
) -> None:
    dep, inputs = _job(tmp_path, {"SIDE": os.path.join("predictions", "mine.txt")})
    out = tmp_path / "out"
    result = daskscore.run(dep, inputs, out, client=client, output_format="csv")
    assert result.status == "Completed"
    assert len(pd.read_csv(out / "predictions" / "part-00000.csv")) == N_FILES
    assert len((out / "predictions.from-script" / "mine.txt").read_text().splitlines()) == 7
    (warning,) = summary_of(out)["warnings"]
    assert "'predictions'" in warning and "csv dataset folder" in warning
