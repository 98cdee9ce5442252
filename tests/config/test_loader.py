"""Unit tests of deployment loading (daskscore.config.loader): layouts, defaults, paths, warnings,
errors and overrides. No cluster needed."""

from __future__ import annotations

import dataclasses
import json
import logging
import textwrap
import warnings
from pathlib import Path

import pytest

from daskscore import ConfigError, load_deployment
from daskscore.config.loader import apply_overrides, normalize, read_yaml, resolve_key, validate

MINIMAL = """\
type: model
model:
  name: m
  path: model
code_configuration:
  code: code
  scoring_script: score.py
"""


def make_project(root: Path, yaml_text: str = MINIMAL, *, name: str = "deployment.yml") -> Path:
    """A deployment folder: ``code/score.py``, a ``model`` folder, and the given YAML file."""
    (root / "code").mkdir(parents=True, exist_ok=True)
    (root / "code" / "score.py").write_text("def init():\n    pass\n\ndef run(b):\n    return b\n")
    (root / "model").mkdir(exist_ok=True)
    (root / "model" / "model.pt").write_bytes(b"weights")
    path = root / name
    path.write_text(textwrap.dedent(yaml_text), encoding="utf-8")
    return path


def with_settings(settings: str) -> str:
    """MINIMAL plus a ``settings:`` block (given unindented)."""
    return MINIMAL + "settings:\n" + textwrap.indent(textwrap.dedent(settings), "  ")


# --------------------------------------------------------------------------- layouts


TYPE_MODEL = """\
$schema: https://azuremlschemas.azureedge.net/latest/modelBatchDeployment.schema.json
name: mnist-dpl
endpoint_name: mnist-batch
type: model
description: a test
tags: {team: x}
model:
  name: mnist
  path: model
code_configuration:
  code: code
  scoring_script: score.py
environment: azureml:torch-env@latest
compute: azureml:batch-cluster
resources:
  instance_count: 2
settings:
  max_concurrency_per_instance: 3
  mini_batch_size: 5
  output_action: append_row
  output_file_name: out.csv
  retry_settings:
    max_retries: 2
    timeout: 45
  error_threshold: 4
  logging_level: debug
  environment_variables:
    A: x
"""

LEGACY = """\
$schema: https://azuremlschemas.azureedge.net/latest/batchDeployment.schema.json
name: mnist-dpl
endpoint_name: mnist-batch
description: a test
model:
  name: mnist
  path: model
code_configuration:
  code: code
  scoring_script: score.py
environment: azureml:torch-env@latest
compute: azureml:batch-cluster
resources:
  instance_count: 2
max_concurrency_per_instance: 3
mini_batch_size: 5
output_action: append_row
output_file_name: out.csv
retry_settings:
  max_retries: 2
  timeout: 45
error_threshold: 4
logging_level: debug
environment_variables:
  A: x
"""


def test_type_model_layout_is_read(tmp_path: Path) -> None:
    dep = load_deployment(make_project(tmp_path, TYPE_MODEL))
    s = dep.settings
    assert dep.source == (tmp_path / "deployment.yml").resolve()
    assert dep.model is not None and dep.model.name == "mnist"
    assert (s.instance_count, s.max_concurrency_per_instance) == (2, 3)
    assert dep.worker_count == 6
    assert s.mini_batch_size == 5
    assert s.output_file_name == "out.csv"
    assert (s.retry_settings.max_retries, s.retry_settings.timeout) == (2, 45)
    assert s.error_threshold == 4
    assert s.logging_level == "debug"
    assert s.environment_variables == {"A": "x"}


def test_legacy_flat_file_gives_the_same_deployment(tmp_path: Path) -> None:
    modern = load_deployment(make_project(tmp_path, TYPE_MODEL))
    legacy = load_deployment(make_project(tmp_path, LEGACY, name="legacy.yml"))
    assert legacy.source != modern.source
    assert dataclasses.replace(legacy, source=None) == dataclasses.replace(modern, source=None)


def test_legacy_settings_do_not_override_a_settings_section(tmp_path: Path) -> None:
    text = MINIMAL.replace("type: model\n", "") + "mini_batch_size: 7\n"
    dep = load_deployment(make_project(tmp_path, text))
    assert dep.settings.mini_batch_size == 7
    assert dep.settings.output_action == "append_row"


# --------------------------------------------------------------------------- defaults


