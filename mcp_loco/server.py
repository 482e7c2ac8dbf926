"""The MCP server: one tool, explore_codebase, over stdio, SSE or streamable HTTP."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import anyio
import anyio.from_thread
import anyio.to_thread
import structlog
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field

from mcp_loco import __version__
from mcp_loco.agent import Explorer, Progress
from mcp_loco.config import Settings
from mcp_loco.errors import Cancelled, LocoError
from mcp_loco.interfaces import ChatModel
from mcp_loco.report import ExploreResult

log = structlog.get_logger("mcp_loco.server")

DESCRIPTION = """\
Explore a local codebase with a small local model (LocoOperator-4B) and get back a report that cites \
absolute file paths and code snippets. It reads the code with sandboxed read-only tools (Read, Grep, Glob, \
read-only shell) for up to ~10 turns, then answers; every cited path is checked against the disk and marked \
when it does not hold. Use it to find where something is implemented, how a feature works, or which files \
matter for a change, without spending your own context on reading files. Ask one focused question per call; \
calls take tens of seconds to a few minutes and report progress."""

INSTRUCTIONS = (
    "mcp-loco explores local codebases with a small local model. Call explore_codebase with an absolute "
    "directory path and a focused question; cite the returned paths marked as verified."
)


class ModelPool:
    """`parallel` explorers, loaded once in the background, lent out one call at a time."""

    def __init__(self, settings: Settings, factory: Callable[[], ChatModel] | None = None) -> None:
        self.settings = settings
        self._factory = factory or self._load
        self._free: list[Explorer] = []
        self._all: list[Explorer] = []
        self._lock = threading.Lock()
        self._started = False
        self._loading = threading.Event()
        self.error: str | None = None
        self.waiting = 0

    def _load(self) -> ChatModel:
        from mcp_loco.backends import load_backend

        return load_backend(self.settings)

    def _fallback(self) -> Any:
        if not self.settings.escalation.endpoint:
            return None
        from mcp_loco.escalation import ChatFallback

        return ChatFallback(self.settings.escalation)

    def start(self) -> None:
        """Begin loading the models in a background thread (once)."""
        with self._lock:
            if self._started:
                return
            self._started = True
        self._loading.set()
        threading.Thread(target=self._load_all, name="loco-model-load", daemon=True).start()

    def _load_all(self) -> None:
        try:
            for _ in range(self.settings.server.parallel):
                t0 = time.monotonic()
                explorer = Explorer(self._factory(), self.settings, fallback=self._fallback())
                with self._lock:
                    self._all.append(explorer)
                    self._free.append(explorer)
                log.info("model loaded", instance=len(self._all), seconds=round(time.monotonic() - t0, 2))
        except LocoError as e:
            self.error = str(e)
            log.error("model load failed", error=self.error)
        except Exception as e:  # a crash in a native loader must not take the server down
            self.error = f"the model failed to load: {type(e).__name__}: {e}"
            log.exception("model load failed")
        finally:
            self._loading.clear()

    @property
    def loading(self) -> bool:
        """True while instances are still loading."""
        return self._loading.is_set()

    def try_acquire(self) -> Explorer | None:
        """A free explorer, or None."""
        with self._lock:
            return self._free.pop() if self._free else None

    def release(self, explorer: Explorer) -> None:
        """Give an explorer back."""
        with self._lock:
            self._free.append(explorer)

    def retry_if_failed(self) -> None:
        """After a failed load with nothing loaded, try again on the next call (the file may exist now)."""
        with self._lock:
            if self.error and not self._all and not self._loading.is_set():
                self.error = None
                self._started = False
        self.start()

    def close(self) -> None:
        """Free every model."""
        with self._lock:
            explorers, self._all, self._free = self._all, [], []
        for e in explorers:
            e.close()
            e.model.close()


def resolve_roots(settings: Settings) -> list[Path]:
    """The allowed roots: configured ones, else the directory the server was started in."""
    roots = settings.server.roots or [str(Path.cwd())]
    return [Path(r).expanduser().resolve() for r in roots]


def check_path(path: str, roots: list[Path]) -> Path:
    """The directory to explore: inside an allowed root (relative paths are taken from the first root)."""
    if not path or not path.strip():
        raise ToolError("path is empty: give the absolute path of the directory to explore")
    if "\x00" in path:
        raise ToolError("path contains a NUL byte")
    p = Path(path).expanduser()
    resolved = (p if p.is_absolute() else roots[0] / p).resolve()
    if not any(resolved == r or resolved.is_relative_to(r) for r in roots):
        allowed = ", ".join(str(r) for r in roots)
        raise ToolError(
            f"path {path!r} is outside the allowed roots ({allowed}); "
            "start the server with --root DIR to allow another directory"
        )
    if not resolved.is_dir():
        raise ToolError(f"path {path!r} is not an existing directory")
    return resolved


async def _run_in_thread(fn: Callable[[], ExploreResult], cancel: threading.Event) -> ExploreResult:
    """Run blocking work in a thread; on cancellation, stop it and wait until it has let go of the model."""
    done = threading.Event()

    def work() -> ExploreResult:
        try:
            return fn()
        finally:
            done.set()

    try:
        return await anyio.to_thread.run_sync(work, abandon_on_cancel=True)
    except anyio.get_cancelled_exc_class():
        cancel.set()
        with anyio.CancelScope(shield=True):
            while not done.is_set():
                await anyio.sleep(0.02)
        raise


def build_server(settings: Settings, pool: ModelPool | None = None) -> MCPServer[Any]:
    """The MCP server with its one tool."""
    pool = pool or ModelPool(settings)
    roots = resolve_roots(settings)

    @asynccontextmanager
    async def lifespan(_: MCPServer[Any]) -> AsyncIterator[ModelPool]:
        pool.start()  # in the background: tools/list must answer while a 2.5 GB model loads
        yield pool

    server: MCPServer[Any] = MCPServer(
        name="mcp-loco",
        title="Local code explorer (LocoOperator-4B)",
        version=__version__,
        instructions=INSTRUCTIONS,
        lifespan=lifespan,
    )

    @server.tool(
        name="explore_codebase",
        title="Explore a codebase",
        description=DESCRIPTION,
        annotations=ToolAnnotations(
            read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
        ),
    )
    async def explore_codebase(
        path: Annotated[str, Field(description="Absolute path of the directory (repository) to explore")],
        question: Annotated[
            str,
            Field(description="What to find out, e.g. 'Where is the config file loaded and in what order?'"),
        ],
        ctx: Context,
        max_turns: Annotated[
            int | None, Field(description="Model turns before it must answer (default 10)", ge=1, le=30)
        ] = None,
        deadline_s: Annotated[
            float | None, Field(description="Wall-clock budget in seconds (default 240)", ge=5, le=1800)
        ] = None,
    ) -> Annotated[CallToolResult, ExploreResult]:
        root = check_path(path, roots)
        if not question.strip():
            raise ToolError("question is empty: say what to find out about the codebase")
        if len(question) > 8000:
            raise ToolError(f"question is {len(question)} characters long; keep it under 8000")
        explorer = await _acquire(pool, ctx)
        cancel = threading.Event()
        max_t = max_turns or settings.agent.max_turns

        def progress(p: Progress) -> None:
            try:
                anyio.from_thread.run(ctx.report_progress, float(p.turn), float(max_t + 1), p.message)
            except Exception:  # a client gone or a closed stream must not stop the work
                log.debug("progress not delivered", message=p.message)

        try:
            result = await _run_in_thread(
                lambda: explorer.explore(
                    root, question, cancel=cancel, progress=progress, max_turns=max_turns, deadline_s=deadline_s
                ),
                cancel,
            )
        except Cancelled as e:
            raise ToolError(f"cancelled: {e}") from None
        except LocoError as e:
            raise ToolError(str(e)) from None
        except Exception as e:
            log.exception("explore failed")
            raise ToolError(f"the exploration failed: {type(e).__name__}: {e}") from None
        finally:
            pool.release(explorer)
        log.info("explored", root=str(root), turns=result.turns, stop=result.stop_reason, seconds=result.elapsed_s)
        return CallToolResult(
            content=[TextContent(type="text", text=result.report)],
            structured_content=result.model_dump(mode="json"),
        )

    return server


async def _acquire(pool: ModelPool, ctx: Context) -> Explorer:
    """Wait for a loaded, free model, telling the client why it waits."""
    if pool.error:
        pool.retry_if_failed()
    pool.waiting += 1
    try:
        last, was_loading = 0.0, None
        while True:
            explorer = pool.try_acquire()
            if explorer is not None:
                return explorer
            loading = pool.loading
            if pool.error and not loading:
                raise ToolError(pool.error)
            now = time.monotonic()
            if now - last >= 5.0 or loading != was_loading:  # every 5 s, and as soon as the reason changes
                last, was_loading = now, loading
                why = "loading the model" if loading else f"queued behind other calls ({pool.waiting - 1} waiting)"
                try:
                    await ctx.report_progress(0.0, None, why)
                except Exception:
                    log.debug("progress not delivered", message=why)
            await anyio.sleep(0.05)
    finally:
        pool.waiting -= 1


def serve(settings: Settings, pool: ModelPool | None = None) -> None:
    """Run the server on the configured transport until interrupted."""
    pool = pool or ModelPool(settings)
    server = build_server(settings, pool)
    s = settings.server
    log.info("serving", transport=s.transport, roots=[str(r) for r in resolve_roots(settings)])
    try:
        if s.transport == "stdio":
            server.run("stdio")
        else:
            import uvicorn

            app = (
                server.sse_app(sse_path="/sse", message_path="/messages/", host=s.host)
                if s.transport == "sse"
                else server.streamable_http_app(streamable_http_path="/mcp", host=s.host)
            )
            if s.transport == "sse":
                pool.start()  # SSE enters the lifespan per connection; load up front instead
            if s.host not in ("127.0.0.1", "localhost", "::1"):
                log.warning(
                    "listening beyond loopback: anyone who can reach this address can explore the roots "
                    "(no authentication; DNS-rebinding protection applies to loopback hosts only)",
                    host=s.host,
                )
            where = "/sse" if s.transport == "sse" else "/mcp"
            log.info("listening", url=f"http://{s.host}:{s.port}{where}")
            # log_config=None keeps uvicorn on our stderr logging (its default sends access logs to stdout).
            uvicorn.Server(uvicorn.Config(app, host=s.host, port=s.port, log_config=None, access_log=False)).run()
    finally:
        pool.close()
