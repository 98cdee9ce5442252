"""The local debugging loop: ``daskscore validate`` and ``daskscore init``.

:func:`validate` is a dry run in this process, with no cluster: it lists every problem of the
deployment file at once (:func:`collect_problems`), then imports the scoring script with the
environment a worker gives it, calls ``init()`` and ``run()`` on the first mini-batch, and
shows the rows as ``append_row`` would write them.  ``daskscore init`` is
:mod:`daskscore.devtools.scaffold`.
"""

from __future__ import annotations

import logging
import os
import pdb
import shutil
import signal
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

from daskscore.config.loader import check_deployment, load_deployment
from daskscore.config.settings import Deployment, UnknownKeyWarning, redact
from daskscore.devtools.outcome import WARNING, DryRun, show
from daskscore.devtools.outcome import dry_run_warnings as dry_run_warnings
from daskscore.engine.plan import list_inputs, mlflow_text_columns, plan_job
from daskscore.errors import UsageError
from daskscore.io import storage, storesecrets, tabular
from daskscore.io.rowtext import decoded
from daskscore.io.shipping import fetch_model
from daskscore.io.splitreader import read_one
from daskscore.io.writers import format_rows
from daskscore.protocol import WorkerJob, failed_item_reasons
from daskscore.ui.termtext import shown
from daskscore.worker import script as script_mod
from daskscore.worker.environment import (
    RedactingStream,
    mask_handlers,
    missing_model_file,
    restore_environment,
    set_environment,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def collect_problems(
    path: str | os.PathLike[str],
    overrides: dict[str, Any] | None = None,
    *,
    lenient: bool = False,
) -> list[str]:
    """Every problem of a deployment file at once, as ``load_deployment`` names them.

    Unknown keys, each override, each setting, the code configuration and the model are
    checked on their own (:func:`daskscore.config.loader.check_deployment`).

    Parameters
    ----------
    path : str or path-like
        The deployment file.
    overrides : dict, optional
        Dotted keys to override, as ``--set`` takes them.
    lenient : bool, default False
        Unknown keys are warnings, not errors (``--lenient``).

    Returns
    -------
    list of str
        The error messages, then the warnings prefixed with :data:`WARNING`.  No error means
        that ``load_deployment(path, overrides, lenient=lenient)`` succeeds.
    """
    _, errors, warned = check_deployment(path, overrides, lenient=lenient)
    return errors + [f"{WARNING}{text}" for text in warned]


# --------------------------------------------------------------------------- validate


def validate(
    path: str | os.PathLike[str],
    input_path: str | os.PathLike[str],
    overrides: dict[str, Any] | None = None,
    *,
    rows: int = 10,
    post_mortem: bool = False,
    lenient: bool = False,
    mini_batch: int = 0,
) -> int:
    """Check a deployment and try its scoring script on one mini-batch (the first), here.

    Parameters
    ----------
    path : str or path-like
        The deployment file.
    input_path : str or path-like
        An input file or folder (or an fsspec URL), as ``daskscore run --input`` takes it.
    overrides : dict, optional
        Dotted keys to override, as ``--set`` takes them.
    rows : int
        How many lines of the append_row output to show.
    post_mortem : bool
        On an exception in the script, start ``pdb`` at the script's innermost frame.
    lenient : bool
        Unknown deployment keys are warnings, not problems (``--lenient``).
    mini_batch : int
        The mini-batch to try (``--mini-batch N``), numbered as ``daskscore run`` numbers them.

    Returns
    -------
    int
        0 when all went well, 1 when the script raised, 2 for problems of the deployment, the
        script file or the input (all of them are printed, and nothing is run).
    """
    prepared = _prepare(path, input_path, overrides, lenient)
    if prepared is None:
        return EXIT_USAGE
    deployment, work, unit, csv_kwargs = prepared
    many = "es" if len(work) != 1 else ""
    if not 0 <= mini_batch < len(work):
        print(
            f"daskscore: error: --mini-batch {mini_batch}: {input_path} makes {len(work)} "
            f"mini-batch{many} of {unit}, numbered 0 to {len(work) - 1}; nothing was run.",
            file=sys.stderr,
        )
        return EXIT_USAGE
    print(
        f"{path}: {len(work)} mini-batch{many} of {unit}; trying mini-batch {mini_batch} in this "
        "process, without a cluster.",
        flush=True,
    )
    report = dry_run(deployment, work[mini_batch], csv_kwargs, post_mortem=post_mortem)
    if report.failed_stage:
        print(
            f"daskscore: {report.failed_stage} failed:\n{shown(report.error or '')}",
            file=sys.stderr,
        )
    else:
        show(report, deployment, unit, rows)
    return EXIT_FAILED if report.failed_stage else EXIT_OK


def _prepare(
    path: str | os.PathLike[str],
    input_path: str | os.PathLike[str],
    overrides: Any,
    lenient: bool = False,
) -> tuple[Deployment, list[Any], str, dict[str, Any]] | None:
    """The deployment, its mini-batches, their unit and the append_row arguments; or None
    when something is wrong, after printing every problem found."""
    problems = collect_problems(path, overrides, lenient=lenient)
    errors = [p for p in problems if not p.startswith(WARNING)]
    plan = None
    if errors:  # the deployment cannot be loaded: the input can still be checked
        errors += _usage_problems(list_inputs, str(input_path))
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnknownKeyWarning)  # collect_problems has them
            deployment = load_deployment(path, overrides, lenient=lenient)
        plan = plan_job(deployment, input_path, problems=errors)
    for line in errors:
        print(f"daskscore: error: {line}", file=sys.stderr)
    for line in problems:
        if line.startswith(WARNING):
            print(f"daskscore: {line}", file=sys.stderr)
    if errors:
        count = f"{len(errors)} problem{'s' if len(errors) != 1 else ''}"
        print(f"daskscore: {count} found; nothing was run.", file=sys.stderr)
        return None
    assert plan is not None
    return plan.deployment, plan.work, plan.unit, plan.csv_kwargs


