"""What a dry run of the scoring script did (:class:`DryRun`), and how ``daskscore validate``
and ``daskscore replay`` tell it: the counts, as ``daskscore run`` counts them, and the
warnings of a run that did not raise (:func:`dry_run_warnings`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from daskscore.config.settings import Deployment
from daskscore.protocol import FAILED_ITEMS_ATTR, error_line, item_counts

#: how a line that is a warning, not an error, begins
WARNING = "warning: "
#: failed items listed in a warning; the rest are counted
SHOWN_FAILED = 10


@dataclass
class DryRun:
    """What the scoring script did with one mini-batch in this process."""

    items: int = 0
    returned: int | None = None
    rows: bytes = b""
    timings: dict[str, float] = field(default_factory=dict)
    failed_stage: str | None = None
    error: str | None = None
    written: list[str] = field(default_factory=list)
    #: what run() returned, as it returned it (for :func:`daskscore.validate`)
    value: Any = None
    #: the signals the script set a handler for (put back afterwards): fine here, in this
    #: process's main thread, but signal.signal() raises in a worker's thread
    signals: list[str] = field(default_factory=list)
    #: the failed items run() named, one reason each, in ``df.attrs[FAILED_ITEMS_ATTR]``
    failed_items: list[str] = field(default_factory=list)

    @property
    def counts(self) -> tuple[int, int]:
        """``(succeeded, failed)`` items, as ``daskscore run`` counts them."""
        if self.failed_stage:
            return 0, self.items
        return item_counts(self.returned or 0, self.items, self.failed_items)


def show(report: DryRun, deployment: Deployment, unit: str, rows: int) -> None:
    """Print the rows, the counts, the timings and the warnings (``daskscore validate``)."""
    settings, rows = deployment.settings, max(rows, 0)
    lines = report.rows.decode("utf-8", errors="replace").splitlines()
    shown = f"first {min(rows, len(lines))} of {len(lines)}"
    target = settings.output_file_name
    if settings.output_action == "summary_only":
        target += " (output_action summary_only: counted, not written)"
    print(f"\n{shown} lines of {target}, as append_row writes them:")
    for line in lines[:rows]:
        print(f"  {line}")
    returned = report.returned or 0
    succeeded, failed = report.counts
    print(
        f"\n{counted(report.items, unit)} given; run() returned {returned} result"
        f"{'' if returned == 1 else 's'}: {succeeded} succeeded, {failed} failed"
    )
    print("timings: " + ", ".join(f"{k} {seconds(v)}" for k, v in report.timings.items()))
    if report.written:
        print(f"the script wrote {len(report.written)} files to AZUREML_BI_OUTPUT_PATH (removed)")
    warned = dry_run_warnings(report, unit, settings.retry_settings.timeout)
    for text in warned:
        print(f"{WARNING}{text}")
    many = f", with {len(warned)} warning{'s' if len(warned) > 1 else ''}" if warned else ""
    print(f"OK: init() and run() work{many}.")


def dry_run_warnings(report: DryRun, unit: str, timeout: float) -> list[str]:
    """What ``daskscore validate`` and ``daskscore replay`` warn of in a run that did not raise
    (slow, failed items named or results short, signals)."""
    warned, returned = [], report.returned or 0
    if report.timings.get("run()", 0.0) > timeout:
        warned.append(f"run() took longer than retry_settings.timeout ({timeout:g} s).")
    _, failed = report.counts
    if report.failed_items:
        listed = "".join(f"\n  {error_line(r, 300)}" for r in report.failed_items[:SHOWN_FAILED])
        if len(report.failed_items) > SHOWN_FAILED:
            listed += f"\n  ... and {len(report.failed_items) - SHOWN_FAILED} more"
        warned.append(
            f"run() named {failed} of its {counted(report.items, unit)} failed (in "
            f"df.attrs['{FAILED_ITEMS_ATTR}']): daskscore run counts them as failed items "
            f"(failed_items.csv):{listed}"
        )
    elif returned < report.items:
        warned.append(
            f"run() returned {returned} result{'' if returned == 1 else 's'} for "
            f"{counted(report.items, unit)}: "
            f"daskscore run counts {failed} of them failed (a result per item "
            "is what Azure counts as succeeded)."
        )
    if report.signals:
        warned.append(
            f"the script set a handler for {', '.join(report.signals)} with "
            "signal.signal(), which works here, in this process's main thread; in daskscore "
            "run's workers init() and run() run in a thread, where it raises ValueError (see "
            "'What a script cannot do in a worker' in docs/failures.md)."
        )
    return warned


def seconds(value: float) -> str:
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def counted(n: int, unit: str) -> str:
    """``n`` items of ``unit`` (``files``, ``rows``), the unit singular for one: ``1 file``."""
    return f"{n} {unit.removesuffix('s') if n == 1 else unit}"
