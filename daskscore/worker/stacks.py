"""Hang stacks: where a ``run()`` was when it was stopped for its timeout.

A ``run()`` abandoned for ``retry_settings.timeout`` is ended either by the runtime's watchdog
thread (it holds the GIL for a moment: it dumps every thread itself) or, when the call keeps the
GIL, by the worker's nanny from another process (:mod:`daskscore.worker.deadline`), which
cannot look inside.  For that case :class:`StackDump` keeps a
:func:`faulthandler.dump_traceback_later` timer armed while ``run()`` calls are in flight: its
C thread writes the Python stack of every thread into a small file without needing the GIL,
after the deadline and before the nanny reads it.

Arming the timer starts a thread (about 50 µs), too much for every ``run()`` of a job of tiny
mini-batches, so a timer is kept while it still fires in the window that serves the ``run()``
starting now: it is armed for ``timeout +`` :data:`DUMP_AFTER_S` and re-armed only when it was
armed more than :data:`REARM_S` ago.  So it fires between ``deadline + DUMP_AFTER_S - REARM_S``
(after the in-process watchdog had its chance) and ``deadline + DUMP_AFTER_S`` (before the
nanny acts, :data:`~daskscore.worker.deadline.GRACE_S` after the deadline), and in a healthy
process practically never: each ``run()`` starting more than :data:`REARM_S` after the arming
pushes it back, and it is cancelled when the task ends.

Whoever records the timeout reads the dump (:func:`read_dump`), writes it whole into the
worker's error log, and puts the ``run()`` thread's frames of the code folder, with their source
lines, into the try's error text (:func:`timeout_error`), which travels to the driver in the
ledger or the relay note.
"""

from __future__ import annotations

import faulthandler
import linecache
import os
import re
import time
from pathlib import Path

#: The dump is taken this long after the deadline: the watchdog acts at the deadline, the nanny
#: :data:`~daskscore.worker.deadline.GRACE_S` (2 s) after it.
DUMP_AFTER_S = 1.0
#: A timer armed less than this long before a ``run()`` starts still serves it.
REARM_S = 0.5
#: Frames of the ``run()`` thread shown in the error text, innermost last.
SHOWN_FRAMES = 8

_THREAD = re.compile(r"^(?:Current thread|Thread) (0x[0-9a-fA-F]+)")
_FRAME = re.compile(r'^\s+File "(.*)", line (\d+) in (.*)$')

Frame = tuple[str, int, str]


class StackDump:
    """The dump file of one worker process, and the one-shot timer that fills it.

    ``faulthandler`` has one timer per process: a second job installed in the same process
    shares it (the newest arming wins).
    """

    def __init__(self, folder: str | Path) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        self.path = Path(folder) / f"stacks-{os.getpid()}-{id(self):x}.txt"
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND
        self.fd: int | None = os.open(self.path, flags, 0o644)
        #: when the timer was armed (``time.monotonic()``), and when it fires
        self.armed_at = self.fires_at = 0.0

    def arm(self, timeout: float) -> None:
        """A ``run()`` call with this timeout starts now."""
        if self.fd is None:
            return
        now = time.monotonic()
        if now - self.armed_at <= REARM_S and now < self.fires_at:
            return  # the timer armed a moment ago fires after this call's deadline too
        try:
            os.ftruncate(self.fd, 0)  # (O_APPEND: the next dump starts the file)
            faulthandler.dump_traceback_later(timeout + DUMP_AFTER_S, file=self.fd)
        except (OSError, OverflowError, ValueError):  # a timeout past what the timer takes
            return
        self.armed_at, self.fires_at = now, now + timeout + DUMP_AFTER_S

    def disarm(self) -> None:
        """No ``run()`` call follows soon (the task ended)."""
        if self.fires_at:
            faulthandler.cancel_dump_traceback_later()
            self.armed_at = self.fires_at = 0.0

    def dump_now(self) -> str:
        """Dump every thread now, from a thread that holds the GIL (the watchdog), and return
        the text."""
        if self.fd is None:
            return ""
        self.disarm()
        os.ftruncate(self.fd, 0)
        faulthandler.dump_traceback(file=self.fd, all_threads=True)
        return read_dump(self.path)

    def close(self) -> None:
        self.disarm()
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)
            self.path.unlink(missing_ok=True)


