"""`mcp-loco install claude-code --proxy` and the `proxy` command's own errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from proxy_helpers import CLAUDE, MARKER, FileReader, claude_env, proxy_settings, run_claude, serve_app

from mcp_loco.proxy import create_app

BIN = Path(sys.executable).parent / "mcp-loco"


def mcp_loco(*args: str, cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_LOCO_")}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"))
    return subprocess.run([str(BIN), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_print_shows_the_settings_and_writes_nothing(tmp_path: Path) -> None:
    done = mcp_loco("install", "claude-code", "--proxy", "--print", cwd=tmp_path, home=tmp_path / "home")
    assert done.returncode == 0, done.stderr
    where, _, snippet = done.stdout.partition("\n")
    assert where == f"# {tmp_path / '.claude/settings.local.json'}"
    assert json.loads(snippet) == {
        "env": {
            "ANTHROPIC_BASE_URL": "http://127.0.0.1:9091",
            "ANTHROPIC_DEFAULT_HAIKU_MODEL": "claude-haiku-4-5-20251001",
        }
    }
    assert not (tmp_path / ".claude").exists()


def test_install_keeps_other_settings_with_a_backup_and_user_scope_goes_home(tmp_path: Path) -> None:
    settings = tmp_path / ".claude/settings.local.json"
    settings.parent.mkdir()
    settings.write_text(json.dumps({"permissions": {"allow": ["Read"]}, "env": {"FOO": "1"}}))
    done = mcp_loco(
        "install",
        "claude-code",
        "--proxy",
        "--proxy-url",
        "http://127.0.0.1:9999/",
        cwd=tmp_path,
        home=tmp_path / "home",
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(settings.read_text())
    assert data["permissions"] == {"allow": ["Read"]}
    assert data["env"] == {
        "FOO": "1",
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:9999",
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": "claude-haiku-4-5-20251001",
    }
    assert list(settings.parent.glob("settings.local.json.bak-*"))
    home = tmp_path / "home"
    assert mcp_loco("install", "claude-code", "--proxy", "--scope", "user", cwd=tmp_path, home=home).returncode == 0
    assert (
        json.loads((home / ".claude/settings.json").read_text())["env"]["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:9091"
    )


def test_install_keeps_a_private_settings_file_private_and_every_backup(tmp_path: Path) -> None:
    settings = tmp_path / ".claude/settings.local.json"
    settings.parent.mkdir()
    first = json.dumps({"env": {"ANTHROPIC_API_KEY": "sk-ant-secret"}}).encode()
    settings.write_bytes(first)
    settings.chmod(0o600)
    for port in (9001, 9002):  # two installs at once keep both backups
        done = mcp_loco(
            "install", "claude-code", "--proxy", "--proxy-url", f"http://127.0.0.1:{port}", cwd=tmp_path, home=tmp_path
        )
        assert done.returncode == 0, done.stderr
    data = json.loads(settings.read_text())
    assert data["env"]["ANTHROPIC_API_KEY"] == "sk-ant-secret"
    assert data["env"]["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:9002"
    backups = sorted(settings.parent.glob("settings.local.json.bak-*"))
    assert sorted(json.loads(b.read_text())["env"].get("ANTHROPIC_BASE_URL", "") for b in backups) == [
        "",
        "http://127.0.0.1:9001",
    ]
    for path in [settings, *backups]:
        assert path.stat().st_mode & 0o777 == 0o600, path
    assert sorted(p.name for p in settings.parent.iterdir()) == sorted(
        ["settings.local.json", *(b.name for b in backups)]
    )


def test_a_new_settings_file_is_private(tmp_path: Path) -> None:
    assert mcp_loco("install", "claude-code", "--proxy", cwd=tmp_path, home=tmp_path / "home").returncode == 0
    assert (tmp_path / ".claude/settings.local.json").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("content", "mode", "needle"),
    [(b'{"env": {"X": "caf\xe9"}}', 0o600, "is not UTF-8"), (b'{"env": {}}', 0o400, "chmod u+w")],
)
def test_install_refuses_a_settings_file_it_would_spoil(tmp_path: Path, content: bytes, mode: int, needle: str) -> None:
    settings = tmp_path / ".claude/settings.local.json"
    settings.parent.mkdir()
    settings.write_bytes(content)
    settings.chmod(mode)
    done = mcp_loco("install", "claude-code", "--proxy", cwd=tmp_path, home=tmp_path / "home")
    assert done.returncode == 2 and needle in done.stderr and "Traceback" not in done.stderr
    assert settings.read_bytes() == content and settings.stat().st_mode & 0o777 == mode
    assert [p.name for p in settings.parent.iterdir()] == ["settings.local.json"]


@pytest.mark.parametrize(
    ("args", "needle"), [(["--proxy-url", "127.0.0.1:9091"], "is not an http(s) URL"), ([], "is not valid JSON")]
)
def test_install_errors_are_clear(tmp_path: Path, args: list[str], needle: str) -> None:
    (tmp_path / ".claude").mkdir()
    (tmp_path / ".claude/settings.local.json").write_text("{broken")
    done = mcp_loco("install", "claude-code", "--proxy", *args, cwd=tmp_path, home=tmp_path / "home")
    assert done.returncode == 2 and needle in done.stderr and "Traceback" not in done.stderr


def test_the_proxy_command_says_what_is_wrong(tmp_path: Path) -> None:
    done = mcp_loco("proxy", "--model", str(tmp_path / "none.gguf"), "--port", "0", cwd=tmp_path, home=tmp_path)
    assert done.returncode == 2 and "none.gguf" in done.stderr and "Traceback" not in done.stderr
    done = mcp_loco("proxy", "--fallback-turns", "0", cwd=tmp_path, home=tmp_path)
    assert done.returncode == 2 and "proxy.fallback_turns" in done.stderr


@pytest.mark.slow
def test_claude_code_follows_the_installed_settings_to_the_proxy(sample_repo: Path, tmp_path: Path) -> None:
    claude = CLAUDE
    if not claude.exists():
        pytest.fail("Claude Code CLI not installed: run scripts/setup --test (needs npm)")
    notes = sample_repo / "NOTES.md"
    notes.write_text(f"The release marker is {MARKER}.\n")
    app = create_app(proxy_settings(upstream=""), lambda: FileReader(notes))  # default --local claude-haiku*
    with serve_app(app) as url:
        home = tmp_path / "home"
        assert (
            mcp_loco("install", "claude-code", "--proxy", "--proxy-url", url, cwd=sample_repo, home=home).returncode
            == 0
        )
        env = claude_env(home, url)
        del env["ANTHROPIC_BASE_URL"]  # only the installed settings point Claude Code at the proxy
        done = run_claude(claude, "What is the release marker in NOTES.md?", env, sample_repo, "--allowedTools", "Read")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"The marker is {MARKER}." in done.stdout
