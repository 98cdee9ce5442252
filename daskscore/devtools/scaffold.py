"""``daskscore init``: a deployment folder to start a scoring script from.

Its ``deployment.yml`` lists every setting, each commented with its meaning and default, read
from the fields of :mod:`daskscore.config` so that it cannot drift from what daskscore knows;
``code/score.py`` is a commented ``init()``/``run()`` template that scores the three files of
``sample-inputs/`` with the placeholder model of ``model/``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import textwrap
import unicodedata
from pathlib import Path
from typing import Any

import yaml

from daskscore.config.settings import RetrySettings, Settings
from daskscore.errors import UsageError

TEMPLATES = ("minimal", "torch")
#: the settings that Azure's schema keeps under ``resources``, not ``settings``
RESOURCE_SETTINGS = ("instance_count",)
FEATURES = ("a", "b", "c", "d")


def scaffold(name: str | os.PathLike[str], template: str = "minimal") -> Path:
    """Write a deployment folder to start from: ``deployment.yml``, ``code/score.py``,
    ``model/`` and ``sample-inputs/``.

    Parameters
    ----------
    name : str or path-like
        The folder to create; it must not exist, or be empty.
    template : {"minimal", "torch"}
        ``minimal`` scores CSV files with pandas; ``torch`` with a small PyTorch network.

    Returns
    -------
    Path
        The folder.

    Raises
    ------
    UsageError
        ``name`` exists and is not an empty folder, or the template is unknown.
    """
    if not os.fspath(name).strip():
        raise UsageError(
            f"daskscore init: the folder name {os.fspath(name)!r} is empty; give the name of "
            "a new folder to create, as in: daskscore init my-model"
        )
    root = Path(name)
    if template not in TEMPLATES:
        raise UsageError(f"template '{template}': expected one of {', '.join(TEMPLATES)}.")
    if root.exists() and not root.is_dir():
        raise UsageError(f"'{root}' already exists and is a file, not a folder; choose a new name.")
    if root.exists() and any(root.iterdir()):
        raise UsageError(f"'{root}' already exists and is not empty; choose a new folder.")
    for folder in ("code", "model", "sample-inputs"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    text = deployment_yaml(azure_name(root.resolve().name))
    (root / "deployment.yml").write_text(text, encoding="utf-8")
    script = MINIMAL_SCRIPT if template == "minimal" else TORCH_SCRIPT
    (root / "code" / "score.py").write_text(script, encoding="utf-8")
    (root / "model" / "README.md").write_text(MODEL_README, encoding="utf-8")
    if template == "minimal":
        (root / "model" / "model.json").write_text('{"scale": 0.5}\n', encoding="utf-8")
    else:
        _torch_weights(root / "model" / "model.pt")
    for i in range(3):
        values = [",".join(str((i + 1) * r + c) for c in range(len(FEATURES))) for r in range(4)]
        text = ",".join(FEATURES) + "\n" + "\n".join(values) + "\n"
        (root / "sample-inputs" / f"sample-{i:03d}.csv").write_text(text, encoding="utf-8")
    return root


def azure_name(folder: str) -> str:
    """A deployment name Azure ML takes, from a folder's name: lower-case ASCII letters,
    digits and dashes, beginning with a letter and ending with a letter or digit, 3 to 23
    characters (so that ``<name>-endpoint`` stays within the endpoint names' 32)."""
    ascii_name = unicodedata.normalize("NFKD", folder).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower())
    slug = re.sub(r"^[^a-z]+", "", slug)[:23].strip("-")
    return slug if len(slug) >= 3 else f"scoring-{slug}".strip("-")


def deployment_yaml(name: str) -> str:
    """A ``type: model`` deployment file with every setting at its default, each one commented
    with its meaning, read from the fields of :class:`daskscore.config.Settings`."""
    lines = [
        "$schema: https://azuremlschemas.azureedge.net/latest/modelBatchDeployment.schema.json",
        f"name: {_yaml(name)}  # name, endpoint_name, compute, environment: cloud only",
        f"endpoint_name: {_yaml(name + '-endpoint')}",
        "type: model",
        "model:",
        f"  name: {_yaml(name + '-model')}",
        "  path: model  # AZUREML_MODEL_DIR/model in the script",
        "code_configuration:",
        "  code: code",
        "  scoring_script: score.py",
        "# environment: azureml:my-environment:1",
        "compute: azureml:cpu-cluster",
        "resources:",
    ]
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    for key in RESOURCE_SETTINGS:
        lines += _setting_lines(fields.pop(key), "  ")
    lines.append("settings:")
    for f in fields.values():
        if f.name == "retry_settings":
            doc = (RetrySettings.__doc__ or "").split(": ", 1)[-1].strip().capitalize()
            lines += [f"  # {doc}", "  retry_settings:"]
            for sub in dataclasses.fields(RetrySettings):
                lines += _setting_lines(sub, "    ")
        else:
            lines += _setting_lines(f, "  ")
    return "\n".join(lines) + "\n"


