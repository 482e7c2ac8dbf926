"""Register the server in other MCP clients' own config files: Codex, Gemini CLI, Qwen Code, opencode, Copilot
CLI, Cursor and VS Code. Each entry keeps every other key of the file and sets the timeouts that client needs."""

from __future__ import annotations

import json
import math
import os
import re
import sys
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import tomlkit
from tomlkit.exceptions import TOMLKitError
from tomlkit.items import InlineTable

from mcp_loco.errors import ConfigError
from mcp_loco.serve.configfile import config_lock, read_config_text, replace_config
from mcp_loco.serve.install import serve_args, server_command

MARGIN_S = 60.0
"""Seconds a client waits beyond the call's budget: the budget runs from the call's arrival, but a client's
clock also covers the model's first load and the trip back, and a client that gives up first loses the report."""
STARTUP_S = 60
"""Seconds a client waits for the server to start and list its tool (Codex's own default is 10 s)."""

Entry = dict[str, Any]
NAME = re.compile(r"[A-Za-z0-9_-]+")
"""Server names every client accepts (Codex refuses others; tool names are built from it)."""


@dataclass(frozen=True)
class ClientSpec:
    """How one client keeps its MCP servers."""

    title: str
    path: Callable[[], Path]
    """Its user-level config file."""
    table: str
    """The key (JSON) or table (TOML) that holds the servers by name."""
    entry: Callable[[list[str], float], Entry]
    """The server's entry from its command line and the longest a call may take, in seconds."""
    home_root: bool
    """It starts servers from an arbitrary folder (an editor), so the roots default to the home folder."""
    after: str
    """What the user does next."""

    @property
    def fmt(self) -> Literal["json", "toml"]:
        """The file's format."""
        return "toml" if self.path().suffix == ".toml" else "json"


def call_timeout_s(budget_s: float) -> int:
    """Seconds a client should let one call run: the server's budget plus the margin."""
    return math.ceil(budget_s + MARGIN_S)


def _home() -> Path:
    return Path.home()


def _xdg_config() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or _home() / ".config")


def _vscode_user_dir() -> Path:
    if sys.platform == "darwin":
        return _home() / "Library/Application Support/Code/User"
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA", _home() / "AppData/Roaming")) / "Code/User"
    return _xdg_config() / "Code/User"


def _codex(cmd: list[str], budget_s: float) -> Entry:
    # required: the first turn waits for the server instead of starting without it after a 1 s grace.
    return {
        "command": cmd[0],
        "args": cmd[1:],
        "required": True,
        "startup_timeout_sec": STARTUP_S,
        "tool_timeout_sec": call_timeout_s(budget_s),
    }


def _gemini(cmd: list[str], budget_s: float) -> Entry:
    # timeout is in ms and is hard (progress does not extend it); trust skips the confirmation a headless run
    # cannot give, and the tool only reads.
    return {"command": cmd[0], "args": cmd[1:], "timeout": call_timeout_s(budget_s) * 1000, "trust": True}


def _opencode(cmd: list[str], budget_s: float) -> Entry:
    # timeout (ms) bounds each MCP request; progress notifications restart it.
    return {"type": "local", "command": cmd, "enabled": True, "timeout": call_timeout_s(budget_s) * 1000}


def _copilot(cmd: list[str], budget_s: float) -> Entry:
    return {
        "type": "local",
        "command": cmd[0],
        "args": cmd[1:],
        "tools": ["*"],
        "timeout": call_timeout_s(budget_s) * 1000,
    }


def _cursor(cmd: list[str], budget_s: float) -> Entry:
    return {"command": cmd[0], "args": cmd[1:]}


def _vscode(cmd: list[str], budget_s: float) -> Entry:
    return {"type": "stdio", "command": cmd[0], "args": cmd[1:]}


CLIENTS: dict[str, ClientSpec] = {
    "codex": ClientSpec(
        "Codex",
        lambda: Path(os.environ.get("CODEX_HOME") or _home() / ".codex") / "config.toml",
        "mcp_servers",
        _codex,
        False,
        "start codex in the project folder; `codex mcp list` shows it",
    ),
    "gemini": ClientSpec(
        "Gemini CLI",
        lambda: _home() / ".gemini/settings.json",
        "mcpServers",
        _gemini,
        False,
        "start gemini in the project folder (headless runs need a trusted folder: `gemini --skip-trust` or "
        "GEMINI_CLI_TRUST_WORKSPACE=true); `gemini mcp list` shows it",
    ),
    "qwen": ClientSpec(
        "Qwen Code",
        lambda: _home() / ".qwen/settings.json",
        "mcpServers",
        _gemini,
        False,
        "start qwen in the project folder; `qwen mcp list` shows it",
    ),
    "opencode": ClientSpec(
        "opencode",
        lambda: _xdg_config() / "opencode/opencode.json",
        "mcp",
        _opencode,
        False,
        "start opencode in the project folder; `opencode mcp list` shows it",
    ),
    "copilot": ClientSpec(
        "Copilot CLI",
        lambda: Path(os.environ.get("COPILOT_HOME") or _home() / ".copilot") / "mcp-config.json",
        "mcpServers",
        _copilot,
        False,
        "start copilot in the project folder; /mcp shows it",
    ),
    "cursor": ClientSpec(
        "Cursor", lambda: _home() / ".cursor/mcp.json", "mcpServers", _cursor, True, "restart Cursor to load it"
    ),
    "vscode": ClientSpec(
        "VS Code",
        lambda: _vscode_user_dir() / "mcp.json",
        "servers",
        _vscode,
        True,
        "VS Code starts it from its MCP view (or `MCP: List Servers`)",
    ),
}


