"""Escalation: an OpenAI-compatible chat endpoint (e.g. a cloud model) takes over the same conversation."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import httpx
import structlog

from mcp_loco.config import EscalationSettings
from mcp_loco.errors import BackendError, Cancelled, ConfigError
from mcp_loco.interfaces import Message, StopSignal
from mcp_loco.model.backends.openai_compat import wire_text
from mcp_loco.model.protocol import chat_turns

log = structlog.get_logger("mcp_loco.explore.escalation")


def to_chat(messages: Sequence[Message]) -> list[dict[str, str]]:
    """Chat messages carrying the same text protocol (tool results as one user turn of <tool_response> blocks).

    Text from files and the question goes through the HTTP backend's neutralising, so a `<|im_end|>` in a
    file stays text at the endpoint too; the protocol's own markers are sent as they are.
    """
    return [{"role": role, "content": wire_text(parts)} for role, parts in chat_turns(messages)]


def fallback_for(settings: EscalationSettings) -> ChatFallback | None:
    """The configured fallback model, or None when escalation has no endpoint."""
    return ChatFallback(settings) if settings.endpoint else None


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

    @property
    def name(self) -> str:
        """The model, else the endpoint."""
        return self.settings.model or self.settings.endpoint

    def close(self) -> None:
        """Close the HTTP client."""
        self._client.close()

    def next_turn(self, messages: Sequence[Message], stop: StopSignal) -> str:
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
        if stop.cancelled:
            raise Cancelled("cancelled during escalation")
        return "".join(parts)
