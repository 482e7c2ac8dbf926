"""Escalation: an OpenAI-compatible chat endpoint (e.g. a cloud model) takes over the same conversation."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any

import httpx
import structlog

from mcp_loco.config import EscalationSettings
from mcp_loco.errors import BackendError, Cancelled, ConfigError
from mcp_loco.protocol import Message

log = structlog.get_logger("mcp_loco.escalation")


def to_chat(messages: Sequence[Message]) -> list[dict[str, str]]:
    """Chat messages carrying the same text protocol: tool results become one user turn of <tool_response> blocks."""
    out: list[dict[str, str]] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            blocks = "\n".join(f"<tool_response>\n{text}\n</tool_response>" for text in pending)
            out.append({"role": "user", "content": blocks})
            pending.clear()

    for m in messages:
        if m.role == "tool":
            pending.append(m.content)
            continue
        flush()
        out.append({"role": m.role, "content": m.content})
    flush()
    return out


class ChatFallback:
    """Calls `{endpoint}/chat/completions`, streaming so a cancel or the deadline stops it promptly."""

    def __init__(self, settings: EscalationSettings, transport: httpx.BaseTransport | None = None) -> None:
        if not settings.endpoint:
            raise ConfigError("escalation.endpoint is empty: set it to an OpenAI-compatible base URL")
        self.settings = settings
        headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        self._client = httpx.Client(
            base_url=settings.endpoint.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(settings.timeout_s, connect=10.0),
            transport=transport,
        )

    def close(self) -> None:
        """Close the HTTP client."""
        self._client.close()

    def __call__(self, messages: Sequence[Message], stop: threading.Event) -> str:
        """The fallback model's next turn, as raw text."""
        body: dict[str, Any] = {"messages": to_chat(messages), "stream": True, "temperature": 0.2}
        if self.settings.model:
            body["model"] = self.settings.model
        parts: list[str] = []
        try:
            with self._client.stream("POST", "/chat/completions", json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    raise BackendError(
                        f"escalation endpoint {self.settings.endpoint} answered {response.status_code}: "
                        f"{response.text[:300]}"
                    )
                for line in response.iter_lines():
                    if stop.is_set():
                        break
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    try:
                        chunk = json.loads(data)
                        delta = chunk["choices"][0].get("delta") or {}
                    except (json.JSONDecodeError, KeyError, IndexError, TypeError):
                        continue
                    parts.append(delta.get("content") or "")
        except httpx.HTTPError as e:
            raise BackendError(f"escalation endpoint {self.settings.endpoint} failed: {e}") from None
        parent = getattr(stop, "parent", None)
        if parent is not None and parent.is_set():
            raise Cancelled("cancelled during escalation")
        return "".join(parts)
