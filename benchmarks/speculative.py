"""Speculative decoding: a report turn that quotes the files it read, with and without prompt-lookup drafting.

    .venv/bin/python benchmarks/speculative.py [--model GGUF] [--threads N] [--repeat 3] [--tokens 256]
                                               [--shaped GGUF]

The conversation is the project's own tree read by the real tools (two Read results), then the
request for the report, which asks for the code quoted. Both sides decode the same turn greedily
from a cached prompt (so the time is generation), interleaved; medians of tokens/s. Then the cost
of one verification batch (the sampled token plus k drafted ones, logits at every position) against
a one-token decode after 1K tokens of context on this model (256 on the 4B shape) and, with --shaped (default: the
LocoOperator-4B-shaped GGUF in /work/synth when there is one), at the 4B shape. The last line is
`speculative decoding: X.XXx decode speed, identical output: yes|no`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from _common import ROOT, default_model, emit, llama_settings, median, parser

from mcp_loco import logs
from mcp_loco.backends.llama_cpp import LlamaModel
from mcp_loco.config import LlamaSettings
from mcp_loco.interfaces import GenerateOptions
from mcp_loco.protocol import Message, format_call, render
from mcp_loco.sandbox import Toolbox
from mcp_loco.turns import read_prompt

SYNTH = Path("/work/synth")
READS = [("backends/prompt_tokens.py", 44, 16), ("backends/speculative.py", 66, 26)]
REPORT = (
    "Write your report now. Quote the `draft` method of {root}/backends/speculative.py exactly as the Read "
    "result shows it, line numbers included, in a code block, then say in one sentence what it does."
)
BATCH_SIZES = (1, 2, 5, 9, 17)


def conversation() -> list[Message]:
    """A short exploration of this project that ends in the request for a quoting report."""
    tools = Toolbox(ROOT)
    root = tools.root
    msgs = [
        Message("system", read_prompt("", "system_prompt.md").replace("{root}", root)),
        Message(
            "user",
            read_prompt("", "task_prompt.md")
            .replace("{root}", root)
            .replace("{question}", "How does the backend draft tokens?"),
        ),
    ]
    for rel, offset, limit in READS:
        args = {"file_path": f"{root}/{rel}", "offset": offset, "limit": limit}
        msgs.append(Message("assistant", format_call("Read", args)))
        msgs.append(Message("tool", tools.call("Read", args).text))
    msgs.append(Message("user", REPORT.replace("{root}", root)))
    return msgs


def decode(model: LlamaModel, tokens: int) -> tuple[float, str, Any]:
    """Tokens/s of the report turn from a cached prompt, its text, and the drafting stats."""
    prompt = render(conversation())
    model.complete(prompt, GenerateOptions(max_tokens=1, temperature=0.0))  # cache the prompt
    started = time.perf_counter()
    out = model.complete(prompt, GenerateOptions(max_tokens=tokens, temperature=0.0))
    return out.usage.completion_tokens / (time.perf_counter() - started), out.text, model.speculation


def batch_costs(model: LlamaModel, repeat: int, context: int) -> dict[int, float]:
    """Median milliseconds of one decode batch of each size, after `context` tokens."""
    filler = model.tokenize(render(conversation()))[:context]
    model._sync(filler)
    base = model._llm.n_tokens
    costs: dict[int, list[float]] = {n: [] for n in BATCH_SIZES}
    for _ in range(repeat):
        for n in BATCH_SIZES:
            model._drop_after(base)
            started = time.perf_counter()
            model._extend(filler[:n])
            costs[n].append((time.perf_counter() - started) * 1000)
    model._drop_after(base)
    return {n: median(v) for n, v in costs.items()}


def print_costs(label: str, costs: dict[int, float]) -> None:
    """One line: milliseconds per batch and the ratio to a one-token decode."""
    one = costs[1]
    cells = ", ".join(f"{n}: {ms:.1f} ms ({ms / one:.2f}x)" for n, ms in costs.items())
    print(f"cost per verified batch ({label}), tokens in the batch: {cells}")


def shaped_model(arg: str | None) -> Path | None:
    """The 4B-shaped GGUF to time batches on: --shaped (none: skip), else the deepest finished one in /work/synth."""
    if arg:
        return None if arg == "none" else Path(arg)
    pid = SYNTH / "build-L36.pid"
    building = pid.is_file() and Path(f"/proc/{pid.read_text().strip()}").exists()
    for name in ("loco4b-shaped-L36-Q4_K_M.gguf", "loco4b-shaped-L2-Q4_K_M.gguf"):
        path = SYNTH / name
        if path.is_file() and not (building and "L36" in name):  # a 36-layer file still being written
            return path
    return None


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--shaped", default=None, help="a LocoOperator-4B-shaped GGUF for the batch costs (none: skip)")
    args = ap.parse_args()
    logs.configure("warning")
    path = args.model or default_model()
    base = llama_settings(args, n_ctx=4096)
    plain = LlamaModel(path, base.model_copy(update={"speculative": "off"}))
    spec = LlamaModel(path, base.model_copy(update={"speculative": "on"}))
    fast, slow, texts, stats = [], [], {}, None
    try:
        for _ in range(args.repeat):
            s, texts["plain"], _ = decode(plain, args.tokens)
            f, texts["spec"], stats = decode(spec, args.tokens)
            slow.append(s)
            fast.append(f)
        costs = batch_costs(plain, args.repeat, 1024)
    finally:
        plain.close()
        spec.close()
    same = texts["plain"] == texts["spec"]
    mf, ms = median(fast), median(slow)
    assert stats is not None
    print(f"model: {path.name}, {args.tokens} tokens, repeat {args.repeat} (medians), draft_max {base.draft_max}")
    print(f"without drafting  {ms:7.1f} tok/s")
    print(f"with drafting     {mf:7.1f} tok/s  ({stats.accepted}/{stats.drafted} drafted tokens accepted)")
    print_costs(path.name, costs)
    figures: dict[str, Any] = {
        "tok_s_plain": round(ms, 2),
        "tok_s_spec": round(mf, 2),
        "speedup": round(mf / ms, 3),
        "identical": same,
        "drafted": stats.drafted,
        "accepted": stats.accepted,
        "batch_ms": {str(n): round(v, 2) for n, v in costs.items()},
    }
    shaped = shaped_model(args.shaped)
    if shaped is not None:
        model = LlamaModel(shaped, LlamaSettings(n_ctx=4096, n_threads=args.threads, n_threads_batch=args.threads))
        try:
            shaped_costs = batch_costs(model, args.repeat, 256)  # its prefill is slow on a CPU
        finally:
            model.close()
        print_costs(f"{shaped.name}, LocoOperator-4B-shaped", shaped_costs)
        figures["shaped_model"] = shaped.name
        figures["shaped_batch_ms"] = {str(n): round(v, 2) for n, v in shaped_costs.items()}
    if not same:
        print("first 200 characters of each:\n" + json.dumps({k: v[:200] for k, v in texts.items()}, indent=1))
    emit(args, figures)
    print(f"speculative decoding: {mf / ms:.2f}x decode speed, identical output: {'yes' if same else 'no'}")


if __name__ == "__main__":
    main()
