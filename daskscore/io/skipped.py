"""What the listing of an input folder leaves out, and the job log's lines saying so.

Dot-files and dot-folders, broken symbolic links, pipes, sockets and devices, the job's own
output folder when it lies inside the input, and the output folders of other daskscore jobs
there (:func:`job_output`: finished, interrupted or still running) are not inputs; each kind is
said in one line of the job log, how many and the first few.
"""

from __future__ import annotations

import os

from daskscore.io.outputdir import SUMMARY_FILE as SUMMARY
from daskscore.io.shipping import OUTPUT_MARKERS

#: Broken symbolic links and dot-files named in the job log's lines about them (others: counted).
SHOWN_LINKS = 5


class Skipped:
    """What a walk left out: dot-files and dot-folders, the excluded folder, broken links,
    pipes, sockets and devices (``counts`` and the first few ``shown`` of each kind)."""

    def __init__(self, exclude: tuple[int, int] | None) -> None:
        self.exclude = exclude
        self.excluded: str | None = None
        self.counts = {"dot": 0, "broken": 0, "special": 0}
        self.shown: dict[str, list[str]] = {"dot": [], "broken": [], "special": []}
        self.jobs: list[str] = []  # other jobs' output folders

    def add(self, kind: str, path: str) -> None:
        self.counts[kind] += 1
        if len(self.shown[kind]) < SHOWN_LINKS:
            self.shown[kind].append(path)

    def _said(self, kind: str) -> str:
        """The first few of ``kind``, and how many more."""
        more = self.counts[kind] - len(self.shown[kind])
        return ", ".join(sorted(self.shown[kind])) + (f" and {more} more" if more else "")

    def notes(self, root: str) -> list[str]:
        lines = []
        if self.counts["dot"]:
            lines.append(
                f"skipped {self.counts['dot']} dot-file(s) and dot-folder(s) in the input folder "
                f"{root} (names starting with '.'): {self._said('dot')}"
            )
        if self.excluded:
            lines.append(
                f"the output folder {self.excluded} is inside the input folder {root}: it is "
                "left out of the input (its predictions, logs and staging are not scored)"
            )
        for folder in self.jobs:
            lines.append(
                f"the folder {folder} in the input folder {root} holds another daskscore "
                "job's output (its .daskscore/ staging, its lock or its job_summary.json: "
                "finished, interrupted or running): it is left out of the input"
            )
        if self.counts["broken"]:
            lines.append(
                f"skipped {self.counts['broken']} broken symbolic link(s) in the input folder "
                f"{root} (they lead to no file): {self._said('broken')}"
            )
        if self.counts["special"]:
            lines.append(
                f"skipped {self.counts['special']} pipe(s), socket(s) or device(s) in the input "
                f"folder {root} (not regular files): {self._said('special')}"
            )
        return lines


def job_output(folder: str, names: list[str], dots: list[os.DirEntry[str]]) -> bool:
    """Whether ``folder`` holds a daskscore job's output, finished, interrupted or running
    (its staging folder, its lock: :data:`~daskscore.io.shipping.OUTPUT_MARKERS`; or the
    summary daskscore writes): no inputs.  A folder that merely has a ``logs/`` is not one."""
    if any(entry.name in OUTPUT_MARKERS for entry in dots):
        return True
    if SUMMARY not in names:
        return False
    try:
        with open(os.path.join(folder, SUMMARY), encoding="utf-8", errors="replace") as fh:
            return '"total_mini_batches"' in fh.read(1 << 16)
    except OSError:
        return False
