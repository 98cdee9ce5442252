"""``python -m daskscore`` is the ``daskscore`` command; :func:`entry` is its console script.

Importing what a command needs (Dask, pandas, the engine) takes the first half second or so.
A Ctrl-C then stops the command as it would later: one line says so, and the exit status is
130, with no traceback of the imports it cut short.  So this module imports nothing of
daskscore's until :func:`entry` runs (the package itself imports its names when first used).
"""

from __future__ import annotations

import os
import signal

#: What a Ctrl-C as the command starts says (a job's own Ctrl-C lines come later).
STARTING = (
    "daskscore: interrupted as the command started: nothing was run, and no output folder was "
    "changed.\n"
)


def entry() -> None:
    """The ``daskscore`` command: :func:`daskscore.cli.entry`, imported under a Ctrl-C that
    ends the command at once with :data:`STARTING` and the exit status 130."""
    try:
        from daskscore import cli
    except KeyboardInterrupt:
        interrupted_as_it_started()
    cli.entry()


def interrupted_as_it_started() -> None:
    """Say :data:`STARTING` and exit with 130, a second Ctrl-C ignored meanwhile."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        os.write(2, STARTING.encode())
    except OSError:  # (a closed pipe: said nowhere)
        pass
    os._exit(128 + signal.SIGINT)


if __name__ == "__main__":
    entry()
