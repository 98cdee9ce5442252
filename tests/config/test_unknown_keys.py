"""Unknown deployment keys are errors, as Azure ML's own CLI refuses them: a misspelt
``setings:`` must not run the job with every setting at its default.

Each unknown key (top-level or nested, in the file or in ``--set``) is named with the nearest
known key, every problem at once, exit code 2 for ``daskscore run`` and ``validate``; the keys
Azure ML knows and daskscore does not use are accepted and ignored; ``--lenient``
(``lenient=True``) turns unknown keys back into warnings, which the job keeps in its log,
``job_summary.json`` and ``report.html``.  Loading is tested without a cluster; one lenient job
runs for real, through the command in a subprocess.
"""

from __future__ import annotations

import html
import pickle
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO, run_cli, write_deployment, write_inputs
from helpers import cli, show, summary_of

import daskscore
from daskscore import ConfigError, UnknownKeyWarning, load_deployment
from daskscore.config.loader import check_deployment, with_overrides
from daskscore.config.settings import CLOUD_ONLY_KEYS, CLOUD_ONLY_NESTED
from daskscore.devtools import scaffold
from daskscore.errors import UsageError

SCRIPT = """
    def init():
        pass

    def run(mini_batch):
        return [f"{p}" for p in mini_batch]
"""


def deployment(root: Path, edit: Any = None) -> Path:
    """A good deployment (2 workers, 5 files per mini-batch), its YAML dict passed through
    ``edit`` (which changes it in place) when given."""
    dep = write_deployment(root, SCRIPT, settings={"mini_batch_size": 5})
    if edit is not None:
        doc = yaml.safe_load(dep.read_text())
        edit(doc)
        dep.write_text(yaml.safe_dump(doc, sort_keys=False))
    return dep


def misspell_settings(doc: dict[str, Any]) -> None:
    doc["setings"] = doc.pop("settings")


def nest(doc: dict[str, Any], dotted: str, value: Any) -> None:
    node = doc
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


# (the key added, where; the unknown key named; the known key suggested)
CASES = [
    ("setings.max_concurrency_per_instance", "setings", "settings"),
    ("settings.retry_settings.max_retrys", "settings.retry_settings.max_retrys",
     "settings.retry_settings.max_retries"),
    ("settings.mini_batch_sise", "settings.mini_batch_sise", "settings.mini_batch_size"),
    ("settings.timeout", "settings.timeout", "settings.retry_settings.timeout"),
    ("code_configuration.scoring_scirpt", "code_configuration.scoring_scirpt",
     "code_configuration.scoring_script"),
    ("model.pth", "model.pth", "model.path"),
    ("resourcs.instance_count", "resourcs", "resources"),
    # a setting at the top level of a type: model file belongs under settings:
    ("max_concurrency_per_instance", "max_concurrency_per_instance",
     "settings.max_concurrency_per_instance"),
]  # fmt: skip
CASE_IDS = ["top", "retry_settings", "settings", "misplaced", "code", "model", "resources", "flat"]


# --------------------------------------------------------------------------- loading


@pytest.mark.parametrize(("added", "key", "nearest"), CASES, ids=CASE_IDS)
def test_an_unknown_key_is_an_error_naming_the_nearest_known_key(
    tmp_path: Path, added: str, key: str, nearest: str
) -> None:
    dep = deployment(tmp_path, lambda doc: nest(doc, added, 3))
    with pytest.raises(ConfigError) as info:
        load_deployment(dep)
    (problem,) = info.value.problems
    assert problem.startswith(f"{dep.resolve()}: unknown key '{key}' (did you mean '{nearest}'?")
    assert "--lenient" in problem
    assert isinstance(info.value, UsageError) and info.value.exit_code == 2


@pytest.mark.parametrize(
    "added",
    ["settings.foo_bar", "settings.retry_settings.foo_bar", "code_configuration.foo_bar"],
)
def test_an_unknown_key_is_never_pointed_to_its_own_section(tmp_path: Path, added: str) -> None:
    """A key like no known one is named alone: not "did you mean 'settings'?" for
    settings.foo_bar (the section it is already in)."""
    dep = deployment(tmp_path, lambda doc: nest(doc, added, 1))
    with pytest.raises(ConfigError) as info:
        load_deployment(dep)
    (problem,) = info.value.problems
    assert problem.startswith(f"{dep.resolve()}: unknown key '{added}'."), problem
    assert "did you mean" not in problem, problem


