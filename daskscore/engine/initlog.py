"""What the scoring script printed in a worker process that died installing it (its
``init()``, its import), shown with the job's error: that process's own lines of the worker's
log, a line printed again and again once.

The worker's log (``logs/user/stdout/<worker>.txt``) goes on with the lines of the processes
its nanny starts after it, into the same ``init()`` until the job takes its plugin off; each
install mark says where in the log its process began (``log_offset``) and when the process
started, so the lines of one process end where the next one's begin.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from daskscore.protocol import WorkerJob

#: The last lines the script printed before its process died, shown with the error.
SHOWN_LINES = 20


def printed(
    mark: dict[str, Any] | None, job: WorkerJob, found: Sequence[dict[str, Any]] = ()
) -> list[str]:
    """What the dead process's script printed (stdout, stderr, logging) before it died: a
    line naming the log file, then its last :data:`SHOWN_LINES` lines, indented.  Its own
    lines only: the worker's log goes on with those of the processes its nanny started after
    it (each install mark of ``found`` in the same log says where one began), and a line
    printed again and again is shown once, with how many times."""
    if not mark or not mark.get("log"):
        return []
    path = Path(mark["log"])
    try:
        start = int(mark.get("log_offset") or 0)
        later = [int(m.get("log_offset") or 0) for m in found if _after(m, mark)]
        end = min((offset for offset in later if offset >= start), default=None)
        with open(path, "rb") as fh:
            fh.seek(start)
            text = fh.read(-1 if end is None else end - start).decode("utf-8", "replace")
    except (OSError, ValueError):
        return []
    lines = _once([line.rstrip() for line in text.splitlines() if line.strip()])
    if not lines:
        return []
    try:
        shown = path.relative_to(Path(job.logs).parent).as_posix()
    except ValueError:
        shown = str(path)
    cut = f", its last {SHOWN_LINES} lines" if len(lines) > SHOWN_LINES else ""
    return [
        f"What {Path(job.script).name} printed before ({shown}{cut}):",
        *("  " + line for line in lines[-SHOWN_LINES:]),
    ]


def _after(other: dict[str, Any], mark: dict[str, Any]) -> bool:
    """Whether install mark ``other`` is of a process that started after ``mark``'s, writing
    to the same log (the worker's, restarted by its nanny)."""
    if other.get("log") != mark.get("log") or other.get("pid") == mark.get("pid"):
        return False
    if other.get("started") is not None and mark.get("started") is not None:
        return float(other["started"]) > float(mark["started"])
    return int(other.get("log_offset") or 0) > int(mark.get("log_offset") or 0)


def _once(lines: list[str]) -> list[str]:
    """``lines`` with each run of a line repeated shown once: ``line  [4 times]``."""
    shown: list[str] = []
    for line, run in itertools.groupby(lines):
        n = len(list(run))
        shown.append(line if n == 1 else f"{line}  [{n} times]")
    return shown
