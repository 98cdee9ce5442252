"""``python -m daskscore.cli`` is the ``daskscore`` command too."""

from daskscore.cli import entry

entry()
