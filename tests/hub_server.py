"""A Hugging Face Hub on 127.0.0.1: the tree API, `resolve/` redirecting to a CDN path, HTTP Range, and a
connection that drops midway on request (point HF_ENDPOINT at it)."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

PAGE = 3  # entries per tree page, so the Link pagination is exercised


@dataclass
class Served:
    """One file request as the server saw it."""

    path: str
    range: str | None
    status: int
    sent: int


@dataclass
class HubState:
    repos: dict[str, dict[str, bytes]]
    drop_after: int | None = None
    """Send this many body bytes of the next file answer, then close the connection (once)."""
    ignore_range: bool = False
    published: dict[str, str] = field(default_factory=dict)
    """sha256 to publish instead of the real one, by file name (a Hub that lies, or a changed file)."""
    served: list[Served] = field(default_factory=list)


def git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def tree(state: HubState, repo: str) -> list[dict[str, Any]]:
    out = []
    for name, data in state.repos[repo].items():
        entry: dict[str, Any] = {"type": "file", "path": name, "size": len(data), "oid": git_oid(data)}
        if name.endswith(".gguf"):
            sha = state.published.get(name) or hashlib.sha256(data).hexdigest()
            entry["lfs"] = {"oid": sha, "size": len(data), "pointerSize": 134}
        out.append(entry)
    return [{"type": "directory", "path": "docs", "oid": "0" * 40, "size": 0}, *out]


class _Handler(BaseHTTPRequestHandler):
    server: _Hub
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        state = self.server.state
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/main", url.path)
        if m:
            repo = unquote(m.group(1))
            if repo not in state.repos:
                self._answer(404, b'{"error": "Repository not found"}')
                return
            cursor = int(parse_qs(url.query).get("cursor", ["0"])[0])
            entries = tree(state, repo)
            headers = {}
            if cursor + PAGE < len(entries):
                headers["Link"] = f'<{self._base()}{url.path}?recursive=true&cursor={cursor + PAGE}>; rel="next"'
            self._answer(200, json.dumps(entries[cursor : cursor + PAGE]).encode(), headers)
            return
        m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/main/(.+)", url.path)
        if m:  # the Hub redirects file downloads to its CDN
            self._answer(302, b"", {"Location": f"{self._base()}/cdn/{m.group(1)}/{m.group(2)}"})
            return
        m = re.fullmatch(r"/cdn/([^/]+/[^/]+)/(.+)", url.path)
        if m:
            self._file(unquote(m.group(1)), unquote(m.group(2)))
            return
        self._answer(404, b"not found")

    def _base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def _file(self, repo: str, name: str) -> None:
        state = self.server.state
        data = state.repos.get(repo, {}).get(name)
        wanted = self.headers.get("Range")
        if data is None:
            self._answer(404, b"Entry not found")
            return
        start = 0
        status = 200
        m = re.fullmatch(r"bytes=(\d+)-", wanted or "")
        if m and not state.ignore_range:
            start, status = int(m.group(1)), 206
            if start >= len(data):
                state.served.append(Served(self.path, wanted, 416, 0))
                self._answer(416, b"", {"Content-Range": f"bytes */{len(data)}"})
                return
        body = data[start:]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        drop, state.drop_after = state.drop_after, None
        sent = body if drop is None else body[:drop]
        self.wfile.write(sent)
        self.wfile.flush()
        state.served.append(Served(self.path, wanted, status, len(sent)))
        if drop is not None:  # the connection breaks midway
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True

    def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class _Hub(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: HubState) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state


@contextmanager
def hub_server(state: HubState) -> Iterator[str]:
    """Serve `state` on a free loopback port; yield the endpoint URL (for HF_ENDPOINT)."""
    server = _Hub(state)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
