"""Replay backend: plays back recorded assistant turns in order (deterministic tests, reproducing a run)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from mcp_loco.errors import BackendError, ConfigError
from mcp_loco.model.backends.function import FunctionModel, Request, estimate_tokens

__all__ = ["ReplayModel", "estimate_tokens", "load_turns"]


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


class ReplayModel(FunctionModel):
    """Answers each call with the next recorded turn; records the prompts it was given."""

    def __init__(self, turns: Iterable[str], n_ctx: int = 32768, delay: float = 0.0) -> None:
        self._turns = list(turns)
        super().__init__(self._next_turn, n_ctx=n_ctx, delay=delay)

    @classmethod
    def from_file(cls, path: str | Path, n_ctx: int = 32768) -> ReplayModel:
        """Load the turns from a replay file."""
        return cls(load_turns(path), n_ctx=n_ctx)

    def _next_turn(self, request: Request) -> str:
        if request.index >= len(self._turns):
            raise BackendError(f"replay exhausted: all {len(self._turns)} recorded turns were played")
        return self._turns[request.index]
