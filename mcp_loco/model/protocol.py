"""The LocoOperator prompt format: render turns as Qwen3 ChatML, parse `<tool_call>` blocks back.

Rendering is append-only and keeps every message byte-exact, so a backend can reuse its prefix
cache turn after turn. Only the template's own markers are special segments: `<|im_start|>`,
`<|im_end|>`, the `<tool_response>` wrappers, and the `<tool_call>` tags in the system prompt and
in the assistant's own turns (Qwen3's vocabulary has one token for each, which is what the model
was trained on and what it generates). Content from anywhere else (repository text above all) is
plain text and can never become a control or marker token.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mcp_loco.interfaces import Message as Message  # the prompt format speaks of messages too
from mcp_loco.interfaces import Role, Segment
from mcp_loco.model.grammar import TOOL_CALL_CLOSE, TOOL_CALL_OPEN

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
RESPONSE_OPEN = "<tool_response>"
RESPONSE_CLOSE = "</tool_response>"
CALL_FORMAT_HINT = (
    'write exactly one JSON object {"name": <tool name>, "arguments": {<argument>: <value>, ...}} '
    "between <tool_call> and </tool_call>"
)


def _turn(role: str, parts: Iterable[Segment]) -> list[Segment]:
    # The role line is its own segment so that the generation prompt tokenizes the same way
    # before and after the assistant's reply is appended (token-level append-only).
    return [Segment(IM_START, True), Segment(f"{role}\n"), *parts, Segment(IM_END, True), Segment("\n")]


def _content(text: str) -> list[Segment]:
    return [Segment(text)] if text else []


_CALL_TAGS = re.compile(f"({re.escape(TOOL_CALL_OPEN)}|{re.escape(TOOL_CALL_CLOSE)})")


def _with_call_tags(text: str) -> list[Segment]:
    """Trusted text (system prompt, assistant turns) with its `<tool_call>` tags as special segments."""
    return [Segment(part, part in (TOOL_CALL_OPEN, TOOL_CALL_CLOSE)) for part in _CALL_TAGS.split(text) if part]


def chat_turns(messages: Sequence[Message]) -> list[tuple[Role, list[Segment]]]:
    """The ChatML turns: one per message, consecutive tool results merged into one user turn of
    `<tool_response>` blocks (what the model was trained on; escalation sends the same turns)."""
    out: list[tuple[Role, list[Segment]]] = []
    i = 0
    while i < len(messages):
        msg = messages[i]
        if msg.role != "tool":
            trusted = msg.role in ("system", "assistant")
            out.append((msg.role, _with_call_tags(msg.content) if trusted else _content(msg.content)))
            i += 1
            continue
        parts: list[Segment] = []
        while i < len(messages) and messages[i].role == "tool":
            if parts:
                parts.append(Segment("\n"))
            parts += [
                Segment(RESPONSE_OPEN, True),
                Segment(f"\n{messages[i].content}\n"),
                Segment(RESPONSE_CLOSE, True),
            ]
            i += 1
        out.append(("user", parts))
    return out


def render(messages: Sequence[Message], add_generation_prompt: bool = True) -> list[Segment]:
    """Qwen3 ChatML: one turn per message; consecutive tool results merge into one user turn."""
    out: list[Segment] = []
    for role, parts in chat_turns(messages):
        out += _turn(role, parts)
    if add_generation_prompt:
        out += generation_prompt()
    return out


def generation_prompt() -> list[Segment]:
    """The segments that open the assistant's turn."""
    return [Segment(IM_START, True), Segment("assistant\n")]


def prompt_text(prompt: Iterable[Segment]) -> str:
    """The rendered prompt as one string."""
    return "".join(seg.text for seg in prompt)


def format_call(name: str, arguments: dict[str, Any]) -> str:
    """One tool call block in the trained format."""
    body = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    return f"{TOOL_CALL_OPEN}\n{body}\n{TOOL_CALL_CLOSE}"


