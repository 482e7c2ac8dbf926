"""Decode speed: LlamaModel.complete against bare llama_cpp.Llama.create_completion, same prompt and settings.

    .venv/bin/python benchmarks/decode_speed.py [--model GGUF] [--threads N] [--repeat 5] [--tokens 128]

Greedy decoding of the same rendered prompt, whose prefix is cached on both sides first (so the time is
generation). Interleaved, medians of tokens/s; ratio = ours / bare (1.00 = no cost for our token loop,
segment-wise tokenization, stop checks and cancellation polling).
"""

from __future__ import annotations

import contextlib
import io
import os
import time

import llama_cpp
from _common import default_model, emit, llama_settings, median, parser

from mcp_loco import logs
from mcp_loco.interfaces import GenerateOptions
from mcp_loco.model.backends.llama_cpp import LlamaModel
from mcp_loco.model.protocol import Message, prompt_text, render

MESSAGES = [Message("user", "Write a long story about a lighthouse keeper and the sea.")]


def ours(model: LlamaModel, tokens: int) -> float:
    prompt = render(MESSAGES)
    model.complete(prompt, GenerateOptions(max_tokens=1, temperature=0.0))  # cache the prompt
    started = time.perf_counter()
    out = model.complete(prompt, GenerateOptions(max_tokens=tokens, temperature=0.0))
    return out.usage.completion_tokens / (time.perf_counter() - started)


def bare(llm: llama_cpp.Llama, tokens: int) -> float:
    text = prompt_text(render(MESSAGES))
    llm.create_completion(text, max_tokens=1, temperature=0.0)
    started = time.perf_counter()
    out = llm.create_completion(text, max_tokens=tokens, temperature=0.0)
    seconds = time.perf_counter() - started
    assert isinstance(out, dict)  # not streamed
    return int(out["usage"]["completion_tokens"]) / seconds


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--tokens", type=int, default=128)
    args = ap.parse_args()
    logs.configure("warning")
    path = args.model or default_model()
    s = llama_settings(args, n_ctx=2048)
    model = LlamaModel(path, s)
    with contextlib.redirect_stderr(io.StringIO()):
        llm = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=s.n_ctx,
            n_batch=s.n_batch,
            n_ubatch=min(512, s.n_batch),
            n_threads=s.n_threads or os.cpu_count(),  # 0 means all cores, as in LlamaModel
            n_threads_batch=s.n_threads_batch or os.cpu_count(),
            verbose=False,
        )
    a, b = [], []
    try:
        for _ in range(args.repeat):
            a.append(ours(model, args.tokens))
            b.append(bare(llm, args.tokens))
    finally:
        model.close()
        llm.close()
    ma, mb = median(a), median(b)
    print(f"model: {path.name}, {args.tokens} tokens, repeat {args.repeat} (medians)")
    print(f"LlamaModel.complete       {ma:7.1f} tok/s")
    print(f"Llama.create_completion   {mb:7.1f} tok/s")
    print(f"ours/bare = {ma / mb:.2f}")
    emit(args, {"ours_tok_s": round(ma, 1), "bare_tok_s": round(mb, 1), "ratio": round(ma / mb, 3)})


if __name__ == "__main__":
    main()
