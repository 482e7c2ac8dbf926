"""Helpers for the server tests: free ports, server processes, small settings."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BIN = Path(sys.executable).parent / "mcp-loco"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(model: Path, root: Path, **extra: str) -> dict[str, str]:
    """Environment for a server process: the small real model, tight budgets, one root."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_LOCO_")}
    env.update(
        {
            "MCP_LOCO_MODEL": str(model),
            "MCP_LOCO_LLAMA_N_CTX": "4096",
            "MCP_LOCO_MODEL_MAX_TOKENS": "96",
            # One thread: with other work on a 2-core machine, llama.cpp's spinning threads slow badly.
            "MCP_LOCO_LLAMA_N_THREADS": "1",
            "MCP_LOCO_LLAMA_N_THREADS_BATCH": "1",
            # Well inside the 60 s request timeout of clients that send no progress token (MCP Inspector).
            "MCP_LOCO_AGENT_DEADLINE_S": "40",
            "MCP_LOCO_MODEL_TEMPERATURE": "0",
            "MCP_LOCO_AGENT_MAX_TURNS": "2",
            "MCP_LOCO_AGENT_TASK_DEPTH": "0",
            "MCP_LOCO_SERVER_ROOTS": str(root),
            "MCP_LOCO_LOG_LEVEL": "warning",
            **extra,
        }
    )
    return env


@contextmanager
def running_server(transport: str, env: dict[str, str], *args: str) -> Iterator[str]:
    """Start `mcp-loco serve` on a free loopback port; yield its URL; always stop it."""
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN), "serve", "--transport", transport, "--port", str(port), *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    path = "/sse" if transport == "sse" else "/mcp"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {proc.stderr.read().decode() if proc.stderr else ''}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError("server did not start listening in 30 s") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}{path}"
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        # Nothing but the protocol may ever reach stdout; in HTTP modes stdout must stay empty.
        assert out == b"", out[:500]
