"""A model whose turns come from a function: deterministic loop tests and demos run the real loop with no LLM."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mcp_loco.errors import Cancelled
from mcp_loco.interfaces import Completion, GenerateOptions, Message, Prompt, StopSignal, Usage
from mcp_loco.model.protocol import prompt_text


def estimate_tokens(text: str) -> int:
    """A rough token count (about 3.5 characters a token for code and English)."""
    return max(1, int(len(text) / 3.5)) if text else 0


@dataclass(frozen=True)
class Request:
    """What the function is asked: the rendered prompt, the options, and how many calls came before."""

    prompt: str
    options: GenerateOptions
    index: int


Reply = Callable[[Request], "str | Completion"]


class FunctionModel:
    """A ChatModel that answers each call with `fn(request)` after `delay` seconds, polling cancel like a backend.

    It records every prompt, option set and snapshot/restore, so tests can assert on what the loop sent.
    """

    def __init__(self, fn: Reply, *, n_ctx: int = 32768, delay: float = 0.0) -> None:
        self.fn = fn
        self.n_ctx = n_ctx
        self.delay = delay
        self.prompts: list[str] = []
        self.options: list[GenerateOptions] = []
        self.events: list[str] = []
        self._lock = threading.Lock()

    def count_tokens(self, prompt: Prompt) -> int:
        """Estimated from the length of the text."""
        return estimate_tokens(prompt_text(prompt))

    def complete(self, prompt: Prompt, options: GenerateOptions, cancel: threading.Event | None = None) -> Completion:
        """The function's reply; a cancel during the delay ends the turn as a real backend does."""
        if cancel is not None and cancel.is_set():
            raise Cancelled("cancelled before generation")
        end = time.monotonic() + self.delay
        while time.monotonic() < end:
            if cancel is not None and cancel.is_set():
                return Completion("", Usage(), "cancelled")
            time.sleep(min(0.005, max(0.0, end - time.monotonic())))
        text = prompt_text(prompt)
        with self._lock:  # recorded once the function has answered, so a failed call leaves no trace
            reply = self.fn(Request(text, options, len(self.prompts)))
            self.prompts.append(text)
            self.options.append(options)
        if options.on_text is not None:
            options.on_text(reply.text if isinstance(reply, Completion) else reply)
        if isinstance(reply, Completion):
            return reply
        n_prompt = estimate_tokens(text)
        usage = Usage(
            prompt_tokens=n_prompt, prompt_tokens_evaluated=n_prompt, completion_tokens=estimate_tokens(reply)
        )
        return Completion(text=reply, usage=usage)

    def snapshot(self) -> object:
        """Record the save (there is no cache to keep)."""
        self.events.append(f"snapshot@{len(self.prompts)}")
        return len(self.prompts)

    def restore(self, state: object) -> None:
        """Record the restore."""
        self.events.append(f"restore:{state}@{len(self.prompts)}")

    def close(self) -> None:
        """Nothing to free."""


class FunctionFallback:
    """A Fallback whose turns come from `fn(messages)` (loop tests of escalation, no endpoint needed)."""

    def __init__(self, fn: Callable[[Sequence[Message]], str], name: str = "function") -> None:
        self.fn = fn
        self.name = name
        self.closed = False

    def next_turn(self, messages: Sequence[Message], stop: StopSignal) -> str:
        """The function's turn; Cancelled when the caller cancelled."""
        if stop.cancelled:
            raise Cancelled("cancelled during escalation")
        return self.fn(messages)

    def close(self) -> None:
        """Remember that the owner closed it."""
        self.closed = True