@pytest.mark.parametrize(("added", "key", "nearest"), CASES, ids=CASE_IDS)
def test_lenient_ignores_an_unknown_key_with_a_warning_kept_on_the_deployment(
    tmp_path: Path, added: str, key: str, nearest: str
) -> None:
    dep = deployment(tmp_path, lambda doc: nest(doc, added, 3))
    with pytest.warns(UnknownKeyWarning) as record:
        loaded = load_deployment(dep, lenient=True)
    assert len(record) == 1
    (warning,) = loaded.warnings
    assert str(record[0].message) == warning
    assert f"unknown key '{key}' (did you mean '{nearest}'?" in warning
    assert warning.endswith("it is ignored (lenient).")
    s = loaded.settings  # the key is ignored: what the file says otherwise stands
    assert (s.mini_batch_size, s.max_concurrency_per_instance) == (5, 2)
    assert s.retry_settings == daskscore.config.RetrySettings()
    assert with_overrides(loaded, {"timeout": 7}).warnings == loaded.warnings
    assert pickle.loads(pickle.dumps(loaded)).warnings == loaded.warnings  # (the job recipe)


# ParallelRunStep's (and parallel jobs') names of settings: the key each became, whatever
# name it is spelt most like (allowed_failed_percent looks most like output_file_name)
RENAMED = [
    ("allowed_failed_percent", "settings.error_threshold", "not a percentage"),
    ("allowed_failed_count", "settings.error_threshold", "not mini-batches"),
    ("mini_batch_error_threshold", "settings.error_threshold", "counts failed items"),
    ("run_invocation_timeout", "settings.retry_settings.timeout", ""),
    ("run_max_try", "settings.retry_settings.max_retries", "run_max_try - 1"),
    ("process_count_per_node", "settings.max_concurrency_per_instance", ""),
    ("node_count", "resources.instance_count", ""),
    ("append_row_file_name", "settings.output_file_name", ""),
    ("entry_script", "code_configuration.scoring_script", ""),
    ("source_directory", "code_configuration.code", ""),
]


@pytest.mark.parametrize(("name", "nearest", "differs"), RENAMED, ids=[r[0] for r in RENAMED])
@pytest.mark.parametrize("where", ["settings.", "", "override"])
def test_a_parallel_run_step_name_points_to_the_key_it_became(
    tmp_path: Path, name: str, nearest: str, differs: str, where: str
) -> None:
    if where == "override":
        dep = deployment(tmp_path)
        with pytest.raises(ConfigError) as info:
            load_deployment(dep, {name: 3})
        shown = name
    else:
        dep = deployment(tmp_path, lambda doc: nest(doc, f"{where}{name}", 3))
        with pytest.raises(ConfigError) as info:
            load_deployment(dep)
        shown = f"{where}{name}"
    (problem,) = info.value.problems
    said = f"unknown key '{shown}' (did you mean '{nearest}'? {name} is its ParallelRunStep"
    assert said in problem, problem
    assert differs in problem


def test_every_parallel_run_step_name_of_a_file_at_once(tmp_path: Path) -> None:
    """A deployment written from a ParallelRunConfig: each name with the key it became."""

    def edit(doc: dict[str, Any]) -> None:
        doc["settings"].update(
            run_invocation_timeout=60, append_row_file_name="out.txt",
            allowed_failed_percent=10, run_max_try=2,
        )  # fmt: skip

    with pytest.raises(ConfigError) as info:
        load_deployment(deployment(tmp_path, edit))
    pointed = [p.split("did you mean '")[1].split("'")[0] for p in info.value.problems]
    assert pointed == [
        "settings.retry_settings.timeout", "settings.output_file_name",
        "settings.error_threshold", "settings.retry_settings.max_retries",
    ]  # fmt: skip


