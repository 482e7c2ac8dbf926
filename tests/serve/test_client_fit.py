"""What a real client gets from a real run: the payload its model reads, the time it waits, progress as it goes."""

from __future__ import annotations

import itertools
import re
import time
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters
from server_helpers import BIN, server_env

from mcp_loco.explore.payload import bound, model_reads
from mcp_loco.serve.server import DESCRIPTION

pytestmark = [pytest.mark.model, pytest.mark.slow, pytest.mark.anyio]

CLAUDE_CODE_BACKGROUND_S = 120.0
"""Claude Code moves a call still running at 120 s to the background and may never read it."""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_call_without_a_budget_reports_within_120_s_with_progress_and_a_lean_payload(
    small_model_path: Path, sample_repo: Path
) -> None:
    env = server_env(small_model_path, sample_repo, MCP_LOCO_MODEL_MAX_TOKENS="700", MCP_LOCO_LLAMA_N_CTX="8192")
    for key in ("MCP_LOCO_AGENT_DEADLINE_S", "MCP_LOCO_AGENT_MAX_TURNS"):
        env.pop(key)  # the defaults users get
    stamps: list[tuple[float, str]] = []

    async def on_progress(p: float, total: float | None, message: str | None) -> None:
        stamps.append((time.monotonic(), message or ""))

    params = StdioServerParameters(command=str(BIN), args=["serve"], env=env)
    async with Client(params) as client:
        with anyio.fail_after(60):
            tools = (await client.list_tools()).tools
        started = time.monotonic()
        with anyio.fail_after(CLAUDE_CODE_BACKGROUND_S + 30):
            result = await client.call_tool(
                "explore_codebase",
                {"path": str(sample_repo), "question": "How is the configuration loaded and used by main?"},
                progress_callback=on_progress,
            )
        elapsed = time.monotonic() - started
    assert tools[0].description == DESCRIPTION
    assert not result.is_error, result.content
    sc = result.structured_content
    assert sc is not None and sc["report"].strip()
    # Within Claude Code's threshold, the report included.
    assert elapsed < CLAUDE_CODE_BACKGROUND_S, (elapsed, sc["stop_reason"])
    # What Claude Code's model reads is JSON.stringify(structuredContent): bounded by the report's length.
    reads = model_reads(sc)
    assert len(reads) <= bound(sc["report"]), (len(reads), len(sc["report"]))
    # Progress at least every 10 s, from the first notification to the result.
    times = [t for t, _ in stamps] + [started + elapsed]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert stamps and times[0] - started < 10 and max(gaps) <= 10.0, (gaps, [m for _, m in stamps])
    beat = re.compile(r"\((\d+) s(, \d+ tokens written)?\)$")
    assert any(beat.search(m) for _, m in stamps), [m for _, m in stamps]  # a heartbeat within a turn
    print(
        f"call {elapsed:.1f} s ({sc['stop_reason']}), payload {len(reads)} chars for a {len(sc['report'])}-char "
        f"report (bound {bound(sc['report'])}), {len(stamps)} progress lines, longest gap {max(gaps):.1f} s"
    )
