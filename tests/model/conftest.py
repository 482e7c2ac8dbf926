"""Fixtures for the model layer: the real small model in-process, and real llama_cpp.server processes."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
import structlog.testing
from llama_server import LlamaServer
from llama_server import llama_servers as running

from mcp_loco.config import LlamaSettings
from mcp_loco.model.protocol import Message, format_call
from mcp_loco.sandbox.registry import schemas

# The argument schemas the tool layer offers (Claude Code's names), for grammar tests.
TOOL_SCHEMAS: dict[str, dict[str, Any]] = schemas(("Read", "Grep", "Glob", "Bash", "Task"))

FEW_SHOT_SYSTEM = 'You are an agent. To call a tool, write <tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>'


def few_shot(last: str = "/repo/c.py") -> list[Message]:
    """A conversation after which even SmolLM2 writes `Reading it.` and then a Read call."""
    return [
        Message("system", FEW_SHOT_SYSTEM),
        Message("user", "Read /repo/a.py"),
        Message("assistant", "Reading it.\n" + format_call("Read", {"file_path": "/repo/a.py"})),
        Message("tool", "1\tprint(1)"),
        Message("user", "Read /repo/b.py"),
        Message("assistant", "Reading it.\n" + format_call("Read", {"file_path": "/repo/b.py"})),
        Message("tool", "1\tprint(2)"),
        Message("user", f"Read {last}"),
    ]


@pytest.fixture
def captured_logs() -> Iterator[list[dict[str, Any]]]:
    """Every structlog event, debug included, whatever level an earlier test configured."""
    old = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with structlog.testing.capture_logs() as logs:
            yield logs
    finally:
        structlog.configure(**old)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Undo the log set-up that `cli.main` does (it binds the stream of the moment, which capsys closes)."""
    old = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        structlog.configure(**old)
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.fixture(scope="session")
def tool_schemas() -> dict[str, dict[str, Any]]:
    """Argument schemas like the tool layer's."""
    return TOOL_SCHEMAS


@pytest.fixture(scope="session")
def few_shot_messages() -> list[Message]:
    """A conversation that ends in `Reading it.` plus a Read call of /repo/c.py, even from SmolLM2."""
    return few_shot()


@pytest.fixture(scope="session")
def llama_model(small_model_path: Path) -> Iterator[Any]:
    """One in-process SmolLM2 for the whole session (tests run one at a time, so one conversation at a time)."""
    from mcp_loco.model.backends.llama_cpp import LlamaModel

    # One thread: llama.cpp's worker threads spin-wait, and on a busy shared machine that turns a
    # 1 s test into a 10 s one; a single thread is about as fast for a 135M model.
    # Speculative decoding on (its default is off on a CPU), so every model test runs through it.
    settings = LlamaSettings(n_ctx=4096, n_batch=256, n_threads=1, n_threads_batch=1, speculative="on")
    model = LlamaModel(small_model_path, settings)
    yield model
    model.close()


@pytest.fixture(scope="session")
def llama_servers(small_model_path: Path) -> Iterator[list[LlamaServer]]:
    """Two real llama_cpp.server processes on free loopback ports; always terminated."""
    threads = max(1, (os.cpu_count() or 2) // 2)
    with running(small_model_path, threads=threads, n_ctx=2048) as servers:
        yield servers
