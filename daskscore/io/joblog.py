"""The job's own log, ``logs/sys/daskscore.txt``: daskscore's and Dask's lines, secrets masked."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from distributed.utils import silence_logging_cmgr

from daskscore.config.settings import redact

logger = logging.getLogger("daskscore")


class FileLogHandler(logging.Handler):
    """Appends log records to a file.  Not a StreamHandler on purpose: Dask's
    ``silence_logs`` turns every StreamHandler of the ``distributed`` logger down to CRITICAL
    while a LocalCluster lives, which would empty the job's own log.

    Each record is one ``os.write`` on an ``O_APPEND`` descriptor: no buffered file object,
    whose internal lock a process forked while another thread writes would inherit held.  A
    forked child (a worker process) drops the handler: its lines are not the driver's."""

    def __init__(self, path: Path, secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._secrets = secrets
        self._pid = os.getpid()
        #: lines the file could not take (a full disk)
        self.lost = 0

    def emit(self, record: logging.LogRecord) -> None:
        if self._fd is None or os.getpid() != self._pid:
            return  # closed, or inherited by a forked process
        try:
            line = redact(self.format(record), self._secrets) + "\n"
        except Exception:  # noqa: BLE001 - logging must never fail the job
            self.handleError(record)
            return
        try:
            os.write(self._fd, line.encode("utf-8", "backslashreplace"))  # a non-UTF-8 name
        except OSError:
            # a full (or read-only) disk: the job says so itself (WriteFailed); a traceback
            # of logging's for every line after would bury that on the terminal
            self.lost += 1

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None and os.getpid() == self._pid:
            os.close(fd)
        super().close()


@contextmanager
def job_logging(out_dir: Path, level: str, secrets: tuple[str, ...] = ()) -> Iterator[None]:
    """daskscore's and Dask's own log lines go to logs/sys/daskscore.txt, not to stderr;
    ``secrets`` (values of secret environment variables) are masked there."""
    # Dask's stderr lines go quiet (they still reach the file); silence before adding ours, which
    # is a StreamHandler too
    quiet = silence_logging_cmgr(logging.CRITICAL)
    quiet.__enter__()
    path = out_dir / "logs" / "sys" / "daskscore.txt"
    handler = FileLogHandler(path, secrets)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(level.upper())
    # (asyncio: the errors of Dask's coroutines nobody awaited, such as the scheduler's other
    # broadcasts to worker processes that died during init(), printed on stderr otherwise)
    names = ("daskscore", "distributed", "asyncio")
    for name in names:
        logging.getLogger(name).addHandler(handler)
    saved_level = logger.level
    logger.setLevel(level.upper())
    started = time.time()
    logger.info("job started at %s", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)))
    try:
        yield
    finally:
        for name in names:
            logging.getLogger(name).removeHandler(handler)
        logger.setLevel(saved_level)
        quiet.__exit__(None, None, None)
        handler.close()
        if handler.lost:
            logger.warning(
                "%d line(s) of the job's log could not be written to %s", handler.lost, path
            )
