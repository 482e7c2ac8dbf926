"""Start-up: a stdio client is answered at once, before the SDK loads, and the server takes over seamlessly.

Real `mcp-loco serve` processes over real pipes (raw JSON-RPC and the SDK's own stdio client), the replay
backend for the calls; nothing here needs a model file.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from server_helpers import BIN

from mcp_loco.model.protocol import format_call
from mcp_loco.serve.fast_start import HANDSHAKE
from mcp_loco.serve.handshake import render

HEAVY = ("llama_cpp", "huggingface_hub")


def probe(code: str) -> set[str]:
    """The top-level modules loaded after running `code` in a fresh interpreter."""
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            f"{code}\nimport sys; print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    return set(out.stdout.split())


def test_the_command_line_and_the_server_module_do_not_import_llama_cpp() -> None:
    loaded = probe("import mcp_loco.cli, mcp_loco.serve.server")
    assert "mcp_loco" in loaded and "mcp" in loaded
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_what_answers_first_imports_neither_the_sdk_nor_pydantic() -> None:
    loaded = probe("import mcp_loco.cli, mcp_loco.serve.fast_start")
    assert not loaded & {"mcp", "mcp_types", "pydantic", "httpx", *HEAVY}, loaded


def test_version_imports_nothing_heavy() -> None:
    loaded = probe(
        "import sys\nfrom mcp_loco import cli\ntry:\n    cli.main(['--version'])\nexcept SystemExit:\n    pass"
    )
    assert not loaded & {"mcp", "pydantic", *HEAVY}, loaded


def test_the_recorded_handshake_is_what_the_server_answers_now() -> None:
    assert HANDSHAKE.read_text(encoding="utf-8") == render(), (
        "regenerate: python -m mcp_loco.serve.handshake > mcp_loco/serve/handshake.json"
    )


# ---- real processes -------------------------------------------------------------------------------


def serve_env(root: Path, tmp_path: Path, **extra: str) -> dict[str, str]:
    turns = tmp_path / "turns.json"
    glob = format_call("Glob", {"pattern": "**/*.py"})
    turns.write_text(json.dumps([glob, f"Loaded in {root}/src/app/config.py:4."] * 10), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_LOCO_")}
    env.update(
        {
            "MCP_LOCO_MODEL_BACKEND": "replay",
            "MCP_LOCO_REPLAY_FILE": str(turns),
            "MCP_LOCO_SERVER_ROOTS": str(root),
            "MCP_LOCO_AGENT_GRAMMAR": "false",
            "MCP_LOCO_LOG_LEVEL": "info",
            **extra,
        }
    )
    return env


class Wire:
    """A `mcp-loco serve` process spoken to line by line; every stdout line is kept, with its arrival time."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [str(BIN), "serve", *args], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.lines: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
        self.stderr: list[tuple[float, str]] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True),
            threading.Thread(target=self._read_err, args=(self.proc.stderr,), daemon=True),
        ]
        for t in self.readers:
            t.start()

    def _read(self, pipe: IO[bytes]) -> None:
        for line in iter(pipe.readline, b""):
            self.lines.put((time.monotonic(), json.loads(line)))  # anything but JSON-RPC on stdout fails here

    def _read_err(self, pipe: IO[bytes]) -> None:
        for line in iter(pipe.readline, b""):
            self.stderr.append((time.monotonic(), line.decode(errors="replace")))

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        self.proc.stdin.flush()

    def answer(self, ident: int, timeout: float = 60) -> tuple[float, dict[str, Any]]:
        """The next message, which must be the answer to `ident` (notifications skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            at, msg = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            if "id" in msg and "method" not in msg:
                assert msg["id"] == ident, msg
                return at - self.started, msg

    def close(self) -> int:
        """Close stdin (the client leaves) and wait for the server to end; its exit code."""
        assert self.proc.stdin is not None and self.proc.stdout is not None and self.proc.stderr is not None
        self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=30)
        finally:
            self.stop()

    def stop(self) -> None:
        """Kill the server if it still runs, and let go of its pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for t in self.readers:
            t.join(timeout=10)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


def initialize(ident: int = 1, version: str = "2025-11-25", name: str = "raw") -> dict[str, Any]:
    params = {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": name, "version": "1"}}
    return {"jsonrpc": "2.0", "id": ident, "method": "initialize", "params": params}


INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}


def call(ident: int, root: Path) -> dict[str, Any]:
    arguments = {"path": str(root), "question": "Where is the config loaded?"}
    return {
        "jsonrpc": "2.0",
        "id": ident,
        "method": "tools/call",
        "params": {"name": "explore_codebase", "arguments": arguments},
    }