def read_dump(path: str | Path | None, since: float | None = None) -> str:
    """The dump in ``path`` ("" when there is none, or, with ``since``, when it was written
    before that ``time.time()``: a dump of an earlier call)."""
    if not path:
        return ""
    try:
        if since is not None and os.stat(path).st_mtime < since - 1.0:
            return ""
        text = Path(path).read_text(encoding="utf-8", errors="backslashreplace")
    except OSError:
        return ""
    # (the timer's "Timeout (0:00:04)!" head counts from its arming, not the run() call's)
    return "\n".join(line for line in text.splitlines() if not line.startswith("Timeout ("))


def parse_dump(text: str) -> dict[int, list[Frame]]:
    """The threads of a ``faulthandler`` dump: their frames by thread id, innermost first."""
    threads: dict[int, list[Frame]] = {}
    frames: list[Frame] | None = None
    for line in text.splitlines():
        head = _THREAD.match(line)
        if head:
            frames = threads.setdefault(int(head.group(1), 16), [])
            continue
        frame = _FRAME.match(line)
        if frame and frames is not None:
            frames.append((frame.group(1), int(frame.group(2)), frame.group(3)))
    return threads


def run_frames(text: str, thread: int | None, code: str) -> list[Frame]:
    """The frames of the ``run()`` thread (``thread``; else the first thread in the code
    folder) that are in the code folder ``code``, outermost first; its innermost frame when
    none is."""
    threads = parse_dump(text)
    prefix = code.rstrip(os.sep) + os.sep
    frames = threads.get(thread or 0)
    if frames is None:
        frames = next((f for f in threads.values() if any(_mine(x, prefix) for x in f)), [])
    mine = [f for f in frames if _mine(f, prefix)]
    return list(reversed(mine or frames[:1]))


def _mine(frame: Frame, prefix: str) -> bool:
    return frame[0].startswith(prefix)


def timeout_error(text: str, thread: int | None, code: str, timeout: float) -> str:
    """The error text of a ``run()`` stopped for its timeout: the run() thread's frames in the
    code folder, as a traceback shows them, then one line naming the innermost (function, file,
    line, source); "" when the dump holds no frame of it."""
    frames = run_frames(text, thread, code)[-SHOWN_FRAMES:]
    if not frames:
        return ""
    lines = [
        "Stack of run() when it was stopped (most recent call last; every thread's: "
        "logs/user/error/):"
    ]
    source = ""
    for filename, lineno, name in frames:
        linecache.checkcache(filename)  # (a nanny lives long: the script may have changed)
        lines.append(f'  File "{filename}", line {lineno}, in {name}')
        source = linecache.getline(filename, lineno).strip()
        if source:
            lines.append(f"    {source}")
    filename, lineno, name = frames[-1]
    lines.append(
        f"run() exceeded retry_settings.timeout ({timeout:g} s) in {name} "
        f"({os.path.basename(filename)}, line {lineno}{': ' + source if source else ''}); "
        "the worker process was restarted"
    )
    return "\n".join(lines)


def on_timeout(
    dump: StackDump | None, thread: int | None, code: str, timeout: float
) -> tuple[str, str]:
    """For the watchdog ending a hung ``run()`` (it holds the GIL now): every thread's stack,
    and the try's error text made from the ``run()`` thread's frames; never raises."""
    try:
        text = dump.dump_now() if dump is not None else ""
        return text, timeout_error(text, thread, code, timeout)
    except Exception:  # noqa: BLE001 - the timeout is recorded all the same
        return "", ""
