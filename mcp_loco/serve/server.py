"""The MCP server: one tool, explore_codebase, over stdio, SSE or streamable HTTP."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import structlog
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field

from mcp_loco import __version__
from mcp_loco.config import Settings, ToolSettings
from mcp_loco.errors import Cancelled, LocoError, RootError
from mcp_loco.explore.agent import Explorer, Progress
from mcp_loco.explore.payload import Answer, Detail, present
from mcp_loco.explore.report import ExploreResult
from mcp_loco.interfaces import ChatModel, is_within
from mcp_loco.model.pool import Instances
from mcp_loco.sandbox import Toolbox
from mcp_loco.sandbox.denylist import DenyList
from mcp_loco.sandbox.paths import Root
from mcp_loco.serve.auth import stream_watch
from mcp_loco.serve.clients import client_name, identify
from mcp_loco.serve.fast_start import FastStart
from mcp_loco.serve.progress import Reporter

log = structlog.get_logger("mcp_loco.serve.server")

MIN_BUDGET_S = 5.0
"""A call that waited out most of its budget in the queue still gets this long to write a report."""

SHUTDOWN_MESSAGE = "the server is shutting down: this call was stopped; call again once it is back"

DESCRIPTION = """\
Explore a local codebase: search its code to find where things are and answer how does X work questions.
A small local model reads the code with read-only tools (Read, Grep, Glob, a read-only shell) and returns \
a markdown report with absolute paths, line ranges and snippets. Every cited path is checked against the \
disk: `citations.verified` lists those that hold, and the report marks the others `[unverified: ...]`.
Use it for questions that span many files: where is X implemented, how does Y flow, which files matter \
for a change to Z. Do not use it to read one file you already know (read it yourself) or to change code.
Ask one focused question per call. A call takes up to about 100 s (`deadline_s` sets the budget) and \
reports progress."""
"""The first line is what tool searches rank on (Qwen Code and Codex defer MCP tools behind a BM25 search)."""

INSTRUCTIONS = (
    "mcp-loco explores local codebases with a small local model. Call explore_codebase with an absolute "
    "directory path and a focused question; cite the returned paths marked as verified."
)


class ModelPool:
    """`parallel` explorers, loaded once in the background, lent out one call at a time."""

    def __init__(self, settings: Settings, factory: Callable[[], ChatModel] | None = None) -> None:
        self.settings = settings
        self._models = Instances(settings, factory)
        self._free: list[Explorer] = []
        self._all: list[Explorer] = []
        self._lock = threading.Lock()
        self._started = False
        self._loading = threading.Event()
        self.error: str | None = None
        self.waiting = 0
        self.max_queue = settings.server.max_queue
        self.stopping: str | None = None
        """Set (to the message callers get) once the server shuts down: no call waits or runs any more."""
        self._lent: dict[int, threading.Event] = {}

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
                explorer = Explorer(self._models.load(), self.settings)
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
            self._lent.pop(id(explorer), None)
            self._free.append(explorer)

    def cancel_flag(self, explorer: Explorer) -> threading.Event:
        """The cancel flag of the call that holds `explorer` (set at once if the server is stopping)."""
        cancel = threading.Event()
        with self._lock:
            self._lent[id(explorer)] = cancel
            if self.stopping:
                cancel.set()
        return cancel

    @property
    def running(self) -> int:
        """Calls holding a model now."""
        with self._lock:
            return len(self._lent)

    def stop(self, message: str) -> None:
        """Refuse new and waiting calls with `message` and cancel the running ones (server shutdown)."""
        with self._lock:
            self.stopping = message
            flags = list(self._lent.values())
        for cancel in flags:
            cancel.set()

    def retry_if_failed(self) -> None:
        """After a failed load with nothing loaded, try again on the next call (the file may exist now)."""
        with self._lock:
            if self.error and not self._all and not self._loading.is_set():
                self.error = None
                self._started = False
        self.start()

    def close(self) -> None:
        """Stop the calls still holding a model, and free every model once they let go (10 s at most)."""
        with self._lock:
            flags = list(self._lent.values())
        for cancel in flags:
            cancel.set()
        deadline = time.monotonic() + 10.0
        while self.running and time.monotonic() < deadline:
            time.sleep(0.02)
        with self._lock:
            explorers, self._all, self._free = self._all, [], []
        for e in explorers:
            e.close()
        self._models.close_all()


def secret_directory(path: str | Path, tools: ToolSettings) -> str | None:
    """The deny pattern that makes `path` or a directory above it secret (the path as given and with links
    resolved), or None when it may be explored."""
    deny = DenyList(tools.deny, tools.allow)
    given = Path(path).expanduser()
    absolute = str(given if given.is_absolute() else Path.cwd() / given)
    for candidate in dict.fromkeys((os.path.normpath(absolute), os.path.realpath(absolute))):
        rel = candidate.lstrip(os.sep)
        if deny.denied(rel):
            return deny.reason(rel)
    return None


def _configured_roots(settings: Settings) -> list[Path]:
    return [Path(r).expanduser() for r in settings.server.roots or [str(Path.cwd())]]


def resolve_roots(settings: Settings) -> list[Path]:
    """The allowed roots: configured ones, else the directory the server was started in; never a secret directory."""
    return [r.resolve() for r in _configured_roots(settings) if secret_directory(r, settings.tools) is None]


def refused_roots(settings: Settings) -> dict[Path, str]:
    """Configured roots (or the start directory) that are secret directories, each with the reason."""
    out: dict[Path, str] = {}
    for r in _configured_roots(settings):
        pattern = secret_directory(r, settings.tools)
        if pattern is not None:
            out[r.resolve()] = (
                f"{r} is a secret directory (it or a directory above it matches the deny-list pattern "
                f"'{pattern}'), so it is not served; start the server in your project folder or pass --root DIR"
            )
    return out


def open_root(path: str, roots: list[Path], settings: Settings, refused: dict[Path, str] | None = None) -> Toolbox:
    """The directory to explore, opened once: inside an allowed root, not itself a secret directory.

    The check is made on the directory actually opened, and the exploration goes through that descriptor,
    so a link swapped in while the call waits for a model cannot redirect it.
    """
    if not path or not path.strip():
        raise ToolError("path is empty: give the absolute path of the directory to explore")
    if "\x00" in path:
        raise ToolError("path contains a NUL byte")
    if not roots:
        why = "; ".join((refused or {}).values()) or "no root is configured"
        raise ToolError(f"this server has no directory it may explore: {why}")
    p = Path(path).expanduser()
    p = p if p.is_absolute() else roots[0] / p
    allowed = ", ".join(str(r) for r in roots)
    outside = ToolError(
        f"path {path!r} is outside the allowed roots ({allowed}); "
        "start the server with --root DIR to allow another directory"
    )
    if not any(is_within(os.path.realpath(p), str(r)) for r in roots):
        for r, why in (refused or {}).items():
            if is_within(os.path.realpath(p), str(r)):
                raise ToolError(f"path {path!r} is not served: {why}")
        raise outside  # said before anything is opened
    pattern = secret_directory(p, settings.tools)
    if pattern is not None:  # judged by name before existence: a missing secret folder answers as an existing one
        raise ToolError(
            f"path {path!r} is a secret directory (it or a directory above it matches the deny-list pattern "
            f"'{pattern}'); it is never explored"
        )
    if not p.is_dir():
        raise ToolError(f"path {path!r} is not an existing directory")
    try:
        root = Root(p)
    except RootError as e:
        raise ToolError(f"path {path!r}: {e}") from None
    if not any(is_within(root.path, str(r)) for r in roots):
        root.close()
        raise outside
    try:
        return Toolbox(root, settings.tools)  # deny patterns judged from / down: any secret ancestor counts
    except RootError as e:
        raise ToolError(str(e)) from None


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
    roots, refused = resolve_roots(settings), refused_roots(settings)

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
            float | None,
            Field(
                description="Wall-clock budget in seconds from the call's arrival, the report included (default 100)",
                ge=5,
                le=1800,
            ),
        ] = None,
        detail: Annotated[
            Detail, Field(description='"brief": report and citations; "full": also tool calls, usage, timings')
        ] = "brief",
    ) -> Annotated[CallToolResult, Answer]:
        if not question.strip():
            raise ToolError("question is empty: say what to find out about the codebase")
        if len(question) > 8000:
            raise ToolError(f"question is {len(question)} characters long; keep it under 8000")
        arrived = time.monotonic()
        tools = open_root(path, roots, settings, refused)
        reporter = Reporter(ctx)
        failed: Exception | None = None
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(reporter.beat)
                try:
                    result = await _explore(tools, question, ctx, reporter, max_turns, deadline_s, arrived)
                except Exception as e:  # raised after the group, or it would reach the client as a group
                    failed = e
                finally:
                    tg.cancel_scope.cancel()
        finally:
            tools.close()
        if failed is not None:
            raise failed
        return _result(result, detail, client_name(ctx.session))

    def _result(result: ExploreResult, detail: Detail, name: str | None) -> CallToolResult:
        """The result as the calling client's model should read it: the report once, within every client's limits."""
        client = identify(name)
        text, structured = present(result, detail, client.reading, settings.agent.report_max_chars)
        log.debug("result", client=name, known_as=client.label, reading=client.reading, chars=len(result.report))
        return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=structured)

    async def _explore(
        tools: Toolbox,
        question: str,
        ctx: Context,
        reporter: Reporter,
        max_turns: int | None,
        deadline_s: float | None,
        arrived: float,
    ) -> ExploreResult:
        explorer = await _acquire(pool, ctx, reporter)
        # The client's clock started when the call arrived: time spent waiting for a model counts.
        budget = max(MIN_BUDGET_S, (deadline_s or settings.agent.deadline_s) - (time.monotonic() - arrived))
        cancel = _cancel_flag(pool, explorer, ctx)
        max_t = max_turns or settings.agent.max_turns

        token = anyio.lowlevel.current_token()  # heartbeats come from a thread anyio did not start

        def progress(p: Progress) -> None:
            try:
                anyio.from_thread.run(reporter.say, float(p.turn), float(max_t + 1), p.message, token=token)
            except Exception:  # the call ended meanwhile: the work stops on its own
                log.debug("progress not delivered", message=p.message)

        try:
            result = await _run_in_thread(
                lambda: explorer.explore(
                    tools, question, cancel=cancel, progress=progress, max_turns=max_turns, deadline_s=budget
                ),
                cancel,
            )
        except Cancelled as e:
            raise ToolError(pool.stopping or f"cancelled: {e}") from None
        except LocoError as e:
            raise ToolError(str(e)) from None
        except Exception as e:
            log.exception("explore failed")
            raise ToolError(f"the exploration failed: {type(e).__name__}: {e}") from None
        finally:
            pool.release(explorer)
        log.info("explored", root=tools.root, turns=result.turns, stop=result.stop_reason, seconds=result.elapsed_s)
        return result

    return server


async def _acquire(pool: ModelPool, ctx: Context, reporter: Reporter) -> Explorer:
    """Wait for a loaded, free model, telling the client why it waits; refuse at once beyond the queue bound."""
    if pool.stopping:
        raise ToolError(pool.stopping)
    if pool.error:
        pool.retry_if_failed()
    explorer = pool.try_acquire()
    if explorer is not None:
        return explorer
    if pool.waiting >= pool.max_queue:
        raise ToolError(_busy(pool))
    watch = stream_watch(ctx)
    pool.waiting += 1
    try:
        last, was_loading = 0.0, None
        while True:
            explorer = pool.try_acquire()
            if explorer is not None:
                return explorer
            if pool.stopping:
                raise ToolError(pool.stopping)
            if watch is not None and watch.closed:  # the client is gone: leave the queue
                raise ToolError("cancelled: the client closed its stream while the call waited")
            loading = pool.loading
            if pool.error and not loading:
                raise ToolError(pool.error)
            now = time.monotonic()
            if now - last >= 5.0 or loading != was_loading:  # every 5 s, and as soon as the reason changes
                last, was_loading = now, loading
                why = "loading the model" if loading else f"queued behind other calls ({pool.waiting - 1} waiting)"
                await reporter.say(0.0, None, why)
            await anyio.sleep(0.05)
    finally:
        pool.waiting -= 1


def _busy(pool: ModelPool) -> str:
    """The refusal of a call that finds the queue full: how many calls are ahead of it."""
    running, waiting = pool.running, pool.waiting
    now = "the model is still loading" if pool.loading else f"{running} running"
    return (
        f"the server is busy: {running + waiting} calls are ahead of this one ({now}, {waiting} waiting, "
        f"which is as many as may wait: --max-queue {pool.max_queue}). Try again in a minute or two, or ask "
        "whoever runs the server for a longer queue (--max-queue) or more model instances (--parallel)"
    )


def _cancel_flag(pool: ModelPool, explorer: Explorer, ctx: Context) -> threading.Event:
    """The call's cancel flag: set by a server shutdown, and by the client closing its HTTP stream mid-call."""
    cancel = pool.cancel_flag(explorer)
    watch = stream_watch(ctx)
    if watch is not None:

        def closed() -> None:
            if not cancel.is_set():
                log.info("client closed its stream mid-call: stopping the exploration")
                cancel.set()

        watch.on_close(closed)
    return cancel


