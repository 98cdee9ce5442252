"""Values read as their key's type: ``--set`` and the API's overrides keep a string key's text
exactly as typed (no YAML 1.1 reading: ``1:30`` is not 90, ``0x10`` not 16, ``no`` not false),
numbers' digits give numbers (``1e3`` too), malformed integers are configuration errors naming
the key (not an internal ``ValueError``), numeric strings are taken for the float settings as
for the integer ones, and a key given twice in the file is an error (a warning when lenient).
No cluster needed."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from daskscore import ConfigError, load_deployment
from daskscore.config import UnknownKeyWarning

MINIMAL = """\
type: model
model:
  path: model
code_configuration:
  code: code
  scoring_script: score.py
"""


def project(root: Path, text: str = MINIMAL) -> Path:
    (root / "code").mkdir(parents=True, exist_ok=True)
    (root / "code" / "score.py").write_text("def init():\n    pass\n\ndef run(b):\n    return b\n")
    (root / "model").mkdir(exist_ok=True)
    path = root / "deployment.yml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def with_settings(block: str) -> str:
    return MINIMAL + "settings:\n" + textwrap.indent(textwrap.dedent(block), "  ")


# --------------------------------------------------------------------------- strings as typed

AS_TYPED = ["1:30", "0x10", "no", "yes", "1.10", "010", "2024-01-01", "~", "null", "1e3", " 7 "]


@pytest.mark.parametrize("text", AS_TYPED)
def test_an_environment_variable_override_is_kept_as_typed(tmp_path: Path, text: str) -> None:
    dep = load_deployment(project(tmp_path), {"settings.environment_variables.G": text})
    assert dep.settings.environment_variables == {"G": text}


@pytest.mark.parametrize("text", ["123", "2024-01-01", "1:30", "0x10", "no", "1.10"])
def test_a_file_name_override_is_kept_as_typed(tmp_path: Path, text: str) -> None:
    dep = load_deployment(project(tmp_path), {"settings.output_file_name": text})
    assert dep.settings.output_file_name == text


def test_a_model_name_override_is_kept_as_typed(tmp_path: Path) -> None:
    dep = load_deployment(project(tmp_path), {"model.name": "1.10"})
    assert dep.model is not None and dep.model.name == "1.10"


def test_python_values_of_environment_variables_are_written_as_the_file_s(tmp_path: Path) -> None:
    """A Python str stays as it is; an int or a bool becomes the text the file's would."""
    path = project(tmp_path, with_settings("environment_variables:\n  I: 5\n  B: true\n"))
    from_file = load_deployment(path).settings.environment_variables
    given = {"I": 5, "B": True, "S": "1:30"}
    overrides = {f"settings.environment_variables.{k}": v for k, v in given.items()}
    from_api = load_deployment(project(tmp_path / "api"), overrides).settings
    assert from_api.environment_variables == {"I": "5", "B": "true", "S": "1:30"}
    assert from_file == {"I": "5", "B": "true"}


def test_an_override_s_string_error_names_the_override_not_the_file(tmp_path: Path) -> None:
    path = project(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_deployment(path, {"settings.output_file_name": "report.html"})
    message = str(info.value)
    assert message.startswith("override: settings.output_file_name: 'report.html'"), message
    assert str(path.resolve()) not in message
    with pytest.raises(ConfigError) as info:
        load_deployment(path, {"settings.environment_variables.A": "x\0y"})
    assert str(info.value).startswith("override: settings.environment_variables.A:"), info.value


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    ("key", "text", "expected"),
    [
        ("timeout", "1e3", 1000.0),
        ("timeout", " 2.5 ", 2.5),
        ("timeout", "30", 30.0),
        ("max_retries", "+2", 2),
        ("error_threshold", "-1", -1),
        ("mini_batch_size", " 4 ", 4),
        # an integer setting: a whole number as 1e3 writes it (refused as "a number (10.0)",
        # though the command's reference lists 1e3 among a numeric setting's digits)
        ("mini_batch_size", "1e1", 10),
        ("max_retries", "1e1", 10),
        ("error_threshold", "-1e0", -1),
    ],
)
def test_numbers_in_overrides(tmp_path: Path, key: str, text: str, expected: object) -> None:
    settings = load_deployment(project(tmp_path), {key: text}).settings
    got = getattr(settings.retry_settings if key in ("timeout", "max_retries") else settings, key)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(("key", "text"), [("max_retries", "2.5"), ("mini_batch_size", "1e-1")])