def test_defaults_of_the_contract(tmp_path: Path) -> None:
    dep = load_deployment(make_project(tmp_path))
    s = dep.settings
    assert s.mini_batch_size == 10
    assert s.max_concurrency_per_instance == 1
    assert s.output_action == "append_row"
    assert s.output_file_name == "predictions.csv"
    assert s.retry_settings.max_retries == 3
    assert s.retry_settings.timeout == 30
    assert s.error_threshold == -1
    assert s.logging_level == "info"
    assert s.instance_count == 1
    assert s.environment_variables == {}
    assert dep.worker_count == 1


def test_partial_retry_settings_keep_the_other_default(tmp_path: Path) -> None:
    dep = load_deployment(make_project(tmp_path, with_settings("retry_settings:\n  timeout: 5\n")))
    assert dep.settings.retry_settings.timeout == 5
    assert dep.settings.retry_settings.max_retries == 3


@pytest.mark.parametrize(
    "yaml_text",
    [
        MINIMAL + "resources:\n  instance_count: 3\nsettings:\n  max_concurrency_per_instance: 2\n",
        with_settings("instance_count: 3\nmax_concurrency_per_instance: 2\n"),
    ],
    ids=["resources", "settings"],
)
def test_instance_count_from_resources_or_settings(tmp_path: Path, yaml_text: str) -> None:
    dep = load_deployment(make_project(tmp_path, yaml_text))
    assert dep.settings.instance_count == 3
    assert dep.settings.max_concurrency_per_instance == 2
    assert dep.worker_count == 6


@pytest.mark.parametrize("section", ["settings", "retry_settings"])
def test_an_empty_section_means_defaults(tmp_path: Path, section: str) -> None:
    # A section whose every line is commented out is null in YAML: it must mean "all defaults".
    text = MINIMAL + "settings:\n  # mini_batch_size: 4\n"
    if section == "retry_settings":
        text = MINIMAL + "settings:\n  retry_settings:\n    # timeout: 60\n"
    dep = load_deployment(make_project(tmp_path, text))
    assert dep.settings.mini_batch_size == 10
    assert dep.settings.retry_settings.timeout == 30


# --------------------------------------------------------------------------- paths


def test_paths_are_relative_to_the_yaml_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    path = make_project(project)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "code").mkdir()  # a decoy: must not be picked up from the cwd
    monkeypatch.chdir(elsewhere)
    for given in (path, Path("..") / "project" / "deployment.yml"):
        dep = load_deployment(given)
        assert dep.code == (project / "code").resolve()
        assert dep.scoring_script == (project / "code" / "score.py").resolve()
        assert dep.model is not None and dep.model.path == (project / "model").resolve()
        assert dep.source == path.resolve()


def test_a_single_file_model_and_a_plain_path_model(tmp_path: Path) -> None:
    text = MINIMAL.replace("model:\n  name: m\n  path: model\n", "model: weights/model.pkl\n")
    path = make_project(tmp_path, text)
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "model.pkl").write_bytes(b"pickle")
    dep = load_deployment(path)
    assert dep.model is not None
    assert dep.model.path == (tmp_path / "weights" / "model.pkl").resolve()
    assert dep.model.path.is_file()
    assert dep.model.name is None


# --------------------------------------------------------------------------- cloud-only keys
# (unknown keys: test_unknown_keys.py)


