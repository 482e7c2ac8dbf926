"""Serving many users: the queue bound, closed streams as the cancel, shutdown, request limits (real servers)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client, ClientSession
from mcp.client.sse import sse_client
from mcp_types import CallToolResult
from serving_helpers import (
    ACCEPT,
    INIT,
    call_args,
    open_session,
    rpc,
    slow_env,
    slow_server,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def text_of(result: CallToolResult) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


class Progress:
    """Progress messages of one call, each with the moment it arrived."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, str]] = []
        self.first = anyio.Event()

    async def __call__(self, p: float, total: float | None, message: str | None) -> None:
        self.seen.append((time.monotonic(), message or ""))
        self.first.set()

    def when(self, prefix: str) -> float | None:
        return next((t for t, m in self.seen if m.startswith(prefix)), None)


async def wait_for(progress: Progress, prefix: str, timeout: float = 20) -> float:
    with anyio.fail_after(timeout):
        while (t := progress.when(prefix)) is None:
            await anyio.sleep(0.01)
    return t


async def test_a_call_beyond_the_queue_bound_is_refused_at_once_saying_how_many_are_ahead(sample_repo: Path) -> None:
    env = slow_env(sample_repo, turn_s=0.3)
    with slow_server("http", env, "--parallel", "1", "--max-queue", "1") as s:
        running, waiting = Progress(), Progress()
        async with Client(s.url) as a, Client(s.url) as b, Client(s.url) as c, anyio.create_task_group() as tg:
            tg.start_soon(
                lambda: a.call_tool("explore_codebase", call_args(sample_repo, max_turns=30), progress_callback=running)
            )
            await wait_for(running, "turn 1/30")
            tg.start_soon(lambda: b.call_tool("explore_codebase", call_args(sample_repo), progress_callback=waiting))
            await wait_for(waiting, "queued")
            t0 = time.monotonic()
            with anyio.fail_after(5):
                refused = await c.call_tool("explore_codebase", call_args(sample_repo))
            elapsed = time.monotonic() - t0
            tg.cancel_scope.cancel()
    assert refused.is_error
    text = text_of(refused)
    assert "the server is busy: 2 calls are ahead of this one (1 running, 1 waiting" in text, text
    assert "--max-queue 1" in text
    assert elapsed < 1.0


async def test_a_2025_client_that_closes_its_stream_mid_call_frees_the_model_within_2s(sample_repo: Path) -> None:
    """The session stays open (no DELETE): only the closed POST stream says that nobody awaits the result."""
    # Turns of 3 s: the stream closes well inside turn 1's generation (not between two turns, when there
    # is nothing to stop), and a generation left to run would free the model only after 2 s.
    env = slow_env(sample_repo, turn_s=3.0)
    with slow_server("http", env, "--parallel", "1") as s:
        waiting = Progress()
        async with httpx2.AsyncClient(timeout=30) as raw, Client(s.url) as other:
            sid = await open_session(raw, s.url)
            headers = {
                "Accept": ACCEPT,
                "Content-Type": "application/json",
                "mcp-session-id": sid,
                "mcp-protocol-version": "2025-06-18",
            }
            params = {
                "name": "explore_codebase",
                "arguments": call_args(sample_repo, max_turns=30),
                "_meta": {"progressToken": 1},
            }
            async with anyio.create_task_group() as tg:
                async with raw.stream("POST", s.url, json=rpc("tools/call", params, id=7), headers=headers) as r:
                    with anyio.fail_after(20):
                        async for line in r.aiter_lines():
                            if "turn 1/30" in line:
                                break
                    tg.start_soon(
                        lambda: other.call_tool("explore_codebase", call_args(sample_repo), progress_callback=waiting)
                    )
                    await wait_for(waiting, "queued")
                    closed = time.monotonic()
                # The stream is closed here (the response was not read to its end); the session lives on.
                freed = await wait_for(waiting, "turn 1/")
                tg.cancel_scope.cancel()
            ping = await raw.post(s.url, json=rpc("tools/list", {}, id=8), headers=headers)
    assert ping.status_code == 200  # the session itself was not ended
    assert freed - closed < 2.0, f"the model was freed {freed - closed:.2f} s after the client left"
    assert "client closed its stream mid-call" in s.stderr
    assert "generation stopped" in s.stderr


