"""What a finished job keeps so that it can be run again in part: ``logs/sys/job_recipe.json``.

A job's staging folder goes when the job ends (a job with failures keeps it, with its own
fingerprint, for ``--retry-failed``: :mod:`.retry`), but ``daskscore replay`` (one mini-batch
again, in this process) needs the job exactly as it ran: the deployment as loaded,
``--set`` overrides applied (its settings, environment variables, model and code folder), the
input, the options that decide the mini-batches and the rows, and the fingerprint ``--resume``
checks (:mod:`.resume`).  The recipe holds them: readable JSON, plus the loaded
:class:`~daskscore.config.Deployment` pickled (so that overrides need not be parsed again, and
a deployment file edited since does not silently change what is replayed).

The code folder is not frozen: a replay imports the scoring script as it is now, which is the
point of replaying after a fix.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daskscore.config import Deployment
from daskscore.config.options import JobOptions
from daskscore.engine import resume
from daskscore.engine.plan import JobPlan
from daskscore.errors import UsageError

RECIPE = Path("logs") / "sys" / "job_recipe.json"
VERSION = 1
#: the JobOptions that decide the mini-batches and the rows (the others only decide how the
#: job runs: workers, cluster, progress, prefetch)
PLANNING = ("output_format", "partition_on", "rows_per_file", "tabular", "carry_columns")


@dataclass
class Recipe:
    """A finished job, as :func:`read_recipe` gives it back."""

    output: Path
    job_id: str
    deployment: Deployment
    input_path: str
    options: JobOptions
    fingerprint: dict[str, str]
    mini_batches: int


def replay_command(output: str | os.PathLike[str], mini_batch: int) -> str:
    """The command that replays ``mini_batch`` of the job in ``output`` (for failure texts)."""
    return f"daskscore replay {shlex.quote(os.fspath(output))} --mini-batch {mini_batch}"


def job_fingerprint(plan: JobPlan, out_dir: Path | None = None) -> dict[str, str]:
    """The fingerprint of a planned job (:func:`daskscore.engine.resume.fingerprint`): what
    decides its rows, hashed (``out_dir``: its output folder, left out of the code folder's
    files should it be inside it)."""
    deployment, options = plan.deployment, plan.options
    settings = deployment.settings
    return resume.fingerprint(
        deployment.code,
        deployment.model.path if deployment.model else None,
        plan.files,
        batching=[settings.mini_batch_size, plan.unit],
        output=[
            plan.writer.name,
            settings.output_file_name,
            plan.csv_kwargs,
            options.partition_on,
            options.rows_per_file,
            options.carry_columns,
        ],
        script=deployment.scoring_script,
        out_dir=out_dir,
    )


def write_recipe(
    out_dir: Path,
    job_id: str,
    deployment: Deployment,
    input_path: str,
    options: JobOptions,
    fingerprint: dict[str, str],
    mini_batches: int,
) -> Path:
    """Write ``<out_dir>/logs/sys/job_recipe.json`` (atomically) and return its path."""
    doc = {
        "version": VERSION,
        "job_id": job_id,
        "deployment_file": str(deployment.source) if deployment.source else None,
        "input": input_path,
        "options": {name: _plain(getattr(options, name)) for name in PLANNING},
        "fingerprint": fingerprint,
        "mini_batches": mini_batches,
        "deployment": base64.b64encode(pickle.dumps(deployment)).decode("ascii"),
    }
    path = out_dir / RECIPE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def read_recipe(output: str | os.PathLike[str]) -> Recipe:
    """The recipe of the job in ``output``.

    Raises
    ------
    UsageError
        ``output`` holds no finished job of this version of daskscore, or its recipe cannot
        be read.
    """
    out = Path(output).expanduser().resolve()
    path = out / RECIPE
    if not path.is_file():
        what = "no job" if not (out / "job_summary.json").is_file() else "a job without a recipe"
        raise UsageError(
            f"'{out}' holds {what}: {RECIPE} is missing. Replaying or retrying needs the output "
            "folder of a job run by daskscore 0.1 or later, as that job left it."
        )
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        deployment = pickle.loads(base64.b64decode(doc["deployment"]))
        if not isinstance(deployment, Deployment):
            raise TypeError(type(deployment).__name__)
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in doc["options"].items()}
        options = JobOptions(progress=False, dashboard=False, **fields)
        return Recipe(
            output=out,
            job_id=str(doc["job_id"]),
            deployment=deployment,
            input_path=str(doc["input"]),
            options=options,
            fingerprint=dict(doc["fingerprint"]),
            mini_batches=int(doc["mini_batches"]),
        )
    except Exception as exc:  # noqa: BLE001 - any damage to the file reads the same way
        raise UsageError(
            f"cannot read the job recipe {path}: {type(exc).__name__}: {exc}. It is written "
            "by the job; run the job again to get a new one."
        ) from None
