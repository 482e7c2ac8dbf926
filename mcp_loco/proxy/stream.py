"""Server-sent events of the Messages API: text deltas as the model writes them, tool_use blocks once parsed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import structlog

from mcp_loco.model.grammar import TOOL_CALL_OPEN
from mcp_loco.proxy.convert import LocalPrompt, Reply, TurnMemory, to_reply, usage
from mcp_loco.proxy.local import Generation
from mcp_loco.proxy.wire import error_body

log = structlog.get_logger("mcp_loco.proxy.stream")


def sse(event: str, data: dict[str, Any]) -> bytes:
    """One event as the Messages API frames it."""
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def _pending_marker(text: str) -> int:
    """Length of the longest end of `text` that could be the start of `<tool_call>`."""
    for n in range(min(len(TOOL_CALL_OPEN) - 1, len(text)), 0, -1):
        if TOOL_CALL_OPEN.startswith(text[-n:]):
            return n
    return 0


class TextPreview:
    """The free text of a turn that is safe to show while it is generated.

    Held back: anything that may turn out to be `<tool_call>`, everything after it (calls become
    tool_use blocks), and leading or trailing whitespace (the final text block is stripped), so what
    was streamed is always a prefix of the final text block.
    """

    def __init__(self) -> None:
        self._seen = ""
        self._shown = ""
        self._closed = False

    @property
    def shown(self) -> str:
        """What has been streamed so far."""
        return self._shown

    def feed(self, piece: str) -> str:
        """Take new text; return what may be streamed now."""
        if self._closed or not piece:
            return ""
        self._seen += piece
        at = self._seen.find(TOOL_CALL_OPEN)
        if at >= 0:
            self._closed = True
            safe = self._seen[:at]
        else:
            safe = self._seen[: len(self._seen) - _pending_marker(self._seen)]
        safe = safe.strip()
        if not safe.startswith(self._shown):  # cannot happen: the text only grows at the end
            return ""
        new, self._shown = safe[len(self._shown) :], safe
        return new


async def stream_reply(
    gen: Generation,
    prompt: LocalPrompt,
    memory: TurnMemory,
    *,
    model: str,
    message_id: str,
    input_tokens: int,
    calls_allowed: bool,
    gone: Callable[[], Awaitable[bool]],
) -> AsyncIterator[bytes]:
    """The whole event stream of one local turn; the generation stops if the client goes away."""
    start: dict[str, Any] = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": 0},
    }
    yield sse("message_start", {"type": "message_start", "message": start})
    yield sse("ping", {"type": "ping"})
    preview = TextPreview()
    text_open = False
    try:
        async for piece in gen.pieces(gone):
            new = preview.feed(piece)
            if not new:
                continue
            if not text_open:
                text_open = True
                yield sse("content_block_start", _block_start(0, {"type": "text", "text": ""}))
            yield sse("content_block_delta", _text_delta(0, new))
    finally:
        await gen.stop()  # a no-op when it finished; when this task is cancelled (client gone), it stops the model
    try:
        completion = gen.result()
    except Exception as e:
        log.error("proxy.generation_failed", error=f"{type(e).__name__}: {e}")
        yield sse("error", error_body("api_error", f"the local model failed: {e}"))
        return
    if completion.finish_reason == "cancelled":
        return
    reply = to_reply(completion, prompt, memory, calls_allowed=calls_allowed)
    for event, data in _rest(reply, preview.shown, text_open):
        yield sse(event, data)
    final_usage = usage(completion)
    yield sse(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": reply.stop_reason, "stop_sequence": None},
            "usage": final_usage,
        },
    )
    yield sse("message_stop", {"type": "message_stop"})


def _block_start(index: int, block: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def _text_delta(index: int, text: str) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}


def _rest(reply: Reply, shown: str, text_open: bool) -> list[tuple[str, dict[str, Any]]]:
    """The events after the live text: the rest of the text block, then each tool_use block."""
    events: list[tuple[str, dict[str, Any]]] = []
    index = 0
    if reply.text or text_open:
        if not text_open:
            events.append(("content_block_start", _block_start(0, {"type": "text", "text": ""})))
        if reply.text.startswith(shown) and len(reply.text) > len(shown):
            events.append(("content_block_delta", _text_delta(0, reply.text[len(shown) :])))
        elif not reply.text.startswith(shown):
            log.warning("proxy.preview_mismatch", shown=shown[-80:], final=reply.text[-80:])
        events.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
        index = 1
    for block in reply.blocks:
        if block["type"] != "tool_use":
            continue
        head = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
        delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"], ensure_ascii=False)}
        events.append(("content_block_start", _block_start(index, head)))
        events.append(("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
        index += 1
    return events
