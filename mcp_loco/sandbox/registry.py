"""The tool registry: one record per tool, read by the Toolbox, the grammar, progress lines, Task and the evals.

Adding a tool is one entry in TOOLS: its name, the JSON schema of its arguments (kept simple enough for
a GBNF grammar), one handler, its default deadline and how a call is described in a progress line.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from mcp_loco.config import ToolSettings
from mcp_loco.interfaces import ToolResult
from mcp_loco.sandbox import arguments as A
from mcp_loco.sandbox.bash import run_bash
from mcp_loco.sandbox.context import ToolContext
from mcp_loco.sandbox.glob import run_glob
from mcp_loco.sandbox.grep import MODES, parse_grep, run_grep
from mcp_loco.sandbox.limits import Deadline
from mcp_loco.sandbox.read import run_read

Handler = Callable[[ToolContext, Any, Deadline], ToolResult]
Describe = Callable[[dict[str, Any], Callable[[Any], str]], str]
"""(arguments, a function making a path relative to the root) -> the words after the tool's name."""


@dataclass(frozen=True)
class ToolSpec:
    """One tool: what the model may send it, who serves it, how long it may take, how a call reads."""

    name: str
    schema: dict[str, Any]
    handler: Handler | None
    """None: served by the explorer's loop (Task), not by the sandbox."""
    deadline: Callable[[ToolSettings], float]
    describe: Describe
    offered: bool = True
    """False: an old name still served (LS), never offered to the model."""


def _schema(properties: dict[str, dict[str, Any]], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def short_json(value: Any, limit: int = 200) -> str:
    """JSON, cut to `limit` characters."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _quoted(key: str, limit: int, *fallbacks: str) -> Describe:
    def describe(args: dict[str, Any], rel: Callable[[Any], str]) -> str:
        value = next((args[k] for k in (key, *fallbacks) if args.get(k)), "")
        where = f" in {rel(args['path'])}" if key == "pattern" and args.get("path") else ""
        return f"{str(value)[:limit]!r}{where}"

    return describe


def _ls(ctx: ToolContext, arguments: Any, deadline: Deadline) -> ToolResult:
    """Claude Code's old LS tool ({"path": ...}), served as `ls -la PATH`."""
    args = A.as_object(arguments, '{"path": "/abs/dir"}')
    path = A.text(args, ("path", "directory"), required=True, example='{"path": "/abs/dir"}')
    assert path is not None
    return run_bash(ctx, {"command": "ls -la -- '" + path.replace("'", "'\\''") + "'"}, deadline)


_STRING = {"type": "string"}
_INTEGER = {"type": "integer"}
_BOOLEAN = {"type": "boolean"}

TOOLS: dict[str, ToolSpec] = {
    spec.name: spec
    for spec in (
        ToolSpec(
            "Read",
            _schema({"file_path": _STRING, "offset": _INTEGER, "limit": _INTEGER}, ["file_path"]),
            run_read,
            lambda s: s.read_timeout_s,
            lambda args, rel: rel(args.get("file_path", args.get("path", "?"))),
        ),
        ToolSpec(
            "Grep",
            _schema(
                {
                    "pattern": _STRING,
                    "path": _STRING,
                    "glob": _STRING,
                    "type": _STRING,
                    "output_mode": {"type": "string", "enum": list(MODES)},
                    "-i": _BOOLEAN,
                    "-n": _BOOLEAN,
                    "-A": _INTEGER,
                    "-B": _INTEGER,
                    "-C": _INTEGER,
                    "head_limit": _INTEGER,
                    "offset": _INTEGER,
                    "multiline": _BOOLEAN,
                },
                ["pattern"],
            ),
            lambda ctx, args, deadline: run_grep(ctx, parse_grep(args), deadline),
            lambda s: s.grep_timeout_s,
            _quoted("pattern", 60),
        ),
        ToolSpec(
            "Glob",
            _schema({"pattern": _STRING, "path": _STRING}, ["pattern"]),
            run_glob,
            lambda s: s.grep_timeout_s,
            _quoted("pattern", 60),
        ),
        ToolSpec(
            "Bash",
            _schema({"command": _STRING, "description": _STRING, "timeout": _INTEGER}, ["command"]),
            run_bash,
            lambda s: s.bash_timeout_s,
            _quoted("command", 80),
        ),
        ToolSpec(
            "LS",
            _schema({"path": _STRING}, ["path"]),
            _ls,
            lambda s: s.bash_timeout_s,
            lambda args, rel: rel(args.get("path", "?")),
            offered=False,
        ),
        ToolSpec(
            "Task",
            _schema({"description": _STRING, "prompt": _STRING, "subagent_type": _STRING}, ["description", "prompt"]),
            None,
            lambda s: 0.0,
            _quoted("description", 60, "prompt"),
        ),
    )
}


def schemas(names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The JSON schema of each named tool's arguments (for the grammar and the evals)."""
    return {name: TOOLS[name].schema for name in names}


def describe_call(name: str, arguments: dict[str, Any], root: str) -> str:
    """A short human line for a call: `Grep 'load_config' in src`."""

    def rel(p: Any) -> str:
        s = str(p)
        return s[len(root) + 1 :] or "." if s.startswith(root + "/") else s

    spec = TOOLS.get(name)
    if spec is None:
        return f"{name} {short_json(arguments, 60)}"
    return f"{name} {spec.describe(arguments, rel)}"
