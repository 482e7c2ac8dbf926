"""Each MCP client gets a result its model reads once, within its limits: told apart by the clientInfo it sends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp_types import CallToolResult, Implementation

from mcp_loco.config import Settings
from mcp_loco.explore.payload import POINTER, Answer, Reading, bound, model_reads
from mcp_loco.model.backends.replay import ReplayModel
from mcp_loco.model.protocol import format_call
from mcp_loco.serve.clients import identify
from mcp_loco.serve.server import ModelPool, build_server

pytestmark = pytest.mark.anyio

# What each client sends as clientInfo.name (several spellings and versions), and how its model reads a result.
CLIENTS: list[tuple[str, Reading | None]] = [
    ("claude-code", "structured"),
    ("Claude Code", "structured"),
    ("codex-mcp-client", "codex"),
    ("Codex", "codex"),
    ("gemini-cli-mcp-client", "text"),
    ("gemini-cli-mcp-client-loco", "text"),
    ("qwen-code-mcp-client", "text"),
    ("qwen-cli-mcp-client-loco", "text"),
    ("opencode", "text"),
    ("OpenCode", "text"),
    ("github-copilot-developer", "both"),
    ("GitHub Copilot", "both"),
    ("Visual Studio Code", "structured"),
    ("Visual Studio Code - Insiders", "structured"),
    ("visual-studio-code", "structured"),
    ("cursor-vscode", None),
    ("claude-ai", None),
    ("mcp", None),
    ("my-own-agent", None),
    ("", None),
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize(("name", "reading"), CLIENTS)
def test_client_names_are_told_apart_by_substring_whatever_the_case(name: str, reading: Reading | None) -> None:
    assert identify(name).reading == reading
    assert identify(name.upper()).reading == reading
    assert identify(f"  {name}  ").reading == reading


def test_no_name_is_an_unknown_client() -> None:
    assert identify(None).reading is None


def long_report(repo: Path, paragraphs: int = 30) -> tuple[str, list[str]]:
    """A report citing a file early and another late, with filler between."""
    cfg, main = repo / "src/app/config.py", repo / "src/app/main.py"
    filler = [f"Paragraph {i}: " + "the loader reads the file and returns a dict. " * 8 for i in range(paragraphs)]
    report = "\n\n".join([f"The config is loaded in {cfg}:4-7.", *filler, f"main calls it at {main}:5."])
    return report, [f"{cfg}:4-7", f"{main}:5"]


def pool_for(settings: Settings, repo: Path, report: str) -> ModelPool:
    reads = "\n".join(
        format_call("Read", {"file_path": str(repo / p)}) for p in ("src/app/config.py", "src/app/main.py")
    )
    return ModelPool(settings, factory=lambda: ReplayModel([reads, report] * 20))


def settings_for(repo: Path, **agent: Any) -> Settings:
    s = Settings()
    s.server.roots = [str(repo)]
    s.agent.grammar = False
    for k, v in agent.items():
        setattr(s.agent, k, v)
    return s


async def call_as(name: str, settings: Settings, pool: ModelPool, repo: Path, mode: str) -> CallToolResult:
    info = Implementation(name=name, version="1.0.0") if name else None
    async with Client(build_server(settings, pool), client_info=info, mode=mode) as client:
        with anyio.fail_after(30):
            return await client.call_tool(
                "explore_codebase", {"path": str(repo), "question": "How is the config loaded?"}
            )


def text_of(result: CallToolResult) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


@pytest.mark.parametrize("mode", ["legacy", "auto"])  # the initialize handshake, and 2026-07-28 envelopes
@pytest.mark.parametrize(("name", "reading"), [*CLIENTS[::2], ("github-copilot-developer", "both")])
async def test_each_client_reads_the_report_once_within_the_bound(
    sample_repo: Path, name: str, reading: Reading | None, mode: str
) -> None:
    report, _ = long_report(sample_repo, paragraphs=6)
    s = settings_for(sample_repo)
    result = await call_as(name, s, pool_for(s, sample_repo, report), sample_repo, mode)
    assert not result.is_error, text_of(result)
    sc = result.structured_content
    assert sc is not None
    Answer.model_validate(sc)  # the declared output schema holds for every client
    assert sc["report"] == report and sc["citations"]["verified"] == ["src/app/config.py:4-7", "src/app/main.py:5"]
    text = text_of(result)
    if reading == "both":  # Copilot CLI reads the text and then the JSON: the text must not repeat the report
        assert text == POINTER
    else:  # text-only clients (and unknown ones) need the report in the text
        assert text == report
    reads = model_reads(sc, reading or "structured", text)
    assert len(reads) <= bound(report), (len(reads), len(report))
    assert reads.count("Paragraph 3:") == 1


@pytest.mark.parametrize(("name", "reading"), [("claude-code", "structured"), ("opencode", "text"), ("x", None)])
async def test_a_long_report_reaches_every_client_cut_to_the_cap_with_its_citations(
    sample_repo: Path, name: str, reading: Reading | None
) -> None:
    report, cites = long_report(sample_repo, paragraphs=60)
    assert len(report) > 20_000
    s = settings_for(sample_repo, report_max_chars=5_000)
    result = await call_as(name, s, pool_for(s, sample_repo, report), sample_repo, "legacy")
    sc = result.structured_content
    assert sc is not None and not result.is_error
    for shown in (sc["report"], text_of(result)):
        assert len(shown) <= 5_000
        assert all(c in shown for c in cites), shown[-400:]
        assert f"it was {len(report):,} characters" in shown
    assert sc["citations"]["verified"] == ["src/app/config.py:4-7", "src/app/main.py:5"]


async def test_the_default_cap_fits_the_strictest_client(sample_repo: Path) -> None:
    report, cites = long_report(sample_repo, paragraphs=120)
    s = settings_for(sample_repo)
    result = await call_as("codex-mcp-client", s, pool_for(s, sample_repo, report), sample_repo, "legacy")
    sc = result.structured_content
    assert sc is not None
    # Codex cuts MCP output at ~12 KB for models it does not know: its header and the JSON stay under that.
    assert len(model_reads(sc, "codex").encode()) < 12_000
    assert all(c in sc["report"] for c in cites)
