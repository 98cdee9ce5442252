"""A finished job in a notebook: :class:`ResultViews`, the views :class:`JobResult` inherits.

* ``repr(result)``: one line (verdict, items, mini-batches, duration, output);
  ``result._repr_html_()``: the verdict as ``report.html`` words it, the counts that are not
  zero, links to the report and the logs, and the first failure with its traceback and the
  ``daskscore replay`` command that runs it again here (:func:`result_html`).
* ``result.mini_batches``: ``logs/sys/job_report/processed_mini-batches.csv`` as a typed pandas
  DataFrame, one row per try (:func:`mini_batch_frame`).
* ``result.plot_timeline()``: the tries on a time axis, one lane per worker, with matplotlib
  (:func:`plot_timeline`).

Everything here reads the summary dict (``job_summary.json``) and the job's files: a
:class:`JobResult` rebuilt from a summary shows the same.
"""

from __future__ import annotations

import os
from html import escape
from pathlib import Path
from typing import Any

from daskscore.io import storage
from daskscore.protocol import error_line
from daskscore.ui.report import REPORT_FILE

#: The per-try records of a job, under its output folder.
PROCESSED = "logs/sys/job_report/processed_mini-batches.csv"
_INTS = ("mini_batch_id", "try", "total", "succeeded", "failed")
_FLOATS = ("elapsed_s", "run_s", "peak_rss_mb")
#: Files of the first failure named in the notebook view.
SHOWN_FILES = 3
#: Colours of the verdict badge and of the timeline's bars.
_TONES = {"ok": "#1a7f37", "warn": "#9a6700", "bad": "#cf222e"}
_STATUS_COLOURS = {"RUN_DONE": "#2da44e", "RUN_PARTIAL": "#bf8700"}
_FAILED_COLOUR = "#cf222e"
_MATPLOTLIB_MISSING = (
    "plot_timeline() draws with matplotlib, which is not installed: pip install matplotlib "
    "(or pip install 'daskscore[notebook]'). Without it, result.mini_batches holds the same "
    "numbers as a pandas DataFrame."
)


class ResultViews:
    """What :class:`~daskscore.engine.finish.JobResult` shows in a notebook (a mixin: it reads
    ``self.summary``, ``self.output`` and ``self.status``)."""

    summary: dict[str, Any]
    output: Any
    status: str

    def __repr__(self) -> str:
        return result_repr(self.summary, self.output, self.status)

    def _repr_html_(self) -> str:
        return result_html(self.summary, self.output)

    @property
    def mini_batches(self) -> Any:
        """Every try of every mini-batch, as a pandas DataFrame (one row per try).

        Read from ``logs/sys/job_report/processed_mini-batches.csv``: ``mini_batch_id``,
        ``try``, ``total``, ``succeeded``, ``failed`` as integers; ``start`` and ``end`` as
        UTC datetimes; ``elapsed_s``, ``run_s``, ``peak_rss_mb`` as floats (NaN where not
        known); ``worker``, ``status``, ``error`` (its last line), ``items`` as strings.

        Examples
        --------
        >>> tries = result.mini_batches  # doctest: +SKIP
        >>> tries.groupby("worker")["run_s"].sum()  # doctest: +SKIP
        """
        return mini_batch_frame(self.output)

    def plot_timeline(self, ax: Any = None) -> Any:
        """Draw every try on a time axis, one lane per worker, coloured by status.

        Parameters
        ----------
        ax : matplotlib.axes.Axes, optional
            Where to draw; default: a new figure.

        Returns
        -------
        matplotlib.axes.Axes

        Raises
        ------
        ImportError
            matplotlib is not installed (``pip install 'daskscore[notebook]'``).

        Examples
        --------
        >>> result = daskscore.run("deployment.yml", "data/", "out/")  # doctest: +SKIP
        >>> result.plot_timeline()  # doctest: +SKIP
        """
        return plot_timeline(self.mini_batches, ax=ax)


# ---------------------------------------------------------------------- verdict and text
def verdict(s: dict[str, Any]) -> tuple[str, str]:
    """The job's verdict as ``report.html`` words it, and its tone (``ok``, ``warn``, ``bad``):
    ``Completed``, ``Completed with failures``, ``Failed``, or ``..., but no item succeeded``."""
    status = str(s.get("status") or "Unknown")
    label, tone = status, "ok" if status == "Completed" else "bad"
    if status == "Completed" and _int(s.get("failed_items")):
        label, tone = "Completed with failures", "warn"
    if (
        _int(s.get("total_items"))
        and not _int(s.get("succeeded_items"))
        and not s.get("init_error")
    ):
        label, tone = f"{status}, but no item succeeded", "bad"
    return label, tone


def result_repr(s: dict[str, Any], output: Any, status: str | None = None) -> str:
    """``JobResult(Completed with failures: 118 of 120 items succeeded, 2 failed; ...)``."""
    label = verdict({**s, "status": s.get("status", status)})[0]
    total, ok, bad = (_int(s.get(k)) for k in ("total_items", "succeeded_items", "failed_items"))
    items = f"{ok} of {total} items succeeded" + (f", {bad} failed" if bad else "")
    return (
        f"JobResult({label}: {items}; {_int(s.get('total_mini_batches'))} mini-batches; "
        f"{_float(s.get('duration_s')):.1f} s; output={str(output)!r})"
    )


