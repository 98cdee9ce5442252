"""A small HTTP fault proxy for the storage tests: it forwards each request to an emulator on
127.0.0.1 (moto, Azurite), except those a rule matches, which get the rule's fault instead.

Use it in a ``with`` block; it binds port 0 and stops at the end of the block (a stalled
request is let go then)::

    with FaultProxy(info["port"]) as proxy:
        proxy.rules = [Rule("GET", r"/f05\\.txt", "truncate")]
        ... AWS_ENDPOINT_URL=proxy.url ...

A rule's ``action``: ``"500"`` / ``"503"`` (an S3-style XML error), ``"truncate"`` (the answer's
headers and half its body, then the connection closed), ``"stall"`` (no answer until the proxy
stops). ``times`` limits how many matching requests get the fault (None: all of them).
"""

from __future__ import annotations

import http.client
import re
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HOST = "127.0.0.1"


@dataclass
class Rule:
    method: str
    path: str  # a regular expression searched in the request's path (with its query)
    action: str
    times: int | None = None


class FaultProxy:
    """Forward to ``127.0.0.1:upstream``, with the faults of :attr:`rules`; :attr:`seen` holds
    ``(method, path, action or None)`` of each request, in order."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.rules: list[Rule] = []
        self.seen: list[tuple[str, str, str | None]] = []
        self.released = threading.Event()
        self._lock = threading.Lock()
        self._used: dict[int, int] = {}
        self._server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def fault_for(self, method: str, path: str) -> str | None:
        with self._lock:
            action = None
            for i, rule in enumerate(self.rules):
                if rule.method != method or not re.search(rule.path, path):
                    continue
                if rule.times is not None and self._used.get(i, 0) >= rule.times:
                    continue
                self._used[i] = self._used.get(i, 0) + 1
                action = rule.action
                break
            self.seen.append((method, path, action))
            return action

    def __enter__(self) -> FaultProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def handle_one(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                action = proxy.fault_for(self.command, self.path)
                if action in ("500", "503"):
                    code = "InternalError" if action == "500" else "SlowDown"
                    xml = f"<?xml version='1.0'?><Error><Code>{code}</Code></Error>".encode()
                    self.send_response(int(action))
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(xml)))
                    self.end_headers()
                    self.wfile.write(xml)
                    return
                if action == "stall":
                    proxy.released.wait()
                    self.close_connection = True
                    return
                upstream = http.client.HTTPConnection(HOST, proxy.upstream, timeout=60)
                try:
                    upstream.request(self.command, self.path, body=body, headers=dict(self.headers))
                    answer = upstream.getresponse()
                    data = answer.read()
                finally:
                    upstream.close()
                self.send_response_only(answer.status, answer.reason)
                skip = {"transfer-encoding", "connection", "server", "date", "content-length"}
                for name, value in answer.getheaders():
                    if name.lower() not in skip:
                        self.send_header(name, value)
                size = answer.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", size or str(len(data)))
                self.end_headers()
                if action == "truncate" and self.command == "GET" and len(data) > 1:
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_one

        self._server = ThreadingHTTPServer((HOST, 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
