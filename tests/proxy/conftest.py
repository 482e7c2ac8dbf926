"""Fixtures: the proxy and a fake upstream, each a real HTTP server on 127.0.0.1 in this process."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from proxy_helpers import CLIENTS, FakeUpstream, Seen, proxy_settings, serve_app, upstream_message

from mcp_loco.interfaces import ChatModel
from mcp_loco.proxy import create_app


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    """A real HTTP server on 127.0.0.1 posing as the upstream Messages API."""
    fake = FakeUpstream(url="", body=upstream_message("from upstream"))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self) -> None:
            n = int(self.headers.get("content-length") or 0)
            fake.seen.append(
                Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(n))
            )
            if fake.events:
                self.send_response(fake.status)
                self.send_header("content-type", "text/event-stream")
                self.send_header("connection", "close")
                self.end_headers()
                for i, event in enumerate(fake.events):
                    self.wfile.write(event)
                    self.wfile.flush()
                    if i == 0 and fake.gate is not None:
                        fake.gate.wait(30)
                self.close_connection = True
                return
            data = json.dumps(fake.body).encode()
            self.send_response(fake.status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.send_header("request-id", "req_upstream_1")
            self.end_headers()
            self.wfile.write(data)

        do_POST = do_GET = _answer

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        if fake.gate is not None:
            fake.gate.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def run_proxy() -> Iterator[Callable[..., str]]:
    """Start a proxy over a given backend; returns its base URL."""
    with ExitStack() as stack:

        def start(model: ChatModel, **proxy: Any) -> str:
            app = create_app(proxy_settings(**proxy), lambda: model)
            return stack.enter_context(serve_app(app))

        yield start


@pytest.fixture(autouse=True)
def close_sdk_clients() -> Iterator[None]:
    """Every SDK client a test made is closed (an open socket is a ResourceWarning, an error here)."""
    yield
    while CLIENTS:
        CLIENTS.pop().close()