def test_an_integer_setting_refuses_a_number_that_is_not_whole(
    tmp_path: Path, key: str, text: str
) -> None:
    with pytest.raises(ConfigError, match=rf"^override: settings\.\S*{key}: expected"):
        load_deployment(project(tmp_path), {key: text})


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("error_threshold", "--1"),
        ("max_concurrency_per_instance", "²"),
        ("instance_count", "٣"),
        ("retry_settings.max_retries", "0x10"),
        ("mini_batch_size", "²"),
        ("retry_settings.timeout", "1:30"),
        ("retry_settings.timeout", "²"),
    ],
)
def test_malformed_numbers_are_configuration_errors_naming_the_key(
    tmp_path: Path, name: str, text: str
) -> None:
    """(Digits Python's ``isdigit`` takes but ``int`` does not, and a doubled sign, ended the
    command with an internal ValueError.)"""
    key = f"settings.{name}"
    section, _, leaf = name.rpartition(".")
    block = f"{section}:\n  {leaf}: '{text}'\n" if section else f"{leaf}: '{text}'\n"
    path = project(tmp_path / "file", with_settings(block))
    with pytest.raises(ConfigError) as from_file:
        load_deployment(path)
    assert f"{path.resolve()}: {key}: expected" in str(from_file.value)
    assert repr(text) in str(from_file.value)
    with pytest.raises(ConfigError) as from_override:
        load_deployment(project(tmp_path / "set"), {name: text})
    assert str(from_override.value).startswith(f"override: {key}: expected"), from_override.value


def test_numeric_strings_are_taken_for_seconds_as_for_integers(tmp_path: Path) -> None:
    block = """\
        mini_batch_size: "10"
        error_threshold: "-1"
        retry_settings:
          max_retries: "3"
          timeout: "30"
    """
    settings = load_deployment(project(tmp_path, with_settings(block))).settings
    assert settings.retry_settings.timeout == 30.0
    assert settings.retry_settings.max_retries == 3 and settings.mini_batch_size == 10
    path = project(tmp_path / "e", with_settings("retry_settings:\n  timeout: 1e3\n"))
    assert load_deployment(path).settings.retry_settings.timeout == 1000.0


# --------------------------------------------------------------------------- duplicate keys

DUPLICATE_SECTION = MINIMAL + "settings:\n  mini_batch_size: 2\nsettings:\n  logging_level: debug\n"
DUPLICATE_KEY = (
    MINIMAL + "settings:\n  mini_batch_size: 2\n  logging_level: info\n  mini_batch_size: 3\n"
)


@pytest.mark.parametrize(
    ("text", "key", "lines"),
    [(DUPLICATE_SECTION, "settings", (7, 9)), (DUPLICATE_KEY, "settings.mini_batch_size", (8, 10))],
)
def test_a_duplicate_key_is_an_error_naming_it_and_both_lines(
    tmp_path: Path, text: str, key: str, lines: tuple[int, int]
) -> None:
    path = project(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_deployment(path)
    assert len(info.value.problems) == 1
    message = str(info.value)
    assert f"{path.resolve()}: duplicate key '{key}' (lines {lines[0]} and {lines[1]})" in message
    assert "--lenient" in message and "\n" not in message

    with pytest.warns(UnknownKeyWarning, match=f"duplicate key '{key}'") as said:
        dep = load_deployment(path, lenient=True)
    assert len(said) == 1 and dep.warnings == (str(said[0].message),)


def test_a_key_a_merge_brings_in_may_be_replaced(tmp_path: Path) -> None:
    text = MINIMAL + "base: &b {mini_batch_size: 2}\nsettings:\n  <<: *b\n  mini_batch_size: 3\n"
    with pytest.warns(UnknownKeyWarning, match="unknown key 'base'"):
        dep = load_deployment(project(tmp_path, text), lenient=True)
    assert dep.settings.mini_batch_size == 3
    assert not any("duplicate" in w for w in dep.warnings), dep.warnings
