"""Helpers for the proxy tests: a real uvicorn server in a thread, the fake upstream's answers, test settings."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import uvicorn
from starlette.applications import Starlette

from mcp_loco.config import ModelSettings, ProxySettings, Settings
from mcp_loco.interfaces import Completion, GenerateOptions, Prompt, Usage
from mcp_loco.model.backends.replay import estimate_tokens
from mcp_loco.model.protocol import format_call, prompt_text

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


CLAUDE = Path(__file__).parents[1] / "clients/node_modules/.bin/claude"
MARKER = "MARKER-7d1f"


def claude_env(home: Path, base_url: str) -> dict[str, str]:
    """Offline Claude Code in an isolated HOME, every request to the proxy."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MCP_LOCO_", "ANTHROPIC_", "CLAUDE_"))}
    home.mkdir(exist_ok=True)
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        ANTHROPIC_BASE_URL=base_url,
        ANTHROPIC_API_KEY="anything",
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        DISABLE_AUTOUPDATER="1",
        DISABLE_TELEMETRY="1",
        DISABLE_ERROR_REPORTING="1",
    )
    return env


def run_claude(
    claude: Path, prompt: str, env: dict[str, str], cwd: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(claude), "-p", prompt, "--model", "haiku", *args],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


class FileReader:
    """A deterministic model: asks to Read a file when it may, then answers with what Claude Code read for it."""

    n_ctx = 32768

    def __init__(self, path: Path) -> None:
        self.path = path
        self.prompts: list[str] = []
        self.lock = threading.Lock()

    def count_tokens(self, prompt: Prompt) -> int:
        return estimate_tokens(prompt_text(prompt))

    def complete(self, prompt: Prompt, options: GenerateOptions, cancel: threading.Event | None = None) -> Completion:
        text = prompt_text(prompt)
        with self.lock:
            self.prompts.append(text)
        last_user = text.rsplit("<|im_start|>user\n", 1)[-1]
        if "<tool_response>" in last_user:
            answer = f"The marker is {MARKER}." if MARKER in last_user else "The file did not hold the marker."
        elif options.grammar is not None and '"\\"Read\\""' in options.grammar:
            answer = "Reading it.\n" + format_call("Read", {"file_path": str(self.path)})
        else:
            answer = "ok"  # Claude Code's side requests offer no tools
        if options.on_text is not None:
            options.on_text(answer)
        return Completion(
            answer, Usage(prompt_tokens=self.count_tokens(prompt), completion_tokens=estimate_tokens(answer))
        )

    def close(self) -> None:
        pass


CLIENTS: list[anthropic.Anthropic] = []
"""SDK clients made by `sdk`, closed after each test (conftest)."""


def sdk(base_url: str, **options: Any) -> anthropic.Anthropic:
    """The official SDK pointed at the proxy: any key, no retries (a failure shows at once)."""
    client = anthropic.Anthropic(base_url=base_url, **{"api_key": "k", "max_retries": 0, **options})
    CLIENTS.append(client)
    return client