# ---------------------------------------------------------------------- HTML
def result_html(s: dict[str, Any], output: Any) -> str:
    """The notebook view of a finished job: an HTML fragment with inline styles only.

    Parameters
    ----------
    s : dict
        The job's summary (``job_summary.json``); missing keys are left out.
    output : Path or str
        The job's output folder (or its URL).

    Returns
    -------
    str
        Every value taken from the summary is escaped.
    """
    label, tone = verdict(s)
    colour = _TONES[tone]
    head = (
        f'<span data-verdict="{escape(label)}" style="background:{colour};color:#fff;'
        f'border-radius:10px;padding:1px 9px;font-weight:600">{escape(label)}</span> '
        f"<b>daskscore job</b> <code>{escape(str(s.get('job_id') or '?'))}</code> &middot; "
        f"{_float(s.get('duration_s')):.1f} s"
    )
    parts = [f"<div>{head}</div>"]
    if s.get("reason"):
        parts.append(
            f'<div data-field="reason" style="color:{colour}">{escape(str(s["reason"]))}</div>'
        )
    parts.append(f'<div data-field="counts">{_counts(s)}</div>')
    parts.append(f'<div data-field="files">{_files(s, output)}</div>')
    parts.append(_first_failure(s))
    body = "".join(p for p in parts if p)
    return f'<div class="daskscore-result" style="font:13px/1.6 sans-serif">{body}</div>'


def _counts(s: dict[str, Any]) -> str:
    total = _int(s.get("total_items"))
    items = [f"<b>{_int(s.get('succeeded_items')):,}</b> of {total:,} items succeeded"]
    for key, word in (("failed_items", "failed"), ("not_run_items", "not run")):
        if _int(s.get(key)):
            items.append(f"<b>{_int(s.get(key)):,}</b> {word}")
    batches = [f"{_int(s.get('total_mini_batches')):,} mini-batches"]
    for key, word in (
        ("failed_mini_batches", "failed"),
        ("partial_mini_batches", "partial"),
        ("not_run_mini_batches", "not run"),
        ("retried_mini_batches", "retried"),
        ("split_mini_batches", "split"),
        ("resumed_mini_batches", "resumed"),
    ):
        if _int(s.get(key)):
            batches.append(f"{_int(s.get(key)):,} {word}")
    rows = f" &middot; {_int(s.get('rows_written')):,} rows written" if "rows_written" in s else ""
    return ", ".join(items) + " &middot; " + ", ".join(batches) + rows


def _files(s: dict[str, Any], output: Any) -> str:
    out = str(s.get("output") or output)
    links = [f"output <code>{escape(out)}</code>"]
    if s.get("predictions"):
        links.append(f"predictions <code>{escape(str(s['predictions']))}</code>")
    report = _local_file(out, REPORT_FILE)
    if report is not None:
        links.append(
            f'<a data-field="report" href="{escape(_href(report))}" target="_blank">'
            f"{REPORT_FILE}</a>"
        )
    links.append(f"logs <code>{escape(out.rstrip('/'))}/logs</code>")
    return " &middot; ".join(links)


def _first_failure(s: dict[str, Any]) -> str:
    """The init() error, or the first failed mini-batch: what, which files, the traceback,
    and how to run it again here."""
    pre = (
        'style="background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:6px;'
        'white-space:pre-wrap;max-height:320px;overflow:auto;font-size:12px"'
    )
    if s.get("init_error"):
        text = str(s["init_error"])
        return (
            '<details data-field="init-error" open><summary>The error before any mini-batch '
            f"ran: <code>{escape(error_line(text))}</code></summary><pre {pre}>{escape(text)}"
            "</pre></details>"
        )
    failures = s.get("failures") or []
    if not failures:
        return ""
    f = failures[0]
    files = [str(p) for p in f.get("files") or []]
    named = ", ".join(escape(p) for p in files[:SHOWN_FILES])
    if len(files) > SHOWN_FILES:
        named += f" and {len(files) - SHOWN_FILES} more"
    others = len(failures) - 1
    more = f" (and {others} more mini-batch{'es' if others != 1 else ''} with failures)"
    more = more if others else ""
    error = str(f.get("error") or "")
    parts = [
        f'<details data-field="first-failure"><summary>First failure: mini-batch '
        f"{escape(str(f.get('mini_batch_id')))} ({escape(str(f.get('status')))}, "
        f"{_int(f.get('tries'))} tries, {_int(f.get('failed'))} items failed){more}"
        f": <code>{escape(error_line(error))}</code></summary>"
        f"<div>files: {named}</div><pre {pre}>{escape(error)}</pre></details>"
    ]
    if s.get("replay"):
        parts.append(
            '<div data-field="replay">Run it again here, under a debugger: '
            f"<code>{escape(str(s['replay']))} --pdb</code></div>"
        )
    if s.get("failed_items_file"):
        parts.append(
            '<div data-field="failed-items">Every failed item: '
            f"<code>{escape(str(s['failed_items_file']))}</code> "
            "(<code>result.failed_items_frame()</code>)</div>"
        )
    return "".join(parts)