def test_cloud_only_keys_are_accepted_silently(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with caplog.at_level(logging.DEBUG):
            for name, text in (("a.yml", TYPE_MODEL), ("b.yml", LEGACY)):
                load_deployment(make_project(tmp_path, text, name=name))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("ref", ["azureml:mnist:1", "azureml:mnist@latest"])
def test_registered_model_refs_ask_for_a_path(tmp_path: Path, ref: str) -> None:
    text = MINIMAL.replace("model:\n  name: m\n  path: model\n", f"model: {ref}\n")
    path = make_project(tmp_path, text)
    with pytest.raises(ConfigError, match="path") as info:
        load_deployment(path)
    assert ref in str(info.value)
    assert str(path.resolve()) in str(info.value)


def test_inline_model_without_path_asks_for_a_path(tmp_path: Path) -> None:
    text = MINIMAL.replace("  path: model\n", "  version: 3\n")
    with pytest.raises(ConfigError, match="'path'"):
        load_deployment(make_project(tmp_path, text))


def test_malformed_yaml_names_the_file_and_line(tmp_path: Path) -> None:
    text = "type: model\nsettings:\n  mini_batch_size: 3\n timeout: 2\n"
    path = make_project(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_deployment(path)
    assert str(path.resolve()) in str(info.value)
    assert "line 4" in str(info.value)
    assert info.value.__cause__ is None  # a short message, not a chained yaml traceback


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ("mini_batch_size: abc\n", "settings.mini_batch_size"),
        ("mini_batch_size: -1\n", "settings.mini_batch_size"),
        ("mini_batch_size: 0\n", "settings.mini_batch_size"),
        ("mini_batch_size: true\n", "settings.mini_batch_size"),
        ("mini_batch_size: 2.5\n", "settings.mini_batch_size"),
        ("max_concurrency_per_instance: 0\n", "settings.max_concurrency_per_instance"),
        ("retry_settings:\n  timeout: x\n", "settings.retry_settings.timeout"),
        ("retry_settings:\n  timeout: 0\n", "settings.retry_settings.timeout"),
        ("retry_settings:\n  max_retries: -1\n", "settings.retry_settings.max_retries"),
        ("error_threshold: -5\n", "settings.error_threshold"),
        ("output_action: bogus\n", "settings.output_action"),
        ("logging_level: loud\n", "settings.logging_level"),
        ("output_file_name: 12\n", "settings.output_file_name"),
        ("environment_variables: [A, B]\n", "settings.environment_variables"),
    ],
)
def test_wrong_types_name_file_key_and_expectation(tmp_path: Path, settings: str, key: str) -> None:
    path = make_project(tmp_path, with_settings(settings))
    with pytest.raises(ConfigError) as info:
        load_deployment(path)
    message = str(info.value)
    assert str(path.resolve()) in message
    assert f"{key}:" in message
    assert "expected" in message


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("sub/preds.csv", "not a plain file name"),
        ("../escape.csv", "not a plain file name"),
        ("/tmp/abs.csv", "not a plain file name"),
        ("a\\b.csv", "not a plain file name"),
        ("..", "not a plain file name"),
        ("job_summary.json", "the job's summary"),
        ("Report.html", "the job's report"),
        ("logs", "logs folder"),
        (".daskscore-trash-x", "daskscore keeps"),
    ],
)
def test_an_output_file_name_outside_the_folder_or_taken_by_the_job_is_refused(
    tmp_path: Path, name: str, why: str
) -> None:
    """The predictions go in the output folder, beside daskscore's own files, never over one
    of them (whose content would then be lost) or elsewhere; in the file and in overrides."""
    path = make_project(tmp_path, with_settings(f"output_file_name: {json.dumps(name)}\n"))
    for source, overrides in (
        (path, None),
        (make_project(tmp_path / "o"), {"output_file_name": name}),
    ):
        with pytest.raises(ConfigError) as info:
            load_deployment(source, overrides)
        message = str(info.value)
        assert "settings.output_file_name:" in message and why in message, message
        assert repr(name) in message


def test_the_job_s_own_names_are_those_the_output_folder_holds() -> None:
    from daskscore.config.settings import OWN_OUTPUT_NAMES, output_name_problem
    from daskscore.engine.failed_items import FAILED_ITEMS
    from daskscore.io import outputdir
    from daskscore.io.outputdir import KEPT_DIR, STAGING_DIR, SUMMARY_FILE, TRASH_PREFIX
    from daskscore.ui.report import REPORT_FILE

    assert outputdir.REPORT_FILE == REPORT_FILE
    own = {SUMMARY_FILE, STAGING_DIR, REPORT_FILE, FAILED_ITEMS, "logs"}
    assert own == set(OWN_OUTPUT_NAMES)
    for name in (KEPT_DIR, TRASH_PREFIX + "job", SUMMARY_FILE, REPORT_FILE, FAILED_ITEMS):
        assert output_name_problem(name), name
    for name in ("predictions.csv", "logs.csv", "report.csv", "daskscore.csv", ".hidden.csv"):
        assert output_name_problem(name) is None, name


def test_choices_are_case_insensitive(tmp_path: Path) -> None:
    text = with_settings("output_action: Summary_Only\nlogging_level: WARNING\n")
    dep = load_deployment(make_project(tmp_path, text))
    assert dep.settings.output_action == "summary_only"
    assert dep.settings.logging_level == "warning"


