"""Helpers for the serving tests: a server process with the slow scripted model, raw MCP over HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
from server_helpers import free_port

SLOW_SERVE = Path(__file__).parent / "slow_serve.py"
TOKEN = "test-token-0123456789abcdef"
ACCEPT = "application/json, text/event-stream"


def slow_env(root: Path, turn_s: float = 0.2, **extra: str) -> dict[str, str]:
    """Environment for a slow-model server exploring `root`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_LOCO_")}
    env.update(
        {
            "LOCO_TEST_TURN_S": str(turn_s),
            "MCP_LOCO_SERVER_ROOTS": str(root),
            "MCP_LOCO_AGENT_GRAMMAR": "false",
            "MCP_LOCO_AGENT_DEADLINE_S": "120",
            "MCP_LOCO_LOG_LEVEL": "info",
            **extra,
        }
    )
    return env


@dataclass
class Served:
    """A running server process and where it listens."""

    proc: subprocess.Popen[bytes]
    port: int
    url: str
    stderr: str = ""

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def wait_listening(proc: subprocess.Popen[bytes], port: int, timeout: float = 30) -> None:
    """Wait until the server accepts connections (fail if it exits first)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise RuntimeError(f"server exited ({proc.returncode}): {err}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"server did not listen in {timeout} s") from None
            time.sleep(0.05)


@contextmanager
def slow_server(transport: str, env: dict[str, str], *args: str) -> Iterator[Served]:
    """Start the slow-model server on a free loopback port; stop it; keep its stderr in `.stderr`."""
    port = free_port()
    cmd = [sys.executable, str(SLOW_SERVE), "serve", "--transport", transport, "--port", str(port), *args]
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    served = Served(proc, port, f"http://127.0.0.1:{port}{'/sse' if transport == 'sse' else '/mcp'}")
    try:
        wait_listening(proc, port)
        yield served
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        served.stderr = err.decode(errors="replace")
        assert out == b"", out[:500]


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def rpc(method: str, params: dict[str, Any] | None = None, id: int | None = 1) -> dict[str, Any]:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        msg["params"] = params
    if id is not None:
        msg["id"] = id
    return msg


INIT = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}


async def open_session(client: httpx2.AsyncClient, url: str, headers: dict[str, str] | None = None) -> str:
    """Initialize a 2025-era session over raw HTTP; return its id."""
    h = {"Accept": ACCEPT, "Content-Type": "application/json", **(headers or {})}
    r = await client.post(url, json=rpc("initialize", INIT), headers=h)
    assert r.status_code == 200, r.text
    sid = r.headers["mcp-session-id"]
    h["mcp-session-id"] = sid
    h["mcp-protocol-version"] = "2025-06-18"
    r = await client.post(url, json=rpc("notifications/initialized", id=None), headers=h)
    assert r.status_code == 202, r.text
    return sid


def call_args(root: Path, **extra: Any) -> dict[str, Any]:
    return {"path": str(root), "question": "Where is the config loaded?", **extra}


def sse_messages(line: str) -> Iterator[dict[str, Any]]:
    """The JSON-RPC message on an SSE `data:` line, if it is one."""
    if line.startswith("data:"):
        data = line[5:].strip()
        if data:
            yield json.loads(data)
