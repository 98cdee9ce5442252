"""``python -m daskscore`` is the ``daskscore`` command."""

import sys

from .cli import main

sys.exit(main())
