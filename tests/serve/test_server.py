"""The MCP server in-process (official client, recorded model turns): schema, results, errors, progress, cancel."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp_types import CallToolResult

from mcp_loco.config import Settings
from mcp_loco.interfaces import ChatModel
from mcp_loco.model.backends.function import FunctionModel, Request
from mcp_loco.model.backends.replay import ReplayModel
from mcp_loco.model.protocol import format_call
from mcp_loco.serve.server import ModelPool, build_server

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_settings(root: Path, **agent: Any) -> Settings:
    s = Settings()
    s.server.roots = [str(root)]
    s.agent.grammar = False
    for k, v in agent.items():
        setattr(s.agent, k, v)
    return s


def replay_pool(settings: Settings, turns: list[str], delay: float = 0.0) -> ModelPool:
    return ModelPool(settings, factory=lambda: ReplayModel(turns * 50, delay=delay))


def text_of(result: CallToolResult) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


async def test_tools_list_describes_a_read_only_tool_with_flat_parameters(sample_repo: Path) -> None:
    server = build_server(make_settings(sample_repo), replay_pool(make_settings(sample_repo), ["x"]))
    async with Client(server) as client:
        tools = (await client.list_tools()).tools
    assert [t.name for t in tools] == ["explore_codebase"]
    tool = tools[0]
    props = tool.input_schema["properties"]
    assert set(props) == {"path", "question", "max_turns", "deadline_s", "detail"}
    assert set(tool.input_schema["required"]) == {"path", "question"}
    assert all(p.get("description") for p in props.values())
    assert tool.annotations is not None and tool.annotations.read_only_hint is True
    assert tool.annotations.destructive_hint is False
    assert tool.output_schema is not None and "citations" in tool.output_schema["properties"]


async def test_call_returns_the_report_as_text_and_the_result_as_structured_content(sample_repo: Path) -> None:
    cfg = sample_repo / "src/app/config.py"
    turns = [format_call("Read", {"file_path": str(cfg)}), f"It is loaded in {cfg}:4."]
    s = make_settings(sample_repo)
    server = build_server(s, replay_pool(s, turns))
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(p: float, total: float | None, message: str | None) -> None:
        progress.append((p, total, message))

    async with Client(server) as client:
        with anyio.fail_after(30):
            result = await client.call_tool(
                "explore_codebase",
                {"path": str(sample_repo), "question": "Where is the config loaded?"},
                progress_callback=on_progress,
            )
    assert not result.is_error, text_of(result)
    assert text_of(result) == f"It is loaded in {cfg}:4."
    sc = result.structured_content
    assert sc is not None and sc["citations"] == {"verified": ["src/app/config.py:4"]}
    assert sc["stop_reason"] == "answered" and "trace" not in sc
    messages = [m for _, _, m in progress]
    assert "turn 1/10: Read src/app/config.py" in messages
    assert progress[-1][1] == 11.0


@pytest.mark.parametrize(
    ("arguments", "needle"),
    [
        ({"path": "/etc", "question": "q"}, "outside the allowed roots"),
        ({"path": "../..", "question": "q"}, "outside the allowed roots"),
        ({"path": "{root}/README.md", "question": "q"}, "not an existing directory"),
        ({"path": "{root}/nope", "question": "q"}, "not an existing directory"),
        ({"path": "{root}", "question": "   "}, "question is empty"),
        ({"path": "", "question": "q"}, "path is empty"),
        ({"path": "{root}\x00", "question": "q"}, "NUL"),
        ({"path": "{root}", "question": "q" * 9000}, "keep it under 8000"),
        ({"path": "{root}"}, "question"),
        ({"path": 42, "question": "q"}, "path"),
        ({"path": "{root}", "question": "q", "max_turns": 0}, "max_turns"),
        ({"path": "{root}", "question": "q", "deadline_s": "soon"}, "deadline_s"),
    ],
)
async def test_bad_arguments_get_clear_errors_and_the_server_keeps_serving(
    sample_repo: Path, arguments: dict[str, Any], needle: str
) -> None:
    s = make_settings(sample_repo)
    server = build_server(s, replay_pool(s, ["fine"]))
    args = {k: v.replace("{root}", str(sample_repo)) if isinstance(v, str) else v for k, v in arguments.items()}
    async with Client(server) as client:
        with anyio.fail_after(30):
            bad = await client.call_tool("explore_codebase", args)
            good = await client.call_tool("explore_codebase", {"path": str(sample_repo), "question": "q"})
    assert bad.is_error and needle in text_of(bad), text_of(bad)
    assert not good.is_error and text_of(good) == "fine"


async def test_a_root_that_is_the_home_folder_is_refused(sample_repo: Path) -> None:
    s = make_settings(Path.home())
    server = build_server(s, replay_pool(s, ["fine"]))
    async with Client(server) as client:
        result = await client.call_tool("explore_codebase", {"path": str(Path.home()), "question": "q"})
    assert result.is_error and "home" in text_of(result).lower()


async def test_unknown_tool_is_an_error(sample_repo: Path) -> None:
    s = make_settings(sample_repo)
    async with Client(build_server(s, replay_pool(s, ["x"]))) as client:
        result = await client.call_tool("write_file", {"path": "/x"})
    assert result.is_error


async def test_cancel_stops_generation_and_frees_the_model(sample_repo: Path) -> None:
    s = make_settings(sample_repo)
    glob = format_call("Glob", {"pattern": "**/*.py"})
    server = build_server(s, replay_pool(s, [glob], delay=0.5))
    started = anyio.Event()

    async def on_progress(p: float, total: float | None, message: str | None) -> None:
        if message and "turn 2" in message:
            started.set()

    async with Client(server) as client:
        t0 = time.monotonic()
        async with anyio.create_task_group() as tg:

            async def call() -> None:
                await client.call_tool(
                    "explore_codebase", {"path": str(sample_repo), "question": "q"}, progress_callback=on_progress
                )

            tg.start_soon(call)
            with anyio.fail_after(20):
                await started.wait()
            tg.cancel_scope.cancel()
        cancelled_at = time.monotonic()
        # The model is free again: the next call gets it at once (it answers after its 10 turns).
        with anyio.fail_after(30):
            result = await client.call_tool(
                "explore_codebase", {"path": str(sample_repo), "question": "q", "max_turns": 1}
            )
    # Uncancelled, the first call would hold the model for ~4 s more; the second (1 turn + report, ~1 s) shows
    # it was let go within about a second.
    assert time.monotonic() - cancelled_at < 2.5
    assert cancelled_at - t0 < 20
    assert not result.is_error


async def test_tools_list_answers_while_the_model_loads(sample_repo: Path) -> None:
    s = make_settings(sample_repo)
    release = threading.Event()

    def slow_load() -> ChatModel:
        release.wait(30)
        return ReplayModel(["loaded and answered"] * 50)

    pool = ModelPool(s, factory=slow_load)
    messages: list[str | None] = []

    async def on_progress(p: float, total: float | None, message: str | None) -> None:
        messages.append(message)
        release.set()

    async with Client(build_server(s, pool)) as client:
        t0 = time.monotonic()
        tools = await client.list_tools()
        assert time.monotonic() - t0 < 1.0 and tools.tools
        assert pool.loading
        with anyio.fail_after(30):
            result = await client.call_tool(
                "explore_codebase", {"path": str(sample_repo), "question": "q"}, progress_callback=on_progress
            )
    assert "loading the model" in messages
    assert text_of(result) == "loaded and answered"


async def test_a_missing_model_is_an_error_result_and_the_server_keeps_serving(
    sample_repo: Path, tmp_path: Path
) -> None:
    s = make_settings(sample_repo)
    s.model.path = str(tmp_path / "missing.gguf")
    async with Client(build_server(s, ModelPool(s))) as client:
        with anyio.fail_after(30):
            first = await client.call_tool("explore_codebase", {"path": str(sample_repo), "question": "q"})
            second = await client.call_tool("explore_codebase", {"path": str(sample_repo), "question": "q"})
            listed = await client.list_tools()
    assert first.is_error and "missing.gguf" in text_of(first)
    assert second.is_error and "missing.gguf" in text_of(second)
    assert listed.tools


def crash(request: Request) -> str:
    raise RuntimeError("decode failed: GGML_ASSERT")


async def test_a_model_crash_is_an_error_result(sample_repo: Path) -> None:
    s = make_settings(sample_repo)
    pool = ModelPool(s, factory=lambda: FunctionModel(crash))
    async with Client(build_server(s, pool)) as client:
        with anyio.fail_after(30):
            result = await client.call_tool("explore_codebase", {"path": str(sample_repo), "question": "q"})
            again = await client.call_tool("explore_codebase", {"path": str(sample_repo), "question": "q"})
    assert result.is_error and "GGML_ASSERT" in text_of(result)
    assert again.is_error and "GGML_ASSERT" in text_of(again)  # the model went back to the pool


async def test_calls_queue_for_one_model_and_all_get_answers(sample_repo: Path) -> None:
    s = make_settings(sample_repo)
    server = build_server(s, replay_pool(s, ["answer"], delay=0.2))
    results: list[CallToolResult] = []
    messages: list[str | None] = []

    async def on_progress(p: float, total: float | None, message: str | None) -> None:
        messages.append(message)

    async with Client(server) as client:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for _ in range(4):

                    async def one() -> None:
                        results.append(
                            await client.call_tool(
                                "explore_codebase",
                                {"path": str(sample_repo), "question": "q"},
                                progress_callback=on_progress,
                            )
                        )

                    tg.start_soon(one)
    assert [text_of(r) for r in results] == ["answer"] * 4
    assert any(m and m.startswith("queued behind other calls") for m in messages)


async def test_a_call_says_at_once_when_it_moves_from_loading_to_queued(sample_repo: Path) -> None:
    s = make_settings(sample_repo)
    loaded = threading.Event()

    def slow_load() -> ChatModel:
        loaded.wait(10)
        return ReplayModel(["answer"] * 50, delay=1.0)

    pool = ModelPool(s, factory=slow_load)
    said: dict[int, list[str]] = {0: [], 1: []}

    async with Client(build_server(s, pool)) as client:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for i in (0, 1):

                    async def one(i: int = i) -> None:
                        async def on_progress(p: float, total: float | None, message: str | None) -> None:
                            said[i].append(message or "")

                        await client.call_tool(
                            "explore_codebase",
                            {"path": str(sample_repo), "question": "q"},
                            progress_callback=on_progress,
                        )

                    tg.start_soon(one)
                while not (said[0] and said[1]):  # both calls are waiting for the load
                    await anyio.sleep(0.02)
                loaded.set()
    # One call got the model; the other waited a second behind it, well under the 5 s between reminders,
    # and still heard at once that it now queues rather than loads.
    waited = [m for m in said.values() if any(x.startswith("queued behind other calls") for x in m)]
    assert len(waited) == 1, said
    assert waited[0][0] == "loading the model"


async def test_progress_keeps_coming_while_the_model_generates(
    sample_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("mcp_loco.explore.turns.HEARTBEAT_S", 0.1)
    s = make_settings(sample_repo)
    server = build_server(s, replay_pool(s, ["slow answer"], delay=0.6))
    messages: list[str] = []

    async def on_progress(p: float, total: float | None, message: str | None) -> None:
        messages.append(message or "")

    async with Client(server) as client:
        with anyio.fail_after(30):
            result = await client.call_tool(
                "explore_codebase", {"path": str(sample_repo), "question": "q"}, progress_callback=on_progress
            )
    assert not result.is_error and text_of(result) == "slow answer"
    beats = [m for m in messages if m.startswith("turn 1/10: thinking (")]
    assert len(beats) >= 3, messages  # delivered from the heartbeat thread, not only between turns
