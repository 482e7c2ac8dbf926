"""A served root that is itself secret (`cd ~/.ssh && claude`, `--root ~/.aws`, a link to one, a directory below
one) is never explored: `mcp-loco serve` over stdio says so at start and refuses each call, serving the others."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp_types import CallToolResult
from server_helpers import BIN
from trees import write_tree

from mcp_loco.model.protocol import format_call

SECRET = "CANARY-SECRET-5c2e"

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A home folder with the secrets a hostile client would ask for, and a project next to them."""
    return write_tree(
        tmp_path / "home",
        {
            ".ssh/config": f"Host prod\n  IdentityFile ~/.ssh/{SECRET}\n",
            ".ssh/keys/notes.txt": f"{SECRET}\n",
            ".aws/credentials": f"aws_secret_access_key={SECRET}\n",
            ".aws/config": f"[default]\nregion = {SECRET}\n",
            "proj/src/app.py": "def main():\n    pass\n",
            "proj/.git/config": f'[remote "origin"]\n\turl = https://u:{SECRET}@example.com/r.git\n',
            "proj/.git/HEAD": "ref: refs/heads/main\n",
        },
    )


def env_for(home: Path, turns: Sequence[str], transcripts: Path, **extra: str) -> dict[str, str]:
    """A server on recorded turns (no model is needed to refuse a root), writing a transcript of what it saw."""
    turns_file = home.parent / "turns.json"
    turns_file.write_text(json.dumps(list(turns)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_LOCO_")}
    env.update(
        {
            "HOME": str(home),
            "MCP_LOCO_MODEL_BACKEND": "replay",
            "MCP_LOCO_REPLAY_FILE": str(turns_file),
            "MCP_LOCO_AGENT_GRAMMAR": "false",
            "MCP_LOCO_AGENT_MAX_TURNS": "2",
            "MCP_LOCO_AGENT_TRANSCRIPT_DIR": str(transcripts),
            "MCP_LOCO_LOG_LEVEL": "warning",
            **extra,
        }
    )
    return env


def text(result: CallToolResult) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


async def call(params: StdioServerParameters, *paths: str) -> list[CallToolResult]:
    async with Client(params) as client:
        with anyio.fail_after(60):
            return [await client.call_tool("explore_codebase", {"path": p, "question": "what is here?"}) for p in paths]


def seen_by_model(transcripts: Path) -> str:
    return "".join(p.read_text() for p in transcripts.glob("*")) if transcripts.is_dir() else ""


def start_message(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`mcp-loco serve` over stdio with its stdin closed: it starts, says what it refuses, and ends."""
    return subprocess.run(
        [str(BIN), "serve", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _link(home: Path, target: str) -> Path:
    link = home / "proj-link"
    link.symlink_to(home / target)
    return link


@pytest.mark.slow
@pytest.mark.parametrize(
    ("where", "how"),
    [
        (".ssh", "cwd"),
        (".ssh", "--root"),
        (".ssh/keys", "cwd"),  # below a secret directory
        (".aws", "--root"),
        (".aws", "env"),
        (".aws", "config"),
        ("link->.ssh", "--root"),
        ("link->.aws", "cwd"),
    ],
)
async def test_a_secret_root_is_refused_at_start_and_on_every_call(
    home: Path, tmp_path: Path, where: str, how: str
) -> None:
    root = _link(home, where.split("->")[1]) if "->" in where else home / where
    transcripts = tmp_path / "transcripts"
    read = format_call("Read", {"file_path": str(root / "config")})
    env = env_for(home, [read, "report"], transcripts)
    args: list[str] = []
    cwd = home / "proj"
    if how == "cwd":
        cwd = root
    elif how == "--root":
        args = ["--root", str(root)]
    elif how == "env":
        env["MCP_LOCO_SERVER_ROOTS"] = str(root)
    else:
        config = tmp_path / "settings.toml"
        config.write_text(f"[server]\nroots = [{json.dumps(str(root))}]\n")
        args = ["--config", str(config)]

    started = start_message(env, cwd, *args)
    assert started.returncode == 0 and started.stdout == "", started.stderr
    assert "secret directory" in started.stderr and "not served" in started.stderr, started.stderr

    params = StdioServerParameters(command=str(BIN), args=["serve", *args], env=env, cwd=str(cwd))
    results = await call(params, str(root), str(root / "keys") if where == ".ssh" else str(root), ".")
    for result in results:
        assert result.is_error and "secret directory" in text(result), text(result)
        assert SECRET not in text(result)
    assert SECRET not in seen_by_model(transcripts)


@pytest.mark.slow
async def test_the_other_roots_are_still_served(home: Path, tmp_path: Path) -> None:
    transcripts = tmp_path / "transcripts"
    env = env_for(home, ["the project report"], transcripts)
    args = ["--root", str(home / ".ssh"), "--root", str(home / "proj"), "--root", str(home / ".aws")]
    started = start_message(env, home, *args)
    assert started.stderr.count("secret directory") == 2, started.stderr

    params = StdioServerParameters(command=str(BIN), args=["serve", *args], env=env, cwd=str(home))
    ssh, proj, aws = await call(params, str(home / ".ssh"), str(home / "proj"), str(home / ".aws"))
    assert ssh.is_error and aws.is_error and "secret directory" in text(ssh) + text(aws)
    assert not proj.is_error and text(proj) == "the project report"


@pytest.mark.slow
async def test_a_git_directory_as_the_root_never_shows_its_config(home: Path, tmp_path: Path) -> None:
    git = home / "proj/.git"
    transcripts = tmp_path / "transcripts"
    calls = [
        format_call("Read", {"file_path": str(git / "config")}),
        format_call("Grep", {"pattern": "CANARY", "output_mode": "content"}),
        format_call("Bash", {"command": "cat config"}),
    ]
    env = env_for(home, ["\n".join(calls), "report"], transcripts)
    params = StdioServerParameters(command=str(BIN), args=["serve"], env=env, cwd=str(git))
    (result,) = await call(params, str(git))
    assert not result.is_error, text(result)
    shown = seen_by_model(transcripts)
    assert "Read" in shown and SECRET not in shown


@pytest.mark.parametrize("command", ["explore", "tool"])
@pytest.mark.parametrize("where", [".ssh/keys", "link->.aws"])
def test_explore_and_tool_refuse_a_directory_below_or_linked_to_a_secret_one(
    home: Path, tmp_path: Path, command: str, where: str
) -> None:
    root = _link(home, where.split("->")[1]) if "->" in where else home / where
    env = env_for(home, ["report"], tmp_path / "transcripts")
    read = json.dumps({"file_path": str(root / "notes.txt")})
    args = [str(root), "what is here?"] if command == "explore" else ["Read", read, "--root", str(root)]
    done = subprocess.run([str(BIN), command, *args], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "secret directory" in done.stderr + done.stdout, done.stderr
    assert SECRET not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "spelling",
    ["{home}/.ssh", "{home}/.ssh/", "{home}/proj/../.ssh", "~/.ssh", "~/.SSH", "{home}/.ssh/keys", "{home}/.aws/."],
)
def test_every_spelling_of_a_secret_root_is_refused(home: Path, spelling: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from mcp_loco.config import Settings
    from mcp_loco.serve.server import refused_roots, resolve_roots

    monkeypatch.setenv("HOME", str(home))
    (home / ".SSH").mkdir(exist_ok=True)  # a case-insensitive file system's view, made explicit
    s = Settings()
    s.server.roots = [spelling.format(home=home), str(home / "proj")]
    assert resolve_roots(s) == [(home / "proj").resolve()]
    (why,) = refused_roots(s).values()
    assert "secret directory" in why and "deny-list pattern" in why
