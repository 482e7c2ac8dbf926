"""LocoOperator-4B-shaped figures: load, memory, KV cache, prefill/decode at depth, a replayed exploration.

    .venv/bin/python benchmarks/scale.py --model /work/synth/loco4b-shaped-L36-Q4_K_M.gguf [--threads N] [--json FILE]

The model is the random-weight GGUF of benchmarks/synthetic_model.py (same shapes and quantisation as
the real one, so the same cost per token). Random weights write nonsense, so nothing is generated for
its text: decoding is timed by feeding tokens one at a time (each sampled, output discarded) and the
exploration replays the scripted 10-turn session of benchmarks/_common.py (real tool results on this
project's tree), evaluating each turn's new prompt tokens and force-feeding each recorded assistant turn
token by token, as LlamaModel would have generated them.

Depths are reached by copying one evaluated chunk's KV cells (mcp_loco/model/speed.py), so 24K of context costs
seconds, not most of an hour; prefill at a depth is one chunk evaluated after it.
Each figure is one run (no medians: a full run takes half an hour on 2 cores).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import emit, parser, session
from run_all import machine

from mcp_loco import logs
from mcp_loco.config import LlamaSettings
from mcp_loco.model.backends.llama_cpp import LlamaModel
from mcp_loco.model.protocol import Message, render
from mcp_loco.model.speed import DepthBench, Point, Shape, estimate_seconds

CONFIGS = {
    "f16": {"cache_type_k": "f16", "cache_type_v": "f16", "flash_attn": False},
    "f16+fa": {"cache_type_k": "f16", "cache_type_v": "f16", "flash_attn": True},
    "q8_0+fa": {"cache_type_k": "q8_0", "cache_type_v": "q8_0", "flash_attn": True},
}
DEPTHS = (1024, 8192, 24576)
COMPUTE = r"(?:CPU|CUDA\d+|Metal|Vulkan\d+) compute buffer size =\s*([\d.]+) MiB"
"""The compute buffer of the device the layers run on (a GPU build also logs a smaller CUDA_Host one)."""
KV_CTX = (16384, 32768, 51200)

CHILD = r"""
import json, logging, sys, time
from mcp_loco.model.backends import llama_load as backend
from mcp_loco.model.backends.llama_cpp import LlamaModel
from mcp_loco.config import LlamaSettings
from mcp_loco.interfaces import GenerateOptions, Segment

lines = []
class Keep(logging.Handler):
    def emit(self, record):
        lines.append(record.getMessage())
backend.native_log.addHandler(Keep())
backend.native_log.propagate = False

def status(key):
    for line in open('/proc/self/status'):
        if line.startswith(key):
            return int(line.split()[1]) / 1024

settings = LlamaSettings.model_validate_json(sys.argv[2])
before = status('VmRSS')
t0 = time.perf_counter()
model = LlamaModel(sys.argv[1], settings)
load_s = time.perf_counter() - t0
loaded = status('VmRSS')
prompt = [Segment('<|im_start|>', True), Segment('user\nHello'), Segment('<|im_end|>', True),
          Segment('\n'), Segment('<|im_start|>', True), Segment('assistant\n')]
model.complete(prompt, GenerateOptions(max_tokens=int(sys.argv[3]), temperature=0.0))
print(json.dumps({'load_s': load_s, 'python_mib': before, 'loaded_mib': loaded, 'peak_mib': status('VmHWM'),
                  'log': [l for l in lines if 'size' in l]}))
model.close()
"""


def child(model: Path, settings: LlamaSettings, tokens: int = 4) -> dict[str, Any]:
    """Load the model in a fresh process; its load time, RSS and llama.cpp's buffer-size lines."""
    verbose = settings.model_copy(update={"verbose": True})
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(model), verbose.model_dump_json(), str(tokens)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"loading {model.name} with {settings} failed:\n{done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def mib(pattern: str, lines: list[str]) -> float:
    """The first MiB figure llama.cpp logged that matches the pattern."""
    for line in lines:
        m = re.search(pattern, line)
        if m:
            return float(m.group(1))
    raise SystemExit(f"llama.cpp's log changed: no line matches {pattern!r} in {lines}")


def bandwidth_gbs() -> float:
    """Memory bandwidth, cheaply: the best of a few 1 GiB numpy copies (read + write bytes), one thread."""
    src = np.ones(1 << 27, dtype=np.float64)
    dst = np.empty_like(src)
    best = 0.0
    for _ in range(4):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = max(best, 2 * src.nbytes / (time.perf_counter() - t0) / 1e9)
    return best


def settings_for(args: Any, n_ctx: int, **update: Any) -> LlamaSettings:
    """The llama settings of one measurement."""
    base = {"n_ctx": n_ctx, "n_threads": args.threads, "n_threads_batch": args.threads, "n_batch": 512}
    return LlamaSettings(**{**base, **update})