def test_environment_variables_become_strings(tmp_path: Path) -> None:
    text = with_settings("environment_variables:\n  A: 1\n  B: 1.5\n  C: true\n  D: text\n  7: x\n")
    dep = load_deployment(make_project(tmp_path, text))
    assert dep.settings.environment_variables == {
        "A": "1",
        "B": "1.5",
        "C": "true",
        "D": "text",
        "7": "x",
    }


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ('"": e', "needs a name"),
        ('"A=B": c', "cannot hold '='"),
        ('X: "a\\0b"', "NUL character"),
    ],
)
def test_environment_variables_a_process_cannot_take_are_refused(
    tmp_path: Path, entry: str, why: str
) -> None:
    """Found in the deployment, not in the workers (an internal error or an init() death)."""
    path = make_project(tmp_path, with_settings(f"environment_variables:\n  {entry}\n"))
    with pytest.raises(ConfigError, match="settings.environment_variables.") as info:
        load_deployment(path)
    assert why in str(info.value)


@pytest.mark.parametrize("override", ["settings=foo", "settings=5", "resources=3", "type=pipeline"])
def test_a_section_set_to_a_scalar_or_another_type_is_refused_as_in_the_file(
    tmp_path: Path, override: str
) -> None:
    key, _, value = override.partition("=")
    with pytest.raises(ConfigError, match=f"override: {key}: ") as info:
        load_deployment(make_project(tmp_path), {key: value})
    assert "mapping" in str(info.value) or "not supported" in str(info.value)


def test_missing_code_folder_is_named(tmp_path: Path) -> None:
    path = make_project(tmp_path, MINIMAL.replace("code: code", "code: src"))
    with pytest.raises(ConfigError, match="code_configuration.code") as info:
        load_deployment(path)
    assert "'src'" in str(info.value)
    assert str(path.resolve()) in str(info.value)


def test_missing_scoring_script_is_named(tmp_path: Path) -> None:
    path = make_project(
        tmp_path, MINIMAL.replace("scoring_script: score.py", "scoring_script: x.py")
    )
    with pytest.raises(ConfigError, match="code_configuration.scoring_script") as info:
        load_deployment(path)
    assert "'x.py'" in str(info.value)


def test_missing_model_path_is_named(tmp_path: Path) -> None:
    path = make_project(tmp_path, MINIMAL.replace("path: model", "path: no-such-model"))
    with pytest.raises(ConfigError, match="model.path") as info:
        load_deployment(path)
    assert "no-such-model" in str(info.value)


def test_missing_code_configuration_is_an_error(tmp_path: Path) -> None:
    text = "type: model\nmodel:\n  path: model\n"
    with pytest.raises(ConfigError, match="code_configuration"):
        load_deployment(make_project(tmp_path, text))


def test_missing_deployment_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_deployment(tmp_path / "nope.yml")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "empty"),
        ("# only a comment\n", "empty"),
        ("- a\n- b\n", "mapping"),
        ("just a string\n", "mapping"),
    ],
)
def test_empty_or_non_mapping_files(tmp_path: Path, text: str, match: str) -> None:
    path = make_project(tmp_path, text)
    with pytest.raises(ConfigError, match=match) as info:
        read_yaml(path)
    assert str(path) in str(info.value)


def test_pipeline_deployments_are_refused(tmp_path: Path) -> None:
    path = make_project(tmp_path, MINIMAL.replace("type: model", "type: pipeline"))
    with pytest.raises(ConfigError, match="pipeline"):
        load_deployment(path)


def test_validate_without_a_source_uses_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    raw = normalize({"code_configuration": {"code": "code", "scoring_script": "score.py"}})
    dep = validate(raw)
    assert dep.code == (tmp_path / "code").resolve()
    assert dep.source is None
    assert dep.model is None


# --------------------------------------------------------------------------- overrides


def test_apply_overrides_dotted_and_bare_keys() -> None:
    raw = {"type": "model", "settings": {"mini_batch_size": 10, "logging_level": "info"}}
    out = apply_overrides(
        raw,
        {
            "mini_batch_size": "5",
            "timeout": "60",
            "settings.output_file_name": "x.csv",
            "settings.retry_settings.max_retries": 0,
            "instance_count": "4",
        },
    )
    assert out["settings"] == {
        "mini_batch_size": 5,
        "logging_level": "info",
        "output_file_name": "x.csv",
        "retry_settings": {"timeout": 60, "max_retries": 0},
        "instance_count": 4,
    }
    # the input is not modified
    assert raw == {"type": "model", "settings": {"mini_batch_size": 10, "logging_level": "info"}}


