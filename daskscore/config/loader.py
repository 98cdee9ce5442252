"""Loading deployment files into :class:`~daskscore.config.Deployment`.

Loading happens in three pure steps, each easy to test on its own:

1. :func:`normalize` turns a legacy flat file (settings at the top level, no ``type:``) into the
   ``type: model`` layout and warns about unknown keys, naming the nearest known one;
2. :func:`apply_overrides` merges dotted ``KEY=VALUE`` overrides (as ``az ml batch-endpoint
   invoke --set`` takes them);
3. :func:`validate` checks every type and value against the dataclasses of
   :mod:`daskscore.config` and resolves paths relative to the YAML file.

Every error names the file, the key and what was expected; the checks of one value are in
:mod:`daskscore.config.values`.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

import yaml

from daskscore.config.settings import (
    CLOUD_ONLY_KEYS,
    KNOWN_KEYS,
    SETTINGS_KEYS,
    TOP_KEYS,
    Deployment,
    Model,
    Settings,
    nearest_key,
    warn_unknown,
)
from daskscore.config.values import build, check_override, check_value, kind
from daskscore.errors import ConfigError

logger = logging.getLogger(__name__)
#: (the name under which :mod:`daskscore.devtools.validate` checks settings one at a time)
_build = build


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a deployment file into a dict; errors name the file and the line."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: deployment file not found.")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{p}: not valid YAML{where}: {problem}.") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not a UTF-8 text file ({exc.reason}).") from None
    if raw is None:
        raise ConfigError(f"{p}: the deployment file is empty.")
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping of keys at the top level, got {kind(raw)}.")
    return raw


def normalize(raw: dict[str, Any], where: str = "<deployment>") -> dict[str, Any]:
    """Bring a raw deployment dict to the ``type: model`` layout; warn about unknown keys.

    A legacy file (no ``type:``) has its settings at the top level; they move under
    ``settings``.  Cloud-only keys (``name``, ``compute``, ...) are dropped with an info line.
    """
    kind = raw.get("type")
    if kind is not None and kind != "model":
        raise ConfigError(
            f"{where}: type: '{kind}' deployments are not supported; daskscore runs "
            "'type: model' deployments (a scoring script and a model)."
        )
    settings = raw.get("settings") or {}  # an all-commented section is null in YAML
    if not isinstance(settings, dict):
        raise ConfigError(f"{where}: settings: expected a mapping, got {kind(settings)}.")
    settings = dict(settings)
    setting_names = {f.name for f in dataclasses.fields(Settings)}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key in CLOUD_ONLY_KEYS:
            logger.info("%s: '%s' only means something in the cloud; ignored.", where, key)
        elif key in TOP_KEYS:
            if key != "settings":
                out[key] = value
        elif kind is None and key in setting_names:
            settings.setdefault(key, value)
        else:
            warn_unknown(where, str(key))
    for key in list(settings):
        if f"settings.{key}" not in SETTINGS_KEYS:
            warn_unknown(where, f"settings.{key}")
            del settings[key]
    retry = settings.get("retry_settings")
    if isinstance(retry, dict):
        for key in list(retry):
            if f"settings.retry_settings.{key}" not in SETTINGS_KEYS:
                warn_unknown(where, f"settings.retry_settings.{key}")
    for section in ("code_configuration", "resources", "model"):
        value = out.get(section)
        if isinstance(value, dict):
            for key in value:
                if f"{section}.{key}" not in KNOWN_KEYS:
                    warn_unknown(where, f"{section}.{key}")
    out["settings"] = settings
    return out


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of a normalized dict with dotted overrides applied.

    Keys are dotted paths (``settings.output_file_name``); a bare settings name
    (``mini_batch_size``, ``timeout``) is accepted too.  String values are parsed as YAML
    scalars, so ``--set settings.retry_settings.timeout=60`` gives the number 60.  A setting's
    value gets the checks of :func:`validate` here, and its error says it is an override
    (``override: settings.mini_batch_size: expected ...``), not the deployment file's value.

    Examples
    --------
    >>> apply_overrides({"settings": {}}, {"timeout": "60"})
    {'settings': {'retry_settings': {'timeout': 60}}}
    """
    out = copy.deepcopy(raw)
    for key, value in overrides.items():
        path = resolve_key(key)
        if isinstance(value, str):
            value = _scalar(value)
        check_override(path, value)
        node = out
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[path[-1]] = value
    return out


