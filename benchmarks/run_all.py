"""Run every benchmark, store the figures per machine, and regenerate the results section of docs/measured.md.

    .venv/bin/python benchmarks/run_all.py [--label cpu] [--threads N] [--model GGUF] [--eval] [--no-readme | --readme-only]
    .venv/bin/python benchmarks/run_all.py --scale /work/synth/loco4b-shaped-L36-Q4_K_M.gguf [--label cpu]

Each machine's figures go to benchmarks/results/<label>.json; the docs/measured.md table has one column per
stored machine, so a GPU column appears by running this on a GPU build with another --label.
--scale GGUF runs only benchmarks/scale.py on a LocoOperator-4B-shaped GGUF (benchmarks/synthetic_model.py)
and stores its figures in benchmarks/results/scale-<label>.json (docs/measured.md's "LocoOperator-4B-shaped" part).
Quality figures come from benchmarks/results/eval-<label>.json (written by --eval, which runs
`mcp-loco eval --ablate`; slow on a CPU, so the stored file is reused when --eval is not given).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from _common import default_model
from readme import render_section, replace_section

HERE = Path(__file__).resolve().parent
README = HERE.parent / "docs" / "measured.md"
RESULTS = HERE / "results"
PY = sys.executable


def machine(args: argparse.Namespace, model: Path) -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor() or "unknown CPU",
    )
    mem_kib = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )
    return {
        "label": args.label,
        "date": datetime.date.today().isoformat(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kib / 1024**2, 1),
        "threads": args.threads or os.cpu_count(),
        "llama_cpp_python": metadata.version("llama_cpp_python"),
        "model": model.name,
        "model_mib": round(model.stat().st_size / 1024**2, 1),
        "gpu": args.gpu,
    }


def run(script: str, *argv: str) -> tuple[str, float]:
    """Run one benchmark script, echoing its output as it comes; return the output and seconds."""
    print(f"\n=== {script} {' '.join(argv)}", flush=True)
    started = time.perf_counter()
    # stderr goes to a file, so a chatty script cannot fill a pipe while its stdout is being read.
    with (
        tempfile.TemporaryFile("w+") as err,
        subprocess.Popen(
            [PY, str(HERE / script), *argv], stdout=subprocess.PIPE, stderr=err, text=True, cwd=HERE.parent
        ) as proc,
    ):
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            print(line, end="", flush=True)
            lines.append(line)
        proc.wait()
        err.seek(0)
        stderr = err.read()
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        print(stderr, file=sys.stderr)
        raise SystemExit(f"{script} failed with exit code {proc.returncode}")
    return "".join(lines), seconds


def with_json(script: str, *argv: str) -> tuple[dict[str, Any], float]:
    """Run a script that writes its figures with --json."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "figures.json"
        _, seconds = run(script, *argv, "--json", str(out))
        return json.loads(out.read_text()), seconds


def number(pattern: str, text: str) -> float:
    m = re.search(pattern, text)
    if m is None:
        raise SystemExit(f"benchmark output changed: no match for {pattern!r}")
    return float(m.group(1))


def parse_grammar(text: str) -> dict[str, Any]:
    """Figures printed by benchmarks/grammar.py."""
    return {
        "free_tok_s": number(r"free text\s+([\d.]+) tok/s", text),
        "lazy_ratio": number(r"lazy/free\s*=\s*([\d.]+)", text),
        "forced_ratio": number(r"forced/free\s*=\s*([\d.]+)", text),
        "cancel_ms": number(r"cancel latency\s+median (\d+) ms", text),
    }


def parse_tools(text: str) -> dict[str, Any]:
    """Figures printed by benchmarks/tools.py: ours / raw rg per case."""
    rows = re.findall(r"^(.+?)\s+([\d.]+)ms\s+([\d.]+)ms\s+([\d.]+)x\s+([\d.]+)ms\s+([\d.]+)x$", text, re.M)
    if not rows:
        raise SystemExit("benchmark output changed: no rows from tools.py")
    ratios = [float(r[3]) for r in rows]
    return {
        "cases": len(rows),
        "median_ratio": round(statistics.median(ratios), 2),
        "max_ratio": max(ratios),
        "rows": [
            {"case": r[0].strip(), "raw_ms": float(r[1]), "ours_ms": float(r[2]), "ratio": float(r[3])} for r in rows
        ],
    }


def parse_task_cache(text: str) -> dict[str, Any]:
    """Figures printed by benchmarks/task_cache.py: tokens evaluated and time vs no Task, per row."""
    out: dict[str, Any] = {}
    for key, label in [
        ("ideal", r"no Task \(ideal\)"),
        ("lost", "Task, cache lost"),
        ("restored", "Task, state restored"),
    ]:
        m = re.search(label + r"\s+([\d.]+)\s+[\d.]+\s+([\d.]+)x", text)
        if m is None:
            raise SystemExit(f"benchmark output changed: no {key!r} row from task_cache.py")
        out[f"evaluated_{key}"], out[f"{key}_ratio"] = float(m.group(1)), float(m.group(2))
    return out


