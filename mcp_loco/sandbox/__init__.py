"""Sandboxed read-only tools (Read, Grep, Glob, Bash) confined to one root."""

from __future__ import annotations

from mcp_loco.config import ToolSettings
from mcp_loco.sandbox import ripgrep
from mcp_loco.sandbox.oracle import Oracle, path_oracle
from mcp_loco.sandbox.toolbox import Toolbox


def find_rg(settings: ToolSettings | None = None) -> str:
    """The ripgrep binary the tools use (settings.rg_path, else beside this Python, else on PATH)."""
    return ripgrep.find_rg((settings or ToolSettings()).rg_path)


__all__ = ["Oracle", "Toolbox", "find_rg", "path_oracle"]
