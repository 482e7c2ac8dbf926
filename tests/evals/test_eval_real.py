"""The harness end to end on the real small model (SmolLM2-135M), every variant, a few samples."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcp_loco.config import Settings
from mcp_loco.evals.runner import ABLATION, default_root, run_eval
from mcp_loco.evals.samples import load_questions, load_turn_samples
from mcp_loco.model.backends.llama_cpp import LlamaModel

pytestmark = [pytest.mark.model]


def test_every_variant_runs_on_the_real_model(small_model_path: Path) -> None:
    settings = Settings()
    settings.model.temperature = 0.0
    settings.model.max_tokens = 32
    # One thread: on a busy machine llama.cpp's spinning threads slow decoding down by an order of magnitude.
    settings.llama.n_ctx, settings.llama.n_threads, settings.llama.n_threads_batch = 2048, 1, 1
    settings.agent.max_turns, settings.agent.task_depth, settings.agent.deadline_s = 1, 0, 60
    samples = load_turn_samples()
    first = next(s for s in samples if s.first_turn)
    later = next(s for s in samples if s.history)
    [question] = load_questions()[:1]
    lines: list[str] = []
    model = LlamaModel(small_model_path, settings.llama)
    try:
        report = run_eval(
            model,
            settings,
            root=default_root(),
            samples=[first, later],
            questions=[question],
            variants=ABLATION,
            say=lines.append,
        )
    finally:
        model.close()
    assert list(report.turn_metrics) == [v.name for v in ABLATION]
    assert report.explore_variants == ["grammar+force", "grammar", "neither"]
    for m in report.turn_metrics.values():
        assert m.samples + m.errors == 2 and m.presence.total == m.samples
    by_variant = {(r.id, r.variant): r for r in report.turns}
    # Forcing makes the first turn open with a tool call, with or without the tools' grammar.
    for variant in ("grammar+force", "force"):
        assert by_variant[(first.id, variant)].text.startswith("<tool_call>"), by_variant[(first.id, variant)].text
    assert len(report.explorations) == 3 and all(r.score is not None for r in report.explorations)
    for r in report.explorations:
        assert r.score is not None and r.score.turns == 1 and r.score.prompt_tokens > 0
    assert any("question 1/1" in line for line in lines)
