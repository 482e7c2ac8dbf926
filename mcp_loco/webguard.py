"""What every HTTP front door (`serve` over sse/http, `proxy`) refuses before it reads a request: web pages.

A page open in a browser can reach a server on 127.0.0.1 in two ways that no CORS rule stops by itself:
DNS rebinding (the page's own name starts to resolve to 127.0.0.1, so its requests carry the page's
Host) and a cross-site "simple" request (a POST of text/plain, a form or no type at all, which the
browser sends without asking first). So a request that arrived on a loopback address must name a
loopback host and this very port; a request that carries an Origin must come from this server itself
(not another site, not `null`, not another local port); and a request with a body must say it is JSON,
which a page cannot send to another origin without a preflight that these servers never grant.
Programs (MCP clients, Claude Code, SDKs, curl) send no Origin and are not affected.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
"""Methods whose requests must be JSON even when they declare no body."""
DRAIN_MAX = 1 << 20
"""A refused request's body is read (and dropped) up to this much before the answer, so the client gets the
answer and not a connection reset from a socket closed with its body unread."""


async def drain(receive: Callable[[], Awaitable[MutableMapping[str, Any]]]) -> None:
    """Read and drop a refused request's body, up to DRAIN_MAX bytes."""
    seen = 0
    while seen <= DRAIN_MAX:
        message = await receive()
        if message.get("type") != "http.request":
            return
        seen += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused: the HTTP status, a short code, and a message saying what to do."""

    status: int
    code: str
    message: str


def _loopback_address(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _split_host(value: str) -> tuple[str, int] | None:
    """A Host header as (lowercased name, port; 80 when absent), or None when it is not one."""
    name, port = value, ""
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[: end + 1], value[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                return None
            port = rest[1:]
    elif ":" in value:
        name, _, port = value.partition(":")
    if port and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        return None
    return (name.lower(), int(port) if port else 80) if name else None


def _names_loopback(name: str) -> bool:
    """`localhost`, a 127.x.y.z literal, or a bracketed IPv6 loopback literal; nothing else (no trailing dot)."""
    if name == "localhost":
        return True
    bracketed = name.startswith("[") and name.endswith("]")
    try:
        address = ipaddress.ip_address(name[1:-1] if bracketed else name)
    except ValueError:
        return False
    return address.is_loopback and bracketed == isinstance(address, ipaddress.IPv6Address)


def _media_type(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


def check_request(
    method: str, headers: Iterable[tuple[bytes, bytes]], server: tuple[str, int] | None
) -> Refusal | None:
    """The refusal of a request a web page could have sent (see the module docstring), or None to serve it.

    `server` is the local address the connection arrived on (the ASGI scope's `server`).
    """
    values: dict[str, list[str]] = {}
    for key, value in headers:
        values.setdefault(key.decode("latin-1").lower(), []).append(value.decode("latin-1"))
    hosts = values.get("host", [])
    host = hosts[0].strip() if len(hosts) == 1 else ""
    if server is not None and _loopback_address(server[0]):
        parsed = _split_host(host)
        if parsed is None or not _names_loopback(parsed[0]) or parsed[1] != server[1]:
            shown = repr(host) if len(hosts) == 1 else f"{len(hosts)} Host headers"
            return Refusal(
                421,
                "misdirected_request",
                f"the Host header {shown} does not name this server (127.0.0.1, localhost or [::1] at port "
                f"{server[1]}): a web page may be reaching it through DNS rebinding. Connect to "
                f"http://127.0.0.1:{server[1]} directly",
            )
    for origin in values.get("origin", []):
        if not host or origin.strip().lower() != f"http://{host}".lower():
            return Refusal(
                403,
                "forbidden_origin",
                f"requests from web pages are refused (Origin {origin.strip()!r} is not this server): call it from "
                "a program such as an MCP client, Claude Code, an SDK or curl, which sends no Origin header",
            )
    lengths = values.get("content-length", [])
    has_body = "transfer-encoding" in values or any(v.strip() not in ("", "0") for v in lengths)
    if method.upper() in BODY_METHODS or has_body:
        types = values.get("content-type", [])
        if not types or any(_media_type(t) != "application/json" for t in types):
            got = ", ".join(repr(t) for t in types) or "none"
            return Refusal(
                415,
                "unsupported_media_type",
                f"the request body must be JSON: send Content-Type: application/json (got {got})",
            )
    return None
