"""Memory: peak RSS of the MCP server after one call, against bare processes doing the least they can.

    .venv/bin/python benchmarks/memory.py [--model GGUF] [--threads N] [--n-ctx 8192]

Read from /proc/PID/status (VmHWM, the peak resident set), each in its own process:
  python    `python -c "import llama_cpp"`: the interpreter and the library
  bare      the same, plus the model loaded with the same n_ctx and one short completion
  server    `mcp-loco serve --transport http` on 127.0.0.1, after one explore_codebase call
Ratio = server / bare; the difference is what the server, the MCP stack and the agent add.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anyio
from _common import ROOT, default_model, emit, free_port, parser, wait_listening
from mcp import Client

BIN = Path(sys.executable).parent / "mcp-loco"
BARE = """
import sys, llama_cpp
if len(sys.argv) > 1:
    llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=int(sys.argv[2]), n_threads=int(sys.argv[3]) or None,
                          n_threads_batch=int(sys.argv[3]) or None, verbose=False)
    llm.create_completion("<|im_start|>user\\nHello<|im_end|>\\n<|im_start|>assistant\\n", max_tokens=16)
print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])
"""


def peak_kib(pid: int) -> int:
    """VmHWM of a live process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for pid {pid}")


def bare(*argv: str) -> int:
    done = subprocess.run([sys.executable, "-c", BARE, *argv], capture_output=True, text=True, check=True)
    return int(done.stdout.strip().splitlines()[-1])


async def one_call(url: str) -> None:
    question = "Where is the settings precedence implemented?"
    async with Client(url) as client:
        with anyio.fail_after(600):
            result = await client.call_tool("explore_codebase", {"path": str(ROOT), "question": question})
    if result.is_error:
        raise RuntimeError(f"the call failed: {result.content}")


def server_peak(model: Path, n_ctx: int, threads: int) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_LOCO_")}
    env.update(
        {
            "MCP_LOCO_MODEL": str(model),
            "MCP_LOCO_LLAMA_N_CTX": str(n_ctx),
            "MCP_LOCO_LLAMA_N_THREADS": str(threads),
            "MCP_LOCO_LLAMA_N_THREADS_BATCH": str(threads),
            "MCP_LOCO_MODEL_MAX_TOKENS": "128",
            "MCP_LOCO_MODEL_TEMPERATURE": "0",
            "MCP_LOCO_AGENT_MAX_TURNS": "3",
            "MCP_LOCO_AGENT_TASK_DEPTH": "0",
            "MCP_LOCO_SERVER_ROOTS": str(ROOT),
            "MCP_LOCO_LOG_LEVEL": "warning",
        }
    )
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN), "serve", "--transport", "http", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(proc, port)
        anyio.run(one_call, f"http://127.0.0.1:{port}/mcp")
        return peak_kib(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--n-ctx", type=int, default=8192)
    args = ap.parse_args()
    model = args.model or default_model()
    python = bare()
    loaded = bare(str(model), str(args.n_ctx), str(args.threads))
    server = server_peak(model, args.n_ctx, args.threads)
    mib = 1024
    print(f"model: {model.name}, n_ctx {args.n_ctx}; peak RSS (VmHWM)")
    print(f"python + import llama_cpp          {python / mib:8.1f} MiB")
    print(f"+ model loaded, one completion     {loaded / mib:8.1f} MiB")
    print(f"mcp-loco serve (http), one call    {server / mib:8.1f} MiB")
    print(f"server/bare = {server / loaded:.2f}  (+{(server - loaded) / mib:.1f} MiB)")
    emit(
        args,
        {
            "python_mib": round(python / mib, 1),
            "bare_mib": round(loaded / mib, 1),
            "server_mib": round(server / mib, 1),
            "ratio": round(server / loaded, 3),
            "extra_mib": round((server - loaded) / mib, 1),
            "n_ctx": args.n_ctx,
        },
    )


if __name__ == "__main__":
    main()
