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
from daskscore.config.loader import MLFLOW_SCORER
from daskscore.config.options import JobOptions
from daskscore.config.settings import UnknownKeyWarning, output_name_problem
from daskscore.config.sizes import MiniBatchSize
from daskscore.errors import ConfigError, InputError, UsageError
from daskscore.io import inputs, overlap, splitreader, splittable, storage, tabular
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
        The job's output folder: left out of the input when it lies inside it; an input that
        is (or lies inside) a name the job writes or removes there is refused.

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
    if output is not None and "writer" in found:  # (an input the job would destroy: refused)
        target = found["writer"].target(settings.output_file_name)
        step("apart", lambda: overlap.check_apart(str(input_path), str(output), target))
    step("files", lambda: list_inputs(str(input_path), output, notes))
    if "files" in found:
        root = _local_folder(str(input_path))
        step(
            "plan",
            lambda: _carried(
                plan_work(found["files"], settings.mini_batch, options.tabular, notes, root),
                options.carry_columns,
            ),
        )
    step("script", lambda: script_mod.check_script(deployment.scoring_script))
    if deployment.model is not None and deployment.model.is_url:
        url = str(deployment.model.path)
        mlflow = deployment.code == MLFLOW_SCORER
        step("model", lambda: check_model_url(url, mlflow=mlflow))
    warned: list[str] = []  # (a lenient deployment's unknown keys of the settings JSON)
    lenient = deployment.lenient
    step("csv", lambda: read_csv_settings(deployment.code, lenient=lenient, warned=warned))
    if problems is not None and len(problems) > known:
        return None
    work, unit, files = found["plan"]
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
        files=files,
        work=work,
        unit=unit,
        csv_kwargs=found["csv"],
        notes=notes,
    )


def _carried(planned: tuple[Any, str, Any], carry: Sequence[str]) -> tuple[Any, str, Any]:
    """``planned`` as it is, unless input columns are to be carried in file mode: refused
    there, where run() gets a list of files and no row of its result is an input row's (not
    even ``file`` or ``row``: a mini-batch holds several files, and rows are run()'s own); a
    column named twice is refused (every mini-batch would fail, its name taken)."""
    twice = sorted({c for c in carry if carry.count(c) > 1})
    if twice:
        raise UsageError(
            f"--carry-columns (carry_columns=) {', '.join(carry)}: "
            f"{', '.join(map(repr, twice))} named more than once; a carried column is one "
            "column of the output, so each can be carried once. Name each column once."
        )
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
    if carry:
        _check_carried(planned[0], carry)
    return planned


def _check_carried(splits: splittable.SplitTable, carry: Sequence[str]) -> None:
    """Refuse a carried column that an input file's mini-batches lack, naming the file and the
    columns they have (its CSV header line, its Parquet schema: what ``run()`` gets, read
    as a mini-batch is).  A file whose columns cannot be read so is left to its mini-batches,
    whose reading fails naming it."""
    wanted = [c for c in carry if c not in ("file", "row")]
    for head in splits.heads() if wanted else ():
        try:
            columns = splitreader.columns_of(head)
        except Exception:  # noqa: BLE001 - unreadable: its mini-batches say why
            continue
        missing = [c for c in wanted if c not in columns]
        if missing:
            names = [str(c) for c in columns]
            more = f" and {len(names) - 30} more" if len(names) > 30 else ""
            raise UsageError(
                f"--carry-columns (carry_columns=) {', '.join(missing)}: input file "
                f"'{head.path}' has no column {', '.join(map(repr, missing))}; its columns "
                f"(what run() gets) are {', '.join(names[:30]) or '(none)'}{more}, and file "
                "and row (its path, the row's number in it) can be carried from any input. "
                "Carry columns every input file has, or leave --carry-columns out."
            )


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
    root: str | None = None,
) -> tuple[Sequence[Any], str, Sequence[str]]:
    """Mini-batches of files, or (tabular mode) splits of the tabular files; their unit; and
    the files they read.  A line goes into ``notes`` for the files tabular mode leaves out
    (``root``: the input folder, below which a folder's name may leave its files out; None
    when the input is a file, which is read whatever its name)."""
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
        return inputs.FileBatches(files, size.files), "files", files
    kept = _tabular_files(files, size, notes, root)
    cuts = tabular.plan_cuts(kept, size.tabular())
    read = files if len(kept) == len(files) else kept  # (a listing stays packed)
    return splittable.SplitTable.from_cuts(cuts), "rows", read  # type: ignore[arg-type]


