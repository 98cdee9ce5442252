"""``daskscore replay OUTPUT --mini-batch N``: one mini-batch of a finished job, again, here.

The job is read back from its recipe (:mod:`daskscore.engine.recipe`): the deployment as it was
loaded (``--set`` overrides, environment variables, model), the input and the options that
cut it into mini-batches.  The input is listed and planned again; when it no longer gives the
same mini-batches (files added, removed or renamed, another mini_batch_size) the replay is
refused, since mini-batch N would hold other files; in tabular mode also when an input file's
mini-batches hold other rows than the recipe noted (the file of mini-batch N, or one before it),
as ``--resume`` refuses, and a file of it changed in place that gives the same rows is noted.
Then the scoring script, as it is now in the code folder, is imported with a worker's
environment, and ``init()`` and ``run()`` of that mini-batch are called in this process
(:func:`daskscore.devtools.validate.dry_run`; remote inputs are downloaded again).  The rows
are printed as append_row writes them; an exception is printed with the user's frames (and
``--pdb`` stops in the innermost of them).

The recipe does not keep the values of secret environment variables: each is given with
``--set settings.environment_variables.NAME=VALUE``, or taken from the deployment file the job
was loaded from (as it is now), or from this process's environment, in that order; a replay
that finds none of them says which variable it needs and how to give it.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from daskscore.config.loader import normalize, read_yaml
from daskscore.config.settings import Deployment, Settings
from daskscore.config.values import build
from daskscore.devtools.outcome import WARNING, counted, dry_run_warnings
from daskscore.devtools.validate import EXIT_FAILED, EXIT_OK, dry_run
from daskscore.engine import resume
from daskscore.engine.plan import plan_job
from daskscore.engine.recipe import (
    RECIPE,
    Recipe,
    job_fingerprint,
    job_splits,
    read_recipe,
    replay_command,
)
from daskscore.errors import UsageError
from daskscore.io import tabular
from daskscore.ui.termtext import shown

__all__ = ["replay", "replay_command"]


def replay(
    output: str | os.PathLike[str],
    mini_batch: int,
    *,
    post_mortem: bool = False,
    rows: int | None = None,
    out: TextIO | None = None,
    overrides: dict[str, Any] | None = None,
) -> int:
    """Run mini-batch ``mini_batch`` of the job in ``output`` again, in this process.

    Parameters
    ----------
    output : str or path-like
        The output folder of a finished (or failed) job.
    mini_batch : int
        The mini-batch id, as ``processed_mini-batches.csv`` and ``failed_items.csv`` name it.
    post_mortem : bool
        On an exception in the script, start ``pdb`` at the script's innermost frame.
    rows : int, optional
        Print at most this many lines of the rows (default: all of them).
    out : text stream, optional
        Where the rows go (default ``sys.stdout``); messages and tracebacks go to stderr.
    overrides : dict, optional
        ``settings.environment_variables.NAME``: value, as ``--set`` gives them: the values
        of the secret variables the recipe does not keep (or others, changed for the replay).

    Returns
    -------
    int
        0 when ``init()`` and ``run()`` worked, 1 when the script raised.

    Raises
    ------
    UsageError
        ``output`` holds no job, ``mini_batch`` is not one of its mini-batches, the input
        no longer gives the job's mini-batches, or the value of a secret variable is not
        found.
    """
    out = out or sys.stdout
    recipe = read_recipe(output)
    if isinstance(mini_batch, bool) or not isinstance(mini_batch, int):
        raise UsageError(f"--mini-batch {mini_batch!r}: expected a mini-batch id (an integer).")
    if not 0 <= mini_batch < recipe.mini_batches:
        raise UsageError(
            f"--mini-batch {mini_batch}: the job in '{recipe.output}' has mini-batches 0 to "
            f"{recipe.mini_batches - 1}."
        )
    _check_script(recipe.deployment, recipe.output, mini_batch)
    deployment, notes = _with_secrets(recipe, overrides or {}, mini_batch)
    plan = plan_job(deployment, recipe.input_path, recipe.options, output=recipe.output)
    assert plan is not None
    now = job_fingerprint(plan, recipe.output)
    changed = [k for k in ("inputs", "mini_batches") if now[k] != recipe.fingerprint.get(k)]
    if changed or len(plan.work) != recipe.mini_batches:
        what = "the input file list" if "inputs" in changed else "the mini-batching"
        raise UsageError(
            f"cannot replay mini-batch {mini_batch} of the job in '{recipe.output}': "
            f"{what} of '{recipe.input_path}' changed since the job ran ({len(plan.work)} "
            f"mini-batches now, {recipe.mini_batches} then), so mini-batch {mini_batch} would "
            "not hold the same input. Run the job again instead."
        )
    if now["code"] != recipe.fingerprint.get("code"):
        notes.append(
            "the scoring script's code folder changed since the job ran: replaying it as it is now"
        )
    if now["model"] != recipe.fingerprint.get("model"):
        notes.append("the model files changed since the job ran")
    work = plan.work[mini_batch]
    if plan.unit == "rows":  # (an id means a range of one file's rows)
        splits, files = job_splits(plan) or {}, [str(f) for f in plan.files]
        notes += _check_rows(recipe, splits, files, work, mini_batch)
    print(
        f"daskscore: replaying mini-batch {mini_batch} of job {recipe.job_id} "
        f"({shown(_describe_work(work))}) in this process, without a cluster.",
        file=sys.stderr,
        flush=True,
    )
    for note in notes:
        print(f"daskscore: note: {shown(note)}.", file=sys.stderr, flush=True)
    report = dry_run(plan.deployment, work, plan.csv_kwargs, post_mortem=post_mortem)
    if report.failed_stage:
        print(
            f"daskscore: {report.failed_stage} failed on mini-batch {mini_batch}:\n"
            + shown(report.error or ""),
            file=sys.stderr,
        )
        return EXIT_FAILED
    lines = report.rows.decode("utf-8", errors="backslashreplace").splitlines()
    for line in lines if rows is None else lines[: max(rows, 0)]:
        print(line, file=out)
    returned, (succeeded, failed) = report.returned or 0, report.counts
    print(
        f"daskscore: mini-batch {mini_batch}: {counted(report.items, plan.unit)} given, run() "
        f"returned {returned} result{'' if returned == 1 else 's'} ({succeeded} succeeded, "
        f"{failed} failed); {len(lines)} line{'' if len(lines) == 1 else 's'} as append_row "
        "writes them"
        + (f" ({min(len(lines), max(rows, 0))} shown)" if rows is not None else "")
        + ".",
        file=sys.stderr,
    )
    timeout = plan.deployment.settings.retry_settings.timeout
    for text in dry_run_warnings(report, plan.unit, timeout):
        print(f"daskscore: {WARNING}{shown(text)}", file=sys.stderr)
    return EXIT_OK


ENV_KEY = "settings.environment_variables."


def _with_secrets(
    recipe: Recipe, overrides: dict[str, Any], mini_batch: int
) -> tuple[Deployment, list[str]]:
    """The job's deployment with the overrides' variables set, and the values of the secret
    variables its recipe does not keep put back (from the overrides, the deployment file, this
    process's environment); and notes saying where those came from."""
    deployment = recipe.deployment
    given: dict[str, str] = {}
    for key, value in overrides.items():
        if not key.startswith(ENV_KEY) or key.count(".") != 2:
            raise UsageError(
                f"replay --set {key}=...: only {ENV_KEY}NAME=VALUE can be given to a replay "
                "(the values of secret variables, which the job's recipe does not keep); the "
                "rest of the deployment is replayed as the job ran it."
            )
        given[key[len(ENV_KEY) :]] = str(value)
    variables = {**deployment.settings.environment_variables, **given}
    in_file = _file_variables(deployment.source)
    found: dict[str, list[str]] = {}
    missing = []
    for name in (n for n in recipe.masked if n not in given):
        if name in in_file:
            variables[name] = in_file[name]
            found.setdefault(f"the deployment file {deployment.source}", []).append(name)
        elif name in os.environ:
            variables[name] = os.environ[name]
            found.setdefault("this process's environment", []).append(name)
        else:
            missing.append(name)
    if missing:
        keys = ", ".join(f"{ENV_KEY}{name}" for name in missing)
        first = f"{ENV_KEY}{missing[0]}"
        what, it = ("value of", "it") if len(missing) == 1 else ("values of", "them")
        source = f"the deployment file {deployment.source}" if deployment.source else "no file"
        raise UsageError(
            f"cannot replay mini-batch {mini_batch} of the job in '{recipe.output}': the job's "
            f"recipe ({recipe.output / RECIPE}) does not keep the {what} {keys} (secrets are "
            f"not written into the output folder), and neither {source} nor this process's "
            f"environment has {it}. Give {it} with --set {first}=VALUE (set={{'{first}': ...}} "
            f"in Python), or set {missing[0]} in the environment."
        )
    notes = [
        f"the value of {names[0]} (a secret the recipe does not keep) is taken from {where}"
        if len(names) == 1
        else f"the values of {', '.join(names)} (secrets the recipe does not keep) are taken "
        f"from {where}"
        for where, names in found.items()
    ]
    settings = dataclasses.replace(deployment.settings, environment_variables=variables)
    return dataclasses.replace(deployment, settings=settings), notes


def _file_variables(source: Path | None) -> dict[str, str]:
    """``settings.environment_variables`` of the deployment file ``source`` as it is now, read
    as a job reads them; none when it is gone or cannot be read."""
    if source is None or not source.is_file():
        return {}
    try:
        raw = normalize(read_yaml(source), str(source))
        values = {"environment_variables": raw["settings"].get("environment_variables")}
        return build(Settings, values, "settings", str(source)).environment_variables
    except (OSError, UsageError):
        return {}


def _check_script(deployment: Deployment, output: Path, mini_batch: int) -> None:
    """A :class:`UsageError` when the job's scoring script is no longer where the job ran it
    from (the code folder moved or deleted since)."""
    code, script = deployment.code, deployment.scoring_script
    if script.is_file():
        return
    gone = "no longer exists" if not code.is_dir() else "no longer holds it"
    source = f" (from {deployment.source})" if deployment.source else ""
    raise UsageError(
        f"cannot replay mini-batch {mini_batch} of the job in '{output}': its scoring script "
        f"{script} is missing (the code folder {code} {gone}). The job recorded that path"
        f"{source} in {output / RECIPE} when it ran, and replay runs the script from there: put "
        "the code folder back, or run the job again from the deployment file where the code "
        "is now."
    )


def _check_rows(
    recipe: Recipe, now: dict[str, list[Any]], files: list[str], work: Any, mini_batch: int
) -> list[str]:
    """A tabular job: refuse when mini-batch ``mini_batch`` (``work``: its rows now) would hold
    other rows than it did, as ``--resume`` refuses: its file's splits hold other rows, or
    those of a file before it (``files``: the input files in order; the ids after a file's
    shift with its splits), naming the files; note its file changed since when it gives the
    same rows (they are read as they are now)."""
    then = recipe.splits
    if then is None:  # (a recipe written before the splits were kept)
        return [
            "the job's recipe does not note which rows its mini-batches held, so whether "
            f"mini-batch {mini_batch} holds the same rows as then cannot be told"
        ]
    path = work.path
    old = {p: resume.entry_of(v) for p, v in then.items()}
    moved = [
        p
        for p in files[: files.index(path) + 1]
        if (old.get(p) or resume.NO_ROWS)[4] != (now.get(p) or resume.NO_ROWS)[4]
    ]
    if moved:
        files = "; ".join(resume.changed_file(p, old.get(p), now.get(p)) for p in moved[:5])
        more = f"; and {len(moved) - 5} more" if len(moved) > 5 else ""
        many = len(moved) > 1
        raise UsageError(
            f"cannot replay mini-batch {mini_batch} of the job in '{recipe.output}': its "
            f"tabular input file{'s' * many} {files}{more} changed since the job ran so that "
            f"{'their' if many else 'its'} mini-batches hold other rows, and mini-batch "
            f"{mini_batch} would not hold the rows it held. Put the "
            f"{'files' if many else 'file'} back as {'they were' if many else 'it was'} to "
            "replay it, or run the job again."
        )
    was, is_ = old.get(path), now.get(path)
    if was and is_ and (was[0], was[1]) != (is_[0], is_[1]):
        return [
            f"the input file {resume.changed_file(path, was, is_)} changed since the job ran; "
            f"mini-batch {mini_batch} holds the same rows of it ({_describe_work(work)}), "
            "read as they are now, which may not be the data the job scored"
        ]
    return []


def _describe_work(work: Any) -> str:
    if isinstance(work, tabular.Split):
        rows = f"{work.n_rows} rows" if work.n_rows is not None else "rows"
        return f"{rows} of {work.path}, from row {work.first_row}"
    first = os.fsdecode(work[0]) if work else ""
    more = f" and {len(work) - 1} more" if len(work) > 1 else ""
    return f"{len(work)} file{'s' if len(work) != 1 else ''}: {first}{more}"
