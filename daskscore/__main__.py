"""``python -m daskscore`` is the ``daskscore`` command."""

from daskscore.cli import entry

entry()