def _tabular_files(
    files: Sequence[str],
    size: MiniBatchSize,
    notes: list[str] | None = None,
    root: str | None = None,
) -> list[str]:
    """The files tabular mode reads: as pyarrow's and Dask's readers do, those whose name
    starts with ``_`` or ``.`` are left out (a Spark or Hadoop output folder's ``_SUCCESS``,
    Parquet's ``_metadata``), and so are those in a folder so named below ``root`` (Spark's
    ``_temporary/`` attempts), with a log line; a file given as the input (``root`` None) is
    read whatever its name, as those readers read a file named to them.  Any other file that
    is not CSV or Parquet is refused, saying what turned tabular mode on."""
    kept: list[str] = []
    left: dict[str, list[str]] = {"file": [], "folder": []}
    top = root.rstrip(os.sep) + os.sep if root else None
    for f in files:
        part = _ignored_part(f, top) if top else None
        (left[part] if part else kept).append(f)
    if notes is not None:
        names = sorted(os.path.basename(f) for f in left["file"])
        if names:
            notes.append(
                f"tabular mode skipped {len(names)} file(s) whose name starts with '_' or '.' "
                f"(writers' markers and metadata, as Spark's _SUCCESS): {_some(names)}"
            )
        inside = sorted(f[len(top) :] for f in left["folder"]) if top else []
        if inside:
            notes.append(
                f"tabular mode skipped {len(inside)} file(s) in folders whose name starts with "
                f"'_' or '.' below the input folder (as Spark's _temporary/, which holds "
                f"uncommitted attempts): {_some(inside)}"
            )
    if files and not kept:
        raise InputError(
            f"the input holds no tabular file: tabular mode skips all its {len(files)} "
            "file(s), as pyarrow does: their names start with '_' or '.' (writers' markers "
            "and metadata), or they lie in a folder so named below the input folder "
            "(uncommitted attempts, as Spark's _temporary/)."
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


def _ignored_part(path: str, top: str) -> str | None:
    """``"file"`` when the name of ``path`` starts with one of
    :data:`~daskscore.io.tabular.IGNORED_PREFIXES`, ``"folder"`` when a folder's does between
    ``top`` (the input folder, ending in a separator, not judged itself) and it; else None."""
    prefixes = tabular.IGNORED_PREFIXES
    cut = path.rfind(os.sep) + 1
    if path.startswith(prefixes, cut):
        return "file"
    if not path.startswith(top) or cut <= len(top):
        return None
    folders = path[len(top) : cut]  # (each folder's name followed by the separator)
    if folders.startswith(prefixes) or any(os.sep + p in folders for p in prefixes):
        return "folder"
    return None


def _some(names: list[str]) -> str:
    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
    return f"{', '.join(names[:5])}{more}"


def _local_folder(input_path: str) -> str | None:
    """The input folder as its files' paths begin (resolved, as the listing makes them), or
    None for a file or a URL."""
    if storage.is_remote(input_path):
        return None
    path = Path(input_path).expanduser()
    return str(path.resolve()) if path.is_dir() else None


def check_model_url(url: str, *, mlflow: bool = False) -> None:
    """Refuse a model URL where there is nothing to fetch; for the built-in MLflow scorer
    (``mlflow``), one where no ``MLmodel`` file is (at the URL, or in its single entry)."""
    fs, root = storage.filesystem(url, verb="reading")
    if not fs.exists(root):
        raise UsageError(f"model.path: '{url}' does not exist (nothing there to fetch).")
    if mlflow and mlmodel_text(url) is None:
        raise UsageError(
            f"model.path: '{url}' holds no MLmodel file (nor does its single entry): a "
            "deployment without code_configuration scores an MLflow model, the folder with the "
            "MLmodel file. Point model.path at that folder, or give a scoring script."
        )


def mlmodel_text(model: str | Path) -> str | None:
    """The ``MLmodel`` file of the MLflow model at ``model`` (a folder or URL: the file in it,
    or in its single entry, as the built-in scorer finds it), or None where there is none."""
    fs, root = storage.filesystem(str(model), verb="reading")
    root = root.rstrip("/")
    candidates = [f"{root}/MLmodel"]
    if not fs.isfile(candidates[0]):
        entries = [
            e
            for e in fs.ls(root, detail=False)
            if not e.rstrip("/").rsplit("/", 1)[-1].startswith(".")
        ]
        candidates = [f"{e.rstrip('/')}/MLmodel" for e in entries] if len(entries) == 1 else []
    for candidate in candidates:
        if fs.isfile(candidate):
            with fs.open(candidate, "rb") as f:
                return f.read().decode("utf-8")
    return None


def mlflow_text_columns(deployment: Deployment) -> tuple[str, ...]:
    """The ``string``, ``long`` and ``integer`` columns of the signature of a model the built-in
    MLflow scorer scores: tabular mode reads them as text, as the scorer does in file mode
    ("007" stays "007"; integers are converted exactly, a value out of range is refused); a
    job, ``score()`` and ``validate`` alike."""
    import json

    import yaml

    if deployment.code != MLFLOW_SCORER or deployment.model is None:
        return ()
    text = mlmodel_text(deployment.model.path)
    meta = (yaml.safe_load(text) if text else None) or {}
    inputs = json.loads((meta.get("signature") or {}).get("inputs") or "[]")
    return tuple(
        str(c["name"])
        for c in inputs
        if isinstance(c, dict) and c.get("type") in ("string", "long", "integer") and c.get("name")
    )
