"""One real exploration on a real llama.cpp model (SmolLM2-135M) over a small repository."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from trees import fixed_copy

from mcp_loco.config import Settings
from mcp_loco.explore.agent import Explorer
from mcp_loco.model.backends.llama_cpp import LlamaModel
from mcp_loco.model.protocol import MalformedCall, ToolCall, parse_turn

pytestmark = [pytest.mark.model, pytest.mark.slow]


@pytest.fixture
def fixed_repo(sample_repo: Path) -> Iterator[Path]:
    """The sample repository at the same path on every run.

    At temperature 0 the model's output depends on the prompt, and the prompt holds the root: under
    pytest's numbered temporary folders (pytest-14, pytest-15, ...) the same test meets a different
    prompt each run, and a path the model starts repeating can run a call past max_tokens.
    """
    with fixed_copy(sample_repo, "real") as root:
        yield root


def real_settings(model_path: Path) -> Settings:
    s = Settings()
    s.model.path = str(model_path)
    s.model.temperature = 0.0
    s.model.max_tokens = 160
    s.llama.n_ctx = 4096
    s.llama.n_threads = s.llama.n_threads_batch = 1  # steady under load on a 2-core machine
    s.agent.max_turns = 2
    s.agent.task_depth = 0
    s.agent.deadline_s = 120
    return s


def test_real_model_explores_with_a_forced_first_call(small_model_path: Path, fixed_repo: Path) -> None:
    settings = real_settings(small_model_path)
    model = LlamaModel(small_model_path, settings.llama)
    explorer = Explorer(model, settings)
    try:
        result = explorer.explore(fixed_repo, "Where is load_config defined?")
    finally:
        explorer.close()
        model.close()
    # The grammar forced a well-formed call to a known tool on turn 1, and the loop ran it for real.
    first = [c for c in result.tool_calls if c.turn == 1]
    assert first and first[0].name in {"Read", "Grep", "Glob", "Bash"}
    assert result.turns >= 1 and result.report.strip()
    assert result.stop_reason in {"answered", "turns", "context", "deadline"}
    # Turn 2 reused the prefix of turn 1: far fewer tokens evaluated than sent.
    if result.turns >= 2:
        assert result.usage.prompt_tokens_evaluated < 0.8 * result.usage.prompt_tokens
    # Every citation was checked against the disk; the verified ones exist and were shown by a tool.
    for c in result.citations:
        if c.verified:
            assert os.path.exists(c.path)
            assert c.path in result.files_examined or any(
                f.startswith(c.path.rstrip("/") + "/") for f in result.files_examined
            )
        else:
            assert c.reason and f"{c.text} [unverified: {c.reason}]" in result.report
    assert "sk-live-SECRET" not in result.model_dump_json()


def test_forced_first_turn_parses_to_a_known_tool(small_model_path: Path, fixed_repo: Path) -> None:
    settings = real_settings(small_model_path)
    settings.agent.max_turns = 1
    model = LlamaModel(small_model_path, settings.llama)
    seen: list[str] = []
    real_complete = model.complete

    def spy(prompt, options, cancel=None):  # type: ignore[no-untyped-def]
        out = real_complete(prompt, options, cancel)
        seen.append(out.text)
        return out

    model.complete = spy  # type: ignore[method-assign]
    explorer = Explorer(model, settings)
    try:
        explorer.explore(fixed_repo, "List the Python files.")
    finally:
        explorer.close()
        model.close()
    parsed = parse_turn(seen[0])
    assert parsed.calls and isinstance(parsed.calls[0], ToolCall), seen[0]
    # Every complete block is a valid call to a known tool; only a block cut by max_tokens may be malformed.
    for c in parsed.calls[:-1]:
        assert isinstance(c, ToolCall) and c.name in {"Read", "Grep", "Glob", "Bash"}
    last = parsed.calls[-1]
    assert (isinstance(last, ToolCall) and last.name in {"Read", "Grep", "Glob", "Bash"}) or isinstance(
        last, MalformedCall
    )


def test_snapshot_restore_keeps_the_parent_prefix_across_a_task(small_model_path: Path) -> None:
    from mcp_loco.interfaces import GenerateOptions
    from mcp_loco.model.protocol import Message, render

    settings = real_settings(small_model_path)
    model = LlamaModel(small_model_path, settings.llama)
    opts = GenerateOptions(max_tokens=4, temperature=0.0)
    parent = [Message("system", "You explore code."), Message("user", "Parent question " + "words " * 150)]
    sub = [Message("system", "You explore code."), Message("user", "A different sub-question " + "other " * 150)]
    try:
        model.complete(render(parent), opts)
        state = model.snapshot()
        model.complete(render(sub), opts)
        nxt = [*parent, Message("assistant", "ok"), Message("user", "go on")]
        lost = model.complete(render(nxt), opts).usage
        model.complete(render(sub), opts)
        model.restore(state)
        kept = model.complete(render(nxt), opts).usage
    finally:
        model.close()
    # Without restore nearly the whole parent is evaluated again; with it, only the appended turn.
    assert lost.prompt_tokens_evaluated > 150
    assert kept.prompt_tokens_evaluated < 20