def recorded(version: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(HANDSHAKE.read_text(encoding="utf-8"))
    return dict(data["versions"][version])


@pytest.mark.slow
@pytest.mark.parametrize("version", ["2025-06-18", "1999-01-01"])  # one it speaks, one it does not
def test_initialize_is_answered_before_the_server_has_loaded_then_the_server_takes_over(
    sample_repo: Path, tmp_path: Path, version: str
) -> None:
    wire = Wire(serve_env(sample_repo, tmp_path))
    try:
        wire.send(initialize(7, version))
        t_init, init = wire.answer(7)
        negotiated = version if version != "1999-01-01" else "2025-11-25"
        assert init["result"] == recorded(negotiated)["initialize"]["result"]
        assert init["result"]["protocolVersion"] == negotiated
        wire.send(INITIALIZED)
        wire.send({"jsonrpc": "2.0", "id": 8, "method": "tools/list"})
        _, listed = wire.answer(8)
        assert listed["result"]["tools"][0]["name"] == "explore_codebase"
        wire.send(call(9, sample_repo))  # kept until the server has loaded, then answered by it
        _, result = wire.answer(9)
        assert not result["result"].get("isError"), result
        assert "config.py:4" in result["result"]["content"][0]["text"]
        wire.send({"jsonrpc": "2.0", "id": 10, "method": "tools/list"})  # now the server's own answer
        _, again = wire.answer(10)
        assert again["result"] == listed["result"]
        assert wire.close() == 0
    finally:
        wire.stop()
    # The answer came before the server logged that it serves: the SDK had not even loaded.
    serving = [t - wire.started for t, line in wire.stderr if "serving" in line]
    assert serving and t_init < serving[0], (t_init, serving)
    assert wire.lines.empty()  # the server's answer to the replayed initialize never reached the client


@pytest.mark.slow
def test_a_call_right_after_initialize_and_pings_are_answered_in_order(sample_repo: Path, tmp_path: Path) -> None:
    wire = Wire(serve_env(sample_repo, tmp_path))
    try:
        for m in (initialize(), INITIALIZED, call(2, sample_repo), {"jsonrpc": "2.0", "id": 3, "method": "ping"}):
            wire.send(m)
        _, init = wire.answer(1)
        assert "result" in init
        _, ping = wire.answer(3)  # answered at once, while the call waits for the server
        assert ping["result"] == {}
        _, result = wire.answer(2)
        assert "config.py:4" in json.dumps(result)
        assert wire.close() == 0
    finally:
        wire.stop()


@pytest.mark.slow
def test_bad_and_unknown_messages_before_the_server_loads_get_its_own_errors(sample_repo: Path, tmp_path: Path) -> None:
    wire = Wire(serve_env(sample_repo, tmp_path))
    try:
        bad_init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": 5}}
        wire.send(bad_init)  # not answered from the record: the server refuses it itself
        _, refused = wire.answer(1)
        assert "error" in refused, refused
        wire.send(initialize(2))
        _, init = wire.answer(2)
        assert "result" in init
        wire.send(INITIALIZED)
        wire.send({"jsonrpc": "2.0", "id": 3, "method": "no/such/method"})
        _, unknown = wire.answer(3)
        assert unknown["error"]["code"] == -32601
        wire.send({"jsonrpc": "2.0", "id": 4, "method": "tools/list", "params": {"cursor": "zzz"}})
        _, cursor = wire.answer(4)  # a cursor is not in the record: the server answers it
        assert "result" in cursor or "error" in cursor
        assert wire.close() == 0
    finally:
        wire.stop()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["MCP_LOCO_SERVER_FAST_START=false", "--set=server.fast_start=0"])
def test_without_fast_start_the_server_answers_everything_itself(sample_repo: Path, tmp_path: Path, how: str) -> None:
    env = serve_env(sample_repo, tmp_path)
    args: list[str] = []
    if how.startswith("--"):
        args = ["--set", how.split("=", 1)[1]]
    else:
        key, value = how.split("=")
        env[key] = value
    wire = Wire(env, *args)
    try:
        wire.send(initialize())
        t_init, init = wire.answer(1)
        assert init["result"] == recorded("2025-11-25")["initialize"]["result"]
        assert wire.close() == 0
    finally:
        wire.stop()
    serving = [t - wire.started for t, line in wire.stderr if "serving" in line]
    assert serving and serving[0] < t_init  # the SDK answered: it had to load first


@pytest.mark.slow
def test_a_client_that_leaves_at_once_ends_the_server(sample_repo: Path, tmp_path: Path) -> None:
    wire = Wire(serve_env(sample_repo, tmp_path))
    try:
        wire.send(initialize())
        wire.answer(1)
        assert wire.close() == 0
    finally:
        wire.stop()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["legacy", "auto"])  # initialize first, or server/discover first (Copilot CLI)
async def test_the_sdk_stdio_client_lists_and_calls(sample_repo: Path, tmp_path: Path, mode: str) -> None:
    params = StdioServerParameters(command=str(BIN), args=["serve"], env=serve_env(sample_repo, tmp_path))
    async with Client(params, mode=mode) as client:
        with anyio.fail_after(60):
            tools = (await client.list_tools()).tools
            result = await client.call_tool(
                "explore_codebase", {"path": str(sample_repo), "question": "Where is the config loaded?"}
            )
    assert [t.name for t in tools] == ["explore_codebase"]
    assert not result.is_error and result.structured_content is not None
    assert result.structured_content["citations"]["verified"] == ["src/app/config.py:4"]
