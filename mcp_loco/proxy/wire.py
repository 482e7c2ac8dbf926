"""The Anthropic Messages API as the proxy reads it: request models, ids, and error bodies."""

from __future__ import annotations

import json
import secrets
import string
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import JSONResponse

_ALPHABET = string.ascii_letters + string.digits


class ApiError(Exception):
    """A request the proxy refuses; becomes an Anthropic-style error body."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


def error_body(kind: str, message: str) -> dict[str, Any]:
    """`{"type": "error", "error": {...}}` as the Anthropic API writes it."""
    return {"type": "error", "error": {"type": kind, "message": message}}


def error_response(status: int, kind: str, message: str) -> JSONResponse:
    """An Anthropic-style error with its HTTP status."""
    return JSONResponse(error_body(kind, message), status_code=status)


def invalid(message: str) -> ApiError:
    """A 400 invalid_request_error."""
    return ApiError(400, "invalid_request_error", message)


def new_id(prefix: str) -> str:
    """An id shaped like Anthropic's (`msg_01...`, `toolu_01...`)."""
    return prefix + "01" + "".join(secrets.choice(_ALPHABET) for _ in range(22))


class _Loose(BaseModel):
    # Fields we do not use (cache_control, citations, metadata...) are accepted and ignored.
    model_config = ConfigDict(extra="allow")


class TextBlock(_Loose):
    """A text block."""

    type: Literal["text"]
    text: str


class ImageBlock(_Loose):
    """An image block (the local model cannot see it; it is rendered as a note)."""

    type: Literal["image"]
    source: dict[str, Any] = Field(default_factory=dict)


class DocumentBlock(_Loose):
    """A document block (rendered as its text when it is plain text, else as a note)."""

    type: Literal["document"]
    source: dict[str, Any] = Field(default_factory=dict)
    title: str | None = None


class ToolUseBlock(_Loose):
    """A tool call the assistant made."""

    type: Literal["tool_use"]
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    input: dict[str, Any] = Field(default_factory=dict)


ResultPart = Annotated[TextBlock | ImageBlock | DocumentBlock, Field(discriminator="type")]


class ToolResultBlock(_Loose):
    """A tool's answer, sent back in a user message."""

    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1)
    content: str | list[ResultPart] = ""
    is_error: bool = False


class ThinkingBlock(_Loose):
    """Another model's thinking (not shown to the local model)."""

    type: Literal["thinking", "redacted_thinking"]


Block = Annotated[
    TextBlock | ImageBlock | DocumentBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock,
    Field(discriminator="type"),
]


class InMessage(_Loose):
    """One message of the conversation."""

    role: Literal["user", "assistant"]
    content: str | list[Block]


class ToolDef(_Loose):
    """A tool offered to the model."""

    name: str = Field(min_length=1)
    description: str = ""
    input_schema: dict[str, Any] | None = None
    type: str | None = None
    """Set for Anthropic's server tools (web_search...), which have no schema and cannot run locally."""


class MessagesRequest(_Loose):
    """`POST /v1/messages`."""

    model: str = Field(min_length=1)
    messages: list[InMessage] = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    system: str | list[TextBlock] | None = None
    tools: list[ToolDef] = Field(default_factory=list)
    tool_choice: dict[str, Any] | None = None
    stream: bool = False
    stop_sequences: list[str] = Field(default_factory=list)

    def system_text(self) -> str:
        """The client's system prompt as one string."""
        if self.system is None:
            return ""
        if isinstance(self.system, str):
            return self.system
        return "\n\n".join(b.text for b in self.system)


class CountTokensRequest(MessagesRequest):
    """`POST /v1/messages/count_tokens` (no max_tokens)."""

    max_tokens: int = 1


MAX_DEPTH = 128
"""Deepest nesting of arrays and objects a request body may have (Claude Code's stay far below it)."""


def parse_json(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 saying what is wrong with it."""
    data = parse_any_json(body)
    if not isinstance(data, dict):
        raise invalid(f"the request body must be a JSON object, not {type(data).__name__}")
    return data


def parse_any_json(body: bytes) -> Any:
    """Any JSON value that is safe to work on (bounded nesting, text that encodes), or a 400."""
    try:
        data = json.loads(body, parse_constant=_no_constant)
    except RecursionError:
        raise invalid(f"the request body nests arrays or objects deeper than {MAX_DEPTH} levels") from None
    except UnicodeDecodeError as e:
        raise invalid(f"the request body is not valid JSON: it is not UTF-8 text ({e})") from None
    except ValueError as e:  # JSONDecodeError, and a number too long to convert (over 4300 digits)
        raise invalid(f"the request body is not valid JSON: {e}") from None
    _check_tree(data)
    return data


def _no_constant(name: str) -> Any:
    # Python reads NaN and Infinity, which JSON has not: refuse them rather than pass them on.
    raise ValueError(f"{name} is not a JSON value (JSON numbers are finite)")


def _check_tree(data: Any) -> None:
    """Refuse nesting past MAX_DEPTH and strings that cannot be encoded (lone surrogates from `\\ud800` escapes)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            _encodable(value)
            continue
        if not isinstance(value, dict | list):
            continue
        if depth > MAX_DEPTH:
            raise invalid(f"the request body nests arrays or objects deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            for key in value:
                _encodable(key)
            stack.extend((v, depth + 1) for v in value.values())
        else:
            stack.extend((v, depth + 1) for v in value)


def _encodable(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise invalid(
            "the request body holds a string with a lone surrogate (an unpaired \\ud800-\\udfff escape), "
            "which is not text: send valid UTF-16 pairs"
        ) from None


def validation_message(e: ValidationError) -> str:
    """The first few problems of a request, each with where it is."""
    parts = []
    for err in e.errors()[:3]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    more = len(e.errors()) - 3
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def validate_request(data: dict[str, Any], cls: type[MessagesRequest]) -> MessagesRequest:
    """Check a request against the Messages API, or a 400 naming the fields."""
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise invalid(validation_message(e)) from None
