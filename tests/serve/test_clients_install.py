"""`mcp-loco install CLIENT` for the clients that keep MCP servers in their own files: each file edited in place."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
from server_helpers import BIN

from mcp_loco.cli import main
from mcp_loco.serve.client_configs import MARGIN_S

FILES = {
    "codex": ".codex/config.toml",
    "gemini": ".gemini/settings.json",
    "qwen": ".qwen/settings.json",
    "opencode": ".config/opencode/opencode.json",
    "copilot": ".copilot/mcp-config.json",
    "cursor": ".cursor/mcp.json",
    "vscode": ".config/Code/User/mcp.json",
}
TABLES = {"codex": "mcp_servers", "opencode": "mcp", "vscode": "servers"}
JSON_CLIENTS = [c for c in FILES if c != "codex"]
TIMED = ["codex", "gemini", "qwen", "opencode", "copilot"]
"""Clients with a setting for how long a call may run (Cursor and VS Code have none)."""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated home: no test touches the real user's configs."""
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("HOME", str(h))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(h / ".config"))
    for var in ("CODEX_HOME", "COPILOT_HOME"):
        monkeypatch.delenv(var, raising=False)
    for k in [k for k in os.environ if k.startswith("MCP_LOCO_")]:
        monkeypatch.delenv(k)
    return h


def read(client: str, path: Path) -> dict[str, Any]:
    text = path.read_text()
    data: dict[str, Any] = tomllib.loads(text) if client == "codex" else json.loads(text)
    return data


def entry(client: str, data: dict[str, Any], name: str = "loco") -> dict[str, Any]:
    servers: dict[str, Any] = data[TABLES.get(client, "mcpServers")]
    return dict(servers[name])


def command_line(client: str, e: dict[str, Any]) -> list[str]:
    if client == "opencode":
        return list(e["command"])
    return [e["command"], *e["args"]]


def timeouts_s(client: str, e: dict[str, Any]) -> float | None:
    """The longest a call may run under this entry, in seconds (None: the client has no such setting)."""
    if client == "codex":
        return float(e["tool_timeout_sec"])
    if client in ("gemini", "qwen", "opencode", "copilot"):
        return float(e["timeout"]) / 1000
    return None


@pytest.mark.parametrize("client", list(FILES))
def test_each_client_gets_its_own_file_in_its_own_shape(client: str, home: Path, capsys: Any) -> None:
    assert main(["install", client, "--root", str(home), "--", "--set", "agent.deadline_s=250"]) == 0
    path = home / FILES[client]
    e = entry(client, read(client, path))
    line = command_line(client, e)
    assert Path(line[0]).is_absolute() and line[1] == "serve"
    assert line[2:] == ["--root", str(home.resolve()), "--set", "agent.deadline_s=250"]
    # A call may run its whole budget and a margin before the client gives up on it.
    limit = timeouts_s(client, e)
    assert (limit is not None) == (client in TIMED) and (limit is None or limit >= 250 + MARGIN_S)
    if client == "codex":
        assert e["required"] is True and e["startup_timeout_sec"] >= 30
    if client in ("gemini", "qwen"):
        assert e["trust"] is True
    if client == "opencode":
        assert e["type"] == "local" and e["enabled"] is True and "args" not in e
    if client == "copilot":
        assert e["type"] == "local" and e["tools"] == ["*"]
    if client == "vscode":
        assert e["type"] == "stdio"
    assert str(path) in capsys.readouterr().err


