"""Unit tests of daskscore.worker.script: checking the scoring script, what run() returns, the
append_row format, parallel_run_step.settings.json, and user-only tracebacks."""

from __future__ import annotations

import importlib.util
import io
import json
import re
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

from daskscore import ConfigError
from daskscore.io.writers import format_rows
from daskscore.worker.script import (
    APPEND_ROW_CSV_DEFAULTS,
    ResultError,
    check_script,
    forget_code,
    import_script,
    normalize_result,
    read_csv_settings,
    user_traceback,
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- check_script


@pytest.mark.parametrize(
    "source",
    [
        "def init():\n    pass\n\ndef run(mini_batch):\n    return mini_batch\n",
        "async def run(mini_batch):\n    return mini_batch\n",
        "def _score(b):\n    return b\n\nrun = _score\n",
        "from typing import Callable\nrun: Callable = print\n",
        "from helpers import run\n",
        "from helpers import score as run\n",
        "import sys\nif sys.platform:\n    def run(b):\n        return b\n",
        "try:\n    from fast import run\nexcept ImportError:\n    run = list\n",
        "import sys\nif sys.platform == 'x':\n    raise SystemExit\n"
        "else:\n    def run(b):\n        return b\n",
    ],
    ids=[
        "def",
        "async-def",
        "assign",
        "annotated",
        "import",
        "import-as",
        "if-body",
        "try-body",
        "else-branch",
    ],
)
def test_check_script_accepts_a_run(tmp_path: Path, source: str) -> None:
    check_script(write(tmp_path / "score.py", source))


@pytest.mark.parametrize(
    "source",
    [
        "def init():\n    pass\n",
        "def runner(b):\n    return b\n",
        "def outer():\n    def run(b):\n        return b\n",
        "class Scorer:\n    def run(self, b):\n        return b\n",
        "from helpers import run_all\n",
        "",
    ],
    ids=["init-only", "other-name", "nested", "method", "import-other", "empty"],
)
def test_check_script_rejects_a_script_without_run(tmp_path: Path, source: str) -> None:
    script = write(tmp_path / "score.py", source)
    with pytest.raises(ConfigError, match="run") as info:
        check_script(script)
    assert str(script) in str(info.value)


@pytest.mark.parametrize(
    ("source", "why"),
    [
        ("def run():\n    return []\n", "run(mini_batch) must take one argument"),
        ("def run(a, b):\n    return []\n", "run(mini_batch) must take one argument"),
        ("def run(b, *, k):\n    return []\n", "run(mini_batch) must take one argument"),
        ("def init(model_dir):\n    pass\ndef run(b):\n    return b\n", "init() must take no"),
    ],
    ids=["run-none", "run-two", "run-keyword", "init-one"],
)
def test_check_script_rejects_entries_azure_cannot_call(
    tmp_path: Path, source: str, why: str
) -> None:
    script = write(tmp_path / "score.py", source)
    with pytest.raises(ConfigError, match=re.escape(why)) as info:
        check_script(script)
    assert f"{script}, line " in str(info.value)


@pytest.mark.parametrize(
    "source",
    [
        "def run(mini_batch, extra=1):\n    return mini_batch\n",
        "def run(*args):\n    return args[0]\n",
        "def init(*, debug=False):\n    pass\ndef run(b):\n    return b\n",
    ],
)
def test_check_script_accepts_entries_that_take_the_call(tmp_path: Path, source: str) -> None:
    check_script(write(tmp_path / "score.py", source))


@pytest.mark.parametrize(
    ("source", "why"),
    [
        ("run = None\n", "binds run = None, not a function"),
        ("init = 5\ndef run(b):\n    return b\n", "binds init = 5, not a function"),
        ("run = lambda: []\n", "run(mini_batch) must take one argument"),
        (
            "import functools\ndef run(b):\n    return b\ninit = functools.partial(run)\n",
            "init() must take no arguments",
        ),
    ],
    ids=["run-none", "init-number", "run-lambda", "init-partial"],
)
def test_check_entries_refuses_what_the_static_check_cannot_see(
    tmp_path: Path, source: str, why: str
) -> None:
    from daskscore.worker.script import ScriptShapeError, check_entries

    module = import_script(tmp_path, write(tmp_path / "score.py", source))
    try:
        with pytest.raises(ScriptShapeError, match=re.escape(why)) as info:
            check_entries(module, "score.py")
        assert str(info.value).startswith("importing the scoring script score.py failed: ")
    finally:
        forget_code(tmp_path)


def test_check_script_reports_the_syntax_error_line(tmp_path: Path) -> None:
    script = write(tmp_path / "score.py", "import os\n\ndef run(b)\n    return b\n")
    with pytest.raises(ConfigError, match="line 3") as info:
        check_script(script)
    assert str(script) in str(info.value)
    assert info.value.__cause__ is None


def test_check_script_does_not_run_the_script(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    script = write(
        tmp_path / "score.py",
        f"open({str(marker)!r}, 'w').close()\n\ndef run(b):\n    return b\n",
    )
    check_script(script)
    assert not marker.exists()


# --------------------------------------------------------------------------- normalize_result


def test_a_list_is_kept() -> None:
    items = ["a", 1, {"k": 2}]
    assert normalize_result(items) == ["a", 1, {"k": 2}]


def test_a_tuple_becomes_a_list() -> None:
    out = normalize_result(("a", "b"))
    assert isinstance(out, list)
    assert out == ["a", "b"]


def test_a_1d_array_gives_one_item_per_element() -> None:
    out = normalize_result(np.array([0.5, 1.5, 2.5]))
    assert isinstance(out, list)
    assert out == [0.5, 1.5, 2.5]


def test_a_2d_array_gives_one_item_per_row() -> None:
    arr = np.arange(6).reshape(3, 2)
    out = normalize_result(arr)
    assert isinstance(out, list)
    assert len(out) == 3
    for row, expected in zip(out, arr, strict=True):
        assert list(row) == list(expected)


def test_a_series_gives_its_values() -> None:
    out = normalize_result(pd.Series([3, 4, 5], index=[10, 20, 30]))
    assert out == [3, 4, 5]


def test_a_dataframe_stays_a_dataframe() -> None:
    df = pd.DataFrame({"file": ["a", "b"], "p": [0.1, 0.2]})
    out = normalize_result(df)
    assert isinstance(out, pd.DataFrame)
    pd.testing.assert_frame_equal(out, df)


@pytest.mark.parametrize("kind", ["table", "record batch"])
def test_a_pyarrow_table_gives_one_row_per_row(kind: str) -> None:
    import pyarrow as pa

    table = pa.table({"file": ["a", "b", "c"], "p": [0.1, 0.2, 0.3]})
    result = table if kind == "table" else table.to_batches()[0]
    out = normalize_result(result)
    assert isinstance(out, pd.DataFrame)
    assert out["file"].tolist() == ["a", "b", "c"]
    assert out["p"].tolist() == [0.1, 0.2, 0.3]


def test_a_generator_is_consumed_into_a_list() -> None:
    def gen() -> Iterator[str]:
        yield "x"
        yield "y"

    assert normalize_result(gen()) == ["x", "y"]


def test_an_empty_list_is_zero_items() -> None:
    assert normalize_result([]) == []


@pytest.mark.parametrize(
    "value",
    [None, "a string", b"bytes", {"a": 1}, 3, 2.5, np.float64(1.0), np.array(5), object()],
    ids=["None", "str", "bytes", "dict", "int", "float", "np-scalar", "0d-array", "object"],
)
def test_unsupported_results_raise_result_error(value: object) -> None:
    with pytest.raises(ResultError, match="run\\(\\) returned"):
        normalize_result(value)


def test_result_error_says_what_to_return() -> None:
    with pytest.raises(ResultError) as info:
        normalize_result({"a": 1})
    assert "dict" in str(info.value)
    assert "list" in str(info.value) and "DataFrame" in str(info.value)


# --------------------------------------------------------------------------- format_rows


def test_a_dataframe_is_space_separated_without_header_or_index() -> None:
    df = pd.DataFrame(
        {"file": ["a.csv", "b c.csv", "d.csv"], "pred": [1, 2, 3], "p": [0.25, 0.5, 0.75]},
        index=[7, 8, 9],
    )
    data = format_rows(df, APPEND_ROW_CSV_DEFAULTS)
    assert isinstance(data, bytes)
    lines = data.decode().splitlines()
    assert lines[0] == "a.csv 1 0.25"  # no header line, no index column
    assert len(lines) == 3
    assert data.endswith(b"\n")
    back = pd.read_csv(io.BytesIO(data), sep=" ", header=None)
    assert back.shape == (3, 3)
    assert back[0].tolist() == ["a.csv", "b c.csv", "d.csv"]
    assert back[1].tolist() == [1, 2, 3]
    assert back[2].tolist() == [0.25, 0.5, 0.75]


def test_mini_batches_concatenate_into_one_readable_file() -> None:
    a = format_rows(pd.DataFrame({"x": [1, 2]}), APPEND_ROW_CSV_DEFAULTS)
    b = format_rows(pd.DataFrame({"x": [3]}), APPEND_ROW_CSV_DEFAULTS)
    back = pd.read_csv(io.BytesIO(a + b), sep=" ", header=None)
    assert back[0].tolist() == [1, 2, 3]


def test_a_list_gives_one_line_per_element_as_str() -> None:
    items = ["a.png 3", 7, {"file": "b", "p": 0.5}, 1.5]
    data = format_rows(items, APPEND_ROW_CSV_DEFAULTS)
    assert data.decode().split("\n") == [
        "a.png 3",
        "7",
        str({"file": "b", "p": 0.5}),
        "1.5",
        "",
    ]


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
def test_an_element_with_a_newline_stays_on_one_line(newline: str) -> None:
    items = [f"first{newline}part", "second"]
    text = format_rows(items, APPEND_ROW_CSV_DEFAULTS).decode()
    lines = re.split(r"\r\n|\r|\n", text)
    assert lines == [lines[0], "second", ""]
    assert lines[0].startswith("first") and lines[0].endswith("part")
    back = pd.read_csv(io.StringIO(text), sep="\t", header=None)
    assert len(back) == 2


def test_empty_results_write_nothing() -> None:
    assert format_rows([], APPEND_ROW_CSV_DEFAULTS) == b""
    assert format_rows(pd.DataFrame({"x": []}), APPEND_ROW_CSV_DEFAULTS) == b""


# --------------------------------------------------------------------------- read_csv_settings


def test_csv_settings_default_to_azure_format(tmp_path: Path) -> None:
    assert read_csv_settings(tmp_path) == {"sep": " ", "header": False, "index": False}


def test_csv_settings_from_parallel_run_step_settings_json(tmp_path: Path) -> None:
    settings = {"append_row": {"pandas.DataFrame.to_csv": {"sep": ",", "index": True}}}
    (tmp_path / "parallel_run_step.settings.json").write_text(json.dumps(settings))
    kwargs = read_csv_settings(tmp_path)
    assert kwargs == {"sep": ",", "header": False, "index": True}
    df = pd.DataFrame({"x": [1, 2]}, index=[5, 6])
    assert format_rows(df, kwargs) == b"5,1\n6,2\n"


def test_csv_settings_may_change_the_line_terminator(tmp_path: Path) -> None:
    settings = {"append_row": {"pandas.DataFrame.to_csv": {"sep": ";", "lineterminator": "\r\n"}}}
    (tmp_path / "parallel_run_step.settings.json").write_text(json.dumps(settings))
    kwargs = read_csv_settings(tmp_path)
    assert format_rows(pd.DataFrame({"x": [1, 2], "y": [3, 4]}), kwargs) == b"1;3\r\n2;4\r\n"


@pytest.mark.parametrize("text", ["{}", '{"append_row": {}}'])
def test_csv_settings_json_without_append_row_keeps_defaults(tmp_path: Path, text: str) -> None:
    (tmp_path / "parallel_run_step.settings.json").write_text(text)
    assert read_csv_settings(tmp_path) == {"sep": " ", "header": False, "index": False}


@pytest.mark.parametrize(
    ("given", "said"),
    [({"sep": "||"}, "1-character string"), ({"sep": ",", "quoting": 9}, "quoting")],
)
def test_to_csv_arguments_pandas_refuses_are_an_error_before_the_job(
    tmp_path: Path, given: dict, said: str
) -> None:
    """Else every mini-batch fails as it is written, as if run() had failed."""
    path = tmp_path / "parallel_run_step.settings.json"
    path.write_text(json.dumps({"append_row": {"pandas.DataFrame.to_csv": given}}))
    with pytest.raises(ConfigError) as info:
        read_csv_settings(tmp_path)
    message = str(info.value)
    assert str(path) in message and said in message
    assert f"{next(iter(given))}=" in message


def test_to_csv_arguments_that_depend_on_the_columns_are_not_tried(tmp_path: Path) -> None:
    given = {"sep": ",", "columns": ["p"], "header": ["P"], "index_label": ["i"], "index": True}
    settings = {"append_row": {"pandas.DataFrame.to_csv": given}}
    (tmp_path / "parallel_run_step.settings.json").write_text(json.dumps(settings))
    kwargs = read_csv_settings(tmp_path)
    frame = pd.DataFrame({"p": [1.5], "q": [2]}, index=[7])
    assert format_rows(frame, kwargs) == b"i,P\n7,1.5\n"


def test_csv_settings_ignore_a_path_argument(tmp_path: Path) -> None:
    settings = {"append_row": {"pandas.DataFrame.to_csv": {"path_or_buf": "x.csv"}}}
    (tmp_path / "parallel_run_step.settings.json").write_text(json.dumps(settings))
    assert "path_or_buf" not in read_csv_settings(tmp_path)


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        "[1, 2]",
        '{"append_row": [1]}',
        '{"append_row": {"pandas.DataFrame.to_csv": [1]}}',
    ],
    ids=["syntax", "list", "append_row-list", "to_csv-list"],
)
def test_malformed_settings_json_is_a_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "parallel_run_step.settings.json"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        read_csv_settings(tmp_path)
    assert str(path) in str(info.value)