def test_every_problem_is_named_at_once(tmp_path: Path) -> None:
    def edit(doc: dict[str, Any]) -> None:
        doc["setings"] = {"max_concurrency_per_instance": 2}
        doc["settings"]["retry_settings"] = {"max_retrys": 1, "timeout": -1}
        doc["model"]["pth"] = "model"
        doc["code_configuration"]["scoring_script"] = "missing.py"

    dep = deployment(tmp_path, edit)
    overrides = {"mini_batch_sise": "3", "error_threshold": "-5"}
    with pytest.raises(ConfigError) as info:
        load_deployment(dep, overrides)
    problems = info.value.problems
    assert str(info.value) == "\n".join(problems)
    expected = [
        "unknown key 'setings' (did you mean 'settings'?)",
        "unknown key 'settings.retry_settings.max_retrys' (did you mean "
        "'settings.retry_settings.max_retries'?)",
        "unknown key 'model.pth' (did you mean 'model.path'?)",
        "override: unknown key 'mini_batch_sise' (did you mean 'settings.mini_batch_size'?)",
        "override: settings.error_threshold: expected",
        "settings.retry_settings.timeout: expected",
        "code_configuration.scoring_script: 'missing.py' not found",
    ]
    for needle, problem in zip(expected, problems, strict=True):
        assert needle in problem, (needle, problems)
    # lenient: the same, less the unknown keys of the file (an unknown override stays an error)
    _, errors, warned = check_deployment(dep, overrides, lenient=True)
    assert errors == problems[3:]
    for needle, warning in zip(expected[:3], warned, strict=True):
        assert needle in warning and warning.endswith("; it is ignored (lenient)."), warned


def test_the_problems_survive_pickling(tmp_path: Path) -> None:
    dep = deployment(tmp_path, misspell_settings)
    with pytest.raises(ConfigError) as info:
        load_deployment(dep, {"no_such": 1})
    again = pickle.loads(pickle.dumps(info.value))
    assert again.problems == info.value.problems and len(again.problems) == 2
    assert str(again) == str(info.value)


def test_the_keys_azure_ml_knows_are_accepted_and_ignored(tmp_path: Path) -> None:
    """Every cloud-only key, top-level and nested, loads without a warning (warnings are errors
    in this test suite) to the same deployment as the file without them."""

    def edit(doc: dict[str, Any]) -> None:
        for key in sorted(CLOUD_ONLY_KEYS):
            doc.setdefault(key, {"a": "b"} if key in ("tags", "properties") else "x")
        for dotted in CLOUD_ONLY_NESTED:
            nest(doc, dotted, "x")

    plain = load_deployment(deployment(tmp_path / "plain"))
    full = deployment(tmp_path / "full", edit)
    assert {"endpoint_name", "environment", "compute", "description", "$schema"} <= set(
        yaml.safe_load(full.read_text())
    )
    loaded = load_deployment(full)
    assert loaded.warnings == ()
    assert loaded.settings == plain.settings
    assert loaded.model is not None and plain.model is not None
    assert (loaded.model.name, loaded.model.path.name) == (plain.model.name, plain.model.path.name)


def test_a_legacy_flat_file_keeps_working(tmp_path: Path) -> None:
    """A file without ``type:`` has its settings at the top level (logging_level,
    retry_settings, environment_variables ...); a typo there is refused all the same."""
    text = textwrap.dedent(
        """\
        $schema: https://azuremlschemas.azureedge.net/latest/batchDeployment.schema.json
        name: legacy
        endpoint_name: e
        properties: {a: b}
        model: {name: m, path: model}
        code_configuration: {code: code, scoring_script: score.py}
        environment: azureml:env@latest
        compute: azureml:cluster
        resources: {instance_count: 2, instance_type: Standard_DS3_v2}
        max_concurrency_per_instance: 3
        mini_batch_size: 4
        logging_level: debug
        retry_settings: {max_retries: 1, timeout: 9}
        environment_variables: {A: x}
        """
    )
    dep = deployment(tmp_path)
    dep.write_text(text)
    s = load_deployment(dep).settings
    assert (s.instance_count, s.max_concurrency_per_instance, s.mini_batch_size) == (2, 3, 4)
    assert (s.logging_level, s.environment_variables) == ("debug", {"A": "x"})
    assert (s.retry_settings.max_retries, s.retry_settings.timeout) == (1, 9)
    dep.write_text(text.replace("retry_settings: {max_retries", "retry_settings: {max_retris"))
    with pytest.raises(ConfigError, match=r"unknown key 'settings\.retry_settings\.max_retris'"):
        load_deployment(dep)
    dep.write_text(text.replace("mini_batch_size: 4", "mini_batch_sise: 4"))
    with pytest.raises(ConfigError, match=r"did you mean 'settings\.mini_batch_size'"):
        load_deployment(dep)


