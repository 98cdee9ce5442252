"""Loading deployment files into :class:`~daskscore.config.Deployment`.

Loading happens in three pure steps, each easy to test on its own:

1. :func:`normalize` turns a legacy flat file (settings at the top level, no ``type:``) into the
   ``type: model`` layout;
2. :func:`apply_overrides` merges dotted ``KEY=VALUE`` overrides (as ``az ml batch-endpoint
   invoke --set`` takes them);
3. :func:`validate` checks every type and value against the dataclasses of
   :mod:`daskscore.config` and resolves paths relative to the YAML file.

:func:`check_deployment` runs them and finds every problem at once: each key neither daskscore
nor Azure ML knows (:func:`daskscore.config.settings.unknown_keys`, an error as it is for Azure
ML's own CLI unless ``lenient``), each override and each setting on its own, the code and the
model.  Every error names the file, the key and what was expected; the checks of one value are
in :mod:`daskscore.config.values`.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daskscore.config.settings import (
    CLOUD_ONLY_KEYS,
    KNOWN_KEYS,
    SETTING_NAMES,
    SETTINGS_KEYS,
    TOP_KEYS,
    UNKNOWN_HINT,
    Deployment,
    Model,
    Settings,
    UnknownKeyWarning,
    nearest_key,
    unknown_keys,
)
from daskscore.config.values import build, check_override, check_value, kind, override_value
from daskscore.config.yamlfile import (
    duplicate_problem,
    duplicate_warning,
    read_yaml_checked,
)
from daskscore.config.yamlfile import read_yaml as read_yaml  # (imported from here too)
from daskscore.errors import ConfigError

logger = logging.getLogger(__name__)
#: (the name under which :mod:`daskscore.devtools.validate` checks settings one at a time)
_build = build


def normalize(raw: dict[str, Any], where: str = "<deployment>") -> dict[str, Any]:
    """Bring a raw deployment dict to the ``type: model`` layout.

    A legacy file (no ``type:``) has its settings at the top level; they move under
    ``settings``.  Cloud-only keys (``name``, ``compute``, ...) are dropped with an info line,
    and so are unknown keys: :func:`~daskscore.config.settings.unknown_keys` names those, and
    :func:`check_deployment` refuses them.
    """
    kind_ = raw.get("type")
    if kind_ is not None and kind_ != "model":
        raise ConfigError(
            f"{where}: type: '{kind_}' deployments are not supported; daskscore runs "
            "'type: model' deployments (a scoring script and a model)."
        )
    settings = raw.get("settings") or {}  # an all-commented section is null in YAML
    if not isinstance(settings, dict):
        raise ConfigError(f"{where}: settings: expected a mapping, got {kind(settings)}.")
    settings = {k: v for k, v in settings.items() if f"settings.{k}" in SETTINGS_KEYS}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key in CLOUD_ONLY_KEYS:
            logger.info("%s: '%s' only means something in the cloud; ignored.", where, key)
        elif key in TOP_KEYS:
            if key != "settings":
                out[key] = value
        elif kind_ is None and key in SETTING_NAMES:
            settings.setdefault(key, value)
    retry = settings.get("retry_settings")
    if isinstance(retry, dict):
        settings["retry_settings"] = {
            k: v for k, v in retry.items() if f"settings.retry_settings.{k}" in SETTINGS_KEYS
        }
    out["settings"] = settings
    return out


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of a normalized dict with dotted overrides applied.

    Keys are dotted paths (``settings.output_file_name``); a bare settings name
    (``mini_batch_size``, ``timeout``) is accepted too.  A string is read as the key's type
    reads it (:func:`~daskscore.config.values.override_value`): a number's digits give the
    number (``--set settings.retry_settings.timeout=60`` gives 60), and every other key keeps
    the text exactly as typed (``--set settings.environment_variables.T=1:30`` sets ``1:30``).
    A mapping given for a key that holds one (``retry_settings={"timeout": 5}``) is merged
    into it, key by key.
    A setting's value gets the checks of :func:`validate` here, and its error says it is an
    override (``override: settings.mini_batch_size: expected ...``), not the deployment file's
    value.

    Examples
    --------
    >>> apply_overrides({"settings": {}}, {"timeout": "60", "output_file_name": "007"})
    {'settings': {'retry_settings': {'timeout': 60}, 'output_file_name': '007'}}
    """
    out = copy.deepcopy(raw)
    for key, value in overrides.items():
        path = resolve_key(key)
        value = override_value(path, value)
        check_override(path, value)
        node = out
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        held = node.get(path[-1])
        # a mapping given for a mapping key is merged into it, key by key (retry_settings=
        # {"timeout": 5} keeps the file's max_retries; it went back to its default)
        node[path[-1]] = _merged(held, value) if isinstance(held, dict) else value
        for section in ("settings", "resources") if path[-1] == "instance_count" else ():
            if isinstance(out.get(section), dict) and "instance_count" in out[section]:
                out[section]["instance_count"] = value  # (either spelling: the override holds)
    return out


