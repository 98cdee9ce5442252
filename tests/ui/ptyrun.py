"""Run ``python -m daskscore`` on a pseudo-terminal of a given width, as a user's shell would:
the process is the session leader of the terminal, ``COLUMNS`` and the terminal's own size
agree, and Ctrl-C is typed (``\\x03``), so that the terminal sends SIGINT to the whole
foreground process group (the driver and the workers it started)."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class PtyRun:
    """A ``daskscore`` command running on a pseudo-terminal ``columns`` wide."""

    def __init__(self, args: list[str], columns: int, env: dict[str, str] | None = None):
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
        full_env = {**os.environ, "TERM": "xterm", **(env or {}), "COLUMNS": str(columns)}
        full_env.pop("NO_COLOR", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daskscore", *args],
            cwd=REPO,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=full_env,
            start_new_session=True,  # (its own session, with the terminal as its own)
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )
        os.close(slave)
        self.master = master
        self.raw = b""

    def read(self, timeout: float = 0.2) -> None:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if ready:
            try:
                self.raw += os.read(self.master, 65536)
            except OSError:  # EIO: every writer to the terminal has gone
                time.sleep(timeout)

    def wait_for(self, seen: Callable[[str], bool], timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end and self.proc.poll() is None:
            self.read()
            if seen(self.text):
                return True
        return seen(self.text)

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def finish(self, timeout: float = 180) -> int:
        end = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < end:
            self.read()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            raise AssertionError(f"daskscore did not end in {timeout} s:\n{self.text}")
        for _ in range(20):  # what is still buffered in the terminal
            before = len(self.raw)
            self.read(0.05)
            if len(self.raw) == before:
                break
        os.close(self.master)
        return self.proc.returncode

    @property
    def text(self) -> str:
        return self.raw.decode("utf-8", "replace")

    def frames(self) -> list[str]:
        """Every piece of screen text between carriage returns and newlines, ANSI codes out:
        each redraw of the bar is one."""
        return [_ANSI.sub("", piece) for piece in re.split(r"[\r\n]", self.text) if piece]

    def bars(self) -> list[str]:
        """The frames of the progress bar."""
        return [f for f in self.frames() if re.match(r"\[[#-]+\] +\d+%|\d+% ", f)]