@pytest.mark.parametrize("key", ["resources.instance_count", "settings.instance_count"])
def test_an_instance_count_override_holds_whichever_spelling_the_file_used(
    tmp_path: Path, key: str
) -> None:
    """``instance_count`` has two spellings (``resources.`` and ``settings.``): an override of
    either is the job's, whichever the file gave (the settings' one had silently won)."""
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "score.py").write_text("def run(mini_batch):\n    return []\n")
    code = {"code": "code", "scoring_script": "score.py"}
    source = tmp_path / "deployment.yml"
    raw = {"code_configuration": code, "settings": {"instance_count": 1}}
    both = {**raw, "resources": {"instance_count": 1}}
    assert validate(apply_overrides(both, {key: "2"}), source).settings.instance_count == 2
    assert validate(apply_overrides(raw, {key: "3"}), source).settings.instance_count == 3


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("settings.retry_settings.timeout", "60", 60),
        ("settings.retry_settings.timeout", "2.5", 2.5),
        ("settings.retry_settings.timeout", "1e3", 1000.0),
        ("settings.output_file_name", "60", "60"),
        ("settings.output_file_name", "true", "true"),
        ("settings.output_file_name", "x.csv", "x.csv"),
        ("settings.environment_variables.A", "", ""),
        ("settings.environment_variables.A", 7, 7),  # (made '7' by validate, as the file's)
    ],
)
def test_override_strings_are_read_as_their_key_type(
    key: str, value: object, expected: object
) -> None:
    """A number's digits give the number; any other key keeps the string as typed (no YAML
    reading: see tests/config/test_value_types.py)."""
    out = apply_overrides({"settings": {}}, {key: value})
    *parents, leaf = key.split(".")
    node = out
    for part in parents:
        node = node[part]
    assert node[leaf] == expected
    assert type(node[leaf]) is type(expected)


@pytest.mark.parametrize("value", ["", 7])
def test_a_string_setting_s_override_is_checked_as_an_override(value: object) -> None:
    with pytest.raises(ConfigError, match=r"^override: settings\.output_file_name: expected"):
        apply_overrides({"settings": {}}, {"settings.output_file_name": value})


def test_resolve_key() -> None:
    assert resolve_key("mini_batch_size") == ["settings", "mini_batch_size"]
    assert resolve_key("timeout") == ["settings", "retry_settings", "timeout"]
    assert resolve_key("max_retries") == ["settings", "retry_settings", "max_retries"]
    assert resolve_key("model.path") == ["model", "path"]
    assert resolve_key("settings.error_threshold") == ["settings", "error_threshold"]


def test_unknown_override_key_suggests_the_nearest() -> None:
    with pytest.raises(ConfigError, match="mini_batch_sise") as info:
        apply_overrides({"settings": {}}, {"mini_batch_sise": "3"})
    assert "did you mean 'settings.mini_batch_size'" in str(info.value)


def test_load_deployment_with_overrides(tmp_path: Path) -> None:
    path = make_project(tmp_path, with_settings("mini_batch_size: 4\nerror_threshold: 2\n"))
    dep = load_deployment(
        path,
        {
            "mini_batch_size": "3",
            "settings.output_file_name": "out.csv",
            "timeout": "60",
            "max_concurrency_per_instance": 2,
        },
    )
    s = dep.settings
    assert s.mini_batch_size == 3
    assert s.output_file_name == "out.csv"
    assert s.retry_settings.timeout == 60
    assert s.retry_settings.max_retries == 3
    assert s.max_concurrency_per_instance == 2
    assert s.error_threshold == 2  # untouched by the overrides


def test_override_values_are_validated(tmp_path: Path) -> None:
    path = make_project(tmp_path)
    with pytest.raises(ConfigError, match="settings.mini_batch_size: expected"):
        load_deployment(path, {"mini_batch_size": "0"})


def test_override_can_fix_a_missing_model(tmp_path: Path) -> None:
    path = make_project(tmp_path, MINIMAL.replace("path: model", "path: gone"))
    dep = load_deployment(path, {"model.path": "model"})
    assert dep.model is not None and dep.model.path == (tmp_path / "model").resolve()


# --------------------------------------------------------------------------- numbers, both ways

