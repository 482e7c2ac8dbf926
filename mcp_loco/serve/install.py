"""Register the server with MCP clients: Claude Code (`claude mcp add`) and Claude Desktop (its JSON config)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from mcp_loco.errors import ConfigError
from mcp_loco.serve.configfile import (  # read_config_text/replace_config: the writer every client target uses
    _read_config,
    _write_config,
    config_lock,
    read_config_text,
    replace_config,
)

__all__ = ["_read_config", "_write_config", "config_lock", "read_config_text", "replace_config"]


def server_command() -> list[str]:
    """The absolute command that starts this install's server."""
    script = Path(sys.executable).parent / "mcp-loco"
    if script.is_file():
        return [str(script)]
    found = shutil.which("mcp-loco")
    return [str(Path(found).resolve())] if found else [sys.executable, "-m", "mcp_loco"]


def serve_args(roots: Sequence[str] | None, extra: Sequence[str]) -> list[str]:
    """`serve` plus absolute --root flags and any extra arguments."""
    args = ["serve"]
    for r in roots or []:
        args += ["--root", str(Path(r).expanduser().resolve())]
    return args + [a for a in extra if a != "--"]


def claude_code_command(name: str, scope: str, roots: Sequence[str] | None, extra: Sequence[str]) -> list[str]:
    """The `claude mcp add` command line for this install."""
    cmd = server_command()
    return ["claude", "mcp", "add", "--scope", scope, name, "--", *cmd, *serve_args(roots, extra)]


def claude_code_http_command(name: str, scope: str, url: str, token: str | None) -> list[str]:
    """The `claude mcp add` command line for a running sse or http server, with its token header."""
    transport = "sse" if url.rstrip("/").endswith("/sse") else "http"
    command = ["claude", "mcp", "add", "--transport", transport, "--scope", scope, name, url]
    # --header goes last: it takes several values and would swallow the name and URL.
    return command + (["--header", f"Authorization: Bearer {token}"] if token else [])


def claude_code(
    name: str,
    scope: str,
    roots: Sequence[str] | None,
    print_only: bool,
    extra: Sequence[str],
    url: str | None = None,
    token_file: str | None = None,
) -> int:
    """Run (or print) `claude mcp add` for this install, or for a server already listening at `url`."""
    if token_file and not url:
        raise ConfigError("--token-file goes with --url: a stdio server needs no token")
    if url and (roots or extra):
        raise ConfigError("--root and serve arguments belong to the server at --url, not to the registration")
    if url and print_only:
        # Print the header as a shell substitution, so the token itself is not echoed to the terminal.
        line = shlex.join(claude_code_http_command(name, scope, url, None))
        if token_file:
            from mcp_loco.config import ServerSettings
            from mcp_loco.serve.auth import load_token

            load_token(ServerSettings(token_file=token_file))  # the line must work: a usable, private file
            line += (
                f' --header "Authorization: Bearer $(cat {shlex.quote(str(Path(token_file).expanduser().resolve()))})"'
            )
        print(line)
        return 0
    if url:
        from mcp_loco.config import ServerSettings
        from mcp_loco.serve.auth import load_token

        token = load_token(ServerSettings(token_file=token_file)) if token_file else None
        command = claude_code_http_command(name, scope, url, token)
    else:
        command = claude_code_command(name, scope, roots, extra)
    if print_only:
        print(shlex.join(command))
        return 0
    if shutil.which("claude") is None:
        shown = [a if not a.startswith("Authorization:") else "Authorization: Bearer <token>" for a in command]
        print(
            "error: the `claude` command is not on PATH. Install Claude Code, or run this yourself:\n  "
            + shlex.join(shown),
            file=sys.stderr,
        )
        return 1
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=60)
    sys.stderr.write(done.stdout + done.stderr)
    return done.returncode


def desktop_config_path() -> Path:
    """Where Claude Desktop keeps claude_desktop_config.json on this platform."""
    if sys.platform == "darwin":
        return Path.home() / "Library/Application Support/Claude/claude_desktop_config.json"
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA", Path.home() / "AppData/Roaming")) / "Claude/claude_desktop_config.json"
    return Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "Claude/claude_desktop_config.json"


def claude_desktop(name: str, roots: Sequence[str] | None, config_path: Path | None, extra: Sequence[str]) -> int:
    """Add (or replace) this server in claude_desktop_config.json, keeping a backup and every other entry."""
    path = config_path or desktop_config_path()
    cmd = server_command()
    # Claude Desktop starts servers from an arbitrary folder, so name the roots (default: the home folder).
    entry = {"command": cmd[0], "args": [*cmd[1:], *serve_args(roots or [str(Path.home())], extra)], "env": {}}
    with config_lock(path):  # held from read to write, so a concurrent install's entry is not lost
        data = _read_config(path)
        servers = data.get("mcpServers")
        if servers is None:
            servers = {}
        if not isinstance(servers, dict):
            raise ConfigError(f"{path}: mcpServers is not a JSON object; fix it, then run this again")
        servers[name] = entry
        data["mcpServers"] = servers
        _write_config(path, data)
    print(f"added {name!r} to {path}; restart Claude Desktop to load it", file=sys.stderr)
    return 0


# ---- `install claude-code --proxy`: route Claude Code's haiku tier through `mcp-loco proxy` ----------

PROXY_URL = "http://127.0.0.1:9091"
HAIKU_MODEL = "claude-haiku-4-5-20251001"
"""The haiku tier's name, pinned so it matches the proxy's default --local glob whatever Claude Code's default."""


def claude_code_settings_path(scope: str, cwd: Path | None = None) -> Path:
    """Claude Code's settings file for a scope: user (~/.claude), project or local (./.claude)."""
    if scope == "user":
        return Path.home() / ".claude/settings.json"
    folder = (cwd or Path.cwd()) / ".claude"
    return folder / ("settings.local.json" if scope == "local" else "settings.json")


def proxy_env(url: str) -> dict[str, str]:
    """The environment Claude Code needs to send its requests through the proxy."""
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"--proxy-url {url!r} is not an http(s) URL, e.g. {PROXY_URL}")
    return {"ANTHROPIC_BASE_URL": url.rstrip("/"), "ANTHROPIC_DEFAULT_HAIKU_MODEL": HAIKU_MODEL}


def claude_code_proxy(scope: str, url: str, print_only: bool) -> int:
    """Write (or print) the Claude Code settings that send the haiku tier through the proxy, keeping every other key."""
    path = claude_code_settings_path(scope)
    env = proxy_env(url)
    if print_only:
        print(f"# {path}\n" + json.dumps({"env": env}, indent=2))
        return 0
    with config_lock(path):
        data = _read_config(path)
        current = data.get("env") or {}
        if not isinstance(current, dict):
            raise ConfigError(f"{path}: env is not a JSON object; fix it, then run this again")
        data["env"] = {**current, **env}
        _write_config(path, data)
    print(
        f"wrote ANTHROPIC_BASE_URL={env['ANTHROPIC_BASE_URL']} to {path}; start `mcp-loco proxy` before Claude Code",
        file=sys.stderr,
    )
    return 0