def speeds(model: Path, s: LlamaSettings, chunk: int, n_decode: int, depths: tuple[int, ...]) -> list[Point]:
    """Prefill (a chunk) and decode (n tokens) at each depth, in one loaded context."""
    m = LlamaModel(model, s)
    b = DepthBench(m, unit=chunk)
    try:
        return [b.measure(d, chunk, n_decode) for d in depths]
    finally:
        b.close()
        m.close()


def replay(model: Path, s: LlamaSettings) -> dict[str, Any]:
    """The scripted 10-turn exploration, force-fed: new prompt tokens evaluated, each turn decoded token by token."""
    opening, turns = session()
    m = LlamaModel(model, s)
    b = DepthBench(m)
    messages = list(opening)
    cached: list[int] = []
    rows = []
    started = time.perf_counter()
    try:
        for text, results in turns:
            prompt = m.tokenize(render(messages))
            common = 0
            while common < min(len(prompt), len(cached)) and prompt[common] == cached[common]:
                common += 1
            b.truncate(common)
            prefill_s = b.prefill(prompt[common:])
            messages.append(Message("assistant", text))
            full = m.tokenize(render(messages, add_generation_prompt=False))
            if full[: len(prompt)] != prompt:
                raise SystemExit("the rendered assistant turn does not extend the prompt's tokens")
            written = full[len(prompt) :]
            decode_s = b.force(written)
            cached = full
            messages.extend(Message("tool", r) for r in results)
            rows.append(
                {
                    "prompt": len(prompt),
                    "evaluated": len(prompt) - common,
                    "written": len(written),
                    "prefill_s": round(prefill_s, 2),
                    "decode_s": round(decode_s, 2),
                }
            )
            print(f"  turn {len(rows):2d}: {rows[-1]}", flush=True)
    finally:
        b.close()
        m.close()
    wall = time.perf_counter() - started
    return {
        "turns": len(rows),
        "wall_s": round(wall, 1),
        "prompt_evaluated": sum(r["evaluated"] for r in rows),
        "written": sum(r["written"] for r in rows),
        "prefill_s": round(sum(r["prefill_s"] for r in rows), 1),
        "decode_s": round(sum(r["decode_s"] for r in rows), 1),
        "final_context": rows[-1]["prompt"] + rows[-1]["written"],
        "opening": rows[0]["evaluated"],
        "rows": rows,
    }


def part_load(args: Any, model: Path, out: dict[str, Any]) -> None:
    """Load time and RSS at n_ctx 32K with an f16 cache and no flash attention (the KV part has the others)."""
    s = settings_for(args, 32768, cache_type_k="f16", cache_type_v="f16", flash_attn=False)
    first = child(model, s, tokens=8)
    out["load"] = {
        "settings": "f16 KV cache, flash attention off",
        "load_s": round(first["load_s"], 2),
        "rss_loaded_mib": round(first["loaded_mib"]),
        "rss_peak_mib": round(first["peak_mib"]),
        "n_ctx": 32768,
    }
    print(f"load {out['load']}", flush=True)


def part_speed(args: Any, model: Path, out: dict[str, Any]) -> None:
    """Prefill and decode at each depth for each KV configuration; the best at 8K is used from then on."""
    out["speed"] = {}
    for name, cfg in CONFIGS.items():
        t0 = time.perf_counter()
        pts = speeds(model, settings_for(args, 32768, **cfg), args.chunk, args.decode, tuple(args.depths))
        out["speed"][name] = [p.__dict__ for p in pts]
        print(f"speed {name} ({time.perf_counter() - t0:.0f}s): {out['speed'][name]}", flush=True)
    at = 8192 if 8192 in args.depths else args.depths[-1]
    out["best"] = max(CONFIGS, key=lambda n: next(p["decode_tok_s"] for p in out["speed"][n] if p["depth"] == at))
    estimate(out)


def estimate(out: dict[str, Any]) -> None:
    """A typical exploration's seconds from the best configuration's speeds."""
    points = [Point(**p) for p in out["speed"][out["best"]]]
    opening = out.get("replay", {}).get("opening", 0)
    typical = Shape(opening=opening) if opening else Shape()
    out["estimate"] = {
        "typical_s": round(estimate_seconds(points, typical)),
        "typical_prompt": typical.prompt_evaluated,
        "typical_written": typical.written,
    }
    print(f"typical exploration estimate: {out['estimate']}", flush=True)


def part_replay(args: Any, model: Path, out: dict[str, Any]) -> None:
    """The replayed 10-turn exploration with the best configuration."""
    out["replay"] = replay(model, settings_for(args, 32768, **CONFIGS[out["best"]]))
    print(f"replayed exploration: {out['replay']['wall_s']} s", flush=True)
    estimate(out)