# ---- parsing ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolCall:
    """A well-formed call."""

    name: str
    arguments: dict[str, Any]
    raw: str
    """The block as the model wrote it, tags included."""


@dataclass(frozen=True)
class MalformedCall:
    """A `<tool_call>` block that could not be read; `error` is the tool response the model gets."""

    raw: str
    error: str


@dataclass(frozen=True)
class ParsedTurn:
    """An assistant turn: its free text and its tool-call blocks, in order."""

    text: str
    calls: tuple[ToolCall | MalformedCall, ...] = field(default=())


_FENCE_OPEN = re.compile(r"\A\s*```[a-zA-Z0-9_-]*[ \t]*\n?")
_FENCE_CLOSE = re.compile(r"\n?[ \t]*```\s*\Z")
_FENCE_AT = re.compile(r"\s*```[a-zA-Z0-9_-]*[ \t]*\n?")
_ARG_KEYS = ("arguments", "input", "parameters", "args")
_MAX_GARBAGE = 16  # characters tolerated after the JSON object inside a block


class _BadCall(Exception):
    """A block that cannot be repaired; the message is addressed to the model."""


def _strip_fences(body: str) -> str:
    body = _FENCE_OPEN.sub("", body, count=1)
    return _FENCE_CLOSE.sub("", body, count=1).strip()


def _skip_spaces(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def _next_char(text: str, pos: int) -> str:
    j = _skip_spaces(text, pos)
    return text[j : j + 1]


def _in_string(text: str) -> tuple[list[bool], bool]:
    """For each character, whether it lies inside a JSON string (quotes included); and whether the text ends in one."""
    mask: list[bool] = []
    in_str = escaped = False
    for ch in text:
        if in_str:
            mask.append(True)
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_str = False
        else:
            in_str = ch == '"'
            mask.append(in_str)
    return mask, in_str


def _drop_trailing_commas(text: str) -> str:
    """Remove commas directly before a closing bracket, outside strings."""
    mask, _ = _in_string(text)
    return "".join(ch for i, ch in enumerate(text) if mask[i] or ch != "," or _next_char(text, i + 1) not in ("}", "]"))


def _close_brackets(text: str) -> str:
    """Append the closers of brackets left open at the end (a turn cut short)."""
    mask, ends_in_string = _in_string(text)
    stack: list[str] = []
    for ch, quoted in zip(text, mask, strict=True):
        if quoted:
            continue
        if ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]" and stack:
            stack.pop()
    if ends_in_string or not stack:
        return text
    return text + "".join(reversed(stack))


def _decode_object(body: str) -> Any:
    """Decode one JSON value, repairing trailing commas, short trailing garbage and missing closers."""
    decoder = json.JSONDecoder()
    first_error: json.JSONDecodeError | None = None
    for candidate in (body, _drop_trailing_commas(body), _close_brackets(_drop_trailing_commas(body))):
        try:
            value, end = decoder.raw_decode(candidate)
        except json.JSONDecodeError as e:
            first_error = first_error or e
            continue
        except (ValueError, RecursionError):  # a 5000-digit number, or nesting deeper than Python recurses
            raise _BadCall(
                f"your tool call was not valid JSON (too deeply nested or a number too long); {CALL_FORMAT_HINT}"
            ) from None
        garbage = candidate[end:].strip()
        if len(garbage) > _MAX_GARBAGE:
            raise _BadCall(
                f"your tool call has extra text after the JSON object ({garbage[:40]!r}...); {CALL_FORMAT_HINT}"
            )
        return value
    assert first_error is not None
    raise _BadCall(
        f"your tool call was not valid JSON: {first_error.msg} (line {first_error.lineno}, column {first_error.colno}); "
        f"{CALL_FORMAT_HINT}"
    )