def _usage_problems(step: Callable[..., Any], *args: Any) -> list[str]:
    """The message of the UsageError that ``step(*args)`` raises, if it does."""
    try:
        step(*args)
    except UsageError as exc:
        return [str(exc)]
    return []


def dry_run(
    deployment: Deployment, work: Any, csv_kwargs: dict[str, Any], *, post_mortem: bool = False
) -> DryRun:
    """Import the script as a worker does, then call init(), run(work) and shutdown() here.

    The environment is the one :func:`daskscore.worker.environment.set_environment` gives a worker
    (``AZUREML_MODEL_DIR``, ``AZUREML_BI_OUTPUT_PATH`` in a temporary folder, the settings'
    environment variables, ``sys.argv``), and it is undone afterwards.  Exceptions of the
    script are kept in the report, never raised.  The job's secrets (those a worker masks:
    :func:`daskscore.io.storesecrets.job_secrets`) are masked in what the script prints and logs,
    in the error and in the failed items' reasons.
    """
    scratch = Path(tempfile.mkdtemp(prefix="daskscore-validate-"))
    (scratch / "output").mkdir()
    job = WorkerJob(
        job_id="validate",
        code=str(deployment.code),
        script=str(deployment.scoring_script),
        model_path=_local_model(deployment, scratch),
        output=str(scratch / "output"),
        logs=str(scratch / "logs"),
        staging=str(scratch / "staging"),
        env=dict(deployment.settings.environment_variables),
    )
    report, saved = DryRun(), {}
    secrets = storesecrets.job_secrets(job.env)
    model_dir = set_environment(job, saved)
    handlers = _signal_handlers()
    try:
        with _masked(secrets), _script_logging(deployment.settings.logging_level):
            with _noting_interrupts() as received:
                _stages(
                    report, deployment, work, csv_kwargs, scratch, post_mortem, secrets, received
                )
        report.failed_items = [redact(reason, secrets) for reason in report.failed_items]
        out = scratch / "output"
        report.written = sorted(str(f.relative_to(out)) for f in out.rglob("*") if f.is_file())
    finally:
        report.signals = _restore_signals(handlers)
        restore_environment(saved)
        script_mod.forget_code(deployment.code)
        sys.modules.pop(deployment.scoring_script.stem, None)
        shutil.rmtree(model_dir, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)
    return report


