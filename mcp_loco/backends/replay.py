"""Replay backend: plays back recorded assistant turns in order (deterministic tests, reproducing a run)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from pathlib import Path

from mcp_loco.errors import BackendError, Cancelled, ConfigError
from mcp_loco.interfaces import Completion, GenerateOptions, Prompt, Usage


def estimate_tokens(text: str) -> int:
    """A rough token count (about 3.5 characters a token for code and English)."""
    return max(1, int(len(text) / 3.5)) if text else 0


def prompt_text(prompt: Prompt) -> str:
    """The prompt as one string."""
    return "".join(seg.text for seg in prompt)


def load_turns(path: str | Path) -> list[str]:
    """Read assistant turns from a JSON array of strings or a transcript (.jsonl, `completion` events)."""
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"replay file {p}: cannot read it ({e.strerror})") from None
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"replay file {p}: not valid JSON ({e})") from None
        if not all(isinstance(t, str) for t in data):
            raise ConfigError(f"replay file {p}: expected a JSON array of strings (raw assistant turns)")
        return list(data)
    turns: list[str] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"replay file {p}, line {n}: not valid JSON ({e})") from None
        if isinstance(event, dict) and event.get("event") == "completion" and isinstance(event.get("text"), str):
            turns.append(event["text"])
    if not turns:
        raise ConfigError(f"replay file {p}: no assistant turns (expected a JSON array or a transcript .jsonl)")
    return turns


class ReplayModel:
    """Answers each call with the next recorded turn; records the prompts it was given."""

    def __init__(self, turns: Iterable[str], n_ctx: int = 32768) -> None:
        self._turns = list(turns)
        self._next = 0
        self._lock = threading.Lock()
        self.n_ctx = n_ctx
        self.prompts: list[str] = []
        self.options: list[GenerateOptions] = []

    @classmethod
    def from_file(cls, path: str | Path, n_ctx: int = 32768) -> ReplayModel:
        """Load the turns from a replay file."""
        return cls(load_turns(path), n_ctx=n_ctx)

    @property
    def remaining(self) -> int:
        """Turns not yet played."""
        return len(self._turns) - self._next

    def count_tokens(self, prompt: Prompt) -> int:
        """Estimated from the length of the text."""
        return estimate_tokens(prompt_text(prompt))

    def complete(self, prompt: Prompt, options: GenerateOptions, cancel: threading.Event | None = None) -> Completion:
        """Return the next recorded turn."""
        if cancel is not None and cancel.is_set():
            raise Cancelled("cancelled before generation")
        with self._lock:
            if self._next >= len(self._turns):
                raise BackendError(f"replay exhausted: all {len(self._turns)} recorded turns were played")
            text = self._turns[self._next]
            self._next += 1
            self.prompts.append(prompt_text(prompt))
            self.options.append(options)
        if options.on_text is not None:
            options.on_text(text)
        n_prompt = self.count_tokens(prompt)
        return Completion(
            text=text,
            usage=Usage(
                prompt_tokens=n_prompt, prompt_tokens_evaluated=n_prompt, completion_tokens=estimate_tokens(text)
            ),
        )

    def close(self) -> None:
        """Nothing to free."""