def _merged(held: dict[str, Any], value: Any) -> Any:
    """``value`` laid over ``held`` (both mappings: key by key, deeply); else ``value``."""
    if not isinstance(value, dict):
        return value
    out = dict(held)
    for key, item in value.items():
        out[key] = _merged(out[key], item) if isinstance(out.get(key), dict) else item
    return out


def resolve_key(key: str) -> list[str]:
    """The dotted path of an override key; bare settings names are looked up under settings."""
    if key in KNOWN_KEYS:
        return key.split(".")
    if key.startswith("settings.environment_variables.") and key.count(".") == 2:
        return key.split(".")
    for candidate in (f"settings.{key}", f"settings.retry_settings.{key}"):
        if candidate in SETTINGS_KEYS:
            return candidate.split(".")
    raise ConfigError(
        f"override: unknown key '{key}'{nearest_key(key)}; an override that names no setting "
        "is refused with or without --lenient."
    )


def validate(raw: dict[str, Any], source: Path | None = None) -> Deployment:
    """Build a :class:`Deployment` from a normalized dict, checking every type and path."""
    where = str(source) if source else "<deployment>"
    base = source.parent if source else Path.cwd()
    settings_raw = dict(raw.get("settings") or {})
    resources = raw.get("resources") or {}
    if not isinstance(resources, dict):
        raise ConfigError(f"{where}: resources: expected a mapping, got {kind(resources)}.")
    if "instance_count" in resources and "instance_count" not in settings_raw:
        meta = {f.name: f.metadata for f in dataclasses.fields(Settings)}["instance_count"]
        settings_raw["instance_count"] = check_value(
            resources["instance_count"], int, meta, "resources.instance_count", where
        )
    settings = build(Settings, settings_raw, "settings", where)
    code, script = _code_configuration(raw.get("code_configuration"), raw.get("model"), base, where)
    return Deployment(
        code=code,
        scoring_script=script,
        model=_model(raw.get("model"), base, where),
        settings=settings,
        source=source,
    )


def _model(value: Any, base: Path, where: str) -> Model | None:
    if value is None:
        return None
    name = None
    if isinstance(value, dict):
        name = value.get("name")
        path = value.get("path")
        if path is None:
            raise ConfigError(
                f"{where}: model: an inline model needs 'path' (a folder or file relative to the "
                "deployment file); a registered model name alone cannot be resolved locally."
            )
    elif isinstance(value, str):
        path = value
    else:
        raise ConfigError(
            f"{where}: model: expected a mapping {{name, path}} or a path, got {kind(value)}."
        )
    if not isinstance(path, str) or not path:
        raise ConfigError(f"{where}: model.path: expected a path, got {kind(path)}.")
    if path.startswith("azureml:"):
        raise ConfigError(
            f"{where}: model: '{path}' is a model registered in an Azure ML workspace, which "
            "cannot be fetched locally. Download its files (az ml model download) and point "
            "model.path at their folder: model: {path: <folder>} relative to the deployment "
            "file, or --set model.path=<folder> on the command line; without "
            "code_configuration, that folder is the MLflow model (the one with the MLmodel file)."
        )
    if "://" in path and not path.startswith("file://"):
        # fetched by every worker into its cache; the driver checks it exists before the job
        return Model(path=path, name=str(name) if name is not None else None)
    resolved = _absolute(base / os.path.expanduser(path))
    if not resolved.exists():
        raise ConfigError(f"{where}: model.path: '{path}' does not exist (looked for {resolved}).")
    return Model(path=resolved, name=str(name) if name is not None else None)


#: Override keys that name a local path (a URL or a registered model may be given too).
PATH_OVERRIDES = ("model.path", "model", "code_configuration.code")


def path_from_here(key: str, value: str) -> str:
    """A ``--set`` override as the command line means it: a path key's local path is taken
    from the current folder (the deployment file's own are from its folder), made absolute as
    they are — its symbolic links kept (:func:`_absolute`); a URL and a registered model
    (``azureml:...``) are left as they are, for :func:`_model` to take or refuse as it does
    the file's."""
    if key not in PATH_OVERRIDES or not value or "://" in value or value.startswith("azureml:"):
        return value
    return str(_absolute(Path(os.path.expanduser(value))))


