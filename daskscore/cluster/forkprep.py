"""Imported last by the embedded cluster's fork server (see
:data:`daskscore.cluster.forkserver.FORKSERVER_PRELOAD`), never by anything else: it readies
the server to fork workers (:func:`daskscore.cluster.forkserver.prepare_to_fork`)."""

from __future__ import annotations

from daskscore.cluster.forkserver import prepare_to_fork

prepare_to_fork()