@pytest.mark.parametrize("client", TIMED)
def test_the_budget_comes_from_the_installed_servers_settings(
    client: str, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "loco.toml"
    cfg.write_text("[agent]\ndeadline_s = 400\n")
    assert main(["install", client, "--", "--config", str(cfg)]) == 0
    assert timeouts_s(client, entry(client, read(client, home / FILES[client]))) == 400 + MARGIN_S
    monkeypatch.setenv("MCP_LOCO_AGENT_DEADLINE_S", "30")
    assert main(["install", client]) == 0  # the default budget, from this environment
    assert timeouts_s(client, entry(client, read(client, home / FILES[client]))) == 30 + MARGIN_S


@pytest.mark.parametrize("client", JSON_CLIENTS)
def test_json_files_keep_every_other_entry_and_a_backup(client: str, home: Path) -> None:
    path = home / FILES[client]
    path.parent.mkdir(parents=True, exist_ok=True)
    table = TABLES.get(client, "mcpServers")
    before = {"theme": "dark", "nested": {"a": [1, 2]}, table: {"other": {"command": "x"}, "loco": {"old": 1}}}
    path.write_text(json.dumps(before))
    path.chmod(0o600)
    assert main(["install", client]) == 0
    after = read(client, path)
    assert after["theme"] == "dark" and after["nested"] == {"a": [1, 2]}
    assert after[table]["other"] == {"command": "x"}
    assert "old" not in after[table]["loco"]  # replaced, not merged with a stale entry
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    backups = list(path.parent.glob(path.name + ".bak-*"))
    assert len(backups) == 1 and json.loads(backups[0].read_text()) == before


def test_codex_keeps_comments_tables_and_an_old_entry_is_replaced(home: Path) -> None:
    path = home / FILES["codex"]
    path.parent.mkdir(parents=True)
    original = (
        "# my settings\n"
        'model = "gpt-x"  # the model I use\n\n'
        "[mcp_servers.other]\n"
        'command = "other-server"\n\n'
        "[mcp_servers.loco]\n"
        'command = "/old/mcp-loco"\n'
        "[mcp_servers.loco.env]\n"
        'STALE = "1"\n\n'
        "[profiles.fast]\n"
        'model = "small"\n'
    )
    path.write_text(original)
    assert main(["install", "codex"]) == 0
    text = path.read_text()
    assert "# my settings" in text and "# the model I use" in text
    data = tomllib.loads(text)
    assert data["model"] == "gpt-x" and data["profiles"] == {"fast": {"model": "small"}}
    assert data["mcp_servers"]["other"] == {"command": "other-server"}
    loco = data["mcp_servers"]["loco"]
    assert loco["command"] != "/old/mcp-loco" and "env" not in loco
    assert [p.read_text() for p in path.parent.glob("config.toml.bak-*")] == [original]
    # Run again: still one entry, still valid.
    assert main(["install", "codex", "--name", "loco2"]) == 0
    assert set(tomllib.loads(path.read_text())["mcp_servers"]) == {"other", "loco", "loco2"}


@pytest.mark.parametrize("client", list(FILES))
def test_print_shows_the_entry_and_writes_nothing(client: str, home: Path, capsys: Any) -> None:
    assert main(["install", client, "--print"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"# {home / FILES[client]}\n")
    shown = out.split("\n", 1)[1]
    data = tomllib.loads(shown) if client == "codex" else json.loads(shown)
    assert command_line(client, entry(client, data))[1] == "serve"
    assert not any(p.is_file() for p in home.rglob("*"))


@pytest.mark.parametrize("client", list(FILES))
def test_a_linked_config_stays_a_link(client: str, home: Path, tmp_path: Path) -> None:
    real = tmp_path / "dotfiles" / Path(FILES[client]).name
    real.parent.mkdir()
    real.write_text("")
    link = home / FILES[client]
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(real)
    assert main(["install", client]) == 0
    assert link.is_symlink() and entry(client, read(client, real))


@pytest.mark.parametrize(
    ("client", "content", "says"),
    [
        ("codex", 'model = "x\n', "not valid TOML"),
        ("codex", 'mcp_servers = "nope"\n', "mcp_servers is not a table"),
        ("gemini", '{"mcpServers": {}, // a comment\n}', "not valid JSON"),
        ("qwen", "[1, 2]", "does not hold a JSON object"),
        ("opencode", '{"mcp": []}', "mcp is not a JSON object"),
        ("copilot", '{"mcpServers": "x"}', "mcpServers is not a JSON object"),
        ("cursor", "{", "not valid JSON"),
        ("vscode", '{"servers": 3}', "servers is not a JSON object"),
    ],
)
def test_a_broken_file_is_named_and_left_alone(client: str, content: str, says: str, home: Path) -> None:
    path = home / FILES[client]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    done = subprocess.run(
        [str(BIN), "install", client], capture_output=True, text=True, env={**os.environ}, timeout=60, check=False
    )
    assert done.returncode == 2, done.stderr
    assert says in done.stderr and str(path) in done.stderr and "Traceback" not in done.stderr
    assert path.read_text() == content and not list(path.parent.glob("*.bak-*"))


@pytest.mark.parametrize("client", ["codex", "opencode", "vscode"])
@pytest.mark.parametrize("flag", [["--url", "http://127.0.0.1:1/mcp"], ["--proxy"], ["--scope", "user"]])
def test_claude_code_only_flags_are_refused(client: str, flag: list[str], home: Path, capsys: Any) -> None:
    assert main(["install", client, *flag]) == 2
    assert "claude-code" in capsys.readouterr().err
    assert not any(p.is_file() for p in home.rglob("*"))


def test_editors_default_to_the_home_folder_and_clis_to_their_project(home: Path) -> None:
    for client in FILES:
        assert main(["install", client]) == 0
        line = command_line(client, entry(client, read(client, home / FILES[client])))
        # Cursor and VS Code start servers from anywhere; the CLIs start them in the folder they run in.
        assert ("--root" in line) == (client in ("cursor", "vscode")), (client, line)
        if "--root" in line:
            assert line[line.index("--root") + 1] == str(home.resolve())


def test_client_homes_and_config_path_are_honoured(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODEX_HOME", str(tmp_path / "codex-home"))
    monkeypatch.setenv("COPILOT_HOME", str(tmp_path / "copilot-home"))
    assert main(["install", "codex"]) == 0 and main(["install", "copilot"]) == 0
    assert entry("codex", read("codex", tmp_path / "codex-home/config.toml"))
    assert entry("copilot", read("copilot", tmp_path / "copilot-home/mcp-config.json"))
    other = tmp_path / "elsewhere.json"
    assert main(["install", "cursor", "--config-path", str(other)]) == 0
    assert entry("cursor", read("cursor", other)) and not (home / FILES["cursor"]).exists()


@pytest.mark.parametrize("client", ["codex", "gemini", "vscode"])
def test_serve_arguments_that_serve_does_not_take_are_named(client: str, home: Path, capsys: Any) -> None:
    assert main(["install", client, "--", "--root-dir", "/x"]) == 2
    err = capsys.readouterr().err
    assert "--root-dir" in err and "mcp-loco serve --help" in err
    assert not any(p.is_file() for p in home.rglob("*"))


@pytest.mark.parametrize(
    "original",
    [
        'mcp_servers = { other = { command = "x" }, loco = { command = "old" } }\nmodel = "m"\n',
        'mcp_servers.other.command = "x"\nmcp_servers.loco.command = "old"\nmodel = "m"\n',
        '[mcp_servers]\n[mcp_servers.other]\ncommand = "x"\n[mcp_servers.loco.env]\nA = "1"\n[p.q]\nmodel = "m"\n',
        'model = "m"\n[mcp_servers.loco]\ncommand = "old"\n[mcp_servers.other]\ncommand = "x"\n',
    ],
    ids=["inline", "dotted", "sections", "loco-first"],
)
def test_codex_files_spelt_every_toml_way_keep_their_keys_where_they_were(original: str, home: Path) -> None:
    path = home / FILES["codex"]
    path.parent.mkdir(parents=True)
    path.write_text(original)
    before = tomllib.loads(original)
    assert main(["install", "codex"]) == 0
    after = tomllib.loads(path.read_text())
    loco = after["mcp_servers"].pop("loco")
    assert loco["command"] != "old" and loco["required"] is True and "env" not in loco
    before["mcp_servers"].pop("loco", None)
    assert after == before  # not one key moved, e.g. a top-level key swallowed by a section inserted above it


@pytest.mark.parametrize("name", ["", "my.server", "a b", "x/y", "ünï"])
def test_a_name_clients_would_refuse_is_refused(name: str, home: Path, capsys: Any) -> None:
    assert main(["install", "codex", "--name", name]) == 2
    assert "--name" in capsys.readouterr().err
    assert not any(p.is_file() for p in home.rglob("*"))


def test_an_unreadable_config_is_named(home: Path, capsys: Any) -> None:
    path = home / FILES["gemini"]
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\xff\xfe{}")
    assert main(["install", "gemini"]) == 2
    assert str(path) in capsys.readouterr().err
    path.unlink()
    path.mkdir()  # a folder where the file should be
    assert main(["install", "gemini"]) == 2
    assert str(path) in capsys.readouterr().err
