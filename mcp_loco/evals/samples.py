"""Labeled eval sets: turn-level samples and exploration questions, one JSON object per line.

Turn sample: {"id", "question", "history": [assistant turns whose calls the harness runs], "reference"}
or {"id", "messages": [{"role", "content"}, ...], "reference"} for a conversation stored verbatim.
Question: {"id", "question", "expected": [paths relative to the explored root]}.
`{root}` anywhere in a sample stands for the absolute explored root.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcp_loco.config import configs_dir
from mcp_loco.errors import ConfigError
from mcp_loco.evals.calls import judge_turn
from mcp_loco.model.protocol import Message

TURNS_FILE = "eval_turns.jsonl"
QUESTIONS_FILE = "eval_questions.jsonl"
_ROLES = ("system", "user", "assistant", "tool")
_TURN_KEYS = {"id", "question", "history", "messages", "reference", "note"}
_QUESTION_KEYS = {"id", "question", "expected", "note"}


class SampleError(ConfigError):
    """A sample file is malformed; the message names the file and line."""


@dataclass(frozen=True)
class TurnSample:
    """A conversation up to a point, and the reference next assistant turn."""

    id: str
    reference: str
    question: str = ""
    history: tuple[str, ...] = ()
    """Assistant turns; their tool calls are run on the root to produce the tool responses."""
    messages: tuple[Message, ...] = ()
    """A verbatim conversation (used instead of question + history when given)."""
    note: str = ""

    @property
    def first_turn(self) -> bool:
        """True when the reference is the exploration's first turn (a forced tool call applies)."""
        if self.messages:
            return not any(m.role == "assistant" for m in self.messages)
        return not self.history


@dataclass(frozen=True)
class Question:
    """An exploration question and the files a good answer cites."""

    id: str
    question: str
    expected: tuple[str, ...] = field(default=())
    note: str = ""


def default_path(name: str) -> Path:
    """A shipped eval set (configs/ in a checkout, mcp_loco/configs in a wheel)."""
    return configs_dir() / name


def _lines(path: Path) -> list[tuple[int, dict[str, Any]]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise SampleError(f"{path}: cannot read it ({e.strerror})") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("//"):
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise SampleError(f"{path}, line {n}: not valid JSON ({e.msg}, column {e.colno})") from None
        if not isinstance(obj, dict):
            raise SampleError(f"{path}, line {n}: expected a JSON object, got {type(obj).__name__}")
        out.append((n, obj))
    if not out:
        raise SampleError(f"{path}: no samples in it")
    return out


def _text(obj: dict[str, Any], key: str, where: str, required: bool = True) -> str:
    value = obj.get(key, "")
    if not isinstance(value, str) or (required and not value.strip()):
        raise SampleError(f'{where}: "{key}" must be a non-empty string')
    return value


def _check_keys(obj: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise SampleError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def _check_calls(text: str, where: str, *, need_call: bool) -> None:
    calls = judge_turn(text)
    if need_call and not calls:
        raise SampleError(f"{where}: a history turn must call at least one tool (a turn without calls is an answer)")
    for i, c in enumerate(calls, 1):
        if not c.json_valid:
            raise SampleError(f"{where}: tool call {i} is malformed ({'; '.join(c.problems)})")
        if need_call and c.name == "Task":
            raise SampleError(
                f"{where}: tool call {i} is a Task, which the harness cannot run; use a `messages` sample"
            )


def _messages(value: Any, where: str) -> tuple[Message, ...]:
    if not isinstance(value, list) or not value:
        raise SampleError(f'{where}: "messages" must be a non-empty list of {{"role", "content"}} objects')
    out = []
    for i, m in enumerate(value, 1):
        if not isinstance(m, dict) or m.get("role") not in _ROLES or not isinstance(m.get("content"), str):
            raise SampleError(f'{where}: message {i} must be {{"role": one of {", ".join(_ROLES)}, "content": str}}')
        out.append(Message(m["role"], m["content"]))
    if out[-1].role == "assistant":
        raise SampleError(f"{where}: the last message is the assistant's; the reference is the next assistant turn")
    return tuple(out)


def _records(path: str | Path | None, default: str, keys: set[str]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(where, id, object) for each line of a sample file, keys and unique ids checked."""
    p = Path(path).expanduser() if path else default_path(default)
    seen: set[str] = set()
    for n, obj in _lines(p):
        where = f"{p}, line {n}"
        _check_keys(obj, keys, where)
        sid = _text(obj, "id", where)
        if sid in seen:
            raise SampleError(f"{where}: duplicate id {sid!r}")
        seen.add(sid)
        yield where, sid, obj


def load_turn_samples(path: str | Path | None = None) -> list[TurnSample]:
    """Read and check turn-level samples (default: the shipped set)."""
    out: list[TurnSample] = []
    for where, sid, obj in _records(path, TURNS_FILE, _TURN_KEYS):
        reference = _text(obj, "reference", where)
        _check_calls(reference, f'{where}: "reference"', need_call=False)
        note = _text(obj, "note", where, required=False)
        if "messages" in obj:
            if "history" in obj or "question" in obj:
                raise SampleError(f'{where}: give either "messages" or "question" (+ "history"), not both')
            out.append(TurnSample(sid, reference, messages=_messages(obj["messages"], where), note=note))
            continue
        question = _text(obj, "question", where)
        history = obj.get("history", [])
        if not isinstance(history, list) or not all(isinstance(t, str) for t in history):
            raise SampleError(f'{where}: "history" must be a list of assistant turns (strings)')
        for i, turn in enumerate(history, 1):
            _check_calls(turn, f"{where}: history turn {i}", need_call=True)
        out.append(TurnSample(sid, reference, question, tuple(history), note=note))
    return out


def load_questions(path: str | Path | None = None) -> list[Question]:
    """Read and check exploration questions (default: the shipped set)."""
    out: list[Question] = []
    for where, qid, obj in _records(path, QUESTIONS_FILE, _QUESTION_KEYS):
        expected = obj.get("expected")
        if not isinstance(expected, list) or not expected or not all(isinstance(e, str) and e for e in expected):
            raise SampleError(f'{where}: "expected" must be a non-empty list of paths relative to the root')
        for e in expected:
            if e.startswith("/") or ".." in Path(e).parts:
                raise SampleError(f"{where}: expected path {e!r} must be relative to the root, without '..'")
        out.append(Question(qid, _text(obj, "question", where), tuple(expected), _text(obj, "note", where, False)))
    return out
