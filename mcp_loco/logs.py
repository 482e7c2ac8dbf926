"""structlog set-up: everything goes to stderr, never stdout (stdout is the MCP stdio channel)."""

import logging
import sys
from typing import Any

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class StderrLogger:
    """Writes each rendered line to whatever sys.stderr is at call time (tests swap it)."""

    def msg(self, message: str) -> None:
        """Write one line."""
        print(message, file=sys.stderr, flush=True)

    log = debug = info = warn = warning = error = err = critical = exception = fatal = msg


def _factory(*_: Any) -> StderrLogger:
    return StderrLogger()


def configure(level: str = "info", json: bool = False) -> None:
    """Send structlog output to stderr at the given level."""
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=_factory,
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    root.setLevel(_LEVELS.get(level, logging.INFO))
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        root.addHandler(_StderrHandler())


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Standard-library logs (uvicorn, mcp, httpx) to the current sys.stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)