def _absolute(path: Path) -> Path:
    """``path`` made absolute, its symbolic links kept (not ``resolve()``d): the model is under
    its own name in ``AZUREML_MODEL_DIR`` and ``__file__`` is the script's own path when either
    is a link, as on Azure, which copies them."""
    return Path(os.path.abspath(path))


def _code_configuration(value: Any, model: Any, base: Path, where: str) -> tuple[Path, Path]:
    if value is None:
        return _mlflow_scorer(model, base, where)
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: code_configuration: expected a mapping, got {kind(value)}.")
    for key in ("code", "scoring_script"):
        if not isinstance(value.get(key), str) or not value.get(key):
            raise ConfigError(
                f"{where}: code_configuration.{key}: expected a path, got {kind(value.get(key))}."
            )
    code = _absolute(base / os.path.expanduser(value["code"]))
    if not code.is_dir():
        raise ConfigError(
            f"{where}: code_configuration.code: '{value['code']}' is not a folder "
            f"(looked for {code})."
        )
    script = _absolute(code / value["scoring_script"])
    if not script.is_file():
        import difflib  # (a did-you-mean from the code folder's Python files, a few levels)

        found = sorted(
            p.relative_to(code).as_posix() for g in ("*.py", "*/*.py") for p in code.glob(g)
        )
        near = difflib.get_close_matches(value["scoring_script"], found[:2000], n=1, cutoff=0.5)
        listed = ", ".join(found[:8]) + (" ..." if len(found) > 8 else "") or "no .py file"
        hint = f" (did you mean '{near[0]}'?)" if near else f"; it holds {listed}"
        raise ConfigError(
            f"{where}: code_configuration.scoring_script: '{value['scoring_script']}' not found "
            f"in the code folder {code}{hint}."
        )
    return code, script


#: The code folder of the built-in scorer of MLflow models deployed without a script.
MLFLOW_SCORER = Path(__file__).resolve().parent.parent / "builtin" / "mlflow"


def _mlflow_scorer(model: Any, base: Path, where: str) -> tuple[Path, Path]:
    """No ``code_configuration``: the built-in MLflow scorer when the model folder holds an
    ``MLmodel`` file (and mlflow is installed), else a :class:`ConfigError`."""
    path = model.get("path") if isinstance(model, dict) else model
    if isinstance(path, str) and path.startswith("azureml:"):
        _model(model, base, where)  # (raises: the model's own error, not a missing script's)
    url = isinstance(path, str) and "://" in path and not path.startswith("file://")
    folder = None
    if isinstance(path, str) and not url:
        folder = (base / os.path.expanduser(path)).resolve()
    # a model URL: its MLmodel file is looked for before the job (engine.plan.check_model_url)
    if not url and not (folder and (folder / "MLmodel").is_file()):
        found = f"; {folder} has no MLmodel file" if folder else ""
        raise ConfigError(
            f"{where}: code_configuration: missing; give code_configuration.code (the code "
            "folder) and code_configuration.scoring_script (the script inside it). Only an "
            "MLflow model (model.path: a folder with an MLmodel file) can be deployed without "
            f"a scoring script{found}."
        )
    if importlib.util.find_spec("mlflow") is None:
        raise ConfigError(
            f"{where}: this deployment has no scoring script and an MLflow model: pip install "
            f"'daskscore[mlflow]' (the built-in MLflow scorer of {folder or path} needs mlflow)."
        )
    return MLFLOW_SCORER, MLFLOW_SCORER / "score.py"


def to_raw(deployment: Deployment) -> dict[str, Any]:
    """The normalized dict of a deployment (absolute paths), the inverse of :func:`validate`."""
    settings = dataclasses.asdict(deployment.settings)
    raw: dict[str, Any] = {
        "type": "model",
        "code_configuration": {
            "code": str(deployment.code),
            "scoring_script": str(deployment.scoring_script),
        },
        "settings": settings,
    }
    if deployment.model is not None:
        raw["model"] = {"name": deployment.model.name, "path": str(deployment.model.path)}
    return raw


