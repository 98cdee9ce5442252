"""The plan of a job: everything decided before a cluster or an output folder is touched.

:func:`plan_job` is shared by ``daskscore run`` (:mod:`daskscore.engine.runner`),
``daskscore.score()`` (:mod:`daskscore.engine.session`) and ``daskscore validate``
(:mod:`daskscore.devtools.validate`): it picks the output writer, lists the input, cuts it into
mini-batches (files, or tabular splits), checks the scoring script without running it, checks a
model URL exists, and reads the append_row ``to_csv`` arguments.  Each problem is a
:class:`~daskscore.errors.UsageError` naming the file or key; ``validate`` collects them all.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daskscore.config import Deployment
from daskscore.config.csvsettings import read_csv_settings
from daskscore.config.options import JobOptions
from daskscore.config.settings import UnknownKeyWarning, output_name_problem
from daskscore.config.sizes import MiniBatchSize
from daskscore.errors import ConfigError, InputError, UsageError
from daskscore.io import inputs, splittable, storage, tabular
from daskscore.io.writers import OutputWriter, get_writer
from daskscore.worker import script as script_mod


@dataclass
class JobPlan:
    """A job's work, before it runs.

    Attributes
    ----------
    files : sequence of str
        The input files (local paths, or URLs), sorted (a packed
        :class:`~daskscore.io.inputs.FileList` for a local folder).
    work : sequence
        The mini-batches: lists of files, or tabular splits, by mini-batch id (made as they are
        read: :class:`~daskscore.io.inputs.FileBatches`,
        :class:`~daskscore.io.splittable.SplitTable`).
    unit : str
        What a mini-batch holds: ``"files"`` or ``"rows"``.
    csv_kwargs : dict
        The append_row ``to_csv`` arguments (``parallel_run_step.settings.json`` applied).
    notes : list of str
        What the listing left out besides dot-files (the output folder inside the input, broken
        symbolic links), one line each, for the job log.
    """

    deployment: Deployment
    options: JobOptions
    input_path: str
    writer: OutputWriter
    files: Sequence[str]
    work: Sequence[Any]
    unit: str
    csv_kwargs: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def plan_job(
    deployment: Deployment,
    input_path: str | Path,
    options: JobOptions | None = None,
    *,
    problems: list[str] | None = None,
    output: str | Path | None = None,
) -> JobPlan | None:
    """Plan ``deployment`` over ``input_path``.

    Parameters
    ----------
    deployment : Deployment
    input_path : str or path-like
        A file or folder, or an fsspec URL.
    options : JobOptions, optional
    problems : list, optional
        Collect every problem here (their messages) instead of raising the first; the plan is
        then None when there was any.
    output : str or path-like, optional
        The job's output folder: left out of the input when it lies inside it.

    Raises
    ------
    UsageError
        The first problem, when ``problems`` is not given.
    """
    options = options or JobOptions()
    settings = deployment.settings
    found: dict[str, Any] = {}
    known = len(problems) if problems is not None else 0
    notes: list[str] = []

    def step(name: str, make: Callable[[], Any]) -> None:
        try:
            found[name] = make()
        except UsageError as exc:
            if problems is None:
                raise
            problems.append(str(exc))

    fmt = options.output_format or settings.output_action
    step("writer", lambda: _writer(fmt, options, settings.output_file_name))
    step("files", lambda: list_inputs(str(input_path), output, notes))
    if "files" in found:
        step(
            "plan",
            lambda: _carried(
                plan_work(found["files"], settings.mini_batch, options.tabular, notes),
                options.carry_columns,
            ),
        )
    step("script", lambda: script_mod.check_script(deployment.scoring_script))
    if deployment.model is not None and deployment.model.is_url:
        url = str(deployment.model.path)
        step("model", lambda: check_model_url(url))
    warned: list[str] = []  # (a lenient deployment's unknown keys of the settings JSON)
    lenient = deployment.lenient
    step("csv", lambda: read_csv_settings(deployment.code, lenient=lenient, warned=warned))
    if problems is not None and len(problems) > known:
        return None
    work, unit = found["plan"]
    for text in warned:
        warnings.warn(text, UnknownKeyWarning, stacklevel=2)
    if warned:
        deployment = dataclasses.replace(deployment, warnings=(*deployment.warnings, *warned))
    found["writer"].csv_kwargs = found["csv"]  # (the assembly writes the encoding's head)
    return JobPlan(
        deployment=deployment,
        options=options,
        input_path=str(input_path),
        writer=found["writer"],
        files=found["files"],
        work=work,
        unit=unit,
        csv_kwargs=found["csv"],
        notes=notes,
    )


def _carried(planned: tuple[Sequence[Any], str], carry: Sequence[str]) -> tuple[Sequence[Any], str]:
    """``planned`` as it is, unless input columns are to be carried in file mode: refused
    there, where run() gets a list of files and no row of its result is an input row's (not
    even ``file`` or ``row``: a mini-batch holds several files, and rows are run()'s own)."""
    if carry and planned[1] == "files":
        raise UsageError(
            f"--carry-columns (carry_columns=) {', '.join(carry)}: carrying input columns "
            "needs tabular mode, where run() gets a DataFrame of one input file's rows and "
            "returns one row per input row, which the columns (and file, row) are joined "
            "onto; this job is in file mode (run() gets a list of files), where nothing can "
            "be carried. Turn tabular mode on (--tabular, or a mini_batch_size such as 10MB "
            "or '500 rows'), or leave --carry-columns out (in file mode run() can return "
            "each row's file name itself)."
        )
    return planned


