"""Load and faults: many clients on one `mcp-loco serve --transport http`, a client that vanishes, a shutdown.

    .venv/bin/python benchmarks/load.py [--model GGUF] [--threads 1] [--clients 8] [--calls 3] [--parallel 2]

Every figure comes from real clients (the MCP SDK's, over streamable HTTP with the bearer token) against a
real server process running the real model on 127.0.0.1:
  load      CLIENTS clients at once, CALLS calls each, `--parallel` model instances: answered / errors /
            lost (no answer at all), latency p50/p95, queue wait p50/p95 (call sent -> the progress
            "turn 1" that says a model took it). Half the clients speak 2025-06-18 (sessions, like
            Claude Code), half 2026-07-28 (one POST a call).
  vanish    `--parallel 1`: a call runs, a second waits; the first client closes its HTTP stream mid-call
            without ending its session. Measured: close -> the waiting call's "turn 1" progress (the model
            was stopped and handed over), REPEAT times.
  shutdown  `--parallel 2`, CLIENTS calls in flight (2 running, the rest queued); SIGTERM. Measured: how
            each client's call ended (error result saying the server shuts down / exception / no end in
            30 s) and how long after the signal; when the process was gone.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
from _common import ROOT, default_model, emit, free_port, parser, wait_listening
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

BIN = Path(sys.executable).parent / "mcp-loco"
TOKEN = "load-benchmark-token-" + os.urandom(8).hex()
QUESTIONS = [
    "Where is the settings precedence implemented?",
    "Which function renders the default TOML config?",
    "Where are tool calls parsed from the model output?",
]
ACCEPT = "application/json, text/event-stream"


@contextmanager
def server(model: Path, threads: int, parallel: int, max_queue: int) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A real server process with the token, on a free loopback port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_LOCO_")}
    env.update(
        {
            "MCP_LOCO_MODEL": str(model),
            "MCP_LOCO_LLAMA_N_CTX": "4096",
            "MCP_LOCO_LLAMA_N_THREADS": str(threads),
            "MCP_LOCO_LLAMA_N_THREADS_BATCH": str(threads),
            "MCP_LOCO_MODEL_MAX_TOKENS": "96",
            "MCP_LOCO_MODEL_TEMPERATURE": "0",
            "MCP_LOCO_AGENT_MAX_TURNS": "2",
            "MCP_LOCO_AGENT_DEADLINE_S": "60",
            "MCP_LOCO_AGENT_TASK_DEPTH": "0",
            "MCP_LOCO_SERVER_ROOTS": str(ROOT),
            "MCP_LOCO_LOG_LEVEL": "warning",
        }
    )
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        token_file = Path(tmp) / "token"
        token_file.write_text(TOKEN + "\n")
        cmd = [str(BIN), "serve", "--transport", "http", "--port", str(port), "--token-file", str(token_file)]
        cmd += ["--parallel", str(parallel), "--max-queue", str(max_queue)]
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        try:
            wait_listening(proc, port)
            yield proc, f"http://127.0.0.1:{port}/mcp"
        finally:
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def client(url: str, http: httpx2.AsyncClient, legacy: bool) -> Client:
    """The SDK's client over streamable HTTP, with the token in the httpx client's headers."""
    return Client(streamable_http_client(url, http_client=http), mode="legacy" if legacy else "auto")


def authed() -> httpx2.AsyncClient:
    return httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=httpx2.Timeout(600, connect=30))


class Watch:
    """When a call started and when a model took it (its first "turn" progress)."""

    def __init__(self) -> None:
        self.sent = time.monotonic()
        self.taken: float | None = None
        self.queued = False

    async def __call__(self, p: float, total: float | None, message: str | None) -> None:
        if message and message.startswith("queued"):
            self.queued = True
        if self.taken is None and message and message.startswith("turn "):
            self.taken = time.monotonic()


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


async def load(url: str, clients: int, calls: int) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []

    async def one_client(i: int) -> None:
        async with authed() as http, client(url, http, legacy=i % 2 == 0) as c:
            for j in range(calls):
                watch = Watch()
                row: dict[str, Any] = {"client": i, "call": j}
                try:
                    with anyio.fail_after(900):
                        result = await c.call_tool(
                            "explore_codebase",
                            {"path": str(ROOT), "question": QUESTIONS[(i + j) % len(QUESTIONS)]},
                            progress_callback=watch,
                        )
                    row["outcome"] = "error" if result.is_error else "answered"
                    if result.is_error:
                        row["text"] = "".join(getattr(x, "text", "") for x in result.content)[:200]
                except Exception as e:
                    row["outcome"], row["text"] = "lost", f"{type(e).__name__}: {e}"[:200]
                done = time.monotonic()
                row["latency_s"] = done - watch.sent
                row["wait_s"] = (watch.taken - watch.sent) if watch.taken else None
                row["queued"] = watch.queued
                rows.append(row)

    t0 = time.monotonic()
    async with anyio.create_task_group() as tg:
        for i in range(clients):
            tg.start_soon(one_client, i)
    wall = time.monotonic() - t0
    answered = [r for r in rows if r["outcome"] == "answered"]
    lat = [r["latency_s"] for r in answered]
    waits = [r["wait_s"] for r in answered if r["wait_s"] is not None]
    return {
        "calls": len(rows),
        "answered": len(answered),
        "errors": sum(r["outcome"] == "error" for r in rows),
        "lost": sum(r["outcome"] == "lost" for r in rows),
        "queued": sum(r["queued"] for r in rows),
        "latency_p50_s": round(statistics.median(lat), 1) if lat else None,
        "latency_p95_s": round(pct(lat, 95), 1) if lat else None,
        "wait_p50_s": round(statistics.median(waits), 1) if waits else None,
        "wait_p95_s": round(pct(waits, 95), 1) if waits else None,
        "wall_s": round(wall, 1),
        "failures": [r for r in rows if r["outcome"] != "answered"],
    }


async def vanish_once(url: str) -> float:
    """Seconds from a client closing its stream mid-call to the waiting call getting the model."""
    async with authed() as raw:
        h = {"Accept": ACCEPT, "Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
        init = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "vanish", "version": "0"}}
        r = await raw.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": init}, headers=h)
        h |= {"mcp-session-id": r.headers["mcp-session-id"], "mcp-protocol-version": "2025-06-18"}
        await raw.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=h)
        args = {"path": str(ROOT), "question": QUESTIONS[0], "max_turns": 30, "deadline_s": 600}
        params = {"name": "explore_codebase", "arguments": args, "_meta": {"progressToken": 1}}
        body = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": params}
        waiting = Watch()
        async with authed() as http, client(url, http, legacy=True) as other, anyio.create_task_group() as tg:
            async with raw.stream("POST", url, json=body, headers=h) as stream:
                lines = stream.aiter_lines()
                async for line in lines:
                    if "turn 1/30" in line:
                        break
                args_b = {"path": str(ROOT), "question": QUESTIONS[1], "max_turns": 1}
                tg.start_soon(lambda: other.call_tool("explore_codebase", args_b, progress_callback=waiting))
                while not waiting.queued:
                    await anyio.sleep(0.01)
                await anyio.sleep(1.0)  # mid-generation
                closed = time.monotonic()
            with anyio.fail_after(120):
                while waiting.taken is None:
                    await anyio.sleep(0.005)
            tg.cancel_scope.cancel()
        return waiting.taken - closed


async def shutdown(proc: subprocess.Popen[bytes], url: str, clients: int) -> dict[str, Any]:
    outcomes: list[tuple[str, float]] = []
    started = [Watch() for _ in range(clients)]
    stopped = 0.0

    async def one(i: int) -> None:
        args = {"path": str(ROOT), "question": QUESTIONS[i % 3], "max_turns": 10, "deadline_s": 600}
        try:
            async with authed() as http, client(url, http, legacy=i % 2 == 0) as c:
                result = await c.call_tool("explore_codebase", args, progress_callback=started[i])
                text = "".join(getattr(x, "text", "") for x in result.content)
                kind = "error result: shutting down" if result.is_error and "shutting down" in text else "other result"
                outcomes.append((kind, time.monotonic() - stopped))
        except Exception as e:
            outcomes.append((f"exception {type(e).__name__}", time.monotonic() - stopped))

    async with anyio.create_task_group() as tg:
        for i in range(clients):
            tg.start_soon(one, i)
        with anyio.fail_after(300):
            while sum(w.taken is not None for w in started) < 2 or sum(w.queued for w in started) < clients - 2:
                await anyio.sleep(0.05)
        stopped = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        with anyio.move_on_after(30):  # a call with no end 30 s after the signal counts as a hang
            while len(outcomes) < clients:
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    await anyio.to_thread.run_sync(proc.wait)
    gone = time.monotonic() - stopped
    kinds: dict[str, int] = {}
    for kind, _ in outcomes:
        kinds[kind] = kinds.get(kind, 0) + 1
    if len(outcomes) < clients:
        kinds["no end within 30 s (hang)"] = clients - len(outcomes)
    slowest = max((t for _, t in outcomes), default=0.0)
    return {"outcomes": kinds, "slowest_answer_s": round(slowest, 2), "exit_s": round(gone, 2)}


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--calls", type=int, default=3)
    ap.add_argument("--parallel", type=int, default=2)
    ap.set_defaults(threads=1)
    args = ap.parse_args()
    model = args.model or default_model()
    figures: dict[str, Any] = {"model": model.name, "threads": args.threads}
    print(f"model: {model.name}, {args.threads} llama.cpp thread(s) per instance")

    with server(model, args.threads, args.parallel, max_queue=args.clients) as (_, url):
        figures["load"] = anyio.run(load, url, args.clients, args.calls)
    ld = figures["load"]
    print(
        f"load: {args.clients} clients x {args.calls} calls, --parallel {args.parallel}: {ld['answered']}/{ld['calls']} "
        f"answered, {ld['errors']} errors, {ld['lost']} lost, {ld['queued']} queued; latency p50 {ld['latency_p50_s']} s "
        f"p95 {ld['latency_p95_s']} s; queue wait p50 {ld['wait_p50_s']} s p95 {ld['wait_p95_s']} s; wall {ld['wall_s']} s"
    )
    for f in ld["failures"]:
        print(f"  not answered: {f}")

    with server(model, args.threads, 1, max_queue=8) as (_, url):
        freed = [anyio.run(vanish_once, url) for _ in range(args.repeat)]
    figures["vanish_s"] = [round(x, 3) for x in freed]
    print(
        f"vanish: client closed its stream mid-call -> next call had the model after "
        f"{', '.join(f'{x:.2f}' for x in freed)} s (max {max(freed):.2f} s)"
    )

    with server(model, args.threads, args.parallel, max_queue=args.clients) as (proc, url):
        figures["shutdown"] = anyio.run(shutdown, proc, url, args.clients)
    sd = figures["shutdown"]
    print(
        f"shutdown: SIGTERM with {args.clients} calls in flight: {sd['outcomes']}; slowest answer "
        f"{sd['slowest_answer_s']} s after the signal; process gone after {sd['exit_s']} s"
    )
    emit(args, figures)


if __name__ == "__main__":
    main()
