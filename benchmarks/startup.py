"""Start-up: seconds from spawning `mcp-loco serve` (stdio) to its `initialize` answer and to `tools/list`.

Codex CLI gives a server that is not marked required 1 s on its first turn; Claude Code and the others
wait longer, but every second counts before the first call. Each run spawns a fresh process, sends what
an MCP client sends (initialize, notifications/initialized, tools/list) and times the answers. Interleaved
with them: the same server with `server.fast_start = false` (the SDK answers, once it has imported), and
`python -c pass` (the interpreter's own start on this machine at the same time).

    .venv/bin/python benchmarks/startup.py --repeat 9
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from _common import default_model, emit, median, parser

BIN = Path(sys.executable).parent / "mcp-loco"
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "startup-benchmark", "version": "1"},
    },
}


def _send(pipe: IO[bytes], message: dict[str, Any]) -> None:
    pipe.write(json.dumps(message).encode() + b"\n")
    pipe.flush()


def _answer(pipe: IO[bytes], ident: int) -> dict[str, Any]:
    """The response to request `ident` (notifications before it skipped)."""
    while True:
        line = pipe.readline()
        if not line:
            raise RuntimeError("the server closed stdout before answering")
        message = json.loads(line)
        if message.get("id") == ident:
            return dict(message)


def one_serve(env: dict[str, str], root: Path) -> tuple[float, float]:
    """Seconds from spawn to the initialize answer, and to the tools/list answer."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [str(BIN), "serve", "--root", str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        _send(proc.stdin, INITIALIZE)
        init = _answer(proc.stdout, 1)
        t_init = time.perf_counter() - t0
        assert "result" in init, init
        _send(proc.stdin, {"jsonrpc": "2.0", "method": "notifications/initialized"})
        _send(proc.stdin, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
        tools = _answer(proc.stdout, 2)
        t_list = time.perf_counter() - t0
        assert tools["result"]["tools"][0]["name"] == "explore_codebase", tools
        return t_init, t_list
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def one_python() -> float:
    """Seconds for `python -c pass`: the interpreter's own start."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = parser(__doc__)
    args = ap.parse_args()
    model = args.model or default_model()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_LOCO_")}
    env.update({"MCP_LOCO_MODEL": str(model), "MCP_LOCO_LOG_LEVEL": "warning", "MCP_LOCO_LLAMA_N_CTX": "2048"})
    slow_env = {**env, "MCP_LOCO_SERVER_FAST_START": "false"}
    inits, lists, slow_inits, slow_lists, pythons = [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        one_serve(env, Path(tmp))  # warm the page cache once, uncounted
        for _ in range(args.repeat):
            pythons.append(one_python())
            t_init, t_list = one_serve(env, Path(tmp))
            inits.append(t_init)
            lists.append(t_list)
            t_init, t_list = one_serve(slow_env, Path(tmp))
            slow_inits.append(t_init)
            slow_lists.append(t_list)
    figures = {
        "runs": args.repeat,
        "python_pass_s": round(median(pythons), 3),
        "initialize_s": round(median(inits), 3),
        "tools_list_s": round(median(lists), 3),
        "initialize_max_s": round(max(inits), 3),
        "no_fast_start_initialize_s": round(median(slow_inits), 3),
        "no_fast_start_tools_list_s": round(median(slow_lists), 3),
        "load_average": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
    }
    print(
        f"medians of {args.repeat} runs: spawn to initialize {figures['initialize_s']:.3f} s "
        f"(max {figures['initialize_max_s']:.3f} s), to tools/list {figures['tools_list_s']:.3f} s; "
        f"without fast start {figures['no_fast_start_initialize_s']:.3f} s and "
        f"{figures['no_fast_start_tools_list_s']:.3f} s; python -c pass {figures['python_pass_s']:.3f} s; "
        f"{figures['cpus']} CPUs, load average {figures['load_average']}"
    )
    emit(args, figures)


if __name__ == "__main__":
    main()