async def test_a_2026_client_that_abandons_a_call_frees_the_model_within_2s(sample_repo: Path) -> None:
    env = slow_env(sample_repo, turn_s=0.3)
    with slow_server("http", env, "--parallel", "1") as s:
        running, waiting = Progress(), Progress()
        async with Client(s.url) as a, Client(s.url) as b, anyio.create_task_group() as outer:
            async with anyio.create_task_group() as tg:
                tg.start_soon(
                    lambda: a.call_tool(
                        "explore_codebase", call_args(sample_repo, max_turns=30), progress_callback=running
                    )
                )
                await wait_for(running, "turn 1/30")
                outer.start_soon(
                    lambda: b.call_tool("explore_codebase", call_args(sample_repo), progress_callback=waiting)
                )
                await wait_for(waiting, "queued")
                tg.cancel_scope.cancel()  # a 2026-07-28 client cancels by closing the call's stream
            closed = time.monotonic()
            freed = await wait_for(waiting, "turn 1/")
            outer.cancel_scope.cancel()
    assert freed - closed < 2.0


async def test_an_sse_client_that_goes_away_mid_call_frees_the_model_within_2s(sample_repo: Path) -> None:
    env = slow_env(sample_repo, turn_s=3.0)  # as above: the client leaves during a generation
    with slow_server("sse", env, "--parallel", "1") as s:
        waiting = Progress()
        async with (
            httpx2.AsyncClient(timeout=30) as raw,
            sse_client(s.url) as (read, write),
            ClientSession(read, write) as other,
            anyio.create_task_group() as tg,
        ):
            await other.initialize()
            async with raw.stream("GET", s.url, headers={"Accept": "text/event-stream"}) as stream:
                lines = stream.aiter_lines()
                with anyio.fail_after(20):
                    async for line in lines:
                        if line.startswith("data:"):
                            post = s.base + line[5:].strip()
                            break
                    h = {"Content-Type": "application/json"}
                    await raw.post(post, json=rpc("initialize", INIT), headers=h)
                    await raw.post(post, json=rpc("notifications/initialized", id=None), headers=h)
                    params = {
                        "name": "explore_codebase",
                        "arguments": call_args(sample_repo, max_turns=30),
                        "_meta": {"progressToken": 1},
                    }
                    assert (await raw.post(post, json=rpc("tools/call", params, id=7), headers=h)).status_code == 202
                    async for line in lines:
                        if "turn 1/30" in line:
                            break
                tg.start_soon(
                    lambda: other.call_tool("explore_codebase", call_args(sample_repo), progress_callback=waiting)
                )
                await wait_for(waiting, "queued")
                closed = time.monotonic()
            freed = await wait_for(waiting, "turn 1/")
            tg.cancel_scope.cancel()
    assert freed - closed < 2.0
    assert "generation stopped" in s.stderr


async def test_stopping_the_server_mid_call_gives_every_caller_a_clear_error(sample_repo: Path) -> None:
    env = slow_env(sample_repo, turn_s=0.3)
    results: dict[str, CallToolResult | BaseException] = {}
    with slow_server("http", env, "--parallel", "1") as s:
        running, waiting = Progress(), Progress()

        async def call(name: str, client: Client, progress: Progress, max_turns: int) -> None:
            try:
                results[name] = await client.call_tool(
                    "explore_codebase", call_args(sample_repo, max_turns=max_turns), progress_callback=progress
                )
            except Exception as e:
                results[name] = e

        async with Client(s.url) as a, Client(s.url) as b, anyio.create_task_group() as tg:
            tg.start_soon(call, "running", a, running, 30)
            await wait_for(running, "turn 1/30")
            tg.start_soon(call, "waiting", b, waiting, 2)
            await wait_for(waiting, "queued")
            stopped = time.monotonic()
            s.proc.send_signal(signal.SIGTERM)
            with anyio.fail_after(10):
                while len(results) < 2:
                    await anyio.sleep(0.02)
            answered = time.monotonic() - stopped
        exit_code = s.proc.wait(timeout=15)
        exited = time.monotonic() - stopped
    for name in ("running", "waiting"):
        result = results[name]
        assert isinstance(result, CallToolResult), f"{name}: {result!r}"
        assert result.is_error and "the server is shutting down" in text_of(result), text_of(result)
    assert answered < 3.0
    assert exit_code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down
    assert exited < 10.0


