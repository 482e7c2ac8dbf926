"""Which MCP client is calling, from the `clientInfo.name` it sends, and how it hands a result to its model.

Names as the clients send them (2026-12): `claude-code`, `claude-ai` (Claude Desktop), `codex-mcp-client`,
`gemini-cli-mcp-client`, `qwen-code-mcp-client` / `qwen-cli-mcp-client-<server>`, `opencode`,
`github-copilot-developer`, `Visual Studio Code` (and `- Insiders`, `Code - OSS`), `cursor-vscode`.
They are matched case-insensitively by substring, first match wins, so versions and suffixes do not matter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mcp_loco.explore.payload import Reading


@dataclass(frozen=True)
class Client:
    """A known client: a short label for the logs, and how its model reads a result (None: not known)."""

    label: str
    reading: Reading | None


UNKNOWN = Client("unknown", None)

# Order matters where one name contains another's key: cursor sends `cursor-vscode`, opencode has no `codex`.
KNOWN: tuple[tuple[str, Client], ...] = (
    ("claude-code", Client("claude-code", "structured")),
    ("claude code", Client("claude-code", "structured")),
    ("claude-ai", Client("claude-desktop", None)),
    ("claude desktop", Client("claude-desktop", None)),
    ("codex", Client("codex", "codex")),
    ("gemini", Client("gemini-cli", "text")),
    ("qwen", Client("qwen-code", "text")),
    ("opencode", Client("opencode", "text")),
    # Copilot CLI reads the text and then the JSON; Copilot in VS Code (same name) reads the JSON only,
    # which the pointer-and-JSON result serves as well.
    ("copilot", Client("copilot", "both")),
    ("cursor", Client("cursor", None)),
    ("visual studio code", Client("vscode", "structured")),
    ("visual-studio-code", Client("vscode", "structured")),
    ("code - oss", Client("vscode", "structured")),
    ("vscode", Client("vscode", "structured")),
)


def identify(name: str | None) -> Client:
    """The client a `clientInfo.name` names; UNKNOWN for anything else (it gets the safe default)."""
    low = (name or "").strip().lower()
    if not low:
        return UNKNOWN
    return next((client for key, client in KNOWN if key in low), UNKNOWN)


def client_name(session: Any) -> str | None:
    """The `clientInfo.name` a session's client sent at `initialize` (or in a request envelope), if any."""
    params = getattr(session, "client_params", None)
    info = getattr(params, "client_info", None)
    name = getattr(info, "name", None)
    return name if isinstance(name, str) else None
