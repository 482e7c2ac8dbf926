"""The SDK's view of local turns: streamed text, tool_use blocks, and a client that goes away."""

from __future__ import annotations

import threading
import time

import anthropic
import httpx
import pytest
from proxy_helpers import HAIKU, sdk

from mcp_loco.errors import Cancelled
from mcp_loco.interfaces import Completion, GenerateOptions, Prompt, Usage
from mcp_loco.model.backends.replay import ReplayModel
from mcp_loco.model.protocol import format_call

READ = {
    "name": "Read",
    "description": "Reads a file from the local filesystem.",
    "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}}, "required": ["file_path"]},
}


class Ticker:
    """A model that writes 'tick ' every few milliseconds until it is cancelled (or 20 s pass)."""

    n_ctx = 4096

    def __init__(self) -> None:
        self.stopped = threading.Event()
        self.calls = 0

    def count_tokens(self, prompt: Prompt) -> int:
        return 10

    def complete(self, prompt: Prompt, options: GenerateOptions, cancel: threading.Event | None = None) -> Completion:
        self.calls += 1
        if cancel is not None and cancel.is_set():
            raise Cancelled("cancelled before generation")
        text = ""
        for _ in range(4000):
            if cancel is not None and cancel.is_set():
                self.stopped.set()
                return Completion(text, Usage(), "cancelled")
            text += "tick "
            if options.on_text:
                options.on_text("tick ")
            time.sleep(0.005)
        return Completion(text, Usage(), "length")

    def close(self) -> None:
        pass


def test_a_streamed_tool_call_round_trip_through_the_sdk(run_proxy) -> None:
    model = ReplayModel(["I will read it.\n" + format_call("Read", {"file_path": "/src/a.py"}), "It defines main."])
    client = sdk(run_proxy(model, upstream=""))
    messages: list[dict[str, object]] = [{"role": "user", "content": "What is in /src/a.py?"}]
    with client.messages.stream(model=HAIKU, max_tokens=100, messages=messages, tools=[READ]) as stream:  # type: ignore[arg-type]
        text = "".join(stream.text_stream)
        first = stream.get_final_message()
    assert text == "I will read it."
    assert first.stop_reason == "tool_use" and [b.type for b in first.content] == ["text", "tool_use"]
    call = first.content[1]
    assert call.type == "tool_use" and call.name == "Read" and call.input == {"file_path": "/src/a.py"}
    assert call.id.startswith("toolu_")
    messages += [
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "def main(): ..."}]},
    ]
    second = client.messages.create(model=HAIKU, max_tokens=100, messages=messages, tools=[READ])  # type: ignore[arg-type]
    assert second.stop_reason == "end_turn" and second.content[0].text == "It defines main."  # type: ignore[union-attr]
    # The model's own turn went back byte-exact, the tool's answer in the trained format.
    assert model.prompts[1].startswith(
        model.prompts[0] + "I will read it.\n" + format_call("Read", {"file_path": "/src/a.py"})
    )
    assert "<tool_response>\ndef main(): ...\n</tool_response>" in model.prompts[1]
    assert model.options[0].grammar is not None and "Read" in model.options[0].grammar
    assert model.options[0].on_text is not None


def test_tool_choice_any_forces_a_call_and_none_turns_calls_into_text(run_proxy) -> None:
    call = format_call("Read", {"file_path": "/x"})
    model = ReplayModel([call, call])
    client = sdk(run_proxy(model, upstream=""))
    ask = {"model": HAIKU, "max_tokens": 50, "messages": [{"role": "user", "content": "go"}], "tools": [READ]}
    forced = client.messages.create(**ask, tool_choice={"type": "any"})  # type: ignore[arg-type]
    assert model.options[0].force_tool_call and forced.content[0].type == "tool_use"
    plain = client.messages.create(**ask, tool_choice={"type": "none"})  # type: ignore[arg-type]
    assert model.options[1].grammar is None and plain.stop_reason == "end_turn"
    assert plain.content[0].type == "text" and plain.content[0].text == call


def test_a_client_that_leaves_mid_stream_stops_local_generation(run_proxy) -> None:
    model = Ticker()
    url = run_proxy(model, upstream="")
    started = time.monotonic()
    with httpx.stream(
        "POST",
        f"{url}/v1/messages",
        json={"model": HAIKU, "max_tokens": 9999, "stream": True, "messages": [{"role": "user", "content": "go"}]},
    ) as r:
        for line in r.iter_lines():
            if '"text_delta"' in line:
                break
    assert model.stopped.wait(10), "generation went on after the client left"
    assert time.monotonic() - started < 10
    # The instance is free again.
    client = sdk(url, timeout=0.5)
    with pytest.raises(anthropic.APITimeoutError):
        client.messages.create(model=HAIKU, max_tokens=10, messages=[{"role": "user", "content": "again"}])
    assert model.calls == 2


def test_a_client_that_leaves_a_plain_request_stops_local_generation(run_proxy) -> None:
    model = Ticker()
    url = run_proxy(model, upstream="")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{url}/v1/messages",
            json={"model": HAIKU, "max_tokens": 9999, "messages": [{"role": "user", "content": "go"}]},
            timeout=0.5,
        )
    assert model.stopped.wait(10), "generation went on after the client left"
