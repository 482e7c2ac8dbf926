"""Record what the server answers at start-up, for fast_start.py to answer while the server still imports.

    python -m mcp_loco.serve.handshake > mcp_loco/serve/handshake.json

A test keeps the file equal to what the server answers now (its tool, description, schemas, version).
"""

from __future__ import annotations

import io
import json
import os
from typing import Any

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_HANDSHAKE_VERSION

from mcp_loco.config import Settings
from mcp_loco.model.backends.replay import ReplayModel
from mcp_loco.serve.server import ModelPool, build_server

METHODS = ("tools/list", "prompts/list", "resources/list", "resources/templates/list", "ping")
"""Requests without parameters a client sends at start-up, answered from the record."""


async def _session(server: MCPServer[Any], version: str) -> dict[str, Any]:
    """One stdio session on pipes: initialize at `version`, then each of METHODS; the answers, without ids."""
    requests = [
        {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": version,
                "capabilities": {},
                "clientInfo": {"name": "record", "version": "1"},
            },
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        *({"jsonrpc": "2.0", "id": i, "method": m} for i, m in enumerate(METHODS, 1)),
    ]
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    stdin = anyio.wrap_file(io.TextIOWrapper(os.fdopen(in_r, "rb"), encoding="utf-8"))
    stdout = anyio.wrap_file(io.TextIOWrapper(os.fdopen(out_w, "wb"), encoding="utf-8"))
    answers: dict[int, dict[str, Any]] = {}
    feed = os.fdopen(in_w, "wb")
    lowlevel = server._lowlevel_server  # what MCPServer.run_stdio_async runs, on streams of our own

    async def collect() -> None:
        async with anyio.wrap_file(os.fdopen(out_r, "rb")) as out:
            async for line in out:
                msg = json.loads(line)
                if "id" in msg:
                    answers[msg["id"]] = {k: v for k, v in msg.items() if k in ("result", "error")}
                if len(answers) == len(METHODS) + 1:
                    feed.close()  # all answered: end the session
                    return

    async with stdio_server(stdin, stdout) as (read, write), anyio.create_task_group() as tg:
        tg.start_soon(collect)
        feed.write(b"".join(json.dumps(r).encode() + b"\n" for r in requests))
        feed.flush()
        await lowlevel.run(read, write, lowlevel.create_initialization_options())
    await stdout.aclose()
    await stdin.aclose()
    return {"initialize": answers[0], "answers": {m: answers[i] for i, m in enumerate(METHODS, 1)}}


def record() -> dict[str, Any]:
    """What the server answers at start-up, for every protocol version the handshake reaches."""
    settings = Settings()
    pool = ModelPool(settings, factory=lambda: ReplayModel(["-"]))
    server = build_server(settings, pool)

    async def sessions() -> dict[str, Any]:
        return {v: await _session(server, v) for v in HANDSHAKE_PROTOCOL_VERSIONS}

    try:
        versions = anyio.run(sessions)
    finally:
        pool.close()
    return {"latest": LATEST_HANDSHAKE_VERSION, "versions": versions}


def render() -> str:
    """The record as handshake.json holds it."""
    return json.dumps(record(), indent=1, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    print(render(), end="")
