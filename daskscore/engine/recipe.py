"""What a finished job keeps so that it can be run again in part: ``logs/sys/job_recipe.json``.

A job's staging folder goes when the job ends (a job with failures keeps it, with its own
fingerprint, for ``--retry-failed``: :mod:`.retry`), but ``daskscore replay`` (one mini-batch
again, in this process) needs the job exactly as it ran: the deployment as loaded,
``--set`` overrides applied (its settings, environment variables, model and code folder), the
input, the options that decide the mini-batches and the rows, and the fingerprint ``--resume``
checks (:mod:`.resume`), with a tabular job's splits (which rows each input file's mini-batches
hold, ``tabular_inputs`` as in ``job.json``: a replay refuses a file whose mini-batches moved).
The recipe holds them, all readable JSON: the loaded :class:`~daskscore.config.Deployment`
field by field (so that overrides need not be parsed again, and a deployment file edited since
does not silently change what is replayed).

Secrets are not kept: ``logs/`` is what users share.  The value of each environment variable
whose name marks a secret (:data:`~daskscore.config.settings.SECRET_MARKERS`) is written
``***`` and its name listed under ``masked``; a replay takes those values again from where
they came from (:mod:`daskscore.devtools.replay`).

The code folder is not frozen: a replay imports the scoring script as it is now, which is the
point of replaying after a fix.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daskscore.config import Deployment
from daskscore.config.options import JobOptions
from daskscore.config.settings import SECRET_MARKERS, Model, RetrySettings, Settings
from daskscore.engine import resume
from daskscore.engine.plan import JobPlan
from daskscore.errors import UsageError
from daskscore.io import storage
from daskscore.io.splittable import SplitTable

RECIPE = Path("logs") / "sys" / "job_recipe.json"
#: 2: the deployment as JSON, secret values left out (1: pickled, with them; not read)
VERSION = 2
#: what a secret value is written as
MASK = "***"
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
    #: the environment variables whose values the recipe does not keep (secrets)
    masked: tuple[str, ...] = ()
    #: a tabular job's splits, file by file (:func:`job_splits`; None in file mode, or in a
    #: recipe written before they were kept)
    splits: dict[str, list[Any]] | None = None


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


def job_splits(plan: JobPlan) -> dict[str, list[Any]] | None:
    """What a tabular job's mini-batch ids mean, file by file
    (:func:`daskscore.engine.resume.split_record`): kept in its manifest, compared by a resume
    or a retry; None in file mode (its input names are all the fingerprint compares)."""
    if plan.unit != "rows" or not isinstance(plan.work, SplitTable):
        return None
    return resume.split_record(plan.work.ranges())


def _absolute(input_path: str) -> str:
    """``input_path`` as an absolute path, a URL as it is."""
    from daskscore.io.storage import is_remote

    return input_path if is_remote(input_path) else os.path.abspath(input_path)


def write_recipe(
    out_dir: Path,
    job_id: str,
    deployment: Deployment,
    input_path: str,
    options: JobOptions,
    fingerprint: dict[str, str],
    mini_batches: int,
    splits: dict[str, list[Any]] | None = None,
) -> Path:
    """Write ``<out_dir>/logs/sys/job_recipe.json`` (atomically) and return its path; the
    secret values of the deployment's environment variables are left out.  ``splits``: a
    tabular job's (:func:`job_splits`), which rows each input file's mini-batches hold, as
    its manifest keeps them for ``--resume`` (:data:`daskscore.engine.resume.SPLITS`)."""
    deployment_doc, masked = _deployment_doc(deployment)
    doc = {
        "version": VERSION,
        "job_id": job_id,
        "deployment_file": str(deployment.source) if deployment.source else None,
        "input": _absolute(input_path),  # (a replay may run from another folder)
        "options": {name: _plain(getattr(options, name)) for name in PLANNING},
        "fingerprint": fingerprint,
        "mini_batches": mini_batches,
        "deployment": deployment_doc,
        "masked": masked,
    }
    if splits is not None:
        doc[resume.SPLITS] = splits
    path = out_dir / RECIPE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def is_secret_name(name: str) -> bool:
    """Whether an environment variable named ``name`` holds a secret, by its name."""
    return any(marker in name.upper() for marker in SECRET_MARKERS)


def _deployment_doc(deployment: Deployment) -> tuple[dict[str, Any], list[str]]:
    """The deployment as JSON, its secret variables' values written :data:`MASK`; and their
    names."""
    settings = dataclasses.asdict(deployment.settings)
    variables = settings["environment_variables"]
    masked = sorted(name for name in variables if is_secret_name(name))
    variables.update(dict.fromkeys(masked, MASK))
    model = deployment.model
    doc = {
        "code": str(deployment.code),
        "scoring_script": str(deployment.scoring_script),
        "model": None
        if model is None
        else {"name": model.name, "path": str(model.path), "url": model.is_url},
        "settings": settings,
        "source": str(deployment.source) if deployment.source else None,
        "warnings": list(deployment.warnings),
        "lenient": deployment.lenient,
    }
    return doc, masked


def _deployment(doc: dict[str, Any]) -> Deployment:
    """The inverse of :func:`_deployment_doc` (the masked values stay :data:`MASK`)."""
    settings = dict(doc["settings"])
    settings["retry_settings"] = RetrySettings(**settings["retry_settings"])
    model = doc["model"]
    if model is not None:
        path = model["path"] if model["url"] else Path(model["path"])
        model = Model(path=path, name=model["name"])
    return Deployment(
        code=Path(doc["code"]),
        scoring_script=Path(doc["scoring_script"]),
        model=model,
        settings=Settings(**settings),
        source=Path(doc["source"]) if doc["source"] else None,
        warnings=tuple(doc["warnings"]),
        lenient=bool(doc["lenient"]),
    )


def read_recipe(output: str | os.PathLike[str]) -> Recipe:
    """The recipe of the job in ``output``.

    Raises
    ------
    UsageError
        ``output`` holds no finished job of this version of daskscore, or its recipe cannot
        be read.
    """
    if storage.is_remote(os.fspath(output)):  # (read as a path, it names a local folder)
        raise UsageError(
            f"'{os.fspath(output)}' is a URL: replaying needs a job's output folder on this "
            "machine. Download it into a local folder (its logs/sys/job_recipe.json with it), "
            "then give that folder."
        )
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
        if not isinstance(doc, dict):
            raise TypeError(f"a JSON {type(doc).__name__}, not an object")
    except Exception as exc:  # noqa: BLE001 - any damage to the file reads the same way
        raise _unreadable(path, exc) from None
    version = doc.get("version")
    if version != VERSION:
        then = "an earlier" if isinstance(version, int) and version < VERSION else "another"
        raise UsageError(
            f"the job recipe {path} was written by {then} version of daskscore (recipe "
            f"version {version}; this one reads version {VERSION}), so the job cannot be "
            "replayed from it: run the job again to get a new one." + (_OLD if version == 1 else "")
        )
    try:
        deployment = _deployment(doc["deployment"])
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
            masked=tuple(map(str, doc["masked"])),
            splits=_splits(doc.get(resume.SPLITS)),
        )
    except Exception as exc:  # noqa: BLE001 - any damage to the file reads the same way
        raise _unreadable(path, exc) from None


def _splits(value: Any) -> dict[str, list[Any]] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TypeError(f"{resume.SPLITS} is a JSON {type(value).__name__}, not an object")
    return {str(path): entry for path, entry in value.items()}


#: What a version 1 recipe holds that the user may want to know before sharing its folder.
_OLD = (
    " That recipe holds the deployment pickled, with the values of its secret environment "
    "variables in clear: delete it before sharing the folder."
)


def _unreadable(path: Path, exc: BaseException) -> UsageError:
    return UsageError(
        f"cannot read the job recipe {path}: {type(exc).__name__}: {exc}. It is written by the "
        "job; run the job again to get a new one."
    )
