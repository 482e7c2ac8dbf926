"""Prefix reuse in a real exploration: from turn 2 on, only the tokens added since the last turn are evaluated."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from trees import fixed_copy

from mcp_loco.config import Settings
from mcp_loco.explore.agent import Explorer
from mcp_loco.model.backends.llama_cpp import LlamaModel

pytestmark = [pytest.mark.model, pytest.mark.slow]


@pytest.fixture
def fixed_repo(sample_repo: Path) -> Iterator[Path]:
    """The sample repository at one path every run (the prompt holds the root, and so the output depends on it)."""
    with fixed_copy(sample_repo, "reuse") as root:
        yield root


def per_turn_usage(transcript_dir: Path) -> list[dict[str, Any]]:
    """The usage of each local completion in the run's transcript, in order."""
    (path,) = transcript_dir.glob("*.jsonl")
    events = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return [e["usage"] for e in events if e["event"] == "completion" and "usage" in e]


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_each_turn_evaluates_only_its_new_tokens(
    small_model_path: Path, fixed_repo: Path, tmp_path: Path, temperature: float
) -> None:
    s = Settings()
    s.model.temperature, s.model.seed, s.model.max_tokens = temperature, 3, 96
    s.llama.n_ctx, s.llama.n_threads, s.llama.n_threads_batch = 4096, 1, 1
    s.llama.speculative = "on"  # drafted tokens are generated tokens too: they must be reused alike
    s.agent.max_turns, s.agent.task_depth, s.agent.deadline_s = 3, 0, 240
    s.agent.transcript_dir = str(tmp_path / "t")
    model = LlamaModel(small_model_path, s.llama)
    explorer = Explorer(model, s)
    try:
        explorer.explore(fixed_repo, "Where is load_config defined?")
    finally:
        explorer.close()
        model.close()
    turns = per_turn_usage(tmp_path / "t")
    assert len(turns) >= 2, turns  # the grammar-forced first call, then at least the report
    for before, now in itertools.pairwise(turns):
        # What this prompt adds to the last one beyond the model's own reply (sampled, under the grammar).
        new = now["prompt_tokens"] - before["prompt_tokens"] - before["completion_tokens"]
        assert new > 0, turns
        assert now["prompt_tokens_evaluated"] <= new + 1, turns
