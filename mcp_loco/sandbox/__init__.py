"""Sandboxed read-only tools (Read, Grep, Glob, Bash) confined to one root."""

from __future__ import annotations

from mcp_loco.sandbox.oracle import Oracle, path_oracle
from mcp_loco.sandbox.registry import TOOLS, ToolSpec
from mcp_loco.sandbox.ripgrep import find_rg
from mcp_loco.sandbox.toolbox import Toolbox

__all__ = ["TOOLS", "Oracle", "ToolSpec", "Toolbox", "find_rg", "path_oracle"]
