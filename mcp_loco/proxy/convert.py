"""The conversion the model was trained on: Anthropic messages to LocoOperator ChatML, its turn back to blocks.

Claude Code resends the whole history every turn, with the model's earlier turns as parsed blocks.
Rendering them back as JSON would not be byte-exact with what the model wrote, and the backend would
re-evaluate every earlier turn; `TurnMemory` keeps the model's exact text per turn (keyed by its
`toolu_` ids, or its text) so the rendered prompt only ever grows at the end. The llama.cpp backend
then finds its own token ids for that text (text written under a grammar need not tokenize back into
the same ids).
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mcp_loco.interfaces import Completion, Segment
from mcp_loco.model.protocol import MalformedCall, Message, ToolCall, format_call, parse_turn, render
from mcp_loco.proxy.wire import (
    DocumentBlock,
    ImageBlock,
    InMessage,
    MessagesRequest,
    TextBlock,
    ThinkingBlock,
    ToolDef,
    ToolResultBlock,
    ToolUseBlock,
    new_id,
)

# The trained system prompt (locooperator-protocol.md), verbatim when the request offers exactly its tools.
INTRO = (
    "You are a Claude agent, built on Anthropic's Claude Agent SDK.\n"
    "You are an interactive agent that helps users with software engineering tasks. "
    "Use the instructions below and the tools available to you to assist the user."
)
TRAINED_TOOLS = {
    "Read": "To read files use Read",
    "Glob": "To search for files use Glob",
    "Grep": "To search the content of files use Grep",
    "Bash": "To run shell commands use Bash",
    "Write": "To write files use Write",
    "Edit": "To edit files use Edit",
}
CALL_FORMAT = (
    "For each tool call, output a JSON object within <tool_call></tool_call> tags:\n"
    "<tool_call>\n"
    '{"name": <tool-name>, "arguments": <args-json-object>}\n'
    "</tool_call>\n\n"
    "Tool results will be provided in <tool_response></tool_response> tags."
)
_CWD = re.compile(r"^\s*Working directory:\s*(\S.*?)\s*$", re.MULTILINE)
_REMINDER = re.compile(r"\A\s*<system-reminder>.*</system-reminder>\s*\Z", re.DOTALL)
_SENTENCE = re.compile(r"(.+?[.!?])(\s|$)", re.DOTALL)


def _purpose(description: str) -> str:
    """The first sentence of a tool description, short."""
    text = " ".join(description.split())
    m = _SENTENCE.match(text)
    first = m.group(1) if m else text
    return first if len(first) <= 160 else first[:157] + "..."


def local_tools(tools: Sequence[ToolDef]) -> list[ToolDef]:
    """The tools the model can call: everything but Anthropic's server tools (web_search...), which run remotely."""
    return [t for t in tools if t.input_schema is not None or t.type in (None, "custom")]


def system_prompt(tools: Sequence[ToolDef], client_system: str) -> str:
    """The trained system prompt naming the request's tools, and the client's working directory."""
    names = [t.name for t in tools]
    parts = [INTRO]
    if tools:
        lines = [f" - {line}" for name, line in TRAINED_TOOLS.items() if name in names]
        lines += [f" - {t.name}: {_purpose(t.description)}" for t in tools if t.name not in TRAINED_TOOLS]
        parts += ["# Using your tools\n" + "\n".join(lines), CALL_FORMAT]
    cwd = _CWD.search(client_system)
    if cwd:
        parts.append(f"ENV: Working directory is {cwd.group(1)}")
    return "\n\n".join(parts)


def _note(block: ImageBlock | DocumentBlock) -> str:
    if isinstance(block, DocumentBlock):
        data = block.source.get("data")
        if block.source.get("type") == "text" and isinstance(data, str):
            return data
        return f"[document{' ' + repr(block.title) if block.title else ''}: not readable by this model]"
    return f"[image ({block.source.get('media_type', 'unknown type')}): not visible to this model]"


def tool_result_text(block: ToolResultBlock) -> str:
    """What the model sees inside <tool_response>: the text parts, notes for images, errors marked."""
    if isinstance(block.content, str):
        text = block.content
    else:
        text = "\n".join(p.text if isinstance(p, TextBlock) else _note(p) for p in block.content)
    if block.is_error:
        return f"Error: {text}" if text else "Error"
    return text


def turn_key(text: str, tool_ids: Sequence[str]) -> str:
    """How an assistant turn is recognised when the client sends it back."""
    if tool_ids:
        return "calls:" + " ".join(tool_ids)
    return "text:" + hashlib.sha256(text.strip().encode("utf-8", "surrogatepass")).hexdigest()


