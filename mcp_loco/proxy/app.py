"""The proxy's HTTP face: routing by model name, the local turn, the seed's fallback, Anthropic-style errors."""

from __future__ import annotations

import fnmatch
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import wraps
from typing import Any

import anyio.to_thread
import structlog
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from mcp_loco.config import Settings
from mcp_loco.errors import LocoError
from mcp_loco.explore.turns import sampling
from mcp_loco.interfaces import ChatModel, GenerateOptions
from mcp_loco.proxy.convert import LocalPrompt, TurnMemory, local_tools, to_prompt, to_reply, usage
from mcp_loco.proxy.grammars import Grammars
from mcp_loco.proxy.local import Generation, LocalModels
from mcp_loco.proxy.stream import stream_reply
from mcp_loco.proxy.upstream import Upstream
from mcp_loco.proxy.wire import (
    ApiError,
    CountTokensRequest,
    MessagesRequest,
    error_response,
    invalid,
    new_id,
    parse_any_json,
    parse_json,
    validate_request,
)
from mcp_loco.webguard import check_request, drain

log = structlog.get_logger("mcp_loco.proxy")
Endpoint = Callable[[Request], Awaitable[Response]]
_KINDS = {403: "permission_error"}
"""The Anthropic error type of a web-page refusal by status (invalid_request_error otherwise)."""


