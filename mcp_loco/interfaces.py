"""The seams between the parts: tools, prompts, models, escalation and the path oracle. Small types and Protocols only."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

from pydantic import BaseModel

# ---- tools -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolResult:
    """What one tool call gives back."""

    text: str
    """Exactly what the model sees inside <tool_response>."""
    ok: bool = True
    """False when the text is an error message."""
    paths: tuple[str, ...] = ()
    """Absolute paths whose content or name the result showed (files examined, citation evidence)."""
    lines: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    """For Read: the 1-based line span shown per path (evidence for path:line citations)."""


class Tools(Protocol):
    """A set of tools confined to one root."""

    @property
    def root(self) -> str:
        """The explored root, absolute and resolved."""
        ...

    @property
    def names(self) -> tuple[str, ...]:
        """Names of the tools on offer, e.g. ("Read", "Grep", "Glob", "Bash")."""
        ...

    def schemas(self) -> dict[str, dict[str, Any]]:
        """JSON schema of each offered tool's arguments (canonical names only), for the grammar."""
        ...

    def call(self, name: str, arguments: Any, cancel: threading.Event | None = None) -> ToolResult:
        """Run one call. Never raises: every failure is a ToolResult with ok=False."""
        ...


# ---- the path oracle ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PathInfo:
    """What the sandbox says about a path."""

    kind: Literal["file", "dir", "missing", "outside", "denied", "error"]
    lines: int | None = None
    reason: str = ""


class PathOracle(Protocol):
    """Answers, safely and inside the root, what a cited path is."""

    def inspect(self, path: str) -> PathInfo:
        """Classify an absolute path under the root (never follows links out of it, never raises)."""
        ...

    def text(self, path: str) -> str | None:
        """A file's text as the tools would show it, or None when they would not (never raises)."""
        ...


def is_within(path: str, base: str) -> bool:
    """True when `path` is `base` or lies below it (both absolute and normalised)."""
    return path == base or path.startswith(base.rstrip("/") + "/")


# ---- prompts ---------------------------------------------------------------------------------------

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True)
class Message:
    """One turn of the conversation; `tool` messages carry one tool result each."""

    role: Role
    content: str


class Segment(NamedTuple):
    """A piece of a rendered prompt. Only the template's own markers are special."""

    text: str
    special: bool = False


Prompt = Sequence[Segment]


# ---- models ----------------------------------------------------------------------------------------


class Usage(BaseModel):
    """Token counts of one or more generations."""

    prompt_tokens: int = 0
    """Prompt tokens sent."""
    prompt_tokens_evaluated: int = 0
    """Prompt tokens actually evaluated (the rest came from the reused prefix)."""
    completion_tokens: int = 0
    """Tokens generated."""

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            prompt_tokens_evaluated=self.prompt_tokens_evaluated + other.prompt_tokens_evaluated,
            completion_tokens=self.completion_tokens + other.completion_tokens,
        )


FinishReason = Literal["stop", "length", "cancelled"]


@dataclass(frozen=True)
class Completion:
    """One generated assistant turn, byte-exact."""

    text: str
    usage: Usage
    finish_reason: FinishReason = "stop"


@dataclass(frozen=True)
class GenerateOptions:
    """Per-call generation options."""

    max_tokens: int = 4096
    temperature: float = 0.7
    top_p: float = 0.8
    top_k: int = 20
    min_p: float = 0.0
    seed: int = -1
    grammar: str | None = None
    """GBNF grammar for tool calls, applied lazily from the first `<tool_call>` (None: free text)."""
    force_tool_call: bool = False
    """The reply must start with a tool call (the grammar then applies from the first token)."""
    stop: tuple[str, ...] = ()
    """Extra stop strings (the end-of-turn marker always stops)."""
    on_text: Callable[[str], None] | None = field(default=None, compare=False, repr=False)
    """Called with each piece of text as it is generated (a streaming preview; the Completion's text is authoritative)."""


class Speed(Protocol):
    """How long a backend takes to evaluate and to write tokens at a context depth (measured, not promised)."""

    def prefill_s(self, tokens: int, depth: int) -> float:
        """Seconds to evaluate `tokens` prompt tokens after `depth` cached ones."""
        ...

    def decode_s(self, tokens: int, depth: int) -> float:
        """Seconds to write `tokens` tokens after a prompt of `depth` tokens."""
        ...

    def describe(self) -> str:
        """The speeds in words, for messages (`prefill 25.4 / decode 9.7 tok/s at 1K of context ...`)."""
        ...

    @property
    def trusted(self) -> bool:
        """Whether the figures are recent real measurements, sure enough to refuse a call on."""
        ...


Clock = Callable[[], float]
"""Seconds on a monotonic clock: time.monotonic, or a simulation's virtual clock."""


class ChatModel(Protocol):
    """A backend that continues a rendered prompt."""

    @property
    def n_ctx(self) -> int:
        """Context window in tokens."""
        ...

    @property
    def speed(self) -> Speed | None:
        """Its measured speed, so a turn can be priced before it starts (None: not known)."""
        ...

    def count_tokens(self, prompt: Prompt) -> int:
        """Tokens the prompt takes (exact where the backend can tokenize, else an estimate)."""
        ...

    def complete(self, prompt: Prompt, options: GenerateOptions, cancel: threading.Event | None = None) -> Completion:
        """Generate the assistant's next turn. Stops within about a second of `cancel` being set."""
        ...

    def close(self) -> None:
        """Free the model's resources."""
        ...


class StopSignal(threading.Event):
    """Set by the caller's cancel, by `set()`, or once the deadline passes; backends poll `is_set()`."""

    def __init__(self, parent: threading.Event | None, deadline: float, clock: Clock = time.monotonic) -> None:
        super().__init__()
        self.parent = parent
        self.deadline = deadline
        self.clock = clock

    @property
    def cancelled(self) -> bool:
        """True when the caller (not the clock) asked to stop."""
        return self.parent is not None and self.parent.is_set()

    def is_set(self) -> bool:
        """True once cancelled or past the deadline."""
        return super().is_set() or self.cancelled or self.clock() >= self.deadline

    def wait(self, timeout: float | None = None) -> bool:
        """Wait in short steps so the deadline and the parent are noticed."""
        end = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            left = 0.05 if end is None else min(0.05, end - time.monotonic())
            if left <= 0:
                return False
            super().wait(left)
        return True


@runtime_checkable
class Snapshots(Protocol):
    """A backend that can save and restore its evaluated context (in-process llama.cpp)."""

    def snapshot(self) -> object:
        """Save the evaluated context."""
        ...

    def restore(self, state: object) -> None:
        """Go back to a saved context."""
        ...


# ---- escalation ------------------------------------------------------------------------------------


class Fallback(Protocol):
    """A stronger model that takes over a conversation when the local budget runs out."""

    @property
    def name(self) -> str:
        """How progress lines name it (the model, else the endpoint)."""
        ...

    def next_turn(self, messages: Sequence[Message], stop: StopSignal) -> str:
        """The fallback model's next assistant turn as raw text; raises Cancelled when the caller cancelled."""
        ...

    def close(self) -> None:
        """Free its resources (an HTTP client)."""
        ...
