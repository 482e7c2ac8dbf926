"""Routing by model name, forwarding with the client's headers, relayed streams, and the seed's fallback."""

from __future__ import annotations

import json
import socket
import threading

import anthropic
import httpx
import pytest
from proxy_helpers import HAIKU, FakeUpstream, sdk, upstream_events

from mcp_loco.model.backends.replay import ReplayModel

HEADERS = {
    "x-api-key": "sk-ant-test-key",
    "authorization": "Bearer tok-123",
    "anthropic-version": "2023-06-01",
    "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14",
}


def body(model: str, turns: int = 0, **extra: object) -> dict[str, object]:
    messages: list[dict[str, object]] = [{"role": "user", "content": "hi"}]
    for i in range(turns):
        messages += [{"role": "assistant", "content": f"turn {i}"}, {"role": "user", "content": "go on"}]
    return {"model": model, "max_tokens": 50, "messages": messages, **extra}


def test_other_models_are_forwarded_unchanged_with_the_clients_headers(run_proxy, upstream: FakeUpstream) -> None:
    model = ReplayModel([])
    url = run_proxy(model, upstream=upstream.url)
    raw = json.dumps(body("claude-sonnet-4-5", metadata={"user_id": "u1"})).encode()
    r = httpx.post(f"{url}/v1/messages?beta=true", content=raw, headers={**HEADERS, "content-type": "application/json"})
    assert r.status_code == 200 and r.json()["content"][0]["text"] == "from upstream"
    assert r.headers["request-id"] == "req_upstream_1"
    (seen,) = upstream.seen
    assert (seen.method, seen.path, seen.body) == ("POST", "/v1/messages?beta=true", raw)
    for key, value in HEADERS.items():
        assert seen.headers[key] == value
    assert model.prompts == []  # the local model was not asked


def test_an_upstream_error_is_relayed_as_it_is(run_proxy, upstream: FakeUpstream) -> None:
    upstream.status = 429
    upstream.body = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
    client = sdk(run_proxy(ReplayModel([]), upstream=upstream.url))
    with pytest.raises(anthropic.RateLimitError, match="slow down"):
        client.messages.create(model="claude-opus-4-1", max_tokens=10, messages=[{"role": "user", "content": "x"}])


def test_an_upstream_stream_is_relayed_as_it_arrives(run_proxy, upstream: FakeUpstream) -> None:
    upstream.events = upstream_events("streamed upstream")
    upstream.gate = threading.Event()
    url = run_proxy(ReplayModel([]), upstream=upstream.url)
    with httpx.stream("POST", f"{url}/v1/messages", json=body("claude-sonnet-4-5", stream=True), headers=HEADERS) as r:
        lines = r.iter_lines()
        # The upstream holds the rest back until the first event has reached the client.
        assert next(lines) == "event: message_start"
        upstream.gate.set()
        rest = "\n".join(lines)
    assert "streamed upstream" in rest and rest.rstrip().endswith('data: {"type": "message_stop"}')


def test_the_turn_limit_sends_the_original_request_upstream(run_proxy, upstream: FakeUpstream, capfd) -> None:
    model = ReplayModel(["local answer"])
    url = run_proxy(model, upstream=upstream.url, fallback_turns=3)
    client = sdk(url)
    short = client.messages.create(**body(HAIKU, turns=2))  # type: ignore[arg-type]
    assert short.content[0].text == "local answer"  # type: ignore[union-attr]
    long = client.messages.create(**body(HAIKU, turns=3))  # type: ignore[arg-type]
    assert long.content[0].text == "from upstream"  # type: ignore[union-attr]
    assert upstream.seen[0].json() == body(HAIKU, turns=3)
    assert "proxy.fallback" in capfd.readouterr().err


def test_a_prompt_that_would_overflow_the_local_context_goes_upstream(run_proxy, upstream: FakeUpstream) -> None:
    model = ReplayModel(["unused"], n_ctx=600)
    client = sdk(run_proxy(model, upstream=upstream.url))
    big = "word " * 2000
    reply = client.messages.create(model=HAIKU, max_tokens=10, messages=[{"role": "user", "content": big}])
    assert reply.content[0].text == "from upstream"  # type: ignore[union-attr]
    assert model.prompts == [] and len(upstream.seen) == 1


def test_without_an_upstream_the_limits_are_clear_errors(run_proxy) -> None:
    client = sdk(run_proxy(ReplayModel([], n_ctx=600), upstream="", fallback_turns=2))
    with pytest.raises(anthropic.BadRequestError, match=r"2 assistant turns \(--fallback-turns 2\).*no upstream"):
        client.messages.create(**body(HAIKU, turns=2))  # type: ignore[arg-type]
    with pytest.raises(anthropic.BadRequestError, match="prompt is too long for the local model"):
        client.messages.create(model=HAIKU, max_tokens=10, messages=[{"role": "user", "content": "word " * 2000}])
    with pytest.raises(anthropic.BadRequestError, match="'claude-sonnet-4-5' is not local"):
        client.messages.create(**body("claude-sonnet-4-5"))  # type: ignore[arg-type]
    with pytest.raises(anthropic.NotFoundError, match="no upstream"):
        client.models.list()


def test_an_unreachable_upstream_is_a_502(run_proxy) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    url = run_proxy(ReplayModel(["still here"]), upstream=dead)
    r = httpx.post(f"{url}/v1/messages", json=body("claude-sonnet-4-5"), headers=HEADERS)
    assert r.status_code == 502
    assert r.json()["type"] == "error" and "could not be reached" in r.json()["error"]["message"]
    local = httpx.post(f"{url}/v1/messages", json=body(HAIKU), headers=HEADERS)
    assert local.status_code == 200 and local.json()["content"][0]["text"] == "still here"


def test_count_tokens_is_answered_locally_for_local_models(run_proxy, upstream: FakeUpstream) -> None:
    upstream.body = {"input_tokens": 77}
    client = sdk(run_proxy(ReplayModel([]), upstream=upstream.url))
    local = client.messages.count_tokens(model=HAIKU, messages=[{"role": "user", "content": "hello " * 50}])
    assert 50 <= local.input_tokens < 600 and upstream.seen == []
    remote = client.messages.count_tokens(model="claude-sonnet-4-5", messages=[{"role": "user", "content": "x"}])
    assert remote.input_tokens == 77 and upstream.seen[0].path.startswith("/v1/messages/count_tokens")
