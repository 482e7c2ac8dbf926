"""The HTTP front door of the sse and http transports: bearer token, sessions per client, closed streams.

One ASGI middleware in front of the SDK's app, so both transports get the same checks before the SDK
sees a request: the rules against web pages that the proxy shares (mcp_loco.webguard), the token
(constant-time, never logged), a cap on the sessions one client address holds (at the cap the least
recently used idle session is closed to make room, so abandoned sessions lock nobody out), and a `StreamWatch` in the request scope that fires when the client closes its stream before the
response is complete (the tool turns that into its cancel: nobody is left to receive the result).
A static shared token fits this server better than the SDK's OAuth resource-server support, which
needs an issuer URL and advertises an authorization server that does not exist here.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import os
import shlex
import stat
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import structlog
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcp_loco.config import ServerSettings
from mcp_loco.errors import ConfigError
from mcp_loco.webguard import check_request, drain

log = structlog.get_logger("mcp_loco.serve.auth")

SESSION_IDLE_S = 30 * 60.0
"""An http session with no request for this long ends (the SDK's default, stated so the session count agrees)."""
GRACEFUL_S = 5
"""Seconds a shutdown waits for the answers of stopped calls to reach their clients."""
STREAM_KEY = "mcp_loco.stream"
"""Where the request scope holds the `StreamWatch` of the request."""
MIN_TOKEN_CHARS = 16
MAX_TOKEN_FILE_BYTES = 64 * 1024
"""Most of a token file read (its first line is the token)."""
CLOSE_TIMEOUT_S = 10.0
"""Longest wait for the SDK to close a session evicted to make room."""
EVICTED_REMEMBERED = 10_000
"""Ids of sessions closed to make room that are remembered, to tell their clients why they are gone."""
SESSION_HEADER = b"mcp-session-id"
VERSION_HEADER = b"mcp-protocol-version"


def load_token(server: ServerSettings) -> str | None:
    """The configured bearer token (token_file wins over token), validated; None when there is none."""
    if server.token_file:
        path = Path(server.token_file).expanduser()
        token = read_token_file(path)
        where = f"the token in {path}"
    else:
        token = server.token.get_secret_value().strip()
        if not token:
            return None
        where = "server.token (MCP_LOCO_SERVER_TOKEN)"
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(
            f"{where} is shorter than {MIN_TOKEN_CHARS} characters; make a long random one: openssl rand -hex 32"
        )
    if not all(33 <= ord(c) <= 126 for c in token):
        raise ConfigError(f"{where} holds spaces or characters a header cannot carry; use letters and digits")
    return token


def read_token_file(path: Path) -> str:
    """The first line of a token file only its owner can reach (as ssh treats a private key), else a ConfigError."""
    try:
        # Non-blocking, so a FIFO planted as the token file cannot hang the start.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        try:
            # Judged on the file opened, so a link is judged by its target and a swap after the check is moot.
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                raise ConfigError(f"the token file {path} is not a regular file: put the token in a plain file")
            check_private(path, mode)
            data = os.read(fd, MAX_TOKEN_FILE_BYTES)
        finally:
            os.close(fd)
    except FileNotFoundError:
        raise ConfigError(f"token file not found: {path} (server.token_file / --token-file)") from None
    except OSError as e:
        raise ConfigError(f"cannot read the token file {path}: {e}") from None
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise ConfigError(f"cannot read the token file {path}: it is not UTF-8 text ({e})") from None
    token = lines[0].strip() if lines else ""
    if not token:
        raise ConfigError(f"the token file {path} is empty: put the token on its first line")
    return token


def check_private(path: Path, mode: int) -> None:
    """Refuse a token file its group or others may use (any of the 077 bits); POSIX systems only."""
    if os.name != "posix" or not stat.S_IMODE(mode) & 0o077:
        return
    target = Path(os.path.realpath(path))
    named = str(path) if target == path.absolute() else f"{path} (a link to {target})"
    raise ConfigError(
        f"the token file {named} is open to other users (mode {stat.S_IMODE(mode):04o}): anyone on this machine "
        f"could read the token. Make it private: chmod 600 {shlex.quote(str(target))}"
    )


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(server: ServerSettings, token: str | None) -> None:
    """Refuse to listen beyond loopback without a token, unless told the proxy in front authenticates."""
    if token is None and not is_loopback(server.host) and not server.allow_unauthenticated:
        raise ConfigError(
            f"refusing to listen on {server.host} without a token: anyone who reaches the port could explore "
            "the roots. Set one with --token-file FILE (or MCP_LOCO_SERVER_TOKEN), or pass "
            "--allow-unauthenticated when a proxy in front of the server authenticates the clients"
        )


class StreamWatch:
    """Whether the client still holds the stream of one HTTP request; callbacks run once it lets go."""

    def __init__(self) -> None:
        self.closed = False
        self._callbacks: list[Callable[[], None]] = []

    def on_close(self, callback: Callable[[], None]) -> None:
        """Run `callback` when the stream closes (at once if it has)."""
        if self.closed:
            callback()
        else:
            self._callbacks.append(callback)

    def close(self) -> None:
        """Mark the stream closed and run the callbacks (once)."""
        if self.closed:
            return
        self.closed = True
        callbacks, self._callbacks = self._callbacks, []
        for cb in callbacks:
            cb()


def stream_watch(ctx: Any) -> StreamWatch | None:
    """The watch of the HTTP request behind a tool call's context (None over stdio)."""
    try:
        request = ctx.request_context.request
    except Exception:  # no request context outside a call
        return None
    scope = getattr(request, "scope", None)
    watch = scope.get(STREAM_KEY) if isinstance(scope, dict) else None
    return watch if isinstance(watch, StreamWatch) else None


class _Sessions:
    """Open sessions per client address: http sessions by id (until DELETE, 404 or idle expiry), SSE streams."""

    def __init__(self, limit: int, idle_s: float) -> None:
        self.limit = limit
        self.idle_s = idle_s
        self._ids: dict[str, dict[str, float]] = {}  # address -> session id -> last seen (monotonic)
        self._busy: dict[str, int] = {}  # session id -> requests in flight
        self._streams: dict[str, int] = {}  # address -> open SSE streams
        self._evicted: OrderedDict[str, None] = OrderedDict()  # ids closed to make room, newest last

    def count(self, client: str) -> int:
        now = time.monotonic()
        ids = self._ids.get(client, {})
        for sid, seen in list(ids.items()):
            if not self._busy.get(sid) and now - seen > self.idle_s:
                del ids[sid]
        if not ids:
            self._ids.pop(client, None)
        return len(ids) + self._streams.get(client, 0)

    def evict_idle(self, client: str) -> str | None:
        """Forget the least recently used session of `client` with nothing in flight; its id, or None if all are busy."""
        ids = self._ids.get(client, {})
        idle = [(seen, sid) for sid, seen in ids.items() if not self._busy.get(sid)]
        if not idle:
            return None
        _, sid = min(idle)
        self.ended(client, sid)
        self._evicted[sid] = None
        while len(self._evicted) > EVICTED_REMEMBERED:
            self._evicted.popitem(last=False)
        return sid

    def was_evicted(self, sid: str) -> bool:
        return sid in self._evicted

    def touch(self, client: str, sid: str, delta: int) -> None:
        if sid in self._ids.get(client, {}):
            self._ids[client][sid] = time.monotonic()
            self._busy[sid] = self._busy.get(sid, 0) + delta
            if self._busy[sid] <= 0:
                del self._busy[sid]

    def opened(self, client: str, sid: str) -> None:
        self._ids.setdefault(client, {})[sid] = time.monotonic()

    def ended(self, client: str, sid: str) -> None:
        self._ids.get(client, {}).pop(sid, None)
        self._busy.pop(sid, None)

    def stream(self, client: str, delta: int) -> None:
        self._streams[client] = self._streams.get(client, 0) + delta
        if self._streams[client] <= 0:
            del self._streams[client]


class Guard:
    """ASGI middleware in front of the SDK's sse or http app (see the module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        sse_path: str | None,
        mcp_path: str | None,
        max_sessions_per_client: int,
        session_idle_s: float,
    ) -> None:
        self.app = app
        self._digest = hashlib.sha256(token.encode()).digest() if token else None
        self.sse_path = sse_path
        self.mcp_path = mcp_path
        self.sessions = _Sessions(max_sessions_per_client, session_idle_s)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        client = scope["client"][0] if scope.get("client") else "unknown"
        path, method = scope.get("path", ""), scope.get("method", "")
        refusal = check_request(method, scope.get("headers") or [], scope.get("server"))
        if refusal is not None:
            log.warning("request refused: " + refusal.code, client=client, path=path, reason=refusal.message)
            await drain(receive)
            await _json(send, refusal.status, {"error": refusal.code, "error_description": refusal.message})
            return
        if self._digest is not None and not await self._authorized(headers, scope, send, client):
            return
        sid = headers.get(SESSION_HEADER, b"").decode("latin-1")
        if sid and path == self.mcp_path and self.sessions.was_evicted(sid):
            await _json(send, 404, _evicted_error(self.sessions.limit))
            return
        opening_sse = path == self.sse_path and method == "GET"
        version = headers.get(VERSION_HEADER, b"").decode("latin-1")
        opening_http = (
            path == self.mcp_path
            and method == "POST"
            and not sid
            and (not version or version in HANDSHAKE_PROTOCOL_VERSIONS)
        )
        if (opening_sse or opening_http) and self.sessions.count(client) >= self.sessions.limit:
            victim = self.sessions.evict_idle(client) if opening_http else None
            if victim is None:
                log.warning("session refused: every open one is busy", client=client, limit=self.sessions.limit)
                message = (
                    f"this address already holds {self.sessions.limit} open sessions, each with a call in flight or "
                    "a stream open (server.max_sessions_per_client); wait for one to finish, or close one"
                )
                await _json(send, 429, {"error": "too_many_sessions", "error_description": message})
                return
            log.info("idle session closed to make room", client=client, limit=self.sessions.limit)
            await self._close_session(scope, victim)
        await self._serve(scope, receive, send, client, sid, opening_sse, opening_http)

    async def _close_session(self, scope: Scope, sid: str) -> None:
        """End a session in the SDK's session manager as its client's DELETE would, freeing what it holds."""
        server = scope.get("server")
        port = server[1] if server else 80
        headers = [(b"host", f"127.0.0.1:{port}".encode()), (SESSION_HEADER, sid.encode("latin-1"))]
        closing = {**scope, "method": "DELETE", "headers": headers, "query_string": b""}
        closing.update(path=self.mcp_path, raw_path=(self.mcp_path or "").encode())
        complete = anyio.Event()
        status, asked = 0, False

        async def receive_once() -> Message:
            nonlocal asked
            if not asked:
                asked = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await complete.wait()  # then gone, like a client that hangs up once answered
            return {"type": "http.disconnect"}

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                complete.set()

        try:
            with anyio.fail_after(CLOSE_TIMEOUT_S):
                await self.app(closing, receive_once, record)
        except Exception as e:  # the session is forgotten here either way; its idle timeout ends it
            log.warning("closing an idle session failed", error=f"{type(e).__name__}: {e}")
            return
        if status >= 400:
            log.warning("closing an idle session failed", status=status)

    async def _authorized(self, headers: dict[bytes, bytes], scope: Scope, send: Send, client: str) -> bool:
        assert self._digest is not None
        scheme, _, value = headers.get(b"authorization", b"").partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(hashlib.sha256(value.strip()).digest(), self._digest):
            return True
        presented = scheme.lower() == b"bearer" and bool(value.strip())
        log.warning(
            "request refused: " + ("wrong bearer token" if presented else "no bearer token"),
            client=client,
            path=scope.get("path", ""),
        )
        if presented:
            challenge = 'Bearer realm="mcp-loco", error="invalid_token", error_description="the token is not valid"'
            body = {"error": "invalid_token", "error_description": "the bearer token is not valid"}
        else:
            challenge = 'Bearer realm="mcp-loco"'
            body = {"error": "unauthorized", "error_description": "send Authorization: Bearer <the server's token>"}
        await _json(send, 401, body, [(b"www-authenticate", challenge.encode())])
        return False

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, client: str, sid: str, opening_sse: bool, opening_http: bool
    ) -> None:
        watch = StreamWatch()
        scope[STREAM_KEY] = watch
        status = 0  # of the response, once started
        complete = False  # the response has been sent whole

        async def receive_watched() -> Message:
            message = await receive()
            if message["type"] == "http.disconnect" and not complete:
                watch.close()
            return message

        async def send_watched(message: Message) -> None:
            nonlocal status, complete
            if message["type"] == "http.response.start":
                status = int(message["status"])
                new = dict(message.get("headers") or []).get(SESSION_HEADER)
                if opening_http and new and status < 400:
                    self.sessions.opened(client, new.decode("latin-1"))
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                complete = True
            await send(message)

        if opening_sse:
            self.sessions.stream(client, +1)
        self.sessions.touch(client, sid, +1)
        try:
            await self.app(scope, receive_watched, send_watched)
        except ValueError as e:
            # The SDK's SSE endpoint raises after it has answered a rejected Host or Origin header (421/403),
            # and has logged the reason in one line already; without this, uvicorn adds a traceback.
            if not (status and str(e) == "Request validation failed"):
                raise
        except Exception as e:
            if not complete:
                raise
            # Answered already (e.g. a notification posted to a session that a shutdown is closing): the
            # client has its response, so one line says what went wrong after it.
            log.warning(
                "error after the response was sent", path=scope.get("path", ""), error=f"{type(e).__name__}: {e}"
            )
        finally:
            if not complete:
                watch.close()
            if opening_sse:
                self.sessions.stream(client, -1)
            self.sessions.touch(client, sid, -1)
            ended = (scope.get("method") == "DELETE" and status < 400) or status == 404
            if sid and ended:
                self.sessions.ended(client, sid)


async def _json(
    send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    data = json.dumps(body).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *(headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": data})


def _evicted_error(limit: int) -> dict[str, Any]:
    """The JSON-RPC error of a request for a session closed to make room (404, as for any ended session)."""
    message = (
        "Session not found: it was closed after it sat idle while its address opened more than "
        f"{limit} sessions (server.max_sessions_per_client); initialize a new session"
    )
    return {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": message}}


def run(app: ASGIApp, server: ServerSettings, token: str | None, *, stop: Callable[[], None]) -> None:
    """Serve `app` behind the `Guard` under uvicorn until interrupted; `stop` runs as the shutdown begins."""
    import uvicorn

    sse = server.transport == "sse"
    guarded = Guard(
        app,
        token=token,
        sse_path="/sse" if sse else None,
        mcp_path=None if sse else "/mcp",
        max_sessions_per_client=server.max_sessions_per_client,
        session_idle_s=SESSION_IDLE_S,
    )
    if token is None and not is_loopback(server.host):
        log.warning("listening beyond loopback without a token: the proxy in front must authenticate", host=server.host)
    elif token is None:
        log.info("no token set: any local process can call the server (set one with --token-file)")
    elif not is_loopback(server.host):
        log.info("the token travels in clear over plain HTTP: put a TLS proxy in front on shared networks")
    url = f"http://{server.host}:{server.port}{'/sse' if sse else '/mcp'}"
    log.info("listening", url=url, auth="bearer token" if token else "none")

    class Server(uvicorn.Server):
        loop: asyncio.AbstractEventLoop | None = None

        async def startup(self, sockets: Any = None) -> None:
            self.loop = asyncio.get_running_loop()
            await super().startup(sockets)

        def handle_exit(self, sig: int, frame: Any) -> None:
            # A signal handler: hand the stop to the event loop rather than take locks here.
            if not self.should_exit and self.loop is not None:
                self.loop.call_soon_threadsafe(stop)
            super().handle_exit(sig, frame)

    # log_config=None keeps uvicorn on our stderr logging (its default sends access logs to stdout).
    config = uvicorn.Config(
        guarded,
        host=server.host,
        port=server.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_S,
    )
    Server(config).run()
