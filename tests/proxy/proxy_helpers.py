"""Helpers for the proxy tests: a real uvicorn server in a thread, the fake upstream's answers, test settings."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette

from mcp_loco.config import ModelSettings, ProxySettings, Settings

HAIKU = "claude-haiku-4-5-20251001"


@contextmanager
def serve_app(app: Starlette) -> Iterator[str]:
    """Run an ASGI app under uvicorn on a free loopback port; yield its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="on"))
    thread = threading.Thread(target=server.run, name="test-proxy", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:  # uvicorn offers no event to wait on
        assert thread.is_alive(), "the proxy did not start (see the log above)"
        assert time.monotonic() < deadline, "the proxy took over 60 s to start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@dataclass
class Seen:
    """One request the fake upstream received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


@dataclass
class FakeUpstream:
    """A stand-in for api.anthropic.com that records what it receives and answers as told."""

    url: str
    seen: list[Seen] = field(default_factory=list)
    status: int = 200
    body: dict[str, Any] = field(default_factory=dict)
    events: list[bytes] = field(default_factory=list)
    """When set, the answer is this event stream, one write per item."""
    gate: threading.Event | None = None
    """When set, the stream waits on it after its first event."""


def upstream_message(text: str) -> dict[str, Any]:
    """A Messages API answer as the upstream would give it."""
    return {
        "id": "msg_upstream",
        "type": "message",
        "role": "assistant",
        "model": "claude-upstream",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 3, "output_tokens": 2},
    }


def upstream_events(text: str) -> list[bytes]:
    """The same answer as server-sent events, one event per item."""

    def ev(name: str, data: dict[str, Any]) -> bytes:
        return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()

    msg = {**upstream_message(""), "content": [], "stop_reason": None}
    return [
        ev("message_start", {"type": "message_start", "message": msg}),
        ev(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        ev(
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
        ),
        ev("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ev(
            "message_delta",
            {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}},
        ),
        ev("message_stop", {"type": "message_stop"}),
    ]


def proxy_settings(**proxy: Any) -> Settings:
    """Settings for a proxy under test: greedy sampling, the given proxy keys."""
    return Settings(model=ModelSettings(temperature=0.0, max_tokens=64), proxy=ProxySettings(**proxy))
