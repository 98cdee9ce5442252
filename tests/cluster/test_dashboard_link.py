"""Whether a client's scheduler serves a dashboard (its link is printed and the daskscore
page installed): a page that is slow to answer (bokeh renders it; on a busy machine it took
over 2 s, and the link was dropped) is served; one not found, or a refused connection, is not.
Real HTTP servers on 127.0.0.1, port 0."""

from __future__ import annotations

import contextlib
import http.server
import threading
import time
import types
from collections.abc import Iterator
from typing import Any

import pytest

from daskscore.cluster import local


@contextlib.contextmanager
def _serving(status: int, delay: float) -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - (the handler's name)
            time.sleep(delay)
            self.send_response(status)
            self.end_headers()
            self.wfile.write(b"page")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/status"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("status", "delay", "served"),
    [(200, 0.0, True), (200, 2.5, True), (404, 0.0, False)],
    ids=["quick", "slow", "not-found"],
)
def test_a_slow_dashboard_is_still_linked(
    monkeypatch: pytest.MonkeyPatch, status: int, delay: float, served: bool
) -> None:
    monkeypatch.setattr(local, "DASHBOARD_ANSWER_S", 0.2, raising=False)
    with _serving(status, delay) as link:
        client = types.SimpleNamespace(dashboard_link=link)
        assert local.dashboard_link(client) == (link if served else None)  # type: ignore[arg-type]


def test_no_server_means_no_link() -> None:
    with _serving(200, 0.0) as link:
        pass  # (closed: nothing listens there now)
    client = types.SimpleNamespace(dashboard_link=link)
    assert local.dashboard_link(client) is None  # type: ignore[arg-type]