def _scalar(text: str) -> Any:
    """A ``--set`` value as YAML reads a scalar (``60`` -> 60, ``true`` -> True); anything that
    would not stay a scalar (``a: b``, ``[1]``, ``x #y``) is kept as the string it was."""
    if not text.strip() or "#" in text:
        return text
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return text if isinstance(value, (dict, list)) or value is None else value


def resolve_key(key: str) -> list[str]:
    """The dotted path of an override key; bare settings names are looked up under settings."""
    if key in KNOWN_KEYS:
        return key.split(".")
    if key.startswith("settings.environment_variables.") and key.count(".") == 2:
        return key.split(".")
    for candidate in (f"settings.{key}", f"settings.retry_settings.{key}"):
        if candidate in SETTINGS_KEYS:
            return candidate.split(".")
    raise ConfigError(f"override '{key}': unknown key{nearest_key(key)}.")


# --------------------------------------------------------------------------- validation


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
            "cannot be resolved locally. Give the model's files instead: model: {path: <folder>} "
            "relative to the deployment file, or --set model.path=<folder> on the command line."
        )
    if "://" in path and not path.startswith("file://"):
        # fetched by every worker into its cache; the driver checks it exists before the job
        return Model(path=path, name=str(name) if name is not None else None)
    resolved = (base / os.path.expanduser(path)).resolve()
    if not resolved.exists():
        raise ConfigError(f"{where}: model.path: '{path}' does not exist (looked for {resolved}).")
    return Model(path=resolved, name=str(name) if name is not None else None)


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
    code = (base / os.path.expanduser(value["code"])).resolve()
    if not code.is_dir():
        raise ConfigError(
            f"{where}: code_configuration.code: '{value['code']}' is not a folder "
            f"(looked for {code})."
        )
    script = (code / value["scoring_script"]).resolve()
    if not script.is_file():
        raise ConfigError(
            f"{where}: code_configuration.scoring_script: '{value['scoring_script']}' not found "
            f"in the code folder {code}."
        )
    return code, script


#: The code folder of the built-in scorer of MLflow models deployed without a script.
MLFLOW_SCORER = Path(__file__).resolve().parent.parent / "builtin" / "mlflow"


def _mlflow_scorer(model: Any, base: Path, where: str) -> tuple[Path, Path]:
    """No ``code_configuration``: the built-in MLflow scorer when the model folder holds an
    ``MLmodel`` file (and mlflow is installed), else a :class:`ConfigError`."""
    path = model.get("path") if isinstance(model, dict) else model
    folder = (base / os.path.expanduser(path)).resolve() if isinstance(path, str) else None
    if not (folder and (folder / "MLmodel").is_file()):
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
            f"'daskscore[mlflow]' (the built-in MLflow scorer of {folder} needs mlflow)."
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


def load_deployment(
    path: str | os.PathLike[str], overrides: dict[str, Any] | None = None
) -> Deployment:
    """Load, normalize and validate a deployment YAML file.

    Parameters
    ----------
    path : str or path-like
        The deployment file (``type: model``, or a legacy flat file).
    overrides : dict, optional
        Dotted keys to override, as ``--set`` takes them, e.g.
        ``{"settings.output_file_name": "x.csv"}`` or ``{"mini_batch_size": 5}``.

    Returns
    -------
    Deployment

    Raises
    ------
    ConfigError
        The file is missing or malformed, a value has the wrong type, or a path it names does
        not exist.  The message names the file and the key.

    Examples
    --------
    >>> dep = load_deployment("configs/digits-cnn/deployment.yml")  # doctest: +SKIP
    >>> dep.settings.mini_batch_size  # doctest: +SKIP
    10
    """
    source = Path(path).resolve()
    raw = normalize(read_yaml(source), str(source))
    if overrides:
        raw = apply_overrides(raw, overrides)
    return validate(raw, source)


def with_overrides(deployment: Deployment, overrides: dict[str, Any]) -> Deployment:
    """A copy of ``deployment`` with dotted overrides applied and validated again."""
    if not overrides:
        return deployment
    return validate(apply_overrides(to_raw(deployment), overrides), deployment.source)
