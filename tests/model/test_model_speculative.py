"""Speculative decoding (prompt lookup) on the real small model: same output, cancel, stop strings, grammar."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_model_llama import run_and_cancel

from mcp_loco.config import LlamaSettings
from mcp_loco.errors import BackendError
from mcp_loco.interfaces import GenerateOptions
from mcp_loco.model.backends.llama_cpp import LIB, LlamaModel
from mcp_loco.model.protocol import Message, ToolCall, parse_turn, render

pytestmark = pytest.mark.model

SNIPPET = '''def load_config(path):
    """Load the TOML config file."""
    with open(path, "rb") as f:
        return tomllib.load(f)


def save_config(path, data):
    """Write the TOML config file."""
    with open(path, "w") as f:
        f.write(tomli_w.dumps(data))
'''
COPY = [
    Message("system", "You are a helpful assistant."),
    Message("user", f"Here is /repo/config.py:\n```python\n{SNIPPET}```\nRepeat the file exactly, in a code block."),
]
# llama.cpp's one-row and multi-row kernels round differently: on SmolLM2 Q4_1 here the logits of
# the same position differ by up to 0.77 between a one-token decode and a batch. Greedy outputs
# can therefore part only where the model's top two tokens are closer than that.
KERNEL_NOISE = 1.5
GREEDY = GenerateOptions(max_tokens=96, temperature=0.0)


@pytest.fixture(scope="module")
def plain_model(small_model_path: Path) -> Iterator[LlamaModel]:
    """The small model with speculative decoding off (the session's `llama_model` has it on)."""
    model = LlamaModel(
        small_model_path, LlamaSettings(n_ctx=4096, n_batch=256, n_threads=1, n_threads_batch=1, speculative="off")
    )
    yield model
    model.close()


def last_turn_ids(model: Any) -> list[int]:
    """The token ids of the model's last completion."""
    ids: list[int] = model._tokens.last()
    return ids


def top_two_gap(model: Any, ids: list[int]) -> float:
    """Logit gap between the model's two best next tokens after `ids`, from one-token evaluation."""
    model._sync(ids)
    logits = np.ctypeslib.as_array(LIB.llama_get_logits_ith(model._ctx, -1), shape=(model._n_vocab,))
    best, second = np.sort(logits)[-2:][::-1]
    return float(best - second)


def test_greedy_output_is_the_same_with_and_without_speculation(llama_model: Any, plain_model: Any) -> None:
    assert llama_model._speculate and not plain_model._speculate
    prompt = render(COPY)
    fast = llama_model.complete(prompt, GREEDY)
    stats = llama_model.speculation
    slow = plain_model.complete(prompt, GREEDY)
    assert stats.accepted >= 16, stats  # the copy was drafted
    assert plain_model.speculation.drafted == 0
    a, b = last_turn_ids(llama_model), last_turn_ids(plain_model)
    if a != b:
        common = next(i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)
        gap = top_two_gap(plain_model, plain_model.tokenize(prompt) + b[:common])
        assert gap < KERNEL_NOISE, f"outputs part at token {common} where the model is sure (gap {gap:.2f})"
    else:
        assert fast.text == slow.text and fast.finish_reason == slow.finish_reason


def test_seeded_sampling_draws_the_same_tokens(llama_model: Any, plain_model: Any) -> None:
    # One random number per generated token either way: the acceptance rule samples each position
    # with the turn's own sampler, so a seeded run differs only where the logits do.
    options = GenerateOptions(max_tokens=48, temperature=0.7, top_k=20, top_p=0.8, seed=7)
    prompt = render(COPY)
    fast = llama_model.complete(prompt, options)
    slow = plain_model.complete(prompt, options)
    a, b = last_turn_ids(llama_model), last_turn_ids(plain_model)
    common = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    assert llama_model.speculation.accepted > 0
    assert common >= 8 or fast.text == slow.text, (fast.text, slow.text)


def test_stop_string_cuts_a_drafted_run(llama_model: Any) -> None:
    prompt = render(COPY)
    full = llama_model.complete(prompt, GREEDY)
    assert "save_config" in full.text, full.text
    cut = llama_model.complete(prompt, GenerateOptions(max_tokens=96, temperature=0.0, stop=("save_config",)))
    assert cut.finish_reason == "stop" and "save_config" not in cut.text and full.text.startswith(cut.text)
    # The cached draft past the stop does not leak into the next turn: it extends the cut text.
    again = render([*COPY, Message("assistant", cut.text), Message("user", "Thanks.")])
    after = llama_model.complete(again, GenerateOptions(max_tokens=4, temperature=0.0))
    assert after.usage.prompt_tokens_evaluated <= after.usage.prompt_tokens - llama_model.count_tokens(prompt)


def test_cancel_stops_a_speculative_generation(llama_model: Any) -> None:
    prompt = render([COPY[0], Message("user", COPY[1].content.replace(SNIPPET, SNIPPET * 12))])
    llama_model.complete(
        prompt, GenerateOptions(max_tokens=1, temperature=0.0)
    )  # cancel mid-generation, not mid-prompt
    out, latency = run_and_cancel(llama_model, prompt, GenerateOptions(max_tokens=3000, temperature=0.0), 3.0)
    assert llama_model.speculation.drafted > 0  # it was drafting when cancelled
    assert latency < 1.0
    assert out.finish_reason == "cancelled" and 0 < out.usage.completion_tokens < 3000
    ok = llama_model.complete(render([Message("user", "Say OK.")]), GenerateOptions(max_tokens=4, temperature=0.0))
    assert ok.usage.completion_tokens > 0


def test_drafted_tokens_inside_a_tool_call_pass_the_grammar(
    llama_model: Any, few_shot_messages: list[Message], tool_schemas: dict[str, Any]
) -> None:
    from mcp_loco.model.grammar import tool_call_grammar

    grammar = tool_call_grammar(tool_schemas)
    options = GenerateOptions(max_tokens=64, temperature=0.0, grammar=grammar)
    out = llama_model.complete(render(few_shot_messages), options)
    calls = parse_turn(out.text).calls
    assert calls and isinstance(calls[0], ToolCall), out.text
    assert calls[0].name == "Read" and calls[0].arguments == {"file_path": "/repo/c.py"}
    # The call repeats the earlier calls' JSON: most of it was drafted, and every token still passed the grammar.
    assert llama_model.speculation.accepted >= 8, llama_model.speculation
    forced = llama_model.complete(
        render(few_shot_messages),
        GenerateOptions(max_tokens=64, temperature=0.0, grammar=grammar, force_tool_call=True),
    )
    (call,) = parse_turn(forced.text).calls
    assert isinstance(call, ToolCall) and call.name in tool_schemas


@pytest.mark.parametrize(("batch_s", "drafting"), [(0.025, True), (0.045, False)])
def test_auto_drafts_only_where_a_verification_batch_pays(
    small_model_path: Path, monkeypatch: pytest.MonkeyPatch, batch_s: float, drafting: bool
) -> None:
    # One token 10 ms; a batch of 9 at 25 ms makes a full draft 3.6x faster, at 45 ms only 2x (SmolLM2 here).
    monkeypatch.setattr(LlamaModel, "_time_batches", lambda self, n, repeat=2: (0.010, batch_s))
    model = LlamaModel(small_model_path, LlamaSettings(n_ctx=1024, n_threads=1, speculative="auto", draft_max=8))
    try:
        assert model._speculate is drafting
        assert model.draft_gain == pytest.approx(9 * 0.010 / batch_s)
    finally:
        model.close()


def test_auto_times_the_loaded_model_and_leaves_its_context_empty(small_model_path: Path) -> None:
    model = LlamaModel(small_model_path, LlamaSettings(n_ctx=1024, n_threads=1, speculative="auto"))
    try:
        assert model.draft_gain is not None and model.draft_gain > 0
        assert model._llm.n_tokens == 0
        prompt = render(COPY)
        out = model.complete(prompt, GenerateOptions(max_tokens=8, temperature=0.0))
        assert out.usage.prompt_tokens_evaluated == out.usage.prompt_tokens == model.count_tokens(prompt)
        assert out.usage.completion_tokens > 0
    finally:
        model.close()


def test_read_results_are_a_draft_source_without_their_line_numbers(llama_model: Any) -> None:
    shown = "".join(f"{n:6d}\t{line}\n" for n, line in enumerate(SNIPPET.splitlines(), 40))
    prompt = render([Message("user", "Quote it."), Message("tool", shown)])
    quoted = llama_model._quoted(prompt)
    assert llama_model._llm.detokenize(quoted).decode() == SNIPPET


def test_a_failed_timing_leaves_drafting_off_and_the_model_serving(
    small_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(self: Any, n: int, repeat: int = 2) -> tuple[float, float]:
        raise BackendError("llama.cpp failed to decode (timing)")

    monkeypatch.setattr(LlamaModel, "_time_batches", fail)
    model = LlamaModel(small_model_path, LlamaSettings(n_ctx=1024, n_threads=1, speculative="auto"))
    try:
        assert not model.drafting and model.draft_gain is None
        out = model.complete(render(COPY), GenerateOptions(max_tokens=4, temperature=0.0))
        assert out.usage.completion_tokens > 0
    finally:
        model.close()