async def test_sse_logs_one_line_for_a_rejected_host_header(sample_repo: Path) -> None:
    with slow_server("sse", slow_env(sample_repo)) as s:
        async with httpx2.AsyncClient(timeout=10) as raw:
            for _ in range(3):
                r = await raw.get(s.url, headers={"Host": "evil.example:80", "Accept": "text/event-stream"})
                assert r.status_code == 421
            # The server still serves.
            async with sse_client(s.url) as (read, write), ClientSession(read, write) as session:
                with anyio.fail_after(20):
                    await session.initialize()
                    assert [t.name for t in (await session.list_tools()).tools] == ["explore_codebase"]
    lines = [line for line in s.stderr.splitlines() if "evil.example" in line]
    assert len(lines) == 3, s.stderr
    assert "Traceback" not in s.stderr and "Exception in ASGI application" not in s.stderr, s.stderr


@pytest.mark.parametrize("transport", ["http", "sse"])
async def test_an_oversized_request_body_gets_413_and_the_server_keeps_serving(
    sample_repo: Path, transport: str
) -> None:
    with slow_server(transport, slow_env(sample_repo), "--set", "server.max_body_bytes=65536") as s:
        huge = rpc(
            "tools/call", {"name": "explore_codebase", "arguments": call_args(sample_repo, question="q" * 70_000)}
        )
        async with httpx2.AsyncClient(timeout=10) as raw:
            if transport == "http":
                url = s.url
            else:
                async with raw.stream("GET", s.url, headers={"Accept": "text/event-stream"}) as stream:
                    async for line in stream.aiter_lines():
                        if line.startswith("data:"):
                            url = s.base + line[5:].strip()
                            break
            r = await raw.post(url, json=huge, headers={"Accept": ACCEPT, "Content-Type": "application/json"})
        assert r.status_code == 413
        if transport == "http":
            async with Client(s.url) as client:
                assert [t.name for t in (await client.list_tools()).tools] == ["explore_codebase"]


async def test_a_client_address_may_hold_only_so_many_sessions(sample_repo: Path) -> None:
    with slow_server("http", slow_env(sample_repo), "--set", "server.max_sessions_per_client=2") as s:
        async with httpx2.AsyncClient(timeout=10) as raw:
            first = await open_session(raw, s.url)
            second = await open_session(raw, s.url)
            h = {"Accept": ACCEPT, "Content-Type": "application/json"}
            # Past the limit, the least recently used idle session makes room (busy ones never do: test_auth.py).
            third = await raw.post(s.url, json=rpc("initialize", INIT), headers=h)
            assert third.status_code == 200
            session = {**h, "mcp-protocol-version": "2025-06-18"}
            gone = await raw.post(s.url, json=rpc("tools/list", {}), headers={**session, "mcp-session-id": first})
            assert gone.status_code == 404
            # Ending a session makes room for another without closing any.
            ended = await raw.delete(s.url, headers={"mcp-session-id": second, "mcp-protocol-version": "2025-06-18"})
            assert ended.status_code in (200, 204)
            await open_session(raw, s.url)
            kept = await raw.post(
                s.url,
                json=rpc("tools/list", {}),
                headers={**session, "mcp-session-id": third.headers["mcp-session-id"]},
            )
            assert kept.status_code == 200
            # 2026-07-28 requests hold no session and are not counted.
            async with Client(s.url) as client:
                assert [t.name for t in (await client.list_tools()).tools] == ["explore_codebase"]
