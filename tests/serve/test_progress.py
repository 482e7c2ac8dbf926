"""Progress over a real SDK client through a whole call: sub-explorations included, never a gap of 5 s."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import anyio
import pytest
from mcp import Client

from mcp_loco.config import Settings
from mcp_loco.model.backends.function import FunctionModel, Request
from mcp_loco.model.protocol import format_call
from mcp_loco.serve.server import ModelPool, build_server

pytestmark = pytest.mark.anyio

MAX_GAP_S = 5.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def delegating(repo: Path, slow_s: float) -> FunctionModel:
    """A model that delegates with Task; the sub-exploration's first turn and the parent's answer are slow."""

    def reply(request: Request) -> str:
        if request.index == 0:
            return format_call("Task", {"description": "find the loader", "prompt": "Which function loads config?"})
        if request.index == 1:
            time.sleep(slow_s)  # a long prompt or a long turn: the model says nothing meanwhile
            return format_call("Grep", {"pattern": "def load_config", "path": str(repo / "src")})
        if request.index == 2:
            return f"load_config in {repo}/src/app/config.py:4"
        time.sleep(slow_s)
        return f"The config is loaded by load_config ({repo}/src/app/config.py:4)."

    return FunctionModel(reply)


def settings(repo: Path) -> Settings:
    s = Settings()
    s.server.roots = [str(repo)]
    s.agent.grammar = False
    return s


async def run_call(repo: Path, slow_s: float) -> tuple[list[tuple[float, str]], float, float, str]:
    s = settings(repo)
    server = build_server(s, ModelPool(s, factory=lambda: delegating(repo, slow_s)))
    stamps: list[tuple[float, str]] = []

    async def on_progress(p: float, total: float | None, message: str | None) -> None:
        stamps.append((time.monotonic(), message or ""))

    async with Client(server) as client:
        started = time.monotonic()
        with anyio.fail_after(60):
            result = await client.call_tool(
                "explore_codebase", {"path": str(repo), "question": "q"}, progress_callback=on_progress
            )
        ended = time.monotonic()
    assert not result.is_error, result.content
    return stamps, started, ended, str(result.structured_content)


@pytest.mark.slow
async def test_progress_never_pauses_5_s_through_a_slow_sub_exploration(sample_repo: Path) -> None:
    stamps, started, ended, _ = await run_call(sample_repo, slow_s=5.5)
    times = [started] + [t for t, _ in stamps] + [ended]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) < MAX_GAP_S, (max(gaps), [(round(t - started, 1), m) for t, m in stamps])


async def test_a_sub_explorations_turns_are_told_as_the_parents(
    sample_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("mcp_loco.serve.progress.HEARTBEAT_S", 0.2)
    stamps, _, _, _ = await run_call(sample_repo, slow_s=1.0)
    messages = [m for _, m in stamps]
    assert "turn 1/10 > Task turn 1/5: thinking" in messages, messages
    assert "turn 1/10 > Task turn 1/5: Grep 'def load_config' in src" in messages, messages
    # While the sub-exploration's model is silent, the latest status is said again.
    during = [m for t, m in stamps if m == "turn 1/10 > Task turn 1/5: thinking"]
    assert len(during) >= 3, messages


async def test_progress_values_only_grow_even_when_repeated(sample_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mcp_loco.serve.progress.HEARTBEAT_S", 0.1)
    s = settings(sample_repo)
    server = build_server(s, ModelPool(s, factory=lambda: delegating(sample_repo, 0.6)))
    values: list[tuple[float, float | None]] = []

    async def on_progress(p: float, total: float | None, message: str | None) -> None:
        values.append((p, total))

    async with Client(server) as client:
        with anyio.fail_after(30):
            await client.call_tool(
                "explore_codebase", {"path": str(sample_repo), "question": "q"}, progress_callback=on_progress
            )
    progress = [p for p, _ in values]
    assert len(progress) > 10 and all(b > a for a, b in itertools.pairwise(progress)), progress
    assert all(total is None or p <= total for p, total in values)
