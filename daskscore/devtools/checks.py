"""``daskscore.validate``: the dry run of ``daskscore validate`` as a Python function.

:func:`validate_deployment` checks the deployment (every problem at once, as the command lists
them), plans the input, and runs the scoring script's ``init()`` and ``run()`` on one
mini-batch in this process (:func:`daskscore.devtools.validate.dry_run`: the environment a
worker gives the script, undone afterwards; the script imported afresh each time, so an edited
file is picked up).  Instead of printing and returning an exit code it returns a
:class:`ValidationResult`: what ``run()`` returned, the lines ``append_row`` would write, the
timings, and the script's traceback when it raised.  A notebook shows it as HTML.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from html import escape
from typing import Any

from daskscore.config.loader import load_deployment, with_overrides
from daskscore.config.options import JobOptions, merge_setting_kwargs
from daskscore.config.settings import Deployment
from daskscore.devtools.outcome import WARNING, dry_run_warnings
from daskscore.devtools.validate import collect_problems, dry_run
from daskscore.engine.plan import plan_job
from daskscore.engine.work import describe_work
from daskscore.errors import ConfigError, UsageError
from daskscore.protocol import error_line, item_counts

#: Rows of what run() returned shown in a notebook.
SHOWN_ROWS = 10


@dataclass
class ValidationResult:
    """What the scoring script did with one mini-batch, in this process.

    Attributes
    ----------
    deployment : str
        The deployment file (or its name).
    mini_batch : int
        The mini-batch tried, numbered as ``daskscore run`` numbers them.
    mini_batches : int
        How many mini-batches the input makes.
    unit : str
        ``"files"``, or ``"rows"`` in tabular mode.
    files : list of str
        The mini-batch's files (a tabular split names its file and first row).
    items : int
        The items ``run()`` was given.
    returned : object
        What ``run()`` returned, as it returned it (a DataFrame or a list); None when it raised.
    results : int or None
        How many results that is (rows of a DataFrame, elements of a list).
    rows : list of str
        The lines ``append_row`` would write for them.
    timings : dict
        Seconds of each stage: ``import``, ``init()``, ``run()``, ``shutdown()``.
    failed_stage : str or None
        The stage that raised (``"import"``, ``"init()"``, ``"run()"``, ``"shutdown()"``).
    error : str or None
        The script's traceback (its own frames), or what was wrong with what ``run()``
        returned.
    written : list of str
        Files the script wrote to ``AZUREML_BI_OUTPUT_PATH`` (removed afterwards).
    timeout_s : float
        ``retry_settings.timeout``: the time ``run()`` gets on a worker.
    warnings : list of str
        What ``daskscore validate`` warns of though nothing raised: ``run()`` named failed
        items, or returned fewer results than items (a job counts them as failed items), took
        longer than ``retry_settings.timeout``, or set a signal handler.  ``ok`` stays True,
        as the command's exit code stays 0.
    failed_items : list of str
        The failed items ``run()`` named, one reason each, in
        ``df.attrs["daskscore_failed_items"]`` (as the built-in MLflow scorer does); a job
        counts them as failed.
    """

    deployment: str
    mini_batch: int
    mini_batches: int
    unit: str
    files: list[str]
    items: int = 0
    returned: Any = None
    results: int | None = None
    rows: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    failed_stage: str | None = None
    error: str | None = None
    written: list[str] = field(default_factory=list)
    timeout_s: float = 0.0
    warnings: list[str] = field(default_factory=list)
    failed_items: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """The script imported, and init(), run() and shutdown() did not raise (what it still
        got wrong is in :attr:`warnings`)."""
        return self.failed_stage is None

    @property
    def succeeded(self) -> int:
        """Items that succeeded, as ``daskscore run`` counts them: a result each (as Azure
        counts), less the failed items run() named (:attr:`failed_items`)."""
        if not self.ok:
            return 0
        return item_counts(self.results or 0, self.items, self.failed_items)[0]

    @property
    def failed(self) -> int:
        return self.items - self.succeeded

    @property
    def slow(self) -> bool:
        """run() took longer than ``retry_settings.timeout`` (a worker would time it out)."""
        return self.timings.get("run()", 0.0) > self.timeout_s > 0

    def headline(self) -> str:
        """``OK: init() and run() work`` (``, with 1 warning``), or ``run() failed:
        ZeroDivisionError: ...``."""
        if not self.ok:
            return f"{self.failed_stage} failed: {_last_line(self.error or '')}"
        n = len(self.warnings)
        return "OK: init() and run() work" + (f", with {n} warning{'s' * (n > 1)}" if n else "")

    def __repr__(self) -> str:
        what = f"mini-batch {self.mini_batch} of {self.mini_batches}, {self.items} {self.unit}"
        if self.ok:
            what += f"; run() returned {self.results} results"
            what += f" ({self.failed} failed)" if self.failed else ""
        return f"ValidationResult({self.headline()}; {what}; {_timings(self.timings)})"

    def __str__(self) -> str:
        """What ``daskscore validate`` prints: the rows, counts and timings, or the traceback."""
        lines = [repr(self)]
        if not self.ok:
            lines += [f"{self.failed_stage} failed:", self.error or ""]
            return "\n".join(lines)
        lines += [f"first {min(SHOWN_ROWS, len(self.rows))} of {len(self.rows)} lines, "
                  "as append_row writes them:"]  # fmt: skip
        lines += [f"  {row}" for row in self.rows[:SHOWN_ROWS]]
        lines.append(f"{self.succeeded} succeeded, {self.failed} failed")
        lines += [f"{WARNING}{text}" for text in self.warnings]  # (as the command prints them)
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        verdict = ("warn" if self.warnings else "ok") if self.ok else "failed"
        colour = {"ok": "#1a7f37", "warn": "#9a6700", "failed": "#cf222e"}[verdict]
        head = (
            f'<span data-verdict="{verdict}" style="background:{colour};'
            'color:#fff;border-radius:10px;padding:1px 9px;font-weight:600">'
            f"{escape(self.headline())}</span> "
            f"mini-batch {self.mini_batch} of {self.mini_batches} ({self.items} {self.unit}) "
            f"of <code>{escape(self.deployment)}</code>, in this process"
        )
        parts = [f"<div>{head}</div>"]
        pre = (
            'style="background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:6px;'
            'white-space:pre-wrap;max-height:360px;overflow:auto;font-size:12px"'
        )
        if not self.ok:
            parts.append(f'<pre data-field="error" {pre}>{escape(self.error or "")}</pre>')
        else:
            parts.append(
                f'<div data-field="counts">run() returned {self.results} results: '
                f"{self.succeeded} succeeded, {self.failed} failed</div>"
            )
            parts.append(_returned_html(self, pre))
            warn = 'data-field="warning" style="color:#9a6700;white-space:pre-wrap"'
            parts += [f"<div {warn}>warning: {escape(text)}</div>" for text in self.warnings]
        parts.append(f'<div data-field="timings">{escape(_timings(self.timings))}</div>')
        if self.written:
            parts.append(
                f"<div>the script wrote {len(self.written)} files to AZUREML_BI_OUTPUT_PATH "
                "(removed)</div>"
            )
        return (
            '<div class="daskscore-validate" style="font:13px/1.6 sans-serif">'
            + "".join(parts)
            + "</div>"
        )


def validate(
    deployment: str | os.PathLike[str] | Deployment,
    input: str | os.PathLike[str],
    *,
    mini_batch: int = 0,
    pdb: bool = False,
    set: dict[str, Any] | None = None,
    lenient: bool = False,
    tabular: bool | None = None,
    **overrides: Any,
) -> ValidationResult:
    """Try a deployment's scoring script on one mini-batch, in this process (no cluster).

    ``daskscore validate`` as a function: every problem of the deployment file is named at once;
    then ``init()``, ``run()`` on one mini-batch and ``shutdown()`` run here, with the
    environment a worker gives the script (undone afterwards), the script imported afresh (an
    edited file is picked up).  An exception of the script is returned, not raised.

    Parameters
    ----------
    deployment : str, path-like or Deployment
        The deployment YAML file, or a loaded deployment.
    input : str or path-like
        An input file or folder (or an fsspec URL), as :func:`daskscore.run` takes it.
    mini_batch : int, default 0
        The mini-batch to try, numbered as ``daskscore run`` numbers them.
    pdb : bool, default False
        On an exception in the script, start ``pdb`` at the script's innermost frame.
    set : dict, optional
        Dotted overrides, as ``--set`` takes them.
    lenient : bool, default False
        Unknown deployment keys are warnings (``UnknownKeyWarning``), not problems.
    tabular : bool, optional
        Tabular mode, as for :func:`daskscore.run`.
    **overrides
        Settings by name: ``mini_batch_size=5``, ``timeout=60``, ...

    Returns
    -------
    ValidationResult
        ``ok``; ``returned`` (what ``run()`` returned), ``rows`` (the lines ``append_row``
        writes), ``timings``; ``failed_stage`` and ``error`` (the script's traceback) when it
        raised.  A notebook shows it as HTML.

    Raises
    ------
    UsageError
        The deployment, the script file or the input cannot be used (a
        :class:`~daskscore.errors.ConfigError` lists every problem of the deployment file), or
        ``mini_batch`` is not one of the input's mini-batches; nothing was run.

    Examples
    --------
    >>> import daskscore
    >>> check = daskscore.validate("configs/digits-cnn/deployment.yml",
    ...                            "configs/digits-cnn/sample-inputs")  # doctest: +SKIP
    >>> check.ok, check.returned.head()  # doctest: +SKIP
    """
    here = os.getcwd()  # (the caller's, whatever the script's chdir and the jobs in process)
    try:
        return validate_deployment(
            deployment,
            input,
            merge_setting_kwargs(set, overrides, validate),
            mini_batch=mini_batch,
            lenient=lenient,
            post_mortem=pdb,
            tabular=tabular,
        )
    finally:
        if os.getcwd() != here:
            os.chdir(here)


def validate_deployment(
    deployment: str | os.PathLike[str] | Deployment,
    input_path: str | os.PathLike[str],
    overrides: dict[str, Any] | None = None,
    *,
    mini_batch: int = 0,
    lenient: bool = False,
    post_mortem: bool = False,
    tabular: bool | None = None,
) -> ValidationResult:
    """:func:`validate` with its overrides merged (``overrides``: dotted keys).

    Parameters
    ----------
    deployment : str, path-like or Deployment
        The deployment file (every problem in it is named at once), or a loaded deployment.
    input_path : str or path-like
        An input file or folder (or an fsspec URL).
    overrides : dict, optional
        Dotted keys to override, as ``--set`` takes them.
    mini_batch : int, default 0
        The mini-batch to try, numbered as ``daskscore run`` numbers them.
    lenient : bool, default False
        Unknown deployment keys are warnings (``UnknownKeyWarning``), not problems.
    post_mortem : bool, default False
        On an exception in the script, start ``pdb`` at the script's innermost frame.
    tabular : bool, optional
        Tabular mode, as for :func:`daskscore.run`.

    Returns
    -------
    ValidationResult
        The script's exceptions are in it (``failed_stage``, ``error``), never raised.

    Raises
    ------
    UsageError
        The deployment, the script file or the input cannot be used (a
        :class:`~daskscore.errors.ConfigError` lists every problem of the deployment file), or
        ``mini_batch`` is not one of the input's mini-batches; nothing was run.
    """
    if isinstance(deployment, Deployment):
        dep = with_overrides(deployment, overrides or {})
        name = str(dep.source or dep.scoring_script)
    else:
        problems = collect_problems(deployment, overrides, lenient=lenient)
        errors = [p for p in problems if not p.startswith(WARNING)]
        if errors:
            many = f"{len(errors)} problems" if len(errors) > 1 else "a problem"
            listed = "\n".join(f"  - {e}" for e in errors)
            raise ConfigError(f"{deployment}: {many} found; nothing was run:\n{listed}")
        dep = load_deployment(deployment, overrides, lenient=lenient)  # (warns of unknown keys)
        name = str(deployment)
    plan = plan_job(dep, input_path, JobOptions(tabular=tabular))
    assert plan is not None  # (plan_job raises its first problem)
    count = len(plan.work)
    if not 0 <= mini_batch < count:
        raise UsageError(
            f"mini_batch={mini_batch}: {input_path} makes {count} mini-batch"
            f"{'es' if count != 1 else ''} of {plan.unit}, numbered 0 to {count - 1}; "
            "nothing was run."
        )
    work = plan.work[mini_batch]
    report = dry_run(plan.deployment, work, plan.csv_kwargs, post_mortem=post_mortem)
    failed = report.failed_stage is not None
    timeout = float(plan.deployment.settings.retry_settings.timeout)
    return ValidationResult(
        deployment=name,
        mini_batch=mini_batch,
        mini_batches=count,
        unit=plan.unit,
        files=describe_work(work),
        items=report.items,
        returned=None if failed else report.value,
        results=None if failed else report.returned,
        rows=report.rows.decode("utf-8", errors="replace").splitlines(),
        timings=dict(report.timings),
        failed_stage=report.failed_stage,
        error=report.error,
        written=list(report.written),
        timeout_s=timeout,
        warnings=[] if failed else dry_run_warnings(report, plan.unit, timeout),
        failed_items=[] if failed else list(report.failed_items),
    )


def _returned_html(result: ValidationResult, pre: str) -> str:
    """What run() returned: a DataFrame's first rows as pandas draws them, else the lines
    append_row writes."""
    value = result.returned
    to_html = getattr(value, "_repr_html_", None)
    if callable(to_html) and hasattr(value, "head"):
        shown = to_html() if len(value) <= SHOWN_ROWS else value.head(SHOWN_ROWS)._repr_html_()
        if shown:  # (None when pandas is told not to draw HTML)
            return f'<div data-field="returned">{shown}</div>'
    rows = result.rows[:SHOWN_ROWS]
    more = f"\n... {len(result.rows) - SHOWN_ROWS} more" if len(result.rows) > SHOWN_ROWS else ""
    return f'<pre data-field="rows" {pre}>{escape(chr(10).join(rows) + more)}</pre>'


def _timings(timings: dict[str, float]) -> str:
    return ", ".join(f"{k} {_seconds(v)}" for k, v in timings.items())


def _seconds(value: float) -> str:
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def _last_line(text: Any) -> str:
    return error_line(text, empty="?")
