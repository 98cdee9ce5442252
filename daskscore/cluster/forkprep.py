"""Imported last by the embedded cluster's fork server (see
:data:`daskscore.cluster.forkserver.FORKSERVER_PRELOAD`), never by anything else: it imports
the scoring script's libraries named in :data:`~daskscore.cluster.forkserver.PRELOAD_ENV` and
readies the server to fork workers (:func:`daskscore.cluster.forkserver.ready_server`)."""

from __future__ import annotations

import os

from daskscore.cluster.forkserver import PRELOAD_ENV, ready_server

ready_server([name for name in os.environ.pop(PRELOAD_ENV, "").split(",") if name])