#: The signals that stop a command as Ctrl-C does (``daskscore.cli.STOP_SIGNALS`` too).
INTERRUPTS = ("SIGINT", "SIGTERM", "SIGHUP")


@contextmanager
def _noting_interrupts() -> Iterator[list[int]]:
    """The interrupts received in the ``with`` block: each Python handler of
    :data:`INTERRUPTS` notes its signal, then does what it did.  A ``KeyboardInterrupt`` then
    is a Ctrl-C; another is the script's own exception, a failure of the stage.  (Off the main
    thread no handler runs; one the script sets is put back by :func:`_restore_signals`.)"""
    received: list[int] = []
    wrapped: dict[int, Any] = {}
    for name in INTERRUPTS:
        sig = getattr(signal, name, None)
        before = signal.getsignal(sig) if sig is not None else None
        if not callable(before):  # (SIG_DFL, SIG_IGN: no exception is raised here)
            continue

        def noting(signum: int, frame: Any, before: Any = before) -> Any:
            received.append(signum)
            return before(signum, frame)

        try:
            signal.signal(sig, noting)
        except ValueError:  # (off the main thread)
            break
        wrapped[sig] = (noting, before)
    try:
        yield received
    finally:
        for sig, (noting, before) in wrapped.items():
            if signal.getsignal(sig) is noting:
                signal.signal(sig, before)


def _signal_handlers() -> dict[signal.Signals, Any]:
    """This process's signal handlers now, by signal (those Python can read)."""
    found = {}
    for sig in signal.valid_signals():
        try:
            found[signal.Signals(sig)] = signal.getsignal(sig)
        except (OSError, ValueError):
            continue
    return found


def _restore_signals(before: dict[signal.Signals, Any]) -> list[str]:
    """Put back the handlers the script changed since ``before``; return those signals' names."""
    changed = []
    for sig, handler in before.items():
        try:
            if signal.getsignal(sig) is not handler:
                changed.append(sig.name)
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        except (OSError, ValueError, TypeError):
            continue
    return changed


def _local_model(deployment: Deployment, scratch: Path) -> str | None:
    """The model's local path; a model at a URL is fetched into ``scratch`` first."""
    model = deployment.model
    if model is None:
        return None
    if model.is_url:
        return str(fetch_model(str(model.path), scratch / "models"))
    return str(model.path)


def _stages(
    report: DryRun,
    deployment: Deployment,
    work: Any,
    csv_kwargs: dict[str, Any],
    scratch: Path,
    post_mortem: bool,
    secrets: tuple[str, ...] = (),
    received: list[int] | None = None,
) -> None:
    def stage(name: str, step: Callable[[], Any]) -> tuple[bool, Any]:
        started = time.perf_counter()
        try:
            return True, step()
        except BaseException as exc:  # the user's code may raise anything, GeneratorExit too
            if isinstance(exc, KeyboardInterrupt) and received:  # Ctrl-C: stops the command
                raise
            if report.failed_stage is None:
                report.failed_stage = name
                report.error = redact(_describe(exc, deployment, name), secrets)
                if post_mortem and not isinstance(
                    exc, (script_mod.ResultError, script_mod.ScriptShapeError)
                ):
                    print(f"{name} raised:\n{report.error}\n", file=sys.stderr, flush=True)
                    report.error = "(the traceback is above)"
                    _UserPdb(deployment.code).post_mortem(exc)
            return False, None
        finally:
            report.timings[name] = time.perf_counter() - started

    code, script = deployment.code, deployment.scoring_script

    def load() -> Any:
        module = script_mod.import_script(code, script)
        script_mod.check_entries(module, script.name)  # (init and run callable as Azure calls)
        return module

    ok, module = stage("import", load)
    init = getattr(module, "init", None)
    if not ok or (callable(init) and not stage("init()", init)[0]):
        return
    argument = _mini_batch(work, scratch / "inputs", deployment)
    report.items = len(argument)
    ok, result = stage("run()", lambda: _call_run(module, argument, csv_kwargs, report))
    if ok:
        report.returned, report.rows = result
    shutdown = getattr(module, "shutdown", None)
    if callable(shutdown):
        stage("shutdown()", shutdown)