def entry_for(client: str, roots: Sequence[str] | None, extra: Sequence[str], budget_s: float) -> Entry:
    """The server's entry in `client`'s config: this install's absolute command, its roots and timeouts."""
    spec = CLIENTS[client]
    if not roots and spec.home_root:
        roots = [str(Path.home())]
    return spec.entry([*server_command(), *serve_args(roots, extra)], budget_s)


def merged(client: str, text: str | None, path: Path, name: str, entry: Entry) -> str:
    """The config file's new text: `text` with the server `name` added or replaced, every other key kept."""
    spec = CLIENTS[client]
    if spec.fmt == "toml":
        return _merged_toml(text or "", path, spec.table, name, entry)
    return _merged_json(text, path, spec.table, name, entry)


def _merged_json(text: str | None, path: Path, table: str, name: str, entry: Entry) -> str:
    data: Any = {}
    if text is not None and text.strip():
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(
                f"{path} is not valid JSON ({e}; comments and trailing commas count); fix or move it, "
                "then run this again"
            ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} does not hold a JSON object; fix or move it, then run this again")
    servers = data.get(table)
    if servers is None:
        servers = {}
    if not isinstance(servers, dict):
        raise ConfigError(f"{path}: {table} is not a JSON object; fix it, then run this again")
    servers[name] = entry
    data[table] = servers
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def _merged_toml(text: str, path: Path, table: str, name: str, entry: Entry) -> str:
    # tomllib judges validity (tomlkit is lenient in places); tomlkit edits, keeping comments and layout.
    try:
        current = tomllib.loads(text)
        doc = tomlkit.parse(text)
    except (tomllib.TOMLDecodeError, TOMLKitError) as e:
        raise ConfigError(f"{path} is not valid TOML ({e}); fix or move it, then run this again") from None
    if not isinstance(current.get(table, {}), dict):
        raise ConfigError(f"{path}: {table} is not a table; fix it, then run this again")
    servers = doc.get(table)
    if isinstance(servers, InlineTable):  # `mcp_servers = { ... }`: stays one inline table
        inline = tomlkit.inline_table()
        inline.update(entry)
        servers[name] = inline
        return tomlkit.dumps(doc)
    if servers is not None and name in current[table]:
        del servers[name]
    # A [table.name] section at the end is valid whichever way the file spells the rest (sections, dotted
    # keys), and cannot swallow keys that follow it, as a section inserted mid-file could.
    head = tomlkit.dumps(doc).rstrip("\n")
    block = tomlkit.document()
    block.add(table, tomlkit.table(is_super_table=True))
    item = tomlkit.table()
    item.update(entry)
    block[table][name] = item
    out = (head + "\n\n" if head else "") + tomlkit.dumps(block).lstrip("\n")
    try:
        tomllib.loads(out)  # never write a file the client cannot read
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(
            f"{path}: could not add [{table}.{name}] safely ({e}); add it by hand (see --print)"
        ) from None
    return out


def snippet(client: str, name: str, entry: Entry) -> str:
    """The entry as it would appear in the client's file, for --print."""
    spec = CLIENTS[client]
    if spec.fmt == "toml":
        return _merged_toml("", spec.path(), spec.table, name, entry)
    return json.dumps({spec.table: {name: entry}}, indent=2, ensure_ascii=False) + "\n"


def install(
    client: str,
    name: str,
    roots: Sequence[str] | None,
    print_only: bool,
    extra: Sequence[str],
    budget_s: float,
    config_path: Path | None = None,
) -> int:
    """Add (or replace) this server in `client`'s config file, or print the entry with --print."""
    spec = CLIENTS[client]
    if not NAME.fullmatch(name):
        raise ConfigError(f"--name {name!r}: use letters, digits, '-' and '_' (clients build tool names from it)")
    path = config_path or spec.path()
    entry = entry_for(client, roots, extra, budget_s)
    if print_only:
        print(f"# {path}\n" + snippet(client, name, entry), end="")
        return 0
    with config_lock(path):  # another install between the read and the write would be lost
        backup = replace_config(path, merged(client, read_config_text(path), path, name, entry))
    if backup is not None:
        print(f"backup: {backup}", file=sys.stderr)
    print(f"added {name!r} to {path} ({spec.title}); {spec.after}", file=sys.stderr)
    return 0