# --------------------------------------------------------------------------- user_traceback


@pytest.fixture
def raising_module(tmp_path: Path) -> Iterator[tuple[Path, ModuleType]]:
    """``code/usermod.py`` (user code) calling ``lib/helper_lib.py`` (a library) that raises."""
    code = tmp_path / "code"
    lib = tmp_path / "lib"
    write(
        lib / "helper_lib.py",
        """\
        def middle(path):
            return boom(path)


        def boom(path):
            raise ValueError(f"cannot parse {path}")
        """,
    )
    write(
        code / "usermod.py",
        """\
        import helper_lib


        def score(path):
            return helper_lib.middle(path)


        def run(mini_batch):
            out = []
            for path in mini_batch:
                out.append(score(path))
            return out
        """,
    )
    sys.path.insert(0, str(lib))
    try:
        spec = importlib.util.spec_from_file_location("usermod", code / "usermod.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield code, module
    finally:
        sys.path.remove(str(lib))
        sys.modules.pop("helper_lib", None)


def _driver(module: ModuleType) -> None:
    module.run(["bad.csv"])


def test_user_traceback_keeps_user_frames_and_the_raising_frame(
    raising_module: tuple[Path, ModuleType],
) -> None:
    code, module = raising_module
    with pytest.raises(ValueError) as info:
        _driver(module)
    text = user_traceback(info.value, code)
    assert text.startswith("Traceback (most recent call last):")
    assert text.count('usermod.py"') == 2  # run and score
    assert "in run" in text and "in score" in text
    assert "in boom" in text  # the frame that raised, though outside the code folder
    assert "in middle" not in text  # a library frame on the way: dropped
    assert "_driver" not in text and "test_script.py" not in text  # our frames: dropped
    assert text.splitlines()[-1] == "ValueError: cannot parse bad.csv"


def test_user_traceback_of_a_chained_exception(raising_module: tuple[Path, ModuleType]) -> None:
    code, module = raising_module
    try:
        try:
            _driver(module)
        except ValueError as exc:
            raise RuntimeError("scoring failed") from exc
    except RuntimeError as exc:
        text = user_traceback(exc, code)
    assert "ValueError: cannot parse bad.csv" in text
    assert "direct cause" in text
    assert text.splitlines()[-1] == "RuntimeError: scoring failed"
    assert "in middle" not in text
    assert "_driver" not in text


def test_preloadable_imports_are_installed_libraries_imported_at_top_level(tmp_path):
    from daskscore.worker.script import preloadable_imports

    code = tmp_path / "code"
    code.mkdir()
    (code / "pandas_helpers.py").write_text("")
    (code / "PIL.py").write_text("")  # a file of the code folder shadows the library
    script = code / "score.py"
    script.write_text(
        "import os\n"
        "import numpy as np\n"
        "from pandas import DataFrame\n"
        "import PIL\n"
        "try:\n"
        "    import torch.nn\n"
        "except ImportError:\n"
        "    torch = None\n"
        "import pandas_helpers\n"
        "def run(mini_batch):\n"
        "    import pyarrow  # inside a function: not run on import\n"
    )
    found = preloadable_imports(script, code)
    assert found[:2] == ["numpy", "pandas"]
    assert "pyarrow" not in found and "pandas_helpers" not in found and "os" not in found
    assert "PIL" not in found  # the code folder's PIL.py is what the worker would import
    (code / "bad.py").write_text("def (:\n")
    assert preloadable_imports(code / "bad.py", code) == []


def test_a_module_of_the_process_named_like_the_code_folders_is_set_aside_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process has a ``utils`` of its own (a driver's, in the driver's dry run): the
    script imports the code folder's, and once the code is forgotten the process has its own
    back.  An installed module of a code folder's name (``json``) is not touched."""
    own = tmp_path / "driver"
    own.mkdir()
    (own / "utils.py").write_text("WHO = 'driver'\n")
    spec = importlib.util.spec_from_file_location("utils", own / "utils.py")
    assert spec is not None and spec.loader is not None
    mine = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mine)
    monkeypatch.setitem(sys.modules, "utils", mine)
    code = tmp_path / "code"
    code.mkdir()
    (code / "utils.py").write_text("WHO = 'code folder'\n")
    (code / "json.py").write_text("raise RuntimeError('the installed json is kept')\n")
    (code / "score.py").write_text("import json, utils\nWHO = utils.WHO\n")
    module = import_script(code, code / "score.py")
    try:
        assert module.WHO == "code folder"
        assert sys.modules["json"] is json
    finally:
        forget_code(code)
    assert sys.modules["utils"] is mine
    assert str(code) not in sys.path
