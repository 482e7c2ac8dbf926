"""The server as a separate process with the real small model, over stdio, SSE and streamable HTTP."""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, ClientSession, StdioServerParameters
from mcp.client.sse import sse_client
from mcp_types import CallToolResult
from server_helpers import BIN, running_server, server_env

pytestmark = [pytest.mark.model, pytest.mark.slow]

QUESTION = "Where is load_config defined?"
INSPECTOR = Path(__file__).parents[1] / "clients/node_modules/.bin/mcp-inspector"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def env(small_model_path: Path, sample_repo: Path) -> dict[str, str]:
    return server_env(small_model_path, sample_repo)


def check_result(result: CallToolResult, repo: Path) -> dict[str, Any]:
    text = "".join(getattr(c, "text", "") for c in result.content)
    assert not result.is_error, text
    sc = result.structured_content
    assert sc is not None and sc["report"] == text and text.strip()
    assert sc["root"] == str(repo.resolve()) and sc["stop_reason"] and "citations" in sc
    assert "trace" not in sc  # the brief payload unless detail="full"
    return sc


class Progress:
    def __init__(self) -> None:
        self.messages: list[str] = []

    async def __call__(self, p: float, total: float | None, message: str | None) -> None:
        self.messages.append(message or "")


@pytest.mark.anyio
async def test_stdio_subprocess(env: dict[str, str], sample_repo: Path) -> None:
    params = StdioServerParameters(command=str(BIN), args=["serve"], env=env)
    progress = Progress()
    async with Client(params) as client:
        with anyio.fail_after(120):
            tools = await client.list_tools()
            result = await client.call_tool(
                "explore_codebase", {"path": str(sample_repo), "question": QUESTION}, progress_callback=progress
            )
    assert [t.name for t in tools.tools] == ["explore_codebase"]
    check_result(result, sample_repo)
    assert any(m.startswith("turn 1/2: ") for m in progress.messages)


@pytest.mark.anyio
async def test_sse(env: dict[str, str], sample_repo: Path) -> None:
    with running_server("sse", env) as url:
        progress = Progress()
        async with sse_client(url) as (read, write), ClientSession(read, write) as session:
            with anyio.fail_after(120):
                await session.initialize()
                tools = await session.list_tools()
                result = await session.call_tool(
                    "explore_codebase", {"path": str(sample_repo), "question": QUESTION}, progress_callback=progress
                )
                bad = await session.call_tool("explore_codebase", {"path": "/etc", "question": "q"})
    assert [t.name for t in tools.tools] == ["explore_codebase"]
    check_result(result, sample_repo)
    assert progress.messages
    assert bad.is_error


@pytest.mark.anyio
async def test_http_concurrent_calls_and_cancel(env: dict[str, str], sample_repo: Path) -> None:
    with running_server("http", env, "--parallel", "2") as url:
        results: list[CallToolResult] = []
        async with Client(url) as client:
            with anyio.fail_after(240):
                assert [t.name for t in (await client.list_tools()).tools] == ["explore_codebase"]
                # Several clients at once, more than the model instances: all get their answers.
                async with anyio.create_task_group() as tg:
                    for i in range(3):

                        async def one(i: int = i) -> None:
                            async with Client(url) as c:
                                results.append(
                                    await c.call_tool(
                                        "explore_codebase", {"path": str(sample_repo), "question": f"{QUESTION} ({i})"}
                                    )
                                )

                        tg.start_soon(one)
                # A cancelled call stops, and the server answers the next one.
                started = anyio.Event()

                async def on_progress(p: float, total: float | None, message: str | None) -> None:
                    started.set()

                async with anyio.create_task_group() as tg:

                    async def long_call() -> None:
                        await client.call_tool(
                            "explore_codebase",
                            {"path": str(sample_repo), "question": QUESTION, "max_turns": 30},
                            progress_callback=on_progress,
                        )

                    tg.start_soon(long_call)
                    await started.wait()
                    tg.cancel_scope.cancel()
                after = await client.call_tool("explore_codebase", {"path": str(sample_repo), "question": QUESTION})
        assert len(results) == 3
        for r in [*results, after]:
            check_result(r, sample_repo)


