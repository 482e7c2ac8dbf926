"""Bad input gets an Anthropic-style 4xx naming the problem, and the proxy keeps serving."""

from __future__ import annotations

import json

import httpx
import pytest
from proxy_helpers import HAIKU

from mcp_loco.model.backends.replay import ReplayModel

GOOD = {"model": HAIKU, "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}


def with_message(content: object, role: str = "user") -> dict[str, object]:
    return {**GOOD, "messages": [{"role": role, "content": content}]}


@pytest.mark.parametrize(
    ("payload", "status", "kind", "needle"),
    [
        (b'{"model": "claude-haiku-4-5", "messages": [', 400, "invalid_request_error", "not valid JSON"),
        (b"\xff\xfe", 400, "invalid_request_error", "not valid JSON"),
        (b"[1, 2]", 400, "invalid_request_error", "must be a JSON object, not list"),
        (json.dumps({"max_tokens": 5, "messages": []}).encode(), 400, "invalid_request_error", "model: Field required"),
        (
            json.dumps({"model": HAIKU, "messages": [{"role": "user", "content": "x"}]}).encode(),
            400,
            "invalid_request_error",
            "max_tokens: Field required",
        ),
        (
            json.dumps({**GOOD, "messages": []}).encode(),
            400,
            "invalid_request_error",
            "messages: List should have at least 1 item",
        ),
        (
            json.dumps({**GOOD, "max_tokens": 0}).encode(),
            400,
            "invalid_request_error",
            "max_tokens: Input should be greater than or equal to 1",
        ),
        (json.dumps(with_message("x", role="system")).encode(), 400, "invalid_request_error", "messages.0.role"),
        (
            json.dumps(with_message([{"type": "hologram", "data": 1}])).encode(),
            400,
            "invalid_request_error",
            "'hologram'",
        ),
        (
            json.dumps(with_message([{"type": "tool_result"}])).encode(),
            400,
            "invalid_request_error",
            "tool_use_id: Field required",
        ),
        (json.dumps(with_message([{"type": "text"}])).encode(), 400, "invalid_request_error", "messages.0.content"),
        (
            json.dumps(
                {
                    **GOOD,
                    "tools": [{"name": "Read", "input_schema": {}}],
                    "tool_choice": {"type": "tool", "name": "Nope"},
                }
            ).encode(),
            400,
            "invalid_request_error",
            "'Nope' is not among",
        ),
        (b"x" * 3000, 413, "request_too_large", "exceeds"),
    ],
)
def test_bad_requests_get_anthropic_errors_and_the_proxy_keeps_serving(
    run_proxy, payload: bytes, status: int, kind: str, needle: str
) -> None:
    url = run_proxy(ReplayModel(["fine"]), upstream="", max_body_mb=0.002)
    r = httpx.post(f"{url}/v1/messages?beta=true", content=payload, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert r.json()["type"] == "error"
    assert r.json()["error"]["type"] == kind and needle in r.json()["error"]["message"], r.json()
    ok = httpx.post(f"{url}/v1/messages", json=GOOD)
    assert ok.status_code == 200 and ok.json()["content"] == [{"type": "text", "text": "fine"}]


def test_a_body_over_the_limit_is_refused_before_it_is_read_whole(run_proxy) -> None:
    url = run_proxy(ReplayModel([]), upstream="", max_body_mb=0.002)

    def chunks():  # no content-length: the limit applies while reading
        for _ in range(100):
            yield b"x" * 1000

    r = httpx.post(f"{url}/v1/messages", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["type"] == "request_too_large"


def test_a_backend_failure_is_a_500_api_error(run_proxy) -> None:
    url = run_proxy(ReplayModel([]), upstream="")  # no turns left: the backend raises
    r = httpx.post(f"{url}/v1/messages", json=GOOD)
    assert r.status_code == 500 and r.json()["error"] == {
        "type": "api_error",
        "message": "the local model failed: replay exhausted: all 0 recorded turns were played",
    }
    s = httpx.post(f"{url}/v1/messages", json={**GOOD, "stream": True})
    assert s.status_code == 200 and "event: error" in s.text and "replay exhausted" in s.text
