"""The Toolbox: the four read-only tools behind one `call` that never raises.

Policies every tool shares: every path in a result is absolute; everything is opened through the
confined walk in paths.py; secret files (the deny-list) are refused by name, their content never shown,
and their names left out of every listing (Glob, ls, find, tree, rg --files), which then say how many
entries were hidden; every cut says so and how to see more; ripgrep is the only program ever started.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import structlog

from mcp_loco.config import ToolSettings
from mcp_loco.interfaces import ToolResult
from mcp_loco.sandbox import arguments as A
from mcp_loco.sandbox.bash import run_bash
from mcp_loco.sandbox.context import Context
from mcp_loco.sandbox.denylist import DenyList
from mcp_loco.sandbox.glob import run_glob
from mcp_loco.sandbox.grep import MODES, parse_grep, run_grep
from mcp_loco.sandbox.landlock import confined_spawner
from mcp_loco.sandbox.limits import Deadline, ToolError, clean, cut
from mcp_loco.sandbox.paths import Root
from mcp_loco.sandbox.read import run_read
from mcp_loco.sandbox.ripgrep import find_rg

log = structlog.get_logger(__name__)

WRITE_TOOLS = ("Write", "Edit", "MultiEdit", "NotebookEdit", "TodoWrite")
# Names of Claude Code's older tools: View was Read, LS listed a directory.
ALIASES = {"view": "Read", "ls": "LS"}


def _schema(properties: dict[str, dict[str, Any]], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


_STRING = {"type": "string"}
_INTEGER = {"type": "integer"}
_BOOLEAN = {"type": "boolean"}
SCHEMAS: dict[str, dict[str, Any]] = {
    "Read": _schema({"file_path": _STRING, "offset": _INTEGER, "limit": _INTEGER}, ["file_path"]),
    "Grep": _schema(
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
    "Glob": _schema({"pattern": _STRING, "path": _STRING}, ["pattern"]),
    "Bash": _schema({"command": _STRING, "description": _STRING, "timeout": _INTEGER}, ["command"]),
}


class Toolbox:
    """Read, Grep, Glob and Bash confined to one root; thread-safe, and `call` never raises."""

    def __init__(self, root: str | os.PathLike[str], settings: ToolSettings | None = None) -> None:
        settings = settings or ToolSettings()
        try:
            rg_path, rg_missing = find_rg(settings.rg_path), ""
        except ToolError as e:
            rg_path, rg_missing = "", str(e)
        resolved = Root(root)
        spawn = confined_spawner(resolved.path, rg_path) if settings.landlock and rg_path else None
        self._ctx = Context(resolved, DenyList(settings.deny, settings.allow), settings, rg_path, rg_missing, spawn)
        self._names: tuple[str, ...] = ("Read", "Grep", "Glob", "Bash") if settings.bash else ("Read", "Grep", "Glob")

    @property
    def root(self) -> str:
        """The explored root, absolute and resolved."""
        return self._ctx.root.path

    @property
    def context(self) -> Context:
        """The confined root, deny-list and settings the tools share (read-only)."""
        return self._ctx

    @property
    def names(self) -> tuple[str, ...]:
        """The tools on offer."""
        return self._names

    def schemas(self) -> dict[str, dict[str, Any]]:
        """JSON schema of each offered tool's arguments (simple enough for a GBNF grammar)."""
        return {name: SCHEMAS[name] for name in self._names}

    def call(self, name: str, arguments: Any, cancel: threading.Event | None = None) -> ToolResult:
        """Run one tool call; every failure comes back as a ToolResult with ok=False and a clear message."""
        try:
            result = self._dispatch(name, arguments, cancel)
        except ToolError as e:
            result = ToolResult(str(e), ok=False)
        except RecursionError:
            result = ToolResult(f"{name}: the request is too deeply nested; simplify it", ok=False)
        except Exception as e:
            log.exception("tool_failed", tool=str(name)[:100])
            detail = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
            result = ToolResult(f"{str(name)[:100]} failed unexpectedly ({detail}); try a different call", ok=False)
        # Every tool caps its own output with a note; this is the backstop for anything that did not.
        text = cut(clean(result.text), self._ctx.settings.max_output_chars, "narrow the request")
        return ToolResult(text, result.ok, result.paths, result.lines)

    def _dispatch(self, name: str, arguments: Any, cancel: threading.Event | None) -> ToolResult:
        if not isinstance(name, str):
            raise ToolError(f"the tool name must be a string; available tools: {', '.join(self._names)}")
        canonical = self._canonical(name)
        ctx = self._ctx
        settings = ctx.settings

        def deadline_for(seconds: float) -> Deadline:
            return Deadline(seconds, cancel)

        handlers: dict[str, Callable[[], ToolResult]] = {
            "Read": lambda: run_read(ctx, arguments, deadline_for(settings.read_timeout_s)),
            "Grep": lambda: run_grep(ctx, parse_grep(arguments), deadline_for(settings.grep_timeout_s)),
            "Glob": lambda: run_glob(ctx, arguments, deadline_for(settings.grep_timeout_s)),
            "Bash": lambda: run_bash(ctx, arguments, deadline_for),
            "LS": lambda: self._ls(arguments, deadline_for),
        }
        return handlers[canonical]()

    def _canonical(self, name: str) -> str:
        shown = name if len(name) <= 100 else name[:100] + "..."
        available = ", ".join(self._names)
        key = name.strip().lower()
        if key in {w.lower() for w in WRITE_TOOLS}:
            raise ToolError(
                f"{shown} is not available: this is a read-only explorer; use Read/Grep/Glob (available tools: {available})"
            )
        if key == "task":
            raise ToolError(
                "Task is handled by the explorer's agent loop, not by the tools; ask the sub-question as a Task call in your reply"
            )
        by_lower = {n.lower(): n for n in self._names}
        canonical = by_lower.get(key) or ALIASES.get(key)
        if canonical == "LS" and "Bash" not in self._names:
            canonical = None
        if canonical is None or (canonical not in self._names and canonical != "LS"):
            if key == "bash":
                raise ToolError(
                    f"Bash is turned off in this explorer; use Read/Grep/Glob (available tools: {available})"
                )
            raise ToolError(f"unknown tool {shown!r}; available tools: {available} (this is a read-only explorer)")
        return canonical

    def _ls(self, arguments: Any, deadline_for: Callable[[float], Deadline]) -> ToolResult:
        """Claude Code's old LS tool ({"path": ...}), served as `ls -la PATH`."""
        args = A.as_object(arguments, '{"path": "/abs/dir"}')
        path = A.text(args, ("path", "directory"), required=True, example='{"path": "/abs/dir"}')
        assert path is not None
        return run_bash(self._ctx, {"command": "ls -la -- " + _quote(path)}, deadline_for)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"