def test_the_examples_and_the_scaffold_load_without_lenient() -> None:
    """The deployments the project ships (configs/, benchmarks/workloads/, the ``daskscore
    init`` templates) hold no key an unknown-key check refuses."""
    files = sorted(REPO.glob("configs/*/deployment.yml"))
    files += sorted(REPO.glob("benchmarks/workloads/*/deployment.yml"))
    assert len(files) >= 5, files
    with tempfile.TemporaryDirectory() as scratch:
        for template in scaffold.TEMPLATES:
            root = scaffold.scaffold(str(Path(scratch) / template), template)
            files.append(Path(root) / "deployment.yml")
        for path in files:
            _, errors, warned = check_deployment(path)
            unknown = [e for e in errors if "unknown key" in e]
            assert not unknown and not warned, (path, unknown, warned)


# --------------------------------------------------------------------------- the Python API


def test_the_python_api_refuses_unknown_keys_and_takes_lenient(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``run``/``open_session``/``score`` raise the ConfigError before anything starts (no
    cluster, no output folder); with ``lenient=True`` the deployment they hand the engine
    carries the warnings and the file's other settings."""
    dep = deployment(tmp_path, lambda doc: nest(doc, "settings.retry_settings.max_retrys", 0))
    inputs, out = write_inputs(tmp_path / "in", 3), tmp_path / "out"
    for call in (
        lambda **kw: daskscore.run(dep, inputs, out, **kw),
        lambda **kw: daskscore.open_session(dep, inputs, client=object(), **kw),
        lambda **kw: daskscore.score(dep, inputs, client=object(), **kw),
    ):
        with pytest.raises(ConfigError, match="max_retrys"):
            call()
    assert not out.exists()

    handed: list[Any] = []
    monkeypatch.setattr(daskscore.api, "execute", lambda d, *a: handed.append(d))
    monkeypatch.setattr(
        "daskscore.engine.session.open_session", lambda d, *a, **kw: handed.append(d)
    )
    with pytest.warns(UnknownKeyWarning, match="max_retrys"):
        daskscore.run(dep, inputs, out, lenient=True)
    with pytest.warns(UnknownKeyWarning, match="max_retrys"):
        daskscore.open_session(dep, inputs, client=object(), lenient=True)
    assert len(handed) == 2
    for given in handed:
        assert len(given.warnings) == 1 and "max_retrys" in given.warnings[0]
        assert given.settings.mini_batch_size == 5


@pytest.mark.parametrize(
    ("key", "said"),
    [
        ("settings", "set={'settings.mini_batch_size': ...}"),
        ("resources", "set={'resources.instance_count': ...}"),
        ("model", "set={'model.path': ...}"),
        ("settings.mini_batch_size", "(did you mean mini_batch_size=...?)"),
    ],
)
def test_a_deployment_key_as_a_keyword_argument_says_how_settings_are_given(
    tmp_path: Path, key: str, said: str
) -> None:
    """``settings={...}`` was refused with ``(did you mean 'settings'?)``: the suggestion was
    the nearest key of the deployment file, which is no keyword argument."""
    dep = deployment(tmp_path)
    inputs, out = write_inputs(tmp_path / "in", 3), tmp_path / "out"
    calls = {
        "run": lambda **kw: daskscore.run(dep, inputs, out, **kw),
        "score": lambda **kw: daskscore.score(dep, inputs, client=object(), **kw),
        "validate": lambda **kw: daskscore.validate(dep, inputs, **kw),
    }
    for name, call in calls.items():
        if name == "run" and key == "resources":
            continue  # (one of run()'s own arguments)
        with pytest.raises(TypeError) as info:
            call(**{key: {"mini_batch_size": 2}})
        message = str(info.value)
        assert message.startswith(f"unexpected keyword argument '{key}'"), (name, message)
        assert f"did you mean '{key}'" not in message, (name, message)
        assert said in message and "own name (mini_batch_size=" in message, (name, message)
    assert not out.exists()


def test_a_misspelt_keyword_argument_names_the_nearest_setting_or_argument(
    tmp_path: Path,
) -> None:
    dep = deployment(tmp_path)
    inputs, out = write_inputs(tmp_path / "in", 3), tmp_path / "out"
    cases = [
        (lambda: daskscore.run(dep, inputs, out, mini_bach_size=2), "'mini_batch_size'"),
        (lambda: daskscore.run(dep, inputs, out, overwite=True), "'overwrite'"),
        (lambda: daskscore.score(dep, inputs, client=object(), partitons=2), "'partitions'"),
        (lambda: daskscore.validate(dep, inputs, timout=5), "'timeout'"),
        (lambda: daskscore.run(dep, inputs, out, run_invocation_timeout=5), "'timeout'"),
    ]
    for call, nearest in cases:
        with pytest.raises(TypeError, match=f"\\(did you mean {nearest}\\?"):
            call()
    assert not out.exists()


# --------------------------------------------------------------------------- the command


def test_run_and_validate_refuse_unknown_keys_with_exit_2_and_run_nothing(
    tmp_path: Path,
) -> None:
    def edit(doc: dict[str, Any]) -> None:
        misspell_settings(doc)
        nest(doc, "settings.retry_settings.max_retrys", 1)

    dep = deployment(tmp_path, edit)
    inputs, out = write_inputs(tmp_path / "in", 4), tmp_path / "out"
    sets = ("--set", "settings.output_file_nme=x.csv")
    for args in (
        ["run", str(dep), "--input", str(inputs), "--output", str(out), *sets],
        ["validate", str(dep), "--input", str(inputs), *sets],
    ):
        proc = run_cli(*args, timeout=120)
        assert proc.returncode == 2, show(proc)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("daskscore: error")]
        assert len(errors) == 3, show(proc)
        assert "unknown key 'setings' (did you mean 'settings'?)" in errors[0], show(proc)
        assert "'settings.retry_settings.max_retrys' (did you mean " in errors[1], show(proc)
        suggestion = "'settings.output_file_nme' (did you mean 'settings.output_file_name'?)"
        assert suggestion in errors[2], show(proc)
        assert "3 problems found; nothing was run." in proc.stderr, show(proc)
        assert not out.exists() and proc.stdout == "", show(proc)