def inspector(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    if not INSPECTOR.exists():
        pytest.fail("MCP Inspector not installed: run scripts/setup --test (needs npm)")
    return subprocess.run(
        [str(INSPECTOR), "--cli", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_inspector_cli_over_stdio(env: dict[str, str], sample_repo: Path) -> None:
    env_args = [a for k, v in env.items() if k.startswith("MCP_LOCO_") for a in ("-e", f"{k}={v}")]
    target = ["--", str(BIN), "serve"]
    listed = inspector(*env_args, "--method", "tools/list", *target)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["tools"][0]["name"] == "explore_codebase"
    call = ["--method", "tools/call", "--tool-name", "explore_codebase"]
    args = ["--tool-arg", f"path={sample_repo}", f"question={QUESTION}", "detail=full"]
    called = inspector(*env_args, *call, *args, *target)
    assert called.returncode == 0, called.stderr + called.stdout
    assert json.loads(called.stdout)["structuredContent"]["trace"]["turns"] >= 1
    refused = inspector(*env_args, *call, "--tool-arg", "path=/etc", "question=q", *target)
    assert refused.returncode != 0 and "outside the allowed roots" in refused.stdout + refused.stderr


def test_inspector_cli_over_http_with_a_token(env: dict[str, str], sample_repo: Path, tmp_path: Path) -> None:
    token = "inspector-token-0123456789abcdef"
    (tmp_path / "token").write_text(token + "\n")
    (tmp_path / "token").chmod(0o600)
    with running_server("http", env, "--token-file", str(tmp_path / "token")) as url:
        header = ["--header", f"Authorization: Bearer {token}"]
        listed = inspector(url, *header, "--method", "tools/list")
        assert listed.returncode == 0, listed.stderr
        assert json.loads(listed.stdout)["tools"][0]["annotations"]["readOnlyHint"] is True
        called = inspector(
            url,
            *header,
            "--method",
            "tools/call",
            "--tool-name",
            "explore_codebase",
            "--tool-arg",
            f"path={sample_repo}",
            "--tool-arg",
            f"question={QUESTION}",
        )
        assert called.returncode == 0, called.stderr + called.stdout
        assert json.loads(called.stdout)["structuredContent"]["report"]
        # Without the header the server answers 401 + WWW-Authenticate, which the Inspector reads as "log in".
        refused = inspector(url, "--method", "tools/list", timeout=60)
        assert refused.returncode != 0 and "auth_required" in refused.stderr, refused.stdout + refused.stderr


def test_stdio_mode_writes_nothing_but_protocol_to_stdout(env: dict[str, str], sample_repo: Path) -> None:
    """Every stdout line of a stdio session is a JSON-RPC message; logs went to stderr."""
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
    }
    msgs = [init, {"jsonrpc": "2.0", "method": "notifications/initialized"}]
    msgs.append({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
    env = {**env, "MCP_LOCO_LOG_LEVEL": "debug"}
    proc = subprocess.Popen(
        [str(BIN), "serve"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdin is not None and proc.stdout is not None
    for m in msgs:
        proc.stdin.write(json.dumps(m) + "\n")
        proc.stdin.flush()
    lines = []
    deadline = time.monotonic() + 60
    while len(lines) < 2 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
    # Let the background model load log its lines (debug level): the answers above may come before the
    # server has even loaded (serve/fast_start.py), so wait for the load itself rather than a fixed time.
    assert proc.stderr is not None
    head, deadline = "", time.monotonic() + 60
    while "model loaded" not in head and time.monotonic() < deadline:
        if select.select([proc.stderr], [], [], 1.0)[0]:
            chunk = os.read(proc.stderr.fileno(), 65536).decode(errors="replace")
            if not chunk:
                break
            head += chunk
    out, err = proc.communicate(timeout=30)  # closes stdin: the server ends
    err = head + err
    lines += out.splitlines()
    assert len(lines) >= 2
    for line in lines:
        assert json.loads(line)["jsonrpc"] == "2.0"
    assert "model loaded" in err


def test_serve_help_and_bad_flags() -> None:
    done = subprocess.run([str(BIN), "serve", "--transport", "pigeon"], capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "invalid choice" in done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "mcp_loco", "serve", "--help"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and "--transport" in done.stdout
    assert shutil.which("true")  # sanity: a POSIX userland for the subprocess tests