class ConfigProblems(ConfigError):
    """Every problem of one deployment, one line each (also in :attr:`problems`)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.problems,)


def check_deployment(
    path: str | os.PathLike[str], overrides: dict[str, Any] | None = None, *, lenient: bool = False
) -> tuple[Deployment | None, list[str], list[str]]:
    """Load a deployment file, finding every problem at once where a step would stop at its
    first.

    Unknown keys come first (errors, or warnings when ``lenient``), then each override, each
    setting, ``resources``, the code configuration and the model, each checked on its own with
    the checks of :func:`validate`.

    Returns
    -------
    tuple
        The deployment (``None`` when there is an error), the errors, and the warnings.
    """
    source = Path(path).resolve()
    where, errors = str(source), []

    def check(step: Callable[..., Any], *args: Any) -> Any:
        try:
            return step(*args)
        except ConfigError as exc:
            errors.extend(e for e in getattr(exc, "problems", [str(exc)]) if e not in errors)
            return None

    raw, duplicates = check(read_yaml_checked, source) or (None, [])
    if raw is None:
        return None, errors, []
    unknown = unknown_keys(raw, where)
    if not lenient:
        errors += [duplicate_problem(text) for text in duplicates]
    if unknown and not lenient:
        errors += [unknown[0] + UNKNOWN_HINT, *unknown[1:]]
    raw = check(normalize, raw, where)
    for key, value in (overrides or {}).items() if raw else ():
        raw = check(apply_overrides, raw, {key: value}) or raw
    if raw:
        _check_parts(raw, source, check)
    deployment = check(validate, raw, source) if raw and not errors else None
    ignored = [duplicate_warning(text) for text in duplicates]
    ignored += [f"{text.removesuffix('.')}; it is ignored (lenient)." for text in unknown]
    return deployment, errors, ignored if lenient else []


def _check_parts(raw: dict[str, Any], source: Path, check: Callable[..., Any]) -> None:
    """Check each setting, resources, the code configuration and the model on its own."""
    where, settings = str(source), raw.get("settings") or {}
    for key, value in settings.items():
        if key == "retry_settings" and isinstance(value, dict):
            for sub, sub_value in value.items():
                check(build, Settings, {key: {sub: sub_value}}, "settings", where)
        else:
            check(build, Settings, {key: value}, "settings", where)
    resources = raw.get("resources")
    count = resources.get("instance_count") if isinstance(resources, dict) else None
    if count is not None and "instance_count" not in settings:
        check(build, Settings, {"instance_count": count}, "resources", where)
    code = raw.get("code_configuration")
    check(_code_configuration, code, raw.get("model"), source.parent, where)
    check(_model, raw.get("model"), source.parent, where)


def load_deployment(
    path: str | os.PathLike[str],
    overrides: dict[str, Any] | None = None,
    *,
    lenient: bool = False,
) -> Deployment:
    """Load, normalize and validate a deployment YAML file.

    Parameters
    ----------
    path : str or path-like
        The deployment file (``type: model``, or a legacy flat file).
    overrides : dict, optional
        Dotted keys to override, as ``--set`` takes them, e.g.
        ``{"settings.output_file_name": "x.csv"}`` or ``{"mini_batch_size": 5}``.
    lenient : bool, default False
        Ignore keys that neither daskscore nor Azure ML knows, with an
        :class:`~daskscore.config.UnknownKeyWarning` each (kept in the deployment's
        ``warnings``), instead of refusing them.  An unknown override key is refused either way.

    Returns
    -------
    Deployment

    Raises
    ------
    ConfigError
        The file is missing or malformed, holds an unknown key (a misspelt ``setings:`` would
        otherwise leave every setting at its default), a value has the wrong type, or a path it
        names does not exist.  Every problem is named at once, one line each (the exception's
        ``problems``), each naming the file and the key.

    Examples
    --------
    >>> dep = load_deployment("configs/digits-cnn/deployment.yml")  # doctest: +SKIP
    >>> dep.settings.mini_batch_size  # doctest: +SKIP
    10
    """
    deployment, errors, warned = check_deployment(path, overrides, lenient=lenient)
    if errors or deployment is None:
        raise ConfigProblems(errors)
    for text in warned:
        warnings.warn(text, UnknownKeyWarning, stacklevel=2)
    return dataclasses.replace(deployment, warnings=tuple(warned), lenient=lenient)


def with_overrides(deployment: Deployment, overrides: dict[str, Any]) -> Deployment:
    """A copy of ``deployment`` with dotted overrides applied and validated again."""
    if not overrides:
        return deployment
    changed = validate(apply_overrides(to_raw(deployment), overrides), deployment.source)
    return dataclasses.replace(changed, warnings=deployment.warnings, lenient=deployment.lenient)