class _WebPages:
    """ASGI middleware: the Host, Origin and content-type rules `serve` applies too (mcp_loco.webguard), every route."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            server = scope.get("server")
            refusal = check_request(scope.get("method", ""), scope.get("headers") or [], server)
            if refusal is not None:
                log.warning("proxy.refused", path=scope.get("path", ""), status=refusal.status, error=refusal.message)
                kind = _KINDS.get(refusal.status, "invalid_request_error")
                await drain(receive)
                await error_response(refusal.status, kind, refusal.message)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _guarded(endpoint: Endpoint) -> Endpoint:
    """Every failure becomes an Anthropic-style error body; the proxy keeps serving."""

    @wraps(endpoint)
    async def run(request: Request) -> Response:
        try:
            return await endpoint(request)
        except ApiError as e:
            log.info("proxy.refused", path=request.url.path, status=e.status, error=e.message)
            return error_response(e.status, e.kind, e.message)
        except LocoError as e:
            log.error("proxy.local_failed", path=request.url.path, error=str(e))
            return error_response(500, "api_error", f"the local model failed: {e}")
        except Exception as e:
            log.exception("proxy.bug", path=request.url.path)
            return error_response(500, "api_error", f"internal error in mcp-loco proxy ({type(e).__name__}: {e})")

    return run


class Proxy:
    """Routes Messages requests to the local model or the upstream."""

    def __init__(self, settings: Settings, models: LocalModels, upstream: Upstream | None) -> None:
        self.settings = settings
        self.conf = settings.proxy
        self.models = models
        self.upstream = upstream
        self.memory = TurnMemory(self.conf.remember_turns)
        self.grammars = Grammars()

    def is_local(self, model: str) -> bool:
        """Whether a model name matches a --local glob."""
        return any(fnmatch.fnmatchcase(model.lower(), glob.lower()) for glob in self.conf.local)

    async def _read(self, request: Request) -> bytes:
        """The request body, or a 413 as soon as it passes proxy.max_body_mb."""
        limit = int(self.conf.max_body_mb * 1024 * 1024)
        too_big = ApiError(
            413, "request_too_large", f"the request body exceeds {self.conf.max_body_mb:g} MiB (proxy.max_body_mb)"
        )
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_big
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_big
            chunks.append(chunk)
        return b"".join(chunks)

    async def _body(self, request: Request) -> tuple[bytes, dict[str, Any], str]:
        body = await self._read(request)
        data = parse_json(body)
        model = data.get("model")
        if not isinstance(model, str) or not model.strip():
            raise invalid("model: Field required (a model name such as claude-haiku-4-5)")
        return body, data, model

    async def _forward(self, request: Request, body: bytes, reason: str, refusal: str) -> Response:
        if self.upstream is None:
            raise invalid(f"{refusal}, and no upstream is configured to take it (mcp-loco proxy --upstream URL)")
        return await self.upstream.forward(request, body, reason)

    async def messages(self, request: Request) -> Response:
        """`POST /v1/messages`."""
        body, data, model = await self._body(request)
        if not self.is_local(model):
            return await self._forward(
                request, body, "model", f"model {model!r} is not local (--local {' '.join(self.conf.local)})"
            )
        req = validate_request(data, MessagesRequest)
        prompt = to_prompt(req, self.memory, self.conf.drop_reminders)
        if prompt.assistant_turns >= self.conf.fallback_turns:
            detail = f"the conversation has {prompt.assistant_turns} assistant turns (--fallback-turns {self.conf.fallback_turns})"
            log.warning(
                "proxy.fallback", reason="turns", model=model, detail=detail, upstream=self.conf.upstream or None
            )
            return await self._forward(request, body, "fallback: turns", detail)
        n_prompt = await anyio.to_thread.run_sync(self.models.count_tokens, prompt.segments)
        room = self.models.n_ctx - n_prompt
        if room < self.conf.min_room:
            detail = (
                f"prompt is too long for the local model: {n_prompt} tokens > "
                f"{self.models.n_ctx - self.conf.min_room} maximum (llama.n_ctx {self.models.n_ctx})"
            )
            log.warning(
                "proxy.fallback", reason="context", model=model, detail=detail, upstream=self.conf.upstream or None
            )
            return await self._forward(request, body, "fallback: context", detail)
        options, calls_allowed = self._options(req, room)
        log.info("proxy.local", model=model, stream=req.stream, turns=prompt.assistant_turns, prompt_tokens=n_prompt)
        message_id = new_id("msg_")
        if req.stream:
            events = self._stream(request, req, prompt, options, message_id, n_prompt, calls_allowed)
            return StreamingResponse(events, media_type="text/event-stream", headers={"cache-control": "no-cache"})
        async with self.models.lease(prompt.segments) as chat_model:
            gen = Generation(chat_model, prompt.segments, options)
            try:
                async for _ in gen.pieces(request.is_disconnected):
                    pass
            finally:
                await gen.stop()
            completion = gen.result()
        if completion.finish_reason == "cancelled":
            return error_response(499, "api_error", "the client went away; generation stopped")
        reply = to_reply(completion, prompt, self.memory, calls_allowed=calls_allowed)
        return JSONResponse(
            {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": req.model,
                "content": reply.blocks,
                "stop_reason": reply.stop_reason,
                "stop_sequence": None,
                "usage": usage(completion),
            }
        )

    async def _stream(
        self,
        request: Request,
        req: MessagesRequest,
        prompt: LocalPrompt,
        options: GenerateOptions,
        message_id: str,
        n_prompt: int,
        calls_allowed: bool,
    ) -> AsyncIterator[bytes]:
        async with self.models.lease(prompt.segments) as chat_model:
            gen = Generation(chat_model, prompt.segments, options)
            events = stream_reply(
                gen,
                prompt,
                self.memory,
                model=req.model,
                message_id=message_id,
                input_tokens=n_prompt,
                calls_allowed=calls_allowed,
                gone=request.is_disconnected,
            )
            async for chunk in events:
                yield chunk

    def _options(self, req: MessagesRequest, room: int) -> tuple[GenerateOptions, bool]:
        """Sampling from the settings (the model's recommended ones), the grammar from the request's tools."""
        tools = local_tools(req.tools)
        choice = req.tool_choice or {}
        kind = choice.get("type", "auto")
        grammar, force = None, False
        if tools and kind != "none":
            if kind == "tool":
                chosen = [t for t in tools if t.name == choice.get("name")]
                if not chosen:
                    raise invalid(f"tool_choice: tool {choice.get('name')!r} is not among the request's tools")
                tools, force = chosen, True
            force = force or kind == "any"
            grammar = self.grammars.get(tools)
        m = self.settings.model
        max_tokens = max(1, min(req.max_tokens, m.max_tokens, room))
        options = sampling(m, max_tokens, grammar=grammar, force=force, stop=tuple(s for s in req.stop_sequences if s))
        return options, bool(tools) and kind != "none"

    async def count_tokens(self, request: Request) -> Response:
        """`POST /v1/messages/count_tokens`."""
        body, data, model = await self._body(request)
        if not self.is_local(model):
            return await self._forward(request, body, "model", f"model {model!r} is not local")
        req = validate_request(data, CountTokensRequest)
        prompt = to_prompt(req, self.memory, self.conf.drop_reminders)
        n = await anyio.to_thread.run_sync(self.models.count_tokens, prompt.segments)
        return JSONResponse({"input_tokens": n})

    async def other(self, request: Request) -> Response:
        """Any other path: the upstream's business."""
        if self.upstream is None:
            raise ApiError(
                404,
                "not_found_error",
                f"{request.method} {request.url.path}: not served here, and no upstream is configured",
            )
        body = await self._read(request)
        if body:
            parse_any_json(body)  # what the upstream would choke on is refused here, as on the local routes
        return await self.upstream.forward(request, body, "path")


def create_app(settings: Settings, factory: Callable[[], ChatModel], *, models: LocalModels | None = None) -> Starlette:
    """The proxy as an ASGI app; the models load in its lifespan unless already loaded."""
    models = models or LocalModels(factory, settings.proxy.parallel)
    upstream = Upstream(settings.proxy.upstream) if settings.proxy.upstream.strip() else None
    proxy = Proxy(settings, models, upstream)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        if not models.loaded:
            await anyio.to_thread.run_sync(models.load)
        try:
            yield
        finally:
            if upstream is not None:
                await upstream.aclose()
            models.close()

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
    routes = [
        Route("/v1/messages", _guarded(proxy.messages), methods=["POST"]),
        Route("/v1/messages/count_tokens", _guarded(proxy.count_tokens), methods=["POST"]),
        Route("/{path:path}", _guarded(proxy.other), methods=methods),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(_WebPages)])
    app.state.proxy = proxy
    return app


def serve(settings: Settings) -> None:
    """Load the model, then serve the proxy until interrupted."""
    import uvicorn

    from mcp_loco.model.backends import load_backend

    models = LocalModels(lambda: load_backend(settings), settings.proxy.parallel)
    models.load()  # before binding: a model that cannot load is a clear error, not a half-started server
    app = create_app(settings, lambda: load_backend(settings), models=models)
    conf = settings.proxy
    url = f"http://{conf.host}:{conf.port}"
    log.info(
        "proxy.listening", url=url, local=conf.local, upstream=conf.upstream or None, hint=f"ANTHROPIC_BASE_URL={url}"
    )
    config = uvicorn.Config(app, host=conf.host, port=conf.port, log_config=None, access_log=False, lifespan="on")
    uvicorn.Server(config).run()