def _call_run(
    module: Any, argument: Any, csv_kwargs: dict[str, Any], report: DryRun
) -> tuple[int, bytes]:
    """run(), what it returned made into append_row bytes as a worker does (shown: UTF-8,
    whatever the file's encoding); and its length."""
    report.value = module.run(argument)
    report.failed_items = [str(r) for r in failed_item_reasons(report.value)]
    items = script_mod.normalize_result(report.value)
    rows = format_rows(items, csv_kwargs)
    if csv_kwargs.get("encoding"):
        rows = decoded(rows, csv_kwargs).encode("utf-8", "backslashreplace")
    return len(items), rows


def _mini_batch(work: Any, scratch: Path, deployment: Deployment) -> Any:
    """What run() gets: local paths (remote files downloaded), or a DataFrame of rows, read
    as a job's worker reads them (the built-in MLflow scorer's text columns as text)."""
    if isinstance(work, tabular.Split):
        return read_one(work, mlflow_text_columns(deployment))
    if work and storage.is_remote(work[0]):
        return storage.download(list(work), scratch)
    return list(work)


def _describe(exc: BaseException, deployment: Deployment, stage: str) -> str:
    """The script's traceback; after an import error, where to install what is missing;
    after a file not found under ``AZUREML_MODEL_DIR``, what that folder holds."""
    if isinstance(exc, script_mod.ResultError):  # about what run() returned: no traceback
        return f"{type(exc).__name__}: {exc}"
    if isinstance(exc, script_mod.ScriptShapeError):  # init or run not callable as Azure calls
        return str(exc)
    code = deployment.code
    text = script_mod.user_traceback(exc, code)
    if stage == "import":
        return f"{script_mod.import_failure(exc, code, deployment.scoring_script)}\n{text}"
    listing = missing_model_file(exc, os.environ.get("AZUREML_MODEL_DIR"))
    return f"{text}\n{listing}" if listing else text


class _UserPdb(pdb.Pdb):
    """pdb, post-mortem at the innermost frame of the scoring script's code folder."""

    def __init__(self, code: Path) -> None:
        super().__init__(nosigint=True)
        self.prefix = str(code) + os.sep

    def post_mortem(self, exc: BaseException) -> None:
        print("--pdb: post-mortem debugging; 'c' or 'q' to go on.", flush=True)
        self.reset()
        self.interaction(None, exc.__traceback__)

    def setup(self, f: Any, tb: Any) -> Any:
        stop = super().setup(f, tb)
        mine = [
            i
            for i, (frame, _) in enumerate(self.stack)
            if frame.f_code.co_filename.startswith(self.prefix)
        ]
        if mine:
            self.curindex = mine[-1]
            self.curframe = self.stack[self.curindex][0]
            self.curframe_locals = self.curframe.f_locals
        return stop


@contextmanager
def _masked(secrets: tuple[str, ...]) -> Iterator[None]:
    """What the script prints (``sys.stdout``, ``sys.stderr``) and logs, with ``secrets``
    masked, as a worker masks them in the job's logs."""
    if not secrets:
        yield
        return
    out, err = RedactingStream(sys.stdout, secrets), RedactingStream(sys.stderr, secrets)
    with redirect_stdout(out), redirect_stderr(err):  # type: ignore[type-var]
        unmask = mask_handlers(logging.getLogger(), secrets)
        try:
            yield
        finally:
            unmask()


@contextmanager
def _script_logging(level: str) -> Iterator[None]:
    """The script's log lines go to stderr at ``settings.logging_level``."""
    root, handler = logging.getLogger(), logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    saved = root.level
    root.setLevel(level.upper())
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(saved)