NUMBERS = [
    ("mini_batch_size", "-3", "settings.mini_batch_size"),
    ("mini_batch_size", "0", "settings.mini_batch_size"),
    ("mini_batch_size", "0 rows", "settings.mini_batch_size"),
    ("mini_batch_size", "rows:0", "settings.mini_batch_size"),
    ("mini_batch_size", "0MB", "settings.mini_batch_size"),
    ("mini_batch_size", "0.0001KB", "settings.mini_batch_size"),
    ("max_concurrency_per_instance", "0", "settings.max_concurrency_per_instance"),
    ("instance_count", "0", "settings.instance_count"),
    ("error_threshold", "-2", "settings.error_threshold"),
    ("retry_settings.max_retries", "-1", "settings.retry_settings.max_retries"),
    ("retry_settings.max_retries", "1.5", "settings.retry_settings.max_retries"),
    ("retry_settings.timeout", "0", "settings.retry_settings.timeout"),
    ("retry_settings.timeout", "-5", "settings.retry_settings.timeout"),
    ("retry_settings.timeout", ".nan", "settings.retry_settings.timeout"),
    ("retry_settings.timeout", ".inf", "settings.retry_settings.timeout"),
]


@pytest.mark.parametrize(("name", "value", "key"), NUMBERS)
def test_numbers_are_checked_alike_in_the_file_and_in_overrides(
    tmp_path: Path, name: str, value: str, key: str
) -> None:
    """The same value is refused from the YAML file (naming the file) and from an override
    (``--set``, or the API's keywords: naming the override), with the same key and reason."""
    if "." in name:
        section, leaf = name.split(".")
        block = f"{section}:\n  {leaf}: {value}\n"
    else:
        block = f"{name}: '{value}'\n" if " " in value or ":" in value else f"{name}: {value}\n"
    path = make_project(tmp_path, with_settings(block))
    with pytest.raises(ConfigError) as from_file:
        load_deployment(path)
    assert f"{path.resolve()}: {key}: expected" in str(from_file.value)

    clean = make_project(tmp_path / "clean")
    with pytest.raises(ConfigError) as from_override:
        load_deployment(clean, {name: value})
    message = str(from_override.value)
    assert message.startswith(f"override: {key}: expected"), message
    reason = str(from_file.value).split(": expected", 1)[1]
    assert message.split(": expected", 1)[1] == reason


def test_an_override_of_resources_instance_count_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^override: resources\.instance_count: expected"):
        load_deployment(make_project(tmp_path), {"resources.instance_count": "-1"})


def test_tabular_sizes_checked_at_load_are_those_the_job_reads(tmp_path: Path) -> None:
    """A byte size the loader accepts is one the job can cut by; one it cannot ("2TB": no
    terabytes) is refused at load, naming the override, not later in the job."""
    dep = load_deployment(make_project(tmp_path), {"mini_batch_size": "1.5 kb"})
    assert dep.settings.mini_batch.tabular() == ("bytes", 1536)
    with pytest.raises(ConfigError, match=r"^override: settings\.mini_batch_size: expected"):
        load_deployment(make_project(tmp_path), {"mini_batch_size": "2TB"})


def test_settings_that_are_not_a_mapping_are_named(tmp_path: Path) -> None:
    """(``normalize`` once called the ``type:`` value where it meant the ``kind`` helper: an
    internal TypeError instead of this message.)"""
    path = make_project(tmp_path, MINIMAL + "settings: [mini_batch_size, 3]\n")
    with pytest.raises(ConfigError, match=r"settings: expected a mapping, got a list"):
        load_deployment(path)


@pytest.mark.parametrize(
    "overrides",
    [
        {"retry_settings": {"timeout": 5}},
        {"settings.retry_settings": {"timeout": 5}},
        {"settings": {"retry_settings": {"timeout": 5}, "environment_variables": {"B": "y"}}},
    ],
    ids=["by-name", "dotted", "section"],
)
def test_a_mapping_override_is_merged_into_the_files(tmp_path: Path, overrides: dict) -> None:
    """``retry_settings={"timeout": 5}`` (or a whole ``settings`` mapping in ``set=``) changes
    what it names and keeps the rest of the file's: the file's other keys went back to their
    defaults (``max_retries`` 2 became 3; with ``settings``, mini_batch_size 5 became 10)."""
    dep = load_deployment(make_project(tmp_path, TYPE_MODEL), overrides)
    s = dep.settings
    assert (s.retry_settings.max_retries, s.retry_settings.timeout) == (2, 5)
    assert (s.mini_batch_size, s.output_file_name, s.error_threshold) == (5, "out.csv", 4)
    expected = {"A": "x", "B": "y"} if "settings" in overrides else {"A": "x"}
    assert s.environment_variables == expected
