"""``parallel_run_step.settings.json``: its keys are checked as a deployment file's are.  A key
nobody knows — a misspelt section, an argument pandas' ``to_csv`` does not take — is an error
naming the file, the key and the nearest known one (every such key at once), before anything
runs; ``lenient`` makes it a warning, kept in the job's summary, and the key is ignored.  An
encoding or errors handler Python does not know, and a compression, are refused.  The last
tests run the command in a subprocess."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import write_deployment, write_inputs
from helpers import cli, show, summary_of

from daskscore.config.csvsettings import APPEND_ROW_CSV_DEFAULTS, read_csv_settings
from daskscore.errors import ConfigError

NAME = "parallel_run_step.settings.json"
TO_CSV = "append_row.pandas.DataFrame.to_csv"


def _write(folder: Path, doc: Any) -> Path:
    path = folder / NAME
    path.write_text(json.dumps(doc))
    return path


# (the file; the unknown key it names; the known key suggested)
UNKNOWN = [
    ({"append_row": {"to_csv": {"sep": ","}}}, "append_row.to_csv", TO_CSV),
    ({"apend_row": {"pandas.DataFrame.to_csv": {}}}, "apend_row", "append_row"),
    ({"append_row": {"pandas.DataFrame.to_csv": {"encodng": "latin-1"}}},
     f"{TO_CSV}.encodng", f"{TO_CSV}.encoding"),
    ({"append_row": {"pandas.DataFrame.to_csv": {"seperator": ","}}},
     f"{TO_CSV}.seperator", f"{TO_CSV}.sep"),
    ({"append_row": {"pandas.DataFrame.to_csv": {"line_terminator": "\r\n"}}},
     f"{TO_CSV}.line_terminator", f"{TO_CSV}.lineterminator"),
]  # fmt: skip
UNKNOWN_IDS = ["section", "top", "argument", "separator", "old-pandas-name"]


@pytest.mark.parametrize(("doc", "key", "nearest"), UNKNOWN, ids=UNKNOWN_IDS)
def test_an_unknown_key_is_an_error_naming_the_file_and_the_nearest_key(
    tmp_path: Path, doc: dict, key: str, nearest: str
) -> None:
    path = _write(tmp_path, doc)
    with pytest.raises(ConfigError) as info:
        read_csv_settings(tmp_path)
    message = str(info.value)
    assert message.startswith(f"{path}: unknown key '{key}' (did you mean '{nearest}'?)."), message
    assert "--lenient" in message


@pytest.mark.parametrize(("doc", "key", "nearest"), UNKNOWN, ids=UNKNOWN_IDS)
def test_lenient_ignores_an_unknown_key_with_a_warning(
    tmp_path: Path, doc: dict, key: str, nearest: str
) -> None:
    _write(tmp_path, doc)
    warned: list[str] = []
    assert read_csv_settings(tmp_path, lenient=True, warned=warned) == APPEND_ROW_CSV_DEFAULTS
    (warning,) = warned
    assert f"unknown key '{key}' (did you mean '{nearest}'?)" in warning
    assert warning.endswith("; it is ignored (lenient).")


def test_every_unknown_key_is_named_at_once_and_lenient_keeps_the_known(tmp_path: Path) -> None:
    args = {"sep": ",", "sepp": ";", "quotechar": "'", "bogus": 1}
    _write(tmp_path, {"append_row": {"pandas.DataFrame.to_csv": args}, "extra": {}})
    with pytest.raises(ConfigError) as info:
        read_csv_settings(tmp_path)
    lines = str(info.value).splitlines()
    assert [line.split("'")[1] for line in lines] == ["extra", f"{TO_CSV}.sepp", f"{TO_CSV}.bogus"]
    warned: list[str] = []
    kwargs = read_csv_settings(tmp_path, lenient=True, warned=warned)
    assert kwargs == {**APPEND_ROW_CSV_DEFAULTS, "sep": ",", "quotechar": "'"}
    assert len(warned) == 3


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ({"encoding": "klingon"}, "unknown encoding: klingon"),
        ({"encoding": "base64"}, "not a text encoding"),
        ({"encoding": "latin-1", "errors": "shrug"}, "unknown error handler name 'shrug'"),
        ({"compression": "gzip"}, "compress the file once the job is done"),
    ],
    ids=["encoding", "not-text", "errors", "compression"],
)
def test_what_the_file_cannot_be_written_with_is_refused(
    tmp_path: Path, given: dict, said: str
) -> None:
    path = _write(tmp_path, {"append_row": {"pandas.DataFrame.to_csv": given}})
    with pytest.raises(ConfigError) as info:
        read_csv_settings(tmp_path)
    message = str(info.value)
    assert message.startswith(f"{path}: append_row.pandas.DataFrame.to_csv: ") and said in message


def test_encoding_and_errors_are_kept_for_the_writer(tmp_path: Path) -> None:
    given = {"encoding": "utf-16", "errors": "replace", "compression": "infer"}
    _write(tmp_path, {"append_row": {"pandas.DataFrame.to_csv": given}})
    assert read_csv_settings(tmp_path) == {**APPEND_ROW_CSV_DEFAULTS, **given}


# --------------------------------------------------------------------------- the command

SCRIPT = """
    import os

    def init():
        pass

    def run(mini_batch):
        return [os.path.basename(p) for p in mini_batch]
"""


def test_run_refuses_a_misspelt_section_and_lenient_runs_with_the_warning_kept(
    tmp_path: Path,
) -> None:
    dep = write_deployment(tmp_path / "deploy", SCRIPT, settings={"mini_batch_size": 2})
    path = _write(tmp_path / "deploy" / "code", {"append_row": {"to_csv": {"sep": ","}}})
    inputs, out = write_inputs(tmp_path / "in", 3), tmp_path / "out"
    proc = cli(dep, inputs, out)
    assert proc.returncode == 2, show(proc)
    assert f"{path}: unknown key 'append_row.to_csv'" in proc.stderr, show(proc)
    assert "Traceback" not in proc.stderr and not (out / "job_summary.json").exists()
    proc = cli(dep, inputs, out, "--lenient")
    assert proc.returncode == 0, show(proc)
    assert "daskscore: warning:" in proc.stderr
    assert proc.stderr.count("'append_row.to_csv'") == 1, show(proc)  # (said once)
    (warning,) = summary_of(out)["warnings"]
    assert warning.startswith(f"{path}: unknown key 'append_row.to_csv'")
    assert warning in (out / "logs" / "sys" / "daskscore.txt").read_text()


@pytest.mark.parametrize("args", [{"quoting": 3}, {"quoting": 3, "sep": "x"}])
def test_quote_none_without_an_escapechar_is_taken(tmp_path: Path, args: dict) -> None:
    """QUOTE_NONE with no escapechar writes every value that holds no separator: it is taken
    (a mini-batch whose values hold one fails as it is written, naming the options)."""
    _write(tmp_path, {"append_row": {"pandas.DataFrame.to_csv": args}})
    assert read_csv_settings(tmp_path)["quoting"] == 3
