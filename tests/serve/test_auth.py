"""Bearer-token authentication of the sse and http transports, with real servers and real clients."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, ClientSession, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from server_helpers import BIN, free_port
from serving_helpers import (
    ACCEPT,
    INIT,
    SLOW_SERVE,
    TOKEN,
    bearer,
    call_args,
    open_session,
    rpc,
    slow_env,
    slow_server,
    sse_messages,
)

from mcp_loco.config import ServerSettings
from mcp_loco.errors import ConfigError
from mcp_loco.serve.auth import check_exposure, is_loopback, load_token

CLAUDE = Path(__file__).parents[1] / "clients/node_modules/.bin/claude"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


def post_init(url: str, headers: dict[str, str]) -> httpx2.Response:
    h = {"Accept": ACCEPT, "Content-Type": "application/json", **headers}
    return httpx2.post(url, json=rpc("initialize", INIT), headers=h, timeout=10)


@pytest.mark.anyio
@pytest.mark.slow
async def test_http_answers_only_callers_with_the_token(sample_repo: Path, token_file: Path) -> None:
    with slow_server("http", slow_env(sample_repo, turn_s=0), "--token-file", str(token_file)) as s:
        async with (
            httpx2.AsyncClient(headers=bearer()) as http,
            Client(streamable_http_client(s.url, http_client=http)) as client,
        ):
            with anyio.fail_after(30):
                tools = await client.list_tools()
                result = await client.call_tool("explore_codebase", call_args(sample_repo, max_turns=1))
        async with (
            httpx2.AsyncClient(headers=bearer()) as http,
            Client(streamable_http_client(s.url, http_client=http), mode="legacy") as legacy,
        ):
            with anyio.fail_after(30):
                assert (await legacy.list_tools()).tools[0].name == "explore_codebase"
        missing = post_init(s.url, {})
        wrong = post_init(s.url, bearer("not-the-token-0123456789"))
        basic = post_init(s.url, {"Authorization": f"Basic {TOKEN}"})
        with pytest.raises(Exception, match="unhandled errors"):  # the SDK's client, without the header
            with anyio.fail_after(30):
                async with Client(s.url) as client:
                    await client.list_tools()
    assert [t.name for t in tools.tools] == ["explore_codebase"]
    assert not result.is_error
    for refused in (missing, wrong, basic):
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith('Bearer realm="mcp-loco"')
        assert "mcp-session-id" not in refused.headers
    assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
    assert 'error="invalid_token"' not in missing.headers["www-authenticate"]
    assert "Authorization: Bearer" in missing.json()["error_description"]


@pytest.mark.anyio
@pytest.mark.slow
async def test_sse_needs_the_token_from_the_environment_on_both_endpoints(sample_repo: Path) -> None:
    env = slow_env(sample_repo, turn_s=0, MCP_LOCO_SERVER_TOKEN=TOKEN)
    with slow_server("sse", env) as s:
        async with sse_client(s.url, headers=bearer()) as (read, write), ClientSession(read, write) as session:
            with anyio.fail_after(30):
                await session.initialize()
                result = await session.call_tool("explore_codebase", call_args(sample_repo, max_turns=1))
        async with httpx2.AsyncClient(timeout=10) as raw:
            stream_refused = await raw.get(s.url, headers={"Accept": "text/event-stream"})
            # A message posted to a live session without the token is refused too.
            async with raw.stream("GET", s.url, headers={"Accept": "text/event-stream", **bearer()}) as stream:
                lines = stream.aiter_lines()  # held: a dropped line iterator closes the stream, ending the session
                async for line in lines:
                    if line.startswith("data:"):
                        post = s.base + line[5:].strip()
                        break
                post_refused = await raw.post(post, json=rpc("initialize", INIT), headers=bearer("x" * 20))
                accepted = await raw.post(post, json=rpc("initialize", INIT), headers=bearer())
    assert not result.is_error
    assert stream_refused.status_code == 401 and post_refused.status_code == 401
    assert accepted.status_code == 202


@pytest.mark.slow
def test_the_token_is_never_logged(sample_repo: Path, tmp_path: Path) -> None:
    wrong = "wrong-token-but-close-" + TOKEN[-8:]
    env = slow_env(sample_repo, turn_s=0, MCP_LOCO_SERVER_TOKEN=TOKEN, MCP_LOCO_LOG_LEVEL="debug")
    with slow_server("http", env) as s:
        assert post_init(s.url, bearer()).status_code == 200
        assert post_init(s.url, bearer(wrong)).status_code == 401
    assert "request refused: wrong bearer token" in s.stderr
    assert TOKEN not in s.stderr and TOKEN[-8:] not in s.stderr and wrong not in s.stderr
    shown = subprocess.run([str(BIN), "config"], env=env, capture_output=True, text=True, timeout=60, check=True)
    assert 'token = "***"' in shown.stdout and TOKEN not in shown.stdout


def serve_fails(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MCP_LOCO_")}
    cmd = [str(BIN), "serve", "--transport", "http", "--port", str(free_port()), *args]
    return subprocess.run(cmd, env={**base, **(env or {})}, capture_output=True, text=True, timeout=60, check=False)


def test_listening_beyond_loopback_without_a_token_refuses_to_start(tmp_path: Path) -> None:
    done = serve_fails("--host", "0.0.0.0", "--root", str(tmp_path))
    assert done.returncode == 2
    assert "refusing to listen on 0.0.0.0 without a token" in done.stderr
    assert "--token-file" in done.stderr and "--allow-unauthenticated" in done.stderr
    sse = serve_fails("--host", "192.168.1.10", "--root", str(tmp_path), "--set", 'server.transport="sse"')
    assert sse.returncode == 2 and "without a token" in sse.stderr


@pytest.mark.parametrize(
    ("contents", "needle"),
    [
        (None, "token file not found"),
        ("", "is empty"),
        ("tiny-7x\n", "shorter than 16"),
        ("has a space in it!!\n", "spaces"),
    ],
)
def test_a_bad_token_stops_the_server_with_the_reason(tmp_path: Path, contents: str | None, needle: str) -> None:
    path = tmp_path / "token"
    if contents is not None:
        path.write_text(contents)
        path.chmod(0o600)
    done = serve_fails("--token-file", str(path), "--root", str(tmp_path))
    assert done.returncode == 2 and needle in done.stderr, done.stderr
    assert contents is None or not contents.strip() or contents.strip() not in done.stderr


def test_exposure_rules() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.8.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("example.com")
    check_exposure(ServerSettings(host="0.0.0.0"), TOKEN)
    check_exposure(ServerSettings(host="0.0.0.0", allow_unauthenticated=True), None)
    check_exposure(ServerSettings(host="127.0.0.1"), None)
    with pytest.raises(ConfigError, match="--allow-unauthenticated"):
        check_exposure(ServerSettings(host="::"), None)
    assert load_token(ServerSettings()) is None
    assert load_token(ServerSettings(token=f"  {TOKEN} ")) == TOKEN  # type: ignore[arg-type]


@pytest.mark.anyio
@pytest.mark.slow
async def test_stdio_ignores_the_token(sample_repo: Path) -> None:
    env = slow_env(sample_repo, turn_s=0, MCP_LOCO_SERVER_TOKEN=TOKEN)
    async with Client(StdioServerParameters(command=sys.executable, args=[str(SLOW_SERVE), "serve"], env=env)) as c:
        with anyio.fail_after(30):
            result = await c.call_tool("explore_codebase", call_args(sample_repo, max_turns=1))
    assert not result.is_error


def test_install_prints_a_registration_that_does_not_echo_the_token(token_file: Path) -> None:
    url = "http://10.0.0.5:8765/mcp"
    done = subprocess.run(
        [str(BIN), "install", "claude-code", "--print", "--url", url, "--token-file", str(token_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        f'claude mcp add --transport http --scope user loco {url} --header "Authorization: Bearer $(cat {token_file})"'
    )
    assert TOKEN not in done.stdout + done.stderr
    desktop = subprocess.run(
        [str(BIN), "install", "claude-desktop", "--url", url], capture_output=True, text=True, timeout=60, check=False
    )
    assert desktop.returncode == 2 and "claude-code" in desktop.stderr


@pytest.mark.slow
def test_claude_code_registered_by_install_reaches_the_server_with_its_token(
    sample_repo: Path, token_file: Path, tmp_path: Path
) -> None:
    if not CLAUDE.exists():
        pytest.fail("Claude Code CLI not installed: run scripts/setup --test (needs npm)")
    with slow_server("http", slow_env(sample_repo, turn_s=0), "--token-file", str(token_file)) as s:
        listings = {}
        for name, tokens in (("good", token_file), ("bad", tmp_path / "bad-token")):
            (tmp_path / "bad-token").write_text("not-the-right-token-at-all\n")
            (tmp_path / "bad-token").chmod(0o600)
            home = tmp_path / f"home-{name}"
            home.mkdir()
            env = {**os.environ, "HOME": str(home), "PATH": f"{CLAUDE.parent}:{os.environ['PATH']}"}
            cmd = [str(BIN), "install", "claude-code", "--url", s.url, "--token-file", str(tokens)]
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
            assert done.returncode == 0, done.stderr
            listed = subprocess.run(
                [str(CLAUDE), "mcp", "list"],
                env=env,
                cwd=home,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            listings[name] = listed.stdout + listed.stderr
            config = json.loads((home / ".claude.json").read_text())
            assert config["mcpServers"]["loco"]["headers"]["Authorization"].startswith("Bearer ")
    # `claude mcp list` exits 0 even when a server fails its health check: read the text.
    assert "loco:" in listings["good"] and "✔ Connected" in listings["good"], listings["good"]
    assert "✔ Connected" not in listings["bad"], listings["bad"]
    assert TOKEN not in s.stderr


def private_token(tmp_path: Path, mode: int = 0o600) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(mode)
    return path


OPEN_MODES = [0o644, 0o640, 0o604, 0o660, 0o620, 0o602, 0o610, 0o601, 0o444, 0o777, 0o4644]


@pytest.mark.parametrize("mode", OPEN_MODES, ids=[f"{m:04o}" for m in OPEN_MODES])
def test_a_token_file_other_users_can_reach_is_refused_with_the_fix(tmp_path: Path, mode: int) -> None:
    path = private_token(tmp_path, mode)
    link = tmp_path / "via-link"
    link.symlink_to(path)
    chain = tmp_path / "via-two-links"
    chain.symlink_to(link)
    for named in (path, link, chain):
        with pytest.raises(ConfigError) as refused:
            load_token(ServerSettings(token_file=str(named)))
        message = str(refused.value)
        assert f"chmod 600 {path}" in message, message  # the fix names the file that holds the token
        assert f"mode {stat.S_IMODE(path.stat().st_mode):04o}" in message
        assert TOKEN not in message
        if named != path:
            assert f"{named} (a link to {path})" in message


def test_a_private_token_file_is_read_also_through_a_link(tmp_path: Path) -> None:
    for mode in (0o600, 0o400, 0o700):
        path = private_token(tmp_path, mode)
        link = tmp_path / "link"
        link.unlink(missing_ok=True)
        link.symlink_to(path)
        assert load_token(ServerSettings(token_file=str(path))) == TOKEN
        assert load_token(ServerSettings(token_file=str(link))) == TOKEN
    # A private link target is judged, not the link (a link's own mode is always 0777).
    open_file = tmp_path / "open"
    open_file.write_text(TOKEN)
    open_file.chmod(0o644)
    private_link = tmp_path / "private-link"
    private_link.symlink_to(open_file)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_token(ServerSettings(token_file=str(private_link)))


def test_a_token_file_that_is_not_a_plain_file_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    folder = tmp_path / "folder"
    folder.mkdir(mode=0o700)
    for path in (fifo, folder):
        outcome: list[BaseException] = []

        def load(path: Path = path, outcome: list[BaseException] = outcome) -> None:
            try:
                load_token(ServerSettings(token_file=str(path)))
            except BaseException as e:
                outcome.append(e)

        worker = threading.Thread(target=load, daemon=True)
        worker.start()
        worker.join(timeout=10)  # a FIFO opened for reading would wait for a writer forever
        assert not worker.is_alive(), f"reading {path} hangs"
        assert isinstance(outcome[0], ConfigError) and "not a regular file" in str(outcome[0]), outcome


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MCP_LOCO_")}
    return subprocess.run(
        [str(BIN), *args], env={**base, **(env or {})}, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.slow
def test_every_command_that_reads_a_token_file_refuses_an_open_one(tmp_path: Path) -> None:
    path = private_token(tmp_path, 0o644)
    link = tmp_path / "link"
    link.symlink_to(path)
    url = "http://127.0.0.1:8765/mcp"
    runs = {
        "serve --token-file": serve_fails("--token-file", str(link), "--root", str(tmp_path)),
        "serve, sse": serve_fails(
            "--token-file", str(path), "--set", 'server.transport="sse"', "--root", str(tmp_path)
        ),
        "serve, server.token_file": serve_fails("--root", str(tmp_path), env={"MCP_LOCO_SERVER_TOKEN_FILE": str(link)}),
        "install --url": run_cli("install", "claude-code", "--url", url, "--token-file", str(link)),
        "install --url --print": run_cli("install", "claude-code", "--print", "--url", url, "--token-file", str(path)),
    }
    for name, done in runs.items():
        assert done.returncode == 2, (name, done.stderr)
        assert f"chmod 600 {path}" in done.stderr, (name, done.stderr)
        assert "Traceback" not in done.stderr and TOKEN not in done.stdout + done.stderr, (name, done.stderr)
        assert "Bearer" not in done.stdout, name  # nothing registered or printed
    path.chmod(0o600)
    printed = run_cli("install", "claude-code", "--print", "--url", url, "--token-file", str(link))
    assert printed.returncode == 0 and "Authorization: Bearer $(cat" in printed.stdout, printed.stderr


SESSION = {"Accept": ACCEPT, "Content-Type": "application/json", "mcp-protocol-version": "2025-06-18"}


async def list_tools_in(raw: httpx2.AsyncClient, url: str, sid: str) -> httpx2.Response:
    return await raw.post(url, json=rpc("tools/list", {}, id=3), headers={**SESSION, "mcp-session-id": sid})


@pytest.mark.anyio
@pytest.mark.slow
async def test_fifty_abandoned_sessions_lock_nobody_out(sample_repo: Path) -> None:
    with slow_server("http", slow_env(sample_repo, turn_s=0)) as s:  # the default limit: 32 per address
        async with httpx2.AsyncClient(timeout=30) as raw:
            with anyio.fail_after(120):
                abandoned = [await open_session(raw, s.url) for _ in range(50)]  # never DELETEd
            async with Client(s.url) as client:
                with anyio.fail_after(60):
                    result = await client.call_tool("explore_codebase", call_args(sample_repo, max_turns=1))
            assert not result.is_error
            # The least recently used went first; their next request says what happened (a 404, as MCP has it).
            gone = await list_tools_in(raw, s.url, abandoned[0])
            kept = await list_tools_in(raw, s.url, abandoned[-1])
            # A client that starts again gets in, from the same address.
            again = await open_session(raw, s.url)
            assert (await list_tools_in(raw, s.url, again)).status_code == 200
    assert gone.status_code == 404, gone.text
    message = gone.json()["error"]["message"]
    assert message.startswith("Session not found") and "initialize a new session" in message
    assert "max_sessions_per_client" in message
    assert kept.status_code == 200, kept.text
    assert "closing an idle session failed" not in s.stderr and "Traceback" not in s.stderr
    # The SDK ended exactly the least recently used: 18 for the later 18 sessions, one for the client's.
    before_shutdown = s.stderr.split("Shutting down")[0]  # a shutdown ends every session
    ended = [sid for sid in abandoned if f"Terminating session: {sid}" in before_shutdown]
    assert ended == abandoned[:19], (len(ended), s.stderr[-2000:])


async def read_call(response: httpx2.Response, started: anyio.Event) -> dict[str, Any]:
    """The JSON-RPC result of a streamed tools/call; `started` is set at its first progress notification."""
    async for line in response.aiter_lines():
        for message in sse_messages(line):
            if message.get("method") == "notifications/progress":
                started.set()
            elif "result" in message or "error" in message:
                return message
    raise AssertionError("the call's stream ended without a result")


@pytest.mark.anyio
@pytest.mark.slow
async def test_busy_sessions_are_never_evicted(sample_repo: Path) -> None:
    env = slow_env(sample_repo, turn_s=1.0)
    with slow_server("http", env, "--set", "server.max_sessions_per_client=2") as s:
        async with httpx2.AsyncClient(timeout=60) as raw:
            calling = await open_session(raw, s.url)
            idle = await open_session(raw, s.url)
            params = {"name": "explore_codebase", "arguments": call_args(sample_repo, max_turns=6)}
            params["_meta"] = {"progressToken": 1}
            h = {**SESSION, "mcp-session-id": calling}
            async with raw.stream("POST", s.url, json=rpc("tools/call", params, id=9), headers=h) as call:
                started = anyio.Event()
                async with anyio.create_task_group() as tg:
                    outcome: dict[str, Any] = {}

                    async def finish() -> None:
                        outcome.update(await read_call(call, started))

                    tg.start_soon(finish)
                    with anyio.fail_after(30):
                        await started.wait()
                    # The idle one makes room; the one with a call in flight is kept.
                    newer = await open_session(raw, s.url)
                    evicted = await list_tools_in(raw, s.url, idle)
                    # A session holding its event stream (GET) is busy too.
                    stream_h = {"Accept": "text/event-stream", "mcp-session-id": newer}
                    stream_h["mcp-protocol-version"] = "2025-06-18"
                    async with raw.stream("GET", s.url, headers=stream_h) as held:
                        assert held.status_code == 200
                        refused = await raw.post(s.url, json=rpc("initialize", INIT), headers=SESSION)
                    with anyio.fail_after(60):
                        while not outcome:
                            await anyio.sleep(0.05)
            # Both idle now: the least recently used (the call's, unless its stream ended later) makes room.
            last = await open_session(raw, s.url)
            assert (await list_tools_in(raw, s.url, last)).status_code == 200
    assert evicted.status_code == 404 and "initialize a new session" in evicted.json()["error"]["message"]
    assert refused.status_code == 429, refused.text
    description = refused.json()["error_description"]
    assert "2 open sessions, each with a call in flight or a stream open" in description
    assert "max_sessions_per_client" in description
    assert "result" in outcome and not outcome["result"].get("isError"), outcome  # the busy call was not cut


@pytest.mark.anyio
@pytest.mark.slow
@pytest.mark.parametrize("transport", ["http", "sse"])
async def test_serve_refuses_what_a_web_page_could_send_as_the_proxy_does(sample_repo: Path, transport: str) -> None:
    with slow_server(transport, slow_env(sample_repo, turn_s=0)) as s:
        port, here = s.port, f"127.0.0.1:{s.port}"
        init = json.dumps(rpc("initialize", INIT)).encode()
        async with httpx2.AsyncClient(timeout=10) as raw:

            async def ask(host: str, **headers: str) -> httpx2.Response:
                if transport == "sse":  # opening the event stream is the request a page would make
                    h = {"Host": host, "Accept": "text/event-stream", **headers}
                    return await raw.get(s.url, headers=h)
                h = {"Host": host, "Accept": ACCEPT, "Content-Type": "application/json", **headers}
                return await raw.post(s.url, content=init, headers=h)

            answers = {
                (421, "misdirected_request"): [
                    await ask(f"127.0.0.1:{port + 1}"),
                    await ask(f"localhost.:{port}"),
                    await ask(f"localhost.evil.example:{port}"),
                    await ask("evil.example"),
                ],
                (403, "forbidden_origin"): [
                    await ask(here, Origin=f"http://localhost:{port + 1}"),
                    await ask(here, Origin=f"http://127.0.0.1:{port + 1}"),
                    await ask(here, Origin="null"),
                    await ask(here, Origin="https://evil.example"),
                ],
            }
            if transport == "http":
                h = {"Host": here, "Accept": ACCEPT}
                answers[(415, "unsupported_media_type")] = [
                    await raw.post(s.url, content=init, headers={**h, "Content-Type": kind})
                    for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x")
                ] + [await raw.post(s.url, content=init, headers=h)]
                assert (await ask(f"[::1]:{port}", Origin=f"http://[::1]:{port}")).status_code == 200
            for (status, code), responses in answers.items():
                for r in responses:
                    assert r.status_code == status, (status, r.text)
                    assert r.json()["error"] == code and r.json()["error_description"], r.text
            # Still serving, to a program (no Origin).
            if transport == "http":
                async with Client(s.url) as client:
                    assert [t.name for t in (await client.list_tools()).tools] == ["explore_codebase"]
            else:
                async with sse_client(s.url) as (read, write), ClientSession(read, write) as session:
                    with anyio.fail_after(20):
                        await session.initialize()
    assert "Traceback" not in s.stderr and "request refused: forbidden_origin" in s.stderr
