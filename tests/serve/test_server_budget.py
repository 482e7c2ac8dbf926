"""Over MCP (the SDK's client, in-process server): a budget the machine cannot meet gets a clear error result
at once, naming the speeds and what would fit; the server goes on serving, and the named budget works."""

from __future__ import annotations

import re
import time
from pathlib import Path

import anyio
import pytest
from mcp import Client
from mcp_types import CallToolResult

from mcp_loco.config import Settings
from mcp_loco.model.backends.function import FunctionModel, Request
from mcp_loco.model.protocol import format_call
from mcp_loco.model.speed import Point, SpeedProfile
from mcp_loco.serve.server import ModelPool, build_server

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def text_of(result: CallToolResult) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


async def test_a_budget_too_small_for_this_machine_is_refused_at_once_and_the_server_goes_on(
    sample_repo: Path,
) -> None:
    s = Settings()
    s.server.roots = [str(sample_repo)]
    s.agent.grammar = False
    speed = SpeedProfile([Point(1024, 20.0, 200.0)], source="test", trusted=True)  # 500 tokens: ~25 s to read

    def reply(req: Request) -> str:
        if "do not call any more tools" in req.prompt.rsplit("<|im_start|>user\n", 1)[-1] or req.index > 0:
            return f"It is loaded in {sample_repo}/src/app/config.py."
        return format_call("Glob", {"pattern": "**/*.py"})

    server = build_server(s, ModelPool(s, factory=lambda: FunctionModel(reply, speed=speed)))
    async with Client(server) as client:
        for deadline in (5, 12):
            started = time.monotonic()
            with anyio.fail_after(30):
                refused = await client.call_tool(
                    "explore_codebase",
                    {"path": str(sample_repo), "question": "Where is the config loaded?", "deadline_s": deadline},
                )
            assert time.monotonic() - started < 5  # at once, not after the budget
            assert refused.is_error
            msg = text_of(refused)
            assert f"within the {deadline} s budget" in msg and "tok/s" in msg and "GPU" in msg, msg
            assert "Traceback" not in msg
        enough = int(re.search(r"deadline_s=(\d+)", msg).group(1))  # type: ignore[union-attr]
        with anyio.fail_after(60):
            answered = await client.call_tool(
                "explore_codebase",
                {"path": str(sample_repo), "question": "Where is the config loaded?", "deadline_s": enough},
            )
    assert not answered.is_error, text_of(answered)
    assert "config.py" in text_of(answered)