def _to_call(body: str, raw: str) -> ToolCall:
    body = _strip_fences(body)
    if not body:
        raise _BadCall(f"your tool call was empty; {CALL_FORMAT_HINT}")
    obj = _decode_object(body)
    if isinstance(obj, dict) and isinstance(obj.get("function"), dict) and "name" not in obj:
        obj = obj["function"]  # OpenAI style {"type": "function", "function": {...}}
    if not isinstance(obj, dict):
        raise _BadCall(f"your tool call must be a JSON object, not {type(obj).__name__}; {CALL_FORMAT_HINT}")
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _BadCall(f'your tool call has no "name" (the tool to call); {CALL_FORMAT_HINT}')
    args: Any = next((obj[k] for k in _ARG_KEYS if k in obj), {})
    if isinstance(args, str):
        stripped = args.strip()
        if not stripped:
            args = {}
        else:
            try:
                args = _decode_object(_strip_fences(stripped))
            except _BadCall:
                raise _BadCall(
                    f'the "arguments" of your {name} call are a string that is not a JSON object; {CALL_FORMAT_HINT}'
                ) from None
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise _BadCall(f'the "arguments" of your {name} call must be a JSON object; {CALL_FORMAT_HINT}')
    return ToolCall(name=name.strip(), arguments=args, raw=raw)


def _scan_json_end(text: str, start: int) -> int | None:
    """End of the JSON object starting at `start` (after whitespace and an optional fence), or None."""
    fence = _FENCE_AT.match(text, start)
    pos = _skip_spaces(text, fence.end() if fence else start)
    if not text.startswith("{", pos):
        return None
    try:
        _, end = json.JSONDecoder().raw_decode(text, pos)
    except (ValueError, RecursionError):
        return None
    return end


def _block_end(text: str, body_start: int) -> tuple[int, int]:
    """Where the body of the block starting at `body_start` ends, and where the block ends."""
    # Prefer the JSON decoder's idea of where the object ends, so that `</tool_call>` inside an
    # argument string does not cut the block short.
    json_end = _scan_json_end(text, body_start)
    if json_end is not None:
        close = text.find(TOOL_CALL_CLOSE, json_end)
        between = text[json_end:close] if close >= 0 else ""
        if close >= 0 and len(between.strip()) <= _MAX_GARBAGE and TOOL_CALL_OPEN not in between:
            return close, close + len(TOOL_CALL_CLOSE)
    close = text.find(TOOL_CALL_CLOSE, body_start)
    nxt = text.find(TOOL_CALL_OPEN, body_start)
    if close >= 0 and (nxt < 0 or close < nxt):
        return close, close + len(TOOL_CALL_CLOSE)
    end = nxt if nxt >= 0 else len(text)  # missing closing tag: the block runs to the next one or the end
    return end, end


def _parse(text: str) -> ParsedTurn:
    free: list[str] = []
    calls: list[ToolCall | MalformedCall] = []
    pos = 0
    while (start := text.find(TOOL_CALL_OPEN, pos)) >= 0:
        free.append(text[pos:start])
        body_start = start + len(TOOL_CALL_OPEN)
        body_end, block_end = _block_end(text, body_start)
        raw = text[start:block_end]
        try:
            calls.append(_to_call(text[body_start:body_end], raw))
        except _BadCall as e:
            calls.append(MalformedCall(raw=raw, error=str(e)))
        pos = block_end
    free.append(text[pos:])
    return ParsedTurn(text="".join(free).strip(), calls=tuple(calls))


def parse_turn(text: str) -> ParsedTurn:
    """Split an assistant turn into free text and tool calls; never raises."""
    try:
        return _parse(text)
    except Exception as e:  # a parser bug must not end the exploration; the model gets told
        return ParsedTurn(
            text=text.strip(),
            calls=(
                MalformedCall(
                    raw=text, error=f"your tool call could not be read ({type(e).__name__}); {CALL_FORMAT_HINT}"
                ),
            )
            if TOOL_CALL_OPEN in text
            else (),
        )
