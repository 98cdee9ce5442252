"""Imported last by the embedded cluster's fork server (see
:data:`daskscore.workerfork.FORKSERVER_PRELOAD`), never by anything else: it readies the server
to fork workers (:func:`daskscore.workerfork.prepare_to_fork`)."""

from __future__ import annotations

from .workerfork import prepare_to_fork

prepare_to_fork()