def test_validate_lenient_warns_and_tries_the_script(tmp_path: Path) -> None:
    dep = deployment(tmp_path, misspell_settings)
    proc = run_cli("validate", str(dep), "--input", str(write_inputs(tmp_path / "in", 2)),
                   "--lenient", timeout=120)  # fmt: skip
    assert proc.returncode == 0, show(proc)
    assert "daskscore: warning:" in proc.stderr and "'setings'" in proc.stderr, show(proc)
    assert "OK: init() and run() work." in proc.stdout, show(proc)


def test_run_lenient_runs_the_job_and_keeps_the_warnings(tmp_path: Path) -> None:
    """The misspelt section is ignored (its mini_batch_size with it: Azure's default, 10,
    stands), and the warning is in the job's log, its summary and its report."""
    dep = deployment(tmp_path, misspell_settings)
    inputs, out = write_inputs(tmp_path / "in", 6), tmp_path / "out"
    proc = cli(dep, inputs, out, "--lenient")
    assert proc.returncode == 0, show(proc)
    assert "daskscore: warning:" in proc.stderr and "'setings'" in proc.stderr, show(proc)
    summary = summary_of(out)
    assert summary["status"] == "Completed" and summary["succeeded_items"] == 6
    assert summary["total_mini_batches"] == 1  # mini_batch_size fell back to 10
    (warning,) = summary["warnings"]
    assert "unknown key 'setings' (did you mean 'settings'?)" in warning
    assert str(dep.resolve()) in warning
    log = (out / "logs" / "sys" / "daskscore.txt").read_text()
    assert warning in log, log[-2000:]
    page = (out / "report.html").read_text()
    assert html.escape(warning) in page.split('id="warnings"', 1)[1]
