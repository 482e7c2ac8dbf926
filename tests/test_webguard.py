"""The web-page rules both HTTP front doors share, on their own: every header spelling, and never a crash."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcp_loco.webguard import check_request

LOOPBACK = ("127.0.0.1", 9091)
JSON = (b"content-type", b"application/json")


def status(host: str | None, *extra: tuple[bytes, bytes], method: str = "POST", server=LOOPBACK) -> int:
    headers = ([(b"host", host.encode())] if host is not None else []) + list(extra)
    refusal = check_request(method, headers, server)
    return refusal.status if refusal else 200


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1:9091", "localhost:9091", "LOCALHOST:9091", "[::1]:9091", "[0:0:0:0:0:0:0:1]:9091", "127.3.2.1:9091"],
)
def test_loopback_names_at_this_port_pass(host: str) -> None:
    assert status(host, JSON) == 200


@pytest.mark.parametrize(
    "host",
    [
        None,
        "",
        "127.0.0.1",
        "127.0.0.1:80",
        "127.0.0.1:9092",
        "127.0.0.1:09091x",
        "127.0.0.1:",
        "127.0.0.1:99999",
        "127.0.0.1:٩٠٩١",  # Arabic-Indic digits: isdigit() but not a port
        "localhost.:9091",
        "localhost..:9091",
        "127.0.0.1.:9091",
        "127.1:9091",
        "2130706433:9091",
        "0x7f.0.0.1:9091",
        "localhost.evil.example:9091",
        "evil.example:9091",
        "[::1]",
        "[::1]:9092",
        "[::1]9091",
        "[::1:9091",
        "::1:9091",
        "[127.0.0.1]:9091",
        "[::ffff:127.0.0.1]:9091",
        "0.0.0.0:9091",
        "[::]:9091",
        " 127.0.0.1:9091x",
    ],
)
def test_other_hosts_are_refused_on_loopback(host: str | None) -> None:
    assert status(host, JSON) == 421


def test_beyond_loopback_any_host_passes_but_origin_and_type_still_count() -> None:
    lan = ("192.168.1.10", 8765)
    assert status("box.lan:8765", JSON, server=lan) == 200
    assert status("box.lan:8765", JSON, (b"origin", b"http://evil.example"), server=lan) == 403
    assert status("box.lan:8765", JSON, (b"origin", b"http://box.lan:8765"), server=lan) == 200
    assert status("box.lan:8765", (b"content-type", b"text/plain"), server=lan) == 415
    assert status("anything", server=None, method="GET") == 200  # no socket address known (a unix socket)


@pytest.mark.parametrize(
    ("method", "headers", "expected"),
    [
        ("GET", [], 200),
        ("HEAD", [], 200),
        ("OPTIONS", [], 200),
        ("DELETE", [], 200),
        ("DELETE", [(b"content-length", b"0")], 200),
        ("DELETE", [(b"content-length", b"5")], 415),
        ("GET", [(b"transfer-encoding", b"chunked")], 415),
        ("GET", [(b"content-length", b"5"), JSON], 200),
        ("POST", [], 415),
        ("PUT", [], 415),
        ("PATCH", [(b"content-type", b"text/plain")], 415),
        ("post", [(b"content-type", b"text/plain")], 415),
        ("POST", [(b"Content-Type", b"APPLICATION/JSON; charset=utf-8")], 200),
    ],
)
def test_bodies_must_say_json(method: str, headers: list[tuple[bytes, bytes]], expected: int) -> None:
    assert status("127.0.0.1:9091", *headers, method=method) == expected


@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "OPTIONS", "X"]),
    headers=st.lists(
        st.tuples(
            st.sampled_from([b"host", b"origin", b"content-type", b"content-length", b"transfer-encoding", b"x"]),
            st.binary(max_size=40),
        ),
        max_size=6,
    ),
    server=st.one_of(st.none(), st.tuples(st.sampled_from(["127.0.0.1", "::1", "10.0.0.1"]), st.integers(0, 65535))),
)
def test_any_headers_get_an_answer_never_a_crash(method, headers, server) -> None:
    refusal = check_request(method, headers, server)
    assert refusal is None or (refusal.status in (403, 415, 421) and refusal.message)
