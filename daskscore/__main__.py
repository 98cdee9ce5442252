"""``python -m daskscore`` is the ``daskscore`` command."""

from .cli import entry

entry()
