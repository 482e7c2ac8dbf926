"""Model instances: conversations stick to one; the HTTP backend streams through the proxy too."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import httpx
import pytest
from proxy_helpers import HAIKU

from mcp_loco.config import HttpSettings
from mcp_loco.interfaces import ChatModel
from mcp_loco.model.backends.openai_compat import OpenAICompatModel
from mcp_loco.model.backends.replay import ReplayModel
from mcp_loco.proxy.convert import TurnMemory, to_prompt
from mcp_loco.proxy.local import LocalModels
from mcp_loco.proxy.wire import MessagesRequest


def prompt_for(question: str, turns: int = 0) -> Any:
    messages: list[dict[str, Any]] = [{"role": "user", "content": question}]
    for i in range(turns):
        messages += [{"role": "assistant", "content": f"a{i}"}, {"role": "user", "content": f"u{i}"}]
    req = MessagesRequest.model_validate({"model": HAIKU, "max_tokens": 5, "messages": messages})
    return to_prompt(req, TurnMemory(0)).segments


def test_a_conversation_keeps_its_instance_and_new_ones_spread() -> None:
    made: list[ChatModel] = []

    def factory() -> ChatModel:
        made.append(ReplayModel([]))
        return made[-1]

    models = LocalModels(factory, parallel=2)
    models.load()
    assert len(made) == 2

    async def lent(prompt: Any) -> ChatModel:
        async with models.lease(prompt) as model:
            return model

    async def main() -> list[ChatModel]:
        first = await lent(prompt_for("where is main?"))
        second = await lent(prompt_for("what does config do?"))
        again = await lent(prompt_for("where is main?", turns=3))  # the same conversation, later
        return [first, second, again]

    first, second, again = anyio.run(main)
    assert first is not second and again is first


@pytest.fixture
def completions_server() -> Iterator[tuple[str, threading.Event]]:
    """An OpenAI-compatible /v1/completions server that streams three pieces, waiting after the first."""
    gate = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("connection", "close")
            self.end_headers()
            chunks: list[dict[str, Any]] = [{"choices": [{"text": t}]} for t in ("Hello", " from", " HTTP")]
            chunks.append(
                {
                    "choices": [{"text": "", "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 40, "completion_tokens": 3},
                }
            )
            for i, chunk in enumerate(chunks):
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
                if i == 0:
                    gate.wait(30)
            self.wfile.write(b"data: [DONE]\n\n")
            self.close_connection = True

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", gate
    finally:
        gate.set()
        server.shutdown()
        server.server_close()


def test_the_http_backend_streams_text_as_its_server_does(
    run_proxy, completions_server: tuple[str, threading.Event]
) -> None:
    endpoint, gate = completions_server
    url = run_proxy(OpenAICompatModel(HttpSettings(endpoints=[endpoint], retries=0, n_ctx=4096)), upstream="")
    ask = {"model": HAIKU, "max_tokens": 20, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with httpx.stream("POST", f"{url}/v1/messages", json=ask) as r:
        lines = r.iter_lines()
        for line in lines:
            if '"text_delta"' in line:
                # The server holds the rest back until this first piece has reached the client.
                assert '"text": "Hello"' in line
                gate.set()
                break
        rest = "\n".join(lines)
    assert '"text": " from"' in rest or '"text": " from HTTP"' in rest
    assert '"stop_reason": "end_turn"' in rest and "message_stop" in rest