def _setting_lines(f: dataclasses.Field[Any], indent: str) -> list[str]:
    default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
    text = _yaml(default)
    doc = f.metadata.get("doc", "")
    if "choices" in f.metadata:
        doc += f" One of: {', '.join(f.metadata['choices'])}."
    comment = textwrap.wrap(f"{doc} Default: {text}.", 96 - len(indent))
    lines = [f"{indent}# {line}" for line in comment] + [f"{indent}{f.name}: {text}"]
    if isinstance(default, dict):
        lines.append(f"{indent}# for example: {f.name}: {{MY_SETTING: '1'}}")
    return lines


def _yaml(value: Any) -> str:
    """``value`` as a YAML flow scalar or mapping, quoted where YAML needs it."""
    return yaml.safe_dump(value, default_flow_style=True).removesuffix("...\n").strip()


def _torch_weights(path: Path) -> None:
    """The torch template's weights, when torch is installed (else init() makes its own)."""
    try:
        import torch
    except ImportError:
        return
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(len(FEATURES), 3))
    torch.save(net.state_dict(), path)


MODEL_README = """\
The model's files. The deployment's `model.path` points here; a scoring script finds them at
`os.path.join(os.environ["AZUREML_MODEL_DIR"], "model")`, locally as in Azure ML.
"""

_SCRIPT_HEAD = '''\
"""A batch-deployment scoring script: init() once per worker process, run() per mini-batch.

Try it on one mini-batch, in one process:  daskscore validate deployment.yml -i sample-inputs
Run it over everything, on Dask:           daskscore run deployment.yml -i sample-inputs -o out
"""

import logging
import os

import pandas as pd
'''

MINIMAL_SCRIPT = (
    _SCRIPT_HEAD
    + '''import json

logger = logging.getLogger(__name__)
model = None


def init():
    """Load the model, once per worker process, before any run()."""
    global model
    # AZUREML_MODEL_DIR holds the model under its own name: model.path is 'model'
    model_dir = os.path.join(os.environ["AZUREML_MODEL_DIR"], "model")
    with open(os.path.join(model_dir, "model.json"), encoding="utf-8") as fh:
        model = json.load(fh)
    logger.info("model loaded: %s", model)


def run(mini_batch):
    """Score a list of input file paths; return a DataFrame (or a list), one row per file.

    Each row becomes a line of predictions.csv: space-separated, no header.
    """
    rows = []
    for path in mini_batch:
        frame = pd.read_csv(path)
        score = float(frame.to_numpy().mean()) * model["scale"]
        rows.append({"file": os.path.basename(path), "rows": len(frame), "score": score})
    return pd.DataFrame(rows)
'''
)

TORCH_SCRIPT = (
    _SCRIPT_HEAD
    + '''import torch

FEATURES = ["a", "b", "c", "d"]
logger = logging.getLogger(__name__)
net = None


def init():
    """Load the network, once per worker process, before any run()."""
    global net
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(len(FEATURES), 3))
    # AZUREML_MODEL_DIR holds the model under its own name: model.path is 'model'
    weights = os.path.join(os.environ["AZUREML_MODEL_DIR"], "model", "model.pt")
    if os.path.exists(weights):
        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    else:
        logger.warning("%s not found: the network keeps its random weights", weights)
    net.eval()


@torch.no_grad()
def run(mini_batch):
    """Score a list of input file paths; return a DataFrame, here one row per input row.

    Each row becomes a line of predictions.csv: space-separated, no header.
    """
    results = []
    for path in mini_batch:
        frame = pd.read_csv(path)
        x = torch.tensor(frame[FEATURES].to_numpy(), dtype=torch.float32)
        best = torch.softmax(net(x), dim=1).max(dim=1)
        results.append(
            pd.DataFrame(
                {
                    "file": os.path.basename(path),
                    "row": range(len(frame)),
                    "class": best.indices.numpy(),
                    "probability": best.values.numpy().round(4),
                }
            )
        )
    return pd.concat(results, ignore_index=True)
'''
)
