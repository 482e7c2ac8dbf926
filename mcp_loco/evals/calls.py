"""Strict judging of tool-call blocks, as the model card counts them (no repair of the model's slips)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from mcp_loco.model.grammar import TOOL_CALL_CLOSE, TOOL_CALL_OPEN
from mcp_loco.sandbox.registry import TOOLS


def _schema(properties: dict[str, str], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": {k: {"type": t} for k, t in properties.items()}, "required": required}


# Claude Code's tools the model was trained on. The explorer only serves the read-only ones, but the
# model still emits Write/Edit/Task (9 of its 76 eval calls), so their syntax is judged too.
JUDGE_SCHEMAS: dict[str, dict[str, Any]] = {
    **{name: spec.schema for name, spec in TOOLS.items() if spec.offered},
    "Write": _schema({"file_path": "string", "content": "string"}, ["file_path", "content"]),
    "Edit": _schema(
        {"file_path": "string", "old_string": "string", "new_string": "string", "replace_all": "boolean"},
        ["file_path", "old_string", "new_string"],
    ),
    "MultiEdit": _schema({"file_path": "string", "edits": "array"}, ["file_path", "edits"]),
    "LS": _schema({"path": "string", "ignore": "array"}, ["path"]),
    "TodoWrite": _schema({"todos": "array"}, ["todos"]),
}

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
    "null": (type(None),),
}


@dataclass(frozen=True)
class JudgedCall:
    """One `<tool_call>` block judged strictly."""

    raw: str
    json_valid: bool
    name: str | None = None
    arguments: dict[str, Any] | None = None
    problems: tuple[str, ...] = field(default=())
    """Why the JSON or the arguments are wrong (empty when both are right)."""

    @property
    def args_valid(self) -> bool:
        """Valid JSON, a known tool, every required argument present with the right JSON type."""
        return self.json_valid and not self.problems


def _type_ok(value: Any, kind: Any) -> bool:
    kinds = kind if isinstance(kind, list) else [kind]
    for k in kinds:
        types = _JSON_TYPES.get(k)
        if types is None:
            return True  # a schema shape we do not judge
        # bool is an int in Python but not a JSON integer.
        if isinstance(value, types) and not (isinstance(value, bool) and k in ("integer", "number")):
            return True
    return False


def check_arguments(name: str, arguments: dict[str, Any]) -> list[str]:
    """What is wrong with a call's arguments per the tool's schema; unknown extra keys are tolerated."""
    schema = JUDGE_SCHEMAS.get(name)
    if schema is None:
        return [f"unknown tool {name!r}"]
    problems = []
    props: dict[str, Any] = schema.get("properties", {})
    for key in schema.get("required", []):
        if key not in arguments:
            problems.append(f"{name}: missing required argument {key!r}")
    for key, value in arguments.items():
        spec = props.get(key)
        if spec is None:
            continue  # versions of the schemas drifted: extra keys are not errors
        if "enum" in spec and value not in spec["enum"]:
            problems.append(f"{name}: {key!r} must be one of {spec['enum']}, got {value!r}")
        elif "type" in spec and not _type_ok(value, spec["type"]):
            problems.append(f"{name}: {key!r} must be {spec['type']}, got {type(value).__name__}")
    return problems


def judge_block(raw: str, body: str, closed: bool) -> JudgedCall:
    """Judge one block's body: strict JSON, an object with a string "name" and an object "arguments"."""
    if not closed:
        return JudgedCall(raw, False, problems=(f"no closing {TOOL_CALL_CLOSE}",))
    try:
        obj = json.loads(body)
    except (json.JSONDecodeError, RecursionError) as e:
        detail = e.msg if isinstance(e, json.JSONDecodeError) else "nested too deeply"
        return JudgedCall(raw, False, problems=(f"not valid JSON: {detail}",))
    if not isinstance(obj, dict):
        return JudgedCall(raw, False, problems=(f"a JSON {type(obj).__name__}, not an object",))
    name, args = obj.get("name"), obj.get("arguments")
    if not isinstance(name, str) or not name:
        return JudgedCall(raw, False, problems=('no string "name"',))
    if not isinstance(args, dict):
        return JudgedCall(raw, False, name=name, problems=('"arguments" is not a JSON object',))
    return JudgedCall(raw, True, name, args, tuple(check_arguments(name, args)))


def judge_turn(text: str) -> list[JudgedCall]:
    """Every `<tool_call>` block of an assistant turn, judged strictly, in order."""
    out = []
    pos = 0
    while (start := text.find(TOOL_CALL_OPEN, pos)) >= 0:
        body_start = start + len(TOOL_CALL_OPEN)
        close = text.find(TOOL_CALL_CLOSE, body_start)
        nxt = text.find(TOOL_CALL_OPEN, body_start)
        closed = close >= 0 and (nxt < 0 or close < nxt)
        end = close if closed else (nxt if nxt >= 0 else len(text))
        block_end = end + len(TOOL_CALL_CLOSE) if closed else end
        out.append(judge_block(text[start:block_end], text[body_start:end], closed))
        pos = block_end
    return out


def has_call(text: str) -> bool:
    """True when the turn opens at least one tool call (well-formed or not)."""
    return TOOL_CALL_OPEN in text