class TurnMemory:
    """The model's own turns, byte-exact, by turn key (least recently used forgotten)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._turns: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def remember(self, key: str, raw: str) -> None:
        """Keep what the model wrote for this turn."""
        if self.size <= 0:
            return
        with self._lock:
            self._turns[key] = raw
            self._turns.move_to_end(key)
            while len(self._turns) > self.size:
                self._turns.popitem(last=False)

    def recall(self, key: str) -> str | None:
        """What the model wrote, if this turn is one of its own."""
        with self._lock:
            raw = self._turns.get(key)
            if raw is None:
                self.misses += 1
                return None
            self._turns.move_to_end(key)
            self.hits += 1
            return raw


def assistant_text(content: str | Sequence[Any], memory: TurnMemory) -> str:
    """An assistant message as the model wrote it (remembered), or in the trained format."""
    if isinstance(content, str):
        blocks: Sequence[Any] = [TextBlock(type="text", text=content)]
    else:
        blocks = content
    text = "\n\n".join(b.text for b in blocks if isinstance(b, TextBlock))
    calls = [b for b in blocks if isinstance(b, ToolUseBlock)]
    own = memory.recall(turn_key(text, [c.id for c in calls]))
    if own is not None:
        return own
    parts = [text.strip()] if text.strip() else []
    parts += [format_call(c.name, c.input) for c in calls]
    return "\n".join(parts)


def _user_messages(content: str | Sequence[Any], drop_reminders: bool) -> list[Message]:
    if isinstance(content, str):
        return [Message("user", content)]
    results = [Message("tool", tool_result_text(b)) for b in content if isinstance(b, ToolResultBlock)]
    texts = [
        b.text if isinstance(b, TextBlock) else _note(b)
        for b in content
        if isinstance(b, TextBlock | ImageBlock | DocumentBlock)
    ]
    kept = [t for t in texts if not (drop_reminders and _REMINDER.match(t))]
    if not kept and not results:
        kept = texts  # a turn of nothing but reminders: keep them rather than send an empty turn
    out = results
    if kept:
        out.append(Message("user", "\n\n".join(kept)))
    return out


@dataclass(frozen=True)
class LocalPrompt:
    """A request rendered for the local model."""

    segments: list[Segment]
    prefill: str
    """The start of the assistant's turn given by the client ('' when none)."""
    assistant_turns: int


def to_prompt(req: MessagesRequest, memory: TurnMemory, drop_reminders: bool = True) -> LocalPrompt:
    """Render a Messages request as the trained ChatML prompt."""
    messages = [Message("system", system_prompt(local_tools(req.tools), req.system_text()))]
    history: list[InMessage] = list(req.messages)
    prefill = ""
    if history[-1].role == "assistant":
        last = history.pop()
        prefill = (
            last.content
            if isinstance(last.content, str)
            else "".join(b.text for b in last.content if isinstance(b, TextBlock))
        )
    for m in history:
        if m.role == "assistant":
            blocks = (
                m.content if isinstance(m.content, str) else [b for b in m.content if not isinstance(b, ThinkingBlock)]
            )
            messages.append(Message("assistant", assistant_text(blocks, memory)))
        else:
            messages += _user_messages(m.content, drop_reminders)
    segments = render(messages)
    if prefill:
        segments.append(Segment(prefill))
    turns = sum(1 for m in req.messages if m.role == "assistant")
    return LocalPrompt(segments, prefill, turns)


@dataclass(frozen=True)
class Reply:
    """The model's turn as Anthropic content blocks."""

    blocks: list[dict[str, Any]]
    stop_reason: str
    text: str
    """The text block's content ('' when there is none)."""


def to_reply(completion: Completion, prompt: LocalPrompt, memory: TurnMemory, *, calls_allowed: bool = True) -> Reply:
    """Parse the model's turn into text and tool_use blocks, and remember it byte-exact."""
    # With a prefill the reply is its continuation only, as the Messages API answers.
    parsed = parse_turn(completion.text)
    calls = [c for c in parsed.calls if isinstance(c, ToolCall)] if calls_allowed else []
    # A call that does not parse (or is not allowed) goes back as text: never silently dropped.
    leftover = [c.raw for c in parsed.calls if isinstance(c, MalformedCall) or not calls_allowed]
    text = "\n\n".join(p for p in [parsed.text, *leftover] if p)
    blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    ids = [new_id("toolu_") for _ in calls]
    blocks += [
        {"type": "tool_use", "id": i, "name": c.name, "input": c.arguments} for i, c in zip(ids, calls, strict=True)
    ]
    if calls:
        stop = "tool_use"
    elif completion.finish_reason == "length":
        stop = "max_tokens"
    else:
        stop = "end_turn"
    if blocks and not prompt.prefill:
        memory.remember(turn_key(text, ids), completion.text)
    return Reply(blocks, stop, text)


def usage(completion: Completion) -> dict[str, int]:
    """Token counts as Anthropic reports them: the reused prefix is a cache read."""
    u = completion.usage
    return {
        "input_tokens": u.prompt_tokens_evaluated,
        "cache_read_input_tokens": max(0, u.prompt_tokens - u.prompt_tokens_evaluated),
        "cache_creation_input_tokens": 0,
        "output_tokens": u.completion_tokens,
    }