def run_eval(args: argparse.Namespace, model: Path, out: Path) -> None:
    """The quality figures: every eval set, every scaffolding variant."""
    cmd = [str(Path(PY).parent / "mcp-loco"), "eval", "--ablate", "--model", str(model), "--out", str(out)]
    cmd += ["--set", f"llama.n_threads={args.threads}", "--set", f"llama.n_threads_batch={args.threads}"]
    cmd += ["--set", "llama.n_ctx=8192", "--set", f"model.max_tokens={args.eval_max_tokens}"]
    cmd += ["--max-turns", str(args.eval_max_turns), "--log-level", "warning"]
    print(f"\n=== {' '.join(cmd)}", flush=True)
    subprocess.run(cmd, check=True)


def measure(args: argparse.Namespace, model: Path) -> None:
    """Run the speed benchmarks and store their figures in benchmarks/results/<label>.json."""
    common = ["--model", str(model), "--threads", str(args.threads)]
    started = time.perf_counter()
    figures: dict[str, Any] = {"machine": machine(args, model), "seconds": {}}
    for name, script, extra in [
        ("prefix_reuse", "prefix_reuse.py", ["--repeat", "1"]),
        ("decode_speed", "decode_speed.py", ["--repeat", "3"]),
        ("loop_overhead", "loop_overhead.py", ["--repeat", "1"]),
        ("memory", "memory.py", []),
        ("speculative", "speculative.py", ["--repeat", "3"]),
    ]:
        figures[name], figures["seconds"][name] = with_json(script, *common, *extra)
    out, figures["seconds"]["grammar"] = run("grammar.py", *common, "--repeat", "3")
    figures["grammar"] = parse_grammar(out)
    out, figures["seconds"]["tools"] = run("tools.py", "--repeat", "5")
    figures["tools"] = parse_tools(out)
    out, figures["seconds"]["task_cache"] = run("task_cache.py", "--model", str(model))
    figures["task_cache"] = parse_task_cache(out)
    figures["seconds"]["total"] = round(time.perf_counter() - started, 1)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{args.label}.json"
    path.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {path} ({figures['seconds']['total']:.0f}s)")


def measure_scale(args: argparse.Namespace, model: Path) -> None:
    """Run benchmarks/scale.py; it rewrites benchmarks/results/scale-<label>.json after each of its parts."""
    extra = ["--bandwidth-gbs", str(args.bandwidth_gbs)] if args.bandwidth_gbs else []
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"scale-{args.label}.json"
    argv = ["--model", str(model), "--threads", str(args.threads), "--label", args.label, "--gpu", args.gpu]
    _, seconds = run("scale.py", *argv, *extra, "--json", str(path))
    print(f"\nwrote {path} ({seconds:.0f}s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--label", default="cpu", help="column name for this machine (e.g. cpu, gpu-h100)")
    ap.add_argument("--gpu", default="", help="the GPU, in words, when the build uses one")
    ap.add_argument("--threads", type=int, default=0, help="llama.cpp threads (0 = all cores)")
    ap.add_argument("--model", type=Path, default=None, help="GGUF file (default: SmolLM2-135M)")
    ap.add_argument("--eval", action="store_true", help="also run `mcp-loco eval --ablate` (slow on a CPU)")
    ap.add_argument("--eval-max-tokens", type=int, default=512, help="model.max_tokens for --eval (default 512)")
    ap.add_argument("--eval-max-turns", type=int, default=10, help="turns per exploration for --eval (default 10)")
    ap.add_argument("--no-readme", action="store_true", help="do not touch docs/measured.md")
    only = ap.add_mutually_exclusive_group()
    only.add_argument(
        "--readme-only", action="store_true", help="only regenerate docs/measured.md from the stored results"
    )
    only.add_argument("--eval-only", action="store_true", help="only run the eval (and regenerate docs/measured.md)")
    only.add_argument("--scale", type=Path, metavar="GGUF", help="only run scale.py on a 4B-shaped GGUF")
    ap.add_argument("--bandwidth-gbs", type=float, default=0.0, help="--scale: memory bandwidth (0 = measure)")
    args = ap.parse_args()
    if args.scale is not None:
        measure_scale(args, args.scale.resolve())
    elif not args.readme_only:
        model = (args.model or default_model()).resolve()
        if not args.eval_only:
            measure(args, model)
        if args.eval or args.eval_only:
            run_eval(args, model, RESULTS / f"eval-{args.label}.json")
    if not args.no_readme:
        replace_section(README, render_section(RESULTS))
        print(f"regenerated the results section of {README}")


if __name__ == "__main__":
    main()
