"""The Toolbox: the four read-only tools behind one `call` that never raises.

Policies every tool shares: every path in a result is absolute; everything is opened through the
confined walk in paths.py; secret files (the deny-list) are refused by name, their content never shown,
and their names left out of every listing (Glob, ls, find, tree, rg --files), which never say that
anything was left out; every cut says so and how to see more; ripgrep is the only program ever started.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import structlog

from mcp_loco.config import ToolSettings
from mcp_loco.errors import RootError
from mcp_loco.interfaces import ToolResult
from mcp_loco.sandbox.context import ToolContext
from mcp_loco.sandbox.denylist import ScopedDenyList
from mcp_loco.sandbox.landlock import confined_spawner
from mcp_loco.sandbox.limits import Deadline, ToolFailure, clean, cut
from mcp_loco.sandbox.paths import Root
from mcp_loco.sandbox.registry import TOOLS, ToolSpec, schemas
from mcp_loco.sandbox.ripgrep import find_rg

log = structlog.get_logger(__name__)

WRITE_TOOLS = ("Write", "Edit", "MultiEdit", "NotebookEdit", "TodoWrite")
# Claude Code's older name for Read.
ALIASES = {"view": "Read"}


class Toolbox:
    """Read, Grep, Glob and Bash confined to one root; thread-safe, and `call` never raises.

    Deny patterns are judged from the explored directory and from `base` (default: the filesystem root, so
    every directory above counts). A directory that is itself denied, or lies in one, cannot be explored
    (RootError).
    """

    def __init__(
        self, root: str | os.PathLike[str] | Root, settings: ToolSettings | None = None, *, base: str | None = None
    ) -> None:
        settings = settings or ToolSettings()
        try:
            rg_path, rg_missing = find_rg(settings.rg_path), ""
        except ToolFailure as e:
            rg_path, rg_missing = "", str(e)
        resolved = root if isinstance(root, Root) else Root(root)
        # Judged from the filesystem root unless told otherwise: a denied ancestor anywhere above (`~/.ssh/keys`,
        # `repo/.git` as the root itself) counts, whichever entry point opened the directory.
        scope = os.path.relpath(resolved.path, base or os.path.sep)
        deny = ScopedDenyList(settings.deny, settings.allow, "" if scope == "." else scope)
        if deny.denied(""):
            resolved.close()
            raise RootError(
                f"{resolved.path} is a secret directory (it matches the deny-list pattern '{deny.reason('')}'); "
                "no tool shows its content: explore the project around it instead"
            )
        spawn = confined_spawner(resolved.path, rg_path) if settings.landlock and rg_path else None
        self._ctx = ToolContext(resolved, deny, settings, rg_path, rg_missing, spawn)
        self._names: tuple[str, ...] = ("Read", "Grep", "Glob", "Bash") if settings.bash else ("Read", "Grep", "Glob")
        # Served under their own names: the offered tools, and LS (an old alias of `ls -la`) when Bash is on.
        self._served = {n.lower(): n for n in (*self._names, *(("LS",) if settings.bash else ()))}

    @property
    def root(self) -> str:
        """The explored root, absolute and resolved."""
        return self._ctx.root.path

    def close(self) -> None:
        """Close the root's descriptor."""
        self._ctx.root.close()

    @property
    def context(self) -> ToolContext:
        """The confined root, deny-list and settings the tools share (read-only)."""
        return self._ctx

    @property
    def names(self) -> tuple[str, ...]:
        """The tools on offer."""
        return self._names

    def schemas(self) -> dict[str, dict[str, Any]]:
        """JSON schema of each offered tool's arguments (simple enough for a GBNF grammar)."""
        return schemas(self._names)

    def call(self, name: str, arguments: Any, cancel: threading.Event | None = None) -> ToolResult:
        """Run one tool call; every failure comes back as a ToolResult with ok=False and a clear message."""
        try:
            spec = self._spec(name)
            assert spec.handler is not None
            result = spec.handler(self._ctx, arguments, Deadline(spec.deadline(self._ctx.settings), cancel))
        except ToolFailure as e:
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

    def _spec(self, name: Any) -> ToolSpec:
        """The registry record a model-given name means, or a ToolFailure saying what is available."""
        available = ", ".join(self._names)
        if not isinstance(name, str):
            raise ToolFailure(f"the tool name must be a string; available tools: {available}")
        shown = name if len(name) <= 100 else name[:100] + "..."
        key = name.strip().lower()
        if key in {w.lower() for w in WRITE_TOOLS}:
            raise ToolFailure(
                f"{shown} is not available: this is a read-only explorer; use Read/Grep/Glob (available tools: {available})"
            )
        if key == "task":
            raise ToolFailure(
                "Task is handled by the explorer's agent loop, not by the tools; ask the sub-question as a Task call in your reply"
            )
        canonical = self._served.get(key) or ALIASES.get(key)
        if canonical is None:
            if key == "bash":
                raise ToolFailure(
                    f"Bash is turned off in this explorer; use Read/Grep/Glob (available tools: {available})"
                )
            raise ToolFailure(f"unknown tool {shown!r}; available tools: {available} (this is a read-only explorer)")
        return TOOLS[canonical]