def serve(settings: Settings, pool: ModelPool | None = None, front: FastStart | None = None) -> None:
    """Run the server on the configured transport until interrupted (taking over from `front` over stdio)."""
    pool = pool or ModelPool(settings)
    server = build_server(settings, pool)
    s = settings.server
    for why in refused_roots(settings).values():  # said at start; each call into it is refused the same way
        log.error(f"root refused: {why}")
    try:
        if s.transport == "stdio":
            log.info("serving", transport=s.transport, roots=[str(r) for r in resolve_roots(settings)])
            if s.token.get_secret_value() or s.token_file:
                log.info("server.token is not used over stdio: the client that starts the server is the only one")
            if front is not None:
                front.handover()
            try:
                server.run("stdio")
            finally:
                if front is not None:
                    front.finish()
        else:
            from mcp_loco.serve import auth

            token = auth.load_token(s)
            auth.check_exposure(s, token)  # before anything loads: never expose the roots without a token
            log.info("serving", transport=s.transport, roots=[str(r) for r in resolve_roots(settings)])
            limit = s.max_body_bytes
            app = (
                server.sse_app(sse_path="/sse", message_path="/messages/", host=s.host, max_request_body_size=limit)
                if s.transport == "sse"
                else server.streamable_http_app(
                    streamable_http_path="/mcp",
                    host=s.host,
                    max_request_body_size=limit,
                    session_idle_timeout=auth.SESSION_IDLE_S,
                )
            )
            if s.transport == "sse":
                pool.start()  # SSE enters the lifespan per connection; load up front instead
            auth.run(app, s, token, stop=lambda: pool.stop(SHUTDOWN_MESSAGE))
    finally:
        pool.close()
