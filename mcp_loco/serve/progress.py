"""A call's progress notifications: what the explorer says, and a heartbeat so no gap exceeds a few seconds.

Clients whose timeouts reset on progress (opencode: 60 s idle, Copilot CLI: 180 s) keep waiting only while
notifications come; a model that reads a long prompt, or a sub-exploration, must not leave a silence.
"""

from __future__ import annotations

import time

import anyio
import structlog
from mcp.server.mcpserver import Context

log = structlog.get_logger("mcp_loco.serve.progress")

HEARTBEAT_S = 2.5
"""With nothing new said for this long, the latest status is said again (well inside a 5 s gap)."""
STEP = 0.001
"""The least a repeated notification's progress value grows by: MCP wants it to increase every time."""


class Reporter:
    """Sends one call's progress notifications, values strictly increasing, the latest repeated on a heartbeat."""

    def __init__(self, ctx: Context, every: float | None = None, first: str = "starting the exploration") -> None:
        self._ctx = ctx
        self.every = every or HEARTBEAT_S
        self._value = -STEP
        self._total: float | None = None
        self._message = first
        self._sent_at = time.monotonic()
        self._lock = anyio.Lock()

    async def say(self, progress: float, total: float | None, message: str) -> None:
        """Send a notification (its value raised just above the last one's if it would not grow)."""
        async with self._lock:
            self._value = max(progress, self._value + STEP)
            if total is not None and total < self._value:
                total = None  # a total below the progress would be a lie; leave it out
            self._total, self._message = total, message
            self._sent_at = time.monotonic()
            try:
                await self._ctx.report_progress(self._value, self._total, message)
            except Exception:  # a client gone or a closed stream must not stop the work
                log.debug("progress not delivered", message=message)

    async def beat(self) -> None:
        """Repeat the latest status whenever `every` seconds pass without a notification (until cancelled)."""
        while True:
            wait = self._sent_at + self.every - time.monotonic()
            if wait > 0:
                await anyio.sleep(wait)
                continue
            await self.say(self._value, self._total, self._message)
