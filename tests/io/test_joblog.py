"""The job's own log file on a disk that fills up: the lines it cannot take are counted, not
each reported with a traceback of ``logging``'s on the terminal (a full disk during a job
printed hundreds of lines over the one that said what happened)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from daskscore.io.joblog import FileLogHandler


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_lines_a_full_disk_refuses_are_counted_quietly(capsys: pytest.CaptureFixture[str]) -> None:
    handler = FileLogHandler(Path("/dev/full"))  # (every write: ENOSPC)
    log = logging.getLogger("daskscore.test-joblog")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("one")
        log.warning("two")
    finally:
        log.removeHandler(handler)
        handler.close()

    assert handler.lost == 2
    assert "Logging error" not in capsys.readouterr().err


def test_lines_are_appended_with_secrets_masked(tmp_path: Path) -> None:
    path = tmp_path / "daskscore.txt"
    handler = FileLogHandler(path, secrets=("hunter2",))
    log = logging.getLogger("daskscore.test-joblog-file")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("the password is hunter2")
    finally:
        log.removeHandler(handler)
        handler.close()

    assert path.read_text().splitlines() == ["the password is ***"]
    assert handler.lost == 0
