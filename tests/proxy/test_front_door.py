"""The proxy's front door: what a web page could send (rebinding, cross-site posts) and bodies that are not safe JSON.

Every attack runs on every route (the local /v1/messages and count_tokens, a model forwarded upstream,
forwarded paths), over real HTTP on 127.0.0.1 with the exact bytes a browser or a hostile client sends.
"""

from __future__ import annotations

import http.client
import json
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from proxy_helpers import HAIKU, FakeUpstream

from mcp_loco.model.backends.replay import ReplayModel
from mcp_loco.proxy.wire import MAX_DEPTH

GOOD = {"model": HAIKU, "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
FORWARDED = {**GOOD, "model": "claude-sonnet-4-5"}
JSON = "application/json"
# (method, path, body) of every kind of route: local, counted locally, a model sent upstream, a forwarded path.
ROUTES: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/v1/messages", GOOD),
    ("POST", "/v1/messages/count_tokens", GOOD),
    ("POST", "/v1/messages?beta=true", FORWARDED),
    ("POST", "/v1/messages/batches", {"requests": []}),
]


def send(url: str, method: str, path: str, headers: list[tuple[str, str]], body: bytes = b"") -> tuple[int, Any]:
    """One request with exactly these headers (Host included, none added); the status and the JSON answer."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for key, value in headers:
            conn.putheader(key, value)
        if body or method in ("POST", "PUT", "PATCH"):
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    try:
        return response.status, json.loads(data) if data else None
    except ValueError:
        return response.status, data


def host_of(url: str) -> str:
    return urlsplit(url).netloc


def assert_refused(answer: tuple[int, Any], status: int, kind: str, needle: str) -> None:
    code, body = answer
    assert code == status, body
    assert body["type"] == "error" and body["error"]["type"] == kind, body
    assert needle in body["error"]["message"], body


def assert_still_serving(url: str, upstream: FakeUpstream) -> None:
    ok = httpx.post(f"{url}/v1/messages", json=GOOD)
    assert ok.status_code == 200 and ok.json()["content"] == [{"type": "text", "text": "fine"}], ok.text
    forwarded = httpx.post(f"{url}/v1/messages", json=FORWARDED)
    assert forwarded.status_code == 200 and forwarded.json()["content"][0]["text"] == "from upstream"


@pytest.fixture
def proxy(run_proxy, upstream: FakeUpstream) -> tuple[str, ReplayModel]:
    model = ReplayModel(["fine"] * 100)
    return run_proxy(model, upstream=upstream.url), model


def bad_hosts(port: int) -> list[str]:
    return [
        "evil.example",
        f"evil.example:{port}",
        f"127.0.0.1:{port + 1}",
        f"localhost:{port + 1}",
        f"[::1]:{port + 1}",
        "127.0.0.1",  # port 80 implied
        "localhost",
        f"localhost.:{port}",
        f"127.0.0.1.:{port}",
        f"127.0.0.1.evil.example:{port}",
        f"localhost.evil.example:{port}",
        f"LOCALHOST.EVIL.EXAMPLE:{port}",
        f"[::2]:{port}",
        f"[::ffff:127.0.0.1]:{port}",
        f"::1:{port}",
        f"0.0.0.0:{port}",
        f"192.168.1.10:{port}",
        f"127.1:{port}",
        f"127.0.0.1:{port}:{port}",
        f"127.0.0.1:+{port}",
        f"127.0.0.1:{port}@evil.example",
        "",
    ]


@pytest.mark.parametrize(("method", "path", "payload"), ROUTES)
def test_a_host_that_is_not_this_server_is_refused_on_every_route(proxy, upstream, method, path, payload) -> None:
    url, model = proxy
    port = int(urlsplit(url).port or 0)
    body = json.dumps(payload).encode()
    for host in bad_hosts(port):
        answer = send(url, method, path, [("Host", host), ("Content-Type", JSON)], body)
        assert_refused(answer, 421, "invalid_request_error", "DNS rebinding")
        assert repr(host) in answer[1]["error"]["message"]
    # Two Host headers, or none: HTTP/1.1 itself forbids them (uvicorn answers 400 before the proxy sees them).
    two = send(url, method, path, [("Host", host_of(url)), ("Host", "evil.example"), ("Content-Type", JSON)], body)
    none = send(url, method, path, [("Content-Type", JSON)], body)
    assert two[0] in (400, 421) and none[0] in (400, 421), (two, none)
    assert upstream.seen == [] and model.prompts == []  # nothing ran, nothing went out
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LocalHost:{port}", f"[::1]:{port}", f"127.8.0.1:{port}"):
        status, answer = send(url, method, path, [("Host", host), ("Content-Type", JSON)], body)
        assert status == 200, (host, answer)
    assert_still_serving(url, upstream)


def test_a_forwarded_get_is_checked_too(proxy, upstream) -> None:
    url, _ = proxy
    assert_refused(send(url, "GET", "/v1/models", [("Host", "evil.example")]), 421, "invalid_request_error", "Host")
    origin = [("Host", host_of(url)), ("Origin", "https://evil.example")]
    assert_refused(send(url, "GET", "/v1/models", origin), 403, "permission_error", "web pages")
    assert upstream.seen == []
    status, _ = send(url, "GET", "/v1/models", [("Host", host_of(url))])
    assert status == 200 and [s.path for s in upstream.seen] == ["/v1/models"]


@pytest.mark.parametrize(("method", "path", "payload"), ROUTES)
def test_a_request_from_another_origin_is_refused_on_every_route(proxy, upstream, method, path, payload) -> None:
    url, model = proxy
    host = host_of(url)
    port = int(urlsplit(url).port or 0)
    body = json.dumps(payload).encode()
    origins = [
        "null",
        "https://evil.example",
        "http://evil.example",
        f"http://evil.example:{port}",
        f"http://localhost:{port + 1}",
        f"http://127.0.0.1:{port + 1}",
        f"http://[::1]:{port + 1}",
        "http://localhost",
        f"https://{host}",
        f"http://{host}.evil.example",
        f"http://{host}@evil.example",
        "file://",
        "",
    ]
    for origin in origins:
        answer = send(url, method, path, [("Host", host), ("Origin", origin), ("Content-Type", JSON)], body)
        assert_refused(answer, 403, "permission_error", "requests from web pages are refused")
    # One good Origin beside a bad one does not pass.
    two = [("Host", host), ("Origin", f"http://{host}"), ("Origin", "https://evil.example"), ("Content-Type", JSON)]
    assert_refused(send(url, method, path, two, body), 403, "permission_error", "evil.example")
    assert upstream.seen == [] and model.prompts == []
    # The server's own origin (a page it served, were there one) is the one origin allowed.
    same = send(url, method, path, [("Host", host), ("Origin", f"http://{host}"), ("Content-Type", JSON)], body)
    assert same[0] == 200, same
    assert_still_serving(url, upstream)


@pytest.mark.parametrize(("method", "path", "payload"), ROUTES)
def test_a_body_that_does_not_say_json_is_refused_on_every_route(proxy, upstream, method, path, payload) -> None:
    url, model = proxy
    host = host_of(url)
    body = json.dumps(payload).encode()
    kinds = [
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=----x",
        "application/jsonx",
        "application/json-seq",
        "text/json",
        "application/x-json",
        "",
        "*/*",
    ]
    for kind in kinds:
        answer = send(url, method, path, [("Host", host), ("Content-Type", kind)], body)
        assert_refused(answer, 415, "invalid_request_error", "send Content-Type: application/json")
    missing = send(url, method, path, [("Host", host)], body)
    assert_refused(missing, 415, "invalid_request_error", "got none")
    empty = send(url, method, path, [("Host", host)])  # a POST with no body and no type: a form could send it
    assert_refused(empty, 415, "invalid_request_error", "application/json")
    mixed = send(url, method, path, [("Host", host), ("Content-Type", JSON), ("Content-Type", "text/plain")], body)
    assert_refused(mixed, 415, "invalid_request_error", "text/plain")
    assert upstream.seen == [] and model.prompts == []
    for kind in (JSON, "application/json; charset=utf-8", "Application/JSON;charset=UTF-8", " application/json "):
        status, answer = send(url, method, path, [("Host", host), ("Content-Type", kind)], body)
        assert status == 200, (kind, answer)
    assert_still_serving(url, upstream)


def nested(depth: int, kind: str) -> str:
    if kind == "array":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


def in_request(value: str, model: str = HAIKU) -> bytes:
    """`value` (JSON text) as the metadata of an otherwise valid request."""
    head = json.dumps({"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
    return (head[:-1] + ', "metadata": ' + value + "}").encode()


UNSAFE: list[tuple[str, bytes, str]] = [
    ("100,000-deep arrays", nested(100_000, "array").encode(), "deeper than"),
    ("100,000-deep objects", nested(100_000, "object").encode(), "deeper than"),
    ("deep arrays in a request", in_request(nested(100_000, "array")), "deeper than"),
    ("deep objects in a request", in_request(nested(100_000, "object")), "deeper than"),
    ("just past the depth limit", in_request(nested(MAX_DEPTH, "object")), f"deeper than {MAX_DEPTH} levels"),
    (
        "deep tool input schema",
        json.dumps(
            {**GOOD, "tools": [{"name": "T", "input_schema": json.loads(nested(MAX_DEPTH, "object"))}]}
        ).encode(),
        "deeper than",
    ),
    (
        "a 5000-digit number",
        ('{"model": "' + HAIKU + '", "max_tokens": ' + "9" * 5000 + ', "messages": []}').encode(),
        "not valid JSON",
    ),
    ("a 5000-digit number deep inside", in_request('{"n": ' + "1" * 5000 + "}"), "not valid JSON"),
    (
        "invalid UTF-8",
        b'{"model": "claude-haiku-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "\xff\xfe"}]}',
        "not valid JSON",
    ),
    ("NaN", in_request('{"n": NaN}'), "NaN is not a JSON value"),
    ("-Infinity", in_request("[-Infinity]"), "-Infinity is not a JSON value"),
    (
        "a lone surrogate",
        json.dumps({**GOOD, "messages": [{"role": "user", "content": "\ud800"}]}).encode(),
        "lone surrogate",
    ),
    ("a lone surrogate in a key", in_request('{"\\udfff": 1}'), "lone surrogate"),
]


@pytest.mark.parametrize(("what", "payload", "needle"), UNSAFE, ids=[u[0] for u in UNSAFE])
def test_unsafe_json_is_a_400_on_every_route_and_the_proxy_keeps_serving(
    proxy, upstream: FakeUpstream, capfd, what: str, payload: bytes, needle: str
) -> None:
    url, model = proxy
    host = host_of(url)
    bodies = [(path, payload) for _, path, _ in ROUTES]
    if payload.startswith(b'{"model": "' + HAIKU.encode()):  # the same body sent to a forwarded model
        bodies.append(("/v1/messages", payload.replace(HAIKU.encode(), b"claude-sonnet-4-5", 1)))
    for path, body in bodies:
        answer = send(url, "POST", path, [("Host", host), ("Content-Type", JSON)], body)
        assert_refused(answer, 400, "invalid_request_error", needle)
    assert model.prompts == []
    assert upstream.seen == []
    assert_still_serving(url, upstream)
    err = capfd.readouterr().err
    assert "Traceback" not in err and "proxy.bug" not in err, err[-3000:]


def test_nesting_within_the_limit_still_runs(proxy, upstream) -> None:
    url, _ = proxy
    deep = in_request(nested(MAX_DEPTH - 1, "object"))  # the request object adds one level
    status, answer = send(url, "POST", "/v1/messages", [("Host", host_of(url)), ("Content-Type", JSON)], deep)
    assert status == 200, answer
    forwarded = deep.replace(HAIKU.encode(), b"claude-sonnet-4-5", 1)
    status, answer = send(url, "POST", "/v1/messages", [("Host", host_of(url)), ("Content-Type", JSON)], forwarded)
    assert status == 200 and upstream.seen[-1].body == forwarded