def _writer(fmt: str, options: JobOptions, output_file_name: str) -> OutputWriter:
    """The job's writer; refused when the dataset folder it names after ``output_file_name``
    (its stem) would take the name of one of daskscore's own files."""
    writer = get_writer(fmt, options.partition_on, options.rows_per_file)
    target = writer.target(output_file_name)
    problem = output_name_problem(target) if target and target != output_file_name else None
    if problem:
        raise ConfigError(
            f"settings.output_file_name: {output_file_name!r} names the {fmt} dataset folder "
            f"{target!r}, and {problem}; choose another name."
        )
    return writer


def list_inputs(
    input_path: str, output: str | Path | None = None, notes: list[str] | None = None
) -> Sequence[str]:
    """The input files: local paths, or full URLs for an fsspec URL; the ``output`` folder is
    left out when it lies inside the input (a line about it goes into ``notes``)."""
    if not storage.is_remote(input_path):
        local_out = None if output is None or storage.is_remote(str(output)) else output
        return inputs.list_input_files(input_path, exclude=local_out, notes=notes)
    files = storage.list_files(input_path)
    inside = str(output).rstrip("/") + "/" if output is not None else ""
    if inside.startswith(input_path.rstrip("/") + "/") and inside != input_path.rstrip("/") + "/":
        kept = [f for f in files if not f.startswith(inside)]
        if len(kept) < len(files) and notes is not None:
            notes.append(
                f"the output folder {output} is inside the input folder {input_path}: it is "
                "left out of the input (its predictions, logs and staging are not scored)"
            )
        if not kept:
            raise InputError(f"input folder '{input_path}' holds no files but the output's.")
        files = kept
    return files


def plan_work(
    files: Sequence[str],
    size: MiniBatchSize,
    tabular_mode: bool | None = None,
    notes: list[str] | None = None,
) -> tuple[Sequence[Any], str]:
    """Mini-batches of files, or (tabular mode) splits of the tabular files; and their unit.
    A line goes into ``notes`` for the files tabular mode leaves out."""
    if tabular_mode is None:
        tabular_mode = size.implies_tabular
    if tabular_mode and files and storage.is_remote(files[0]):
        raise UsageError(
            "tabular mode reads local CSV/Parquet files; copy the input locally first (remote "
            "inputs work in file mode, where each mini-batch's files are downloaded)."
        )
    if not tabular_mode:
        if size.files is None:
            raise UsageError(
                f"settings.mini_batch_size: '{size.value}' is a byte size, which only means "
                "something for tabular inputs (--tabular); give a number of files."
            )
        return inputs.FileBatches(files, size.files), "files"
    files = _tabular_files(files, size, notes)
    return splittable.SplitTable.from_cuts(tabular.plan_cuts(list(files), size.tabular())), "rows"  # type: ignore[arg-type]


def _tabular_files(
    files: Sequence[str], size: MiniBatchSize, notes: list[str] | None = None
) -> list[str]:
    """The files tabular mode reads: those whose name starts with ``_`` are left out, with a
    log line (a Spark or Hadoop output folder's ``_SUCCESS``, Parquet's ``_metadata``), as
    pyarrow's and Dask's readers do.  Any other file that is not CSV or Parquet is refused,
    saying what turned tabular mode on."""
    kept, left = [], []
    for f in files:
        name = os.path.basename(f)
        (left if name.startswith(tabular.IGNORED_PREFIX) else kept).append(f)
    if left and notes is not None:
        left = sorted(os.path.basename(f) for f in left)
        more = f" and {len(left) - 5} more" if len(left) > 5 else ""
        notes.append(
            f"tabular mode skipped {len(left)} file(s) whose name starts with '_' (writers' "
            f"markers and metadata, as Spark's _SUCCESS): {', '.join(left[:5])}{more}"
        )
    if files and not kept:
        raise InputError(
            f"the input holds no tabular file: its {len(files)} file(s) all have names "
            "starting with '_' (writers' markers and metadata), which tabular mode skips."
        )
    odd = next((f for f in kept if not tabular.is_tabular(f)), None)
    if odd is not None:
        why = (
            f"settings.mini_batch_size is '{size.value}', a byte size or a row count, which "
            "turns tabular mode on"
            if size.implies_tabular
            else "tabular mode was asked for (--tabular)"
        )
        raise InputError(
            f"input file '{odd}' is not a tabular file: tabular mode reads files ending in "
            f"{', '.join(tabular.TABULAR_SUFFIXES)} (case-insensitive), and {why}. To give "
            "run() lists of files instead, set mini_batch_size to a number of files."
        )
    return kept


def check_model_url(url: str) -> None:
    """Refuse a model URL where there is nothing to fetch."""
    fs, root = storage.filesystem(url, verb="reading")
    if not fs.exists(root):
        raise UsageError(f"model.path: '{url}' does not exist (nothing there to fetch).")