def _local_file(output: str, name: str) -> Path | None:
    if storage.is_remote(output):
        return None
    path = Path(output) / name
    return path if path.is_file() else None


def _href(path: Path) -> str:
    """A link a notebook front end opens: relative to the kernel's folder (the notebook's)
    when the file lies under it, else a ``file://`` URI."""
    path = path.resolve()
    try:
        return path.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.as_uri()


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _float(value: Any) -> float:
    try:
        return float(value or 0.0)
    except (TypeError, ValueError):
        return 0.0


# ---------------------------------------------------------------------- per-try frame
def mini_batch_frame(output: str | os.PathLike[str]) -> Any:
    """``processed_mini-batches.csv`` of the job in ``output`` as a typed pandas DataFrame.

    Parameters
    ----------
    output : str or path-like
        The job's output folder, or its fsspec URL.

    Returns
    -------
    pandas.DataFrame
        One row per try, in the file's order; integer counts, UTC ``start`` and ``end``
        (``start`` plus ``elapsed_s``) datetimes, float seconds and ``peak_rss_mb``, string
        ``worker``, ``status``, ``error`` and ``items``.

    Raises
    ------
    FileNotFoundError
        The folder holds no finished job's records.
    """
    import pandas as pd

    out = str(output)
    if storage.is_remote(out):
        fs, root = storage.filesystem(f"{out.rstrip('/')}/{PROCESSED}", verb="reading")
        with fs.open(root, "rb") as fh:
            raw = pd.read_csv(fh, dtype=str, keep_default_na=False)
    else:
        path = Path(out) / PROCESSED
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: no per-try records there; a job writes them when it finishes "
                "(is this the output folder of a finished daskscore job?)"
            )
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame = raw.copy()
    for name in _INTS:
        if name in frame:
            frame[name] = pd.to_numeric(frame[name]).astype("int64")
    for name in _FLOATS:
        if name in frame:
            frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")  # "": NaN
    if "start" in frame:
        start = pd.to_datetime(frame["start"], utc=True, format="ISO8601", errors="coerce")
        frame["start"] = start
        if "elapsed_s" in frame:
            end = (start + pd.to_timedelta(frame["elapsed_s"], unit="s")).astype(start.dtype)
            frame.insert(int(frame.columns.get_loc("start")) + 1, "end", end)
    return frame


# ---------------------------------------------------------------------- timeline
def plot_timeline(frame: Any, ax: Any = None) -> Any:
    """Draw the tries of :func:`mini_batch_frame` as bars on one lane per worker.

    The x axis is seconds since the first try started; a bar spans a try's ``elapsed_s``,
    green when it scored everything, amber when partial, red when it failed.

    Returns
    -------
    matplotlib.axes.Axes
    """
    try:
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError as exc:
        raise ImportError(_MATPLOTLIB_MISSING, name=exc.name) from exc
    tries = frame.dropna(subset=["start"]) if "start" in frame else frame.iloc[:0]
    workers = sorted(str(w) for w in tries["worker"].unique()) if len(tries) else []
    made = ax is None
    if ax is None:
        _, ax = plt.subplots(figsize=(9, 1.6 + 0.45 * max(1, len(workers))))
    if not len(tries):
        ax.text(0.5, 0.5, "no mini-batch ran", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return ax
    t0 = tries["start"].min()
    offset = (tries["start"] - t0).dt.total_seconds()
    lane = {w: i for i, w in enumerate(workers)}
    legend = []
    for status, group in tries.groupby("status", sort=True):
        colour = _STATUS_COLOURS.get(str(status), _FAILED_COLOUR)
        for worker, rows in group.groupby("worker"):
            spans = list(zip(offset[rows.index], rows["elapsed_s"].fillna(0.0), strict=True))
            ax.broken_barh(
                spans, (lane[str(worker)] - 0.4, 0.8), facecolors=colour, edgecolor="white",
                linewidth=0.5,
            )  # fmt: skip
        legend.append(Patch(color=colour, label=f"{status} ({len(group)})"))
    ax.set_yticks(range(len(workers)), [_short_worker(w) for w in workers])
    ax.set_ylim(-0.6, len(workers) - 0.4)
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the first mini-batch started")
    n_mb = tries["mini_batch_id"].nunique()
    ax.set_title(f"{len(tries)} tries of {n_mb} mini-batches on {len(workers)} workers")
    ax.legend(handles=legend, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    if made:
        ax.figure.tight_layout()
    return ax


def _short_worker(name: str) -> str:
    """``tcp://127.0.0.1:40123`` as ``127.0.0.1:40123``."""
    return name.split("://", 1)[-1]
