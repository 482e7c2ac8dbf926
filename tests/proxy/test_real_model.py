"""The official SDK against the proxy running the real small model (SmolLM2-135M) in-process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anthropic
import pytest
from proxy_helpers import HAIKU, proxy_settings, serve_app

from mcp_loco.config import LlamaSettings
from mcp_loco.proxy import create_app

pytestmark = [pytest.mark.model, pytest.mark.slow]

READ = {
    "name": "Read",
    "description": "Reads a file from the local filesystem.",
    "input_schema": {
        "type": "object",
        "properties": {"file_path": {"type": "string", "maxLength": 60}, "limit": {"type": "integer", "minimum": 1}},
        "required": ["file_path"],
    },
}


@pytest.fixture(scope="module")
def client(small_model_path: Path) -> Iterator[anthropic.Anthropic]:
    """One proxy over the real model for the module (loading it once)."""
    from mcp_loco.model.backends.llama_cpp import LlamaModel

    llama = LlamaSettings(n_ctx=4096, n_threads=1, n_threads_batch=1)
    app = create_app(proxy_settings(upstream=""), lambda: LlamaModel(small_model_path, llama))
    with (
        serve_app(app) as url,
        anthropic.Anthropic(base_url=url, api_key="anything", max_retries=0, timeout=120) as sdk_client,
    ):
        yield sdk_client


def test_a_plain_turn(client: anthropic.Anthropic) -> None:
    reply = client.messages.create(
        model=HAIKU, max_tokens=24, messages=[{"role": "user", "content": "Name three colors."}]
    )
    assert reply.id.startswith("msg_") and reply.model == HAIKU and reply.role == "assistant"
    assert reply.stop_reason in ("end_turn", "max_tokens")
    assert reply.content and reply.content[0].type == "text" and reply.content[0].text.strip()
    assert 1 <= reply.usage.output_tokens <= 24 and reply.usage.input_tokens > 0


def test_text_streams_as_it_is_generated(client: anthropic.Anthropic) -> None:
    ask = [{"role": "user", "content": "Count from one to twenty in words."}]
    with client.messages.stream(model=HAIKU, max_tokens=48, messages=ask) as stream:  # type: ignore[arg-type]
        deltas = list(stream.text_stream)
        final = stream.get_final_message()
    assert final.content[0].type == "text" and "".join(deltas) == final.content[0].text
    assert final.usage.output_tokens > 10
    assert len(deltas) >= 3, f"the text came in {len(deltas)} pieces: not streamed"


def test_a_forced_tool_call_and_its_result_with_the_prefix_reused(client: anthropic.Anthropic) -> None:
    messages: list[dict[str, object]] = [{"role": "user", "content": "Read the file /repo/README.md"}]
    first = client.messages.create(
        model=HAIKU,
        max_tokens=64,
        messages=messages,
        tools=[READ],
        tool_choice={"type": "any"},  # type: ignore[arg-type]
    )
    calls = [b for b in first.content if b.type == "tool_use"]
    assert first.stop_reason == "tool_use" and calls, first.content
    assert calls[0].name == "Read" and isinstance(calls[0].input, dict) and isinstance(calls[0].input["file_path"], str)
    messages += [
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": c.id, "content": "# demo\nA tiny project."} for c in calls
            ],
        },
    ]
    second = client.messages.create(model=HAIKU, max_tokens=24, messages=messages, tools=[READ])  # type: ignore[arg-type]
    assert second.stop_reason in ("end_turn", "max_tokens", "tool_use") and second.content
    u1, u2 = first.usage, second.usage
    prompt1 = u1.input_tokens + (u1.cache_read_input_tokens or 0)
    prompt2 = u2.input_tokens + (u2.cache_read_input_tokens or 0)
    new = prompt2 - prompt1 - u1.output_tokens
    # Every token of the first prompt and of the model's own turn comes from the cache; only the new ones are evaluated.
    assert (u2.cache_read_input_tokens or 0) >= prompt1
    assert u2.input_tokens <= new + 1, f"evaluated {u2.input_tokens} tokens for {new} new ones"
