"""Forwarding to the upstream Messages API: the original request and the client's headers, the answer relayed as it arrives."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import structlog
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from mcp_loco.proxy.wire import error_response

log = structlog.get_logger("mcp_loco.proxy.upstream")

# Hop-by-hop headers (RFC 9110 7.6.1) and those httpx sets itself; everything else passes through
# (x-api-key, authorization, anthropic-version, anthropic-beta, user-agent...).
_DROP_REQUEST = {
    "host",
    "content-length",
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}
_DROP_RESPONSE = {"connection", "keep-alive", "transfer-encoding", "trailer", "upgrade", "date", "server"}


class Upstream:
    """One upstream base URL and the connection pool to it."""

    def __init__(
        self, base_url: str, *, connect_timeout_s: float = 10.0, transport: httpx.AsyncBaseTransport | None = None
    ):
        self.base_url = base_url.rstrip("/")
        # No read timeout: a long stream may pause between events for as long as the upstream model thinks.
        timeout = httpx.Timeout(None, connect=connect_timeout_s)
        self._client = httpx.AsyncClient(timeout=timeout, transport=transport, follow_redirects=False)

    async def aclose(self) -> None:
        """Close the connections."""
        await self._client.aclose()

    def _headers(self, request: Request) -> list[tuple[str, str]]:
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _DROP_REQUEST]
        if not any(k.lower() == "accept-encoding" for k, _ in headers):
            # httpx would ask for gzip on the client's behalf; the raw bytes are relayed as they come.
            headers.append(("accept-encoding", "identity"))
        return headers

    async def forward(self, request: Request, body: bytes, reason: str) -> Response:
        """Send the request on unchanged; relay the status, headers and body as they arrive (502 when unreachable)."""
        url = self.base_url + request.url.path + (f"?{request.url.query}" if request.url.query else "")
        outgoing = self._client.build_request(request.method, url, headers=self._headers(request), content=body)
        try:
            response = await self._client.send(outgoing, stream=True)
        except httpx.HTTPError as e:
            log.warning("proxy.upstream_unreachable", url=url, error=f"{type(e).__name__}: {e}")
            return error_response(
                502, "api_error", f"the upstream {self.base_url} could not be reached ({type(e).__name__}: {e})"
            )
        log.info("proxy.forwarded", url=url, reason=reason, status=response.status_code)
        headers = {k: v for k, v in response.headers.items() if k.lower() not in _DROP_RESPONSE}
        return StreamingResponse(
            _relay(response, url),
            status_code=response.status_code,
            headers=headers,
            background=BackgroundTask(response.aclose),
        )


async def _relay(response: httpx.Response, url: str) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.aiter_raw():
            yield chunk
    except httpx.HTTPError as e:
        # The status line is out already: all the client can be told is that the stream ends here.
        log.warning("proxy.upstream_stream_broken", url=url, error=f"{type(e).__name__}: {e}")
    finally:
        await response.aclose()