def part_kv(args: Any, model: Path, out: dict[str, Any]) -> None:
    """KV cache and compute buffer sizes as llama.cpp reports them, and peak RSS, per n_ctx and cache type."""
    out["kv"] = []
    for n_ctx in KV_CTX:
        for kv in ("f16", "q8_0"):
            c = child(model, settings_for(args, n_ctx, cache_type_k=kv, cache_type_v=kv, flash_attn=True), tokens=1)
            row = {
                "n_ctx": n_ctx,
                "type": kv,
                "kv_mib": mib(r"llama_kv_cache: size =\s*([\d.]+) MiB", c["log"]),
                "compute_mib": mib(COMPUTE, c["log"]),
                "rss_peak_mib": round(c["peak_mib"]),
            }
            out["kv"].append(row)
            print(f"kv {row}", flush=True)


def part_compute(args: Any, model: Path, out: dict[str, Any]) -> None:
    """llama.cpp's compute buffer at 32K without flash attention (f16 cache: a quantised V needs flash attention)."""
    c = child(model, settings_for(args, 32768, cache_type_k="f16", cache_type_v="f16", flash_attn=False), tokens=1)
    out["compute_mib_no_fa_32k"] = mib(COMPUTE, c["log"])
    print(f"compute buffer without flash attention at 32K: {out['compute_mib_no_fa_32k']} MiB", flush=True)


def part_threads(args: Any, model: Path, out: dict[str, Any]) -> None:
    """One thread against all cores, at 1K of context."""
    cfg = CONFIGS[out["best"]]
    out["threads_cmp"] = {}
    for t in sorted({1, os.cpu_count() or 1}):
        s = settings_for(args, 4096, **{**cfg, "n_threads": t, "n_threads_batch": t})
        pts = speeds(model, s, args.chunk, args.decode, (1024,))
        out["threads_cmp"][str(t)] = pts[0].__dict__
        print(f"threads {t}: {pts[0]}", flush=True)


def part_batch(args: Any, model: Path, out: dict[str, Any]) -> None:
    """Prefill of a 512-token chunk with n_batch 128 against 512."""
    cfg = CONFIGS[out["best"]]
    out["batch_cmp"] = {}
    for nb in (128, 512):
        pts = speeds(model, settings_for(args, 4096, **{**cfg, "n_batch": nb}), 512, 1, (1024,))
        out["batch_cmp"][str(nb)] = pts[0].prefill_tok_s
        print(f"n_batch {nb}: prefill {pts[0].prefill_tok_s:.1f} tok/s", flush=True)


PARTS = {
    "load": part_load,
    "speed": part_speed,
    "kv": part_kv,
    "compute": part_compute,
    "replay": part_replay,
    "threads": part_threads,
    "batch": part_batch,
}
"""In the order they run: the most wanted figures first, the JSON rewritten after each."""


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--chunk", type=int, default=128, help="prefill tokens timed at each depth (default 128)")
    ap.add_argument("--decode", type=int, default=8, help="tokens decoded at each depth (default 8)")
    ap.add_argument(
        "--depths", type=lambda s: [int(d) for d in s.split(",")], default=list(DEPTHS), help="default 1024,8192,24576"
    )
    ap.add_argument("--skip", action="append", default=[], choices=[p for p in PARTS if p != "speed"])
    ap.add_argument(
        "--only", action="append", default=[], choices=["load", "kv", "compute"], help="run only these parts"
    )
    ap.add_argument("--bandwidth-gbs", type=float, default=0.0, help="memory bandwidth to compare with (0 = measure)")
    ap.add_argument("--label", default="cpu", help="column name for this machine")
    ap.add_argument("--gpu", default="", help="the GPU, in words, when the build uses one")
    args = ap.parse_args()
    if args.model is None:
        raise SystemExit("--model: the GGUF written by benchmarks/synthetic_model.py")
    logs.configure("warning")
    model: Path = args.model.resolve()
    out: dict[str, Any] = {
        "machine": machine(args, model),
        "model": model.name,
        "model_bytes": model.stat().st_size,
        "threads": args.threads or os.cpu_count() or 1,
        "chunk": args.chunk,
        "decode": args.decode,
    }
    t_all = time.perf_counter()
    out["bandwidth_gbs"] = round(args.bandwidth_gbs or bandwidth_gbs(), 1)
    print(f"memory bandwidth {out['bandwidth_gbs']} GB/s (numpy copy, one thread)", flush=True)
    for name, part in PARTS.items():
        if name not in args.skip and (not args.only or name in args.only):
            part(args, model, out)
            out["seconds"] = round(time.perf_counter() - t_all)
            out.setdefault("loadavg", []).append(round(os.getloadavg()[0], 1))  # other work on the machine
            emit(args, out)
    print(f"done in {out['seconds']} s")


if __name__ == "__main__":
    main()
