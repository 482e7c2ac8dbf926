"""A model whose turns come from a function: deterministic loop tests and demos run the real loop with no LLM."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mcp_loco.errors import Cancelled
from mcp_loco.interfaces import Completion, FinishReason, GenerateOptions, Message, Prompt, Speed, StopSignal, Usage
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

CHARS_PER_TOKEN = 3.5


class VirtualClock:
    """A clock that only moves when told: a simulated model advances it by what its work would take."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock on by `seconds`."""
        with self._lock:
            self.now += max(seconds, 0.0)


class FunctionModel:
    """A ChatModel that answers each call with `fn(request)` after `delay` seconds, polling cancel like a backend.

    It records every prompt, option set and snapshot/restore, so tests can assert on what the loop sent.

    With `clock`, each generation advances that virtual clock by what `speed` says the prompt's new
    tokens (those past the prefix it evaluated last time) and the reply cost, token by token, and stops
    as a backend does once `cancel` (a StopSignal reading the same clock) is set.
    """

    def __init__(
        self,
        fn: Reply,
        *,
        n_ctx: int = 32768,
        delay: float = 0.0,
        speed: Speed | None = None,
        clock: VirtualClock | None = None,
    ) -> None:
        self.fn = fn
        self.n_ctx = n_ctx
        self.delay = delay
        self._speed = speed
        self.clock = clock
        self._context = ""  # the text "evaluated" by the last simulated generation (its prefix cache)
        self._saved: dict[int, str] = {}
        self.prompts: list[str] = []
        self.options: list[GenerateOptions] = []
        self.events: list[str] = []
        self._lock = threading.Lock()

    @property
    def speed(self) -> Speed | None:
        """The speed it was given (None: not known)."""
        return self._speed

    def count_tokens(self, prompt: Prompt) -> int:
        """Estimated from the length of the text."""
        return estimate_tokens(prompt_text(prompt))

    def cached_tokens(self, prompt: Prompt) -> int:
        """Tokens of the prompt a simulated generation has evaluated already (0 without a clock)."""
        if self.clock is None:
            return 0
        text = prompt_text(prompt)
        return estimate_tokens(text[: _common_prefix(self._context, text)])

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
        if self.clock is not None and self._speed is not None:
            return self._simulate(text, reply, options, cancel)
        n_prompt = estimate_tokens(text)
        usage = Usage(
            prompt_tokens=n_prompt, prompt_tokens_evaluated=n_prompt, completion_tokens=estimate_tokens(reply)
        )
        return Completion(text=reply, usage=usage)

    def _simulate(self, text: str, reply: str, options: GenerateOptions, cancel: threading.Event | None) -> Completion:
        """Charge the virtual clock for evaluating the prompt's new tokens and writing the reply, stopping on cancel."""
        assert self.clock is not None and self._speed is not None
        n_prompt = estimate_tokens(text)
        common = _common_prefix(self._context, text)
        cached = min(estimate_tokens(text[:common]), n_prompt)
        new, depth = n_prompt - cached, cached
        self._context = text[:common]
        # llama.cpp's abort callback stops a prompt evaluation within moments of a deadline: so does this.
        deadline = cancel.deadline if isinstance(cancel, StopSignal) else None
        while depth < n_prompt:  # in batches, as llama.cpp evaluates them
            step = min(512, n_prompt - depth)
            seconds = self._speed.prefill_s(step, depth)
            if deadline is not None and self.clock() + seconds > deadline:
                self.clock.advance(deadline - self.clock())
            else:
                self.clock.advance(seconds)
                depth += step
            if cancel is not None and cancel.is_set():
                return Completion("", Usage(prompt_tokens=n_prompt), "cancelled")
        self._context = text
        written = 0
        finish: FinishReason = "stop"
        total = estimate_tokens(reply)
        while written < total:
            if written >= options.max_tokens:
                finish = "length"
                break
            if cancel is not None and cancel.is_set():
                finish = "cancelled"
                break
            self.clock.advance(self._speed.decode_s(1, n_prompt + written))
            written += 1
        out = reply if written >= total else reply[: int(written * CHARS_PER_TOKEN)]
        self._context = text + out
        usage = Usage(prompt_tokens=n_prompt, prompt_tokens_evaluated=new, completion_tokens=written)
        return Completion(out, usage, finish)

    def snapshot(self) -> object:
        """Record the save (there is no cache to keep)."""
        self.events.append(f"snapshot@{len(self.prompts)}")
        self._saved[len(self.prompts)] = self._context
        return len(self.prompts)

    def restore(self, state: object) -> None:
        """Record the restore."""
        self.events.append(f"restore:{state}@{len(self.prompts)}")
        if isinstance(state, int):
            self._context = self._saved.get(state, self._context)

    def close(self) -> None:
        """Nothing to free."""


def _common_prefix(a: str, b: str) -> int:
    """Length of the longest common prefix of two strings."""
    n = min(len(a), len(b))
    i, step = 0, 4096
    while i + step <= n and a[i : i + step] == b[i : i + step]:  # whole blocks first, then characters
        i += step
    while i < n and a[i] == b[i]:
        i += 1
    return i


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
