"""Batch throughput at --parallel 1/2/4/8, as ratios against --parallel 1 measured in the same run.

    .venv/bin/python benchmarks/batch_scale.py [--latency 0.5] [--queries 16] [--real-queries 8] [--levels 1,2,4,8]

Two engines, each run through `run_batch` exactly as `mcp-loco batch` runs it (a fresh --out per run):
  scripted  an OpenAI-compatible endpoint on 127.0.0.1 answering every request after a fixed latency
            (benchmarks/scripted_endpoint.py): what the scheduling alone achieves. Ideal: N times the
            throughput at --parallel N, while N <= the queries. It also prints the most requests the
            endpoint had in flight at once.
  real      two `llama_cpp.server` processes serving SmolLM2-135M (one thread each), as `--endpoint`s:
            each serves one request at a time, so at most 2 explorations generate at once, and on a
            2-core machine the two servers already share every core: beyond 2 the CPU is the limit.
            Short explorations (max_turns 1, 64 tokens a turn) keep the run to minutes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import ROOT, default_model

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from batch_helpers import LlamaServer, ScriptedEndpoint, index_lines, overlapping  # the tests' own helpers

from mcp_loco import logs
from mcp_loco.batch import run_batch
from mcp_loco.config import Settings

QUESTIONS = [
    "Where are the settings loaded and in what order?",
    "How does the sandbox stop a path from escaping the root?",
    "Which module renders the ChatML prompt?",
    "Where is the tool-call grammar built?",
    "How does the server queue calls when every model is busy?",
    "Where are cited paths checked against the disk?",
    "How does the HTTP backend pick an endpoint for a conversation?",
    "Where does batch write its answers?",
]


def write_queries(path: Path, n: int) -> Path:
    """`n` queries about this project's source (the questions repeat with new ids)."""
    path.write_text("".join(f"b{i:02d}\t{QUESTIONS[i % len(QUESTIONS)]}\n" for i in range(n)))
    return path


def one_run(settings: Settings, queries: Path, parallel: int, work: Path) -> dict[str, Any]:
    """One batch run into a fresh --out: seconds, answered, failed, explorations at once."""
    out = Path(tempfile.mkdtemp(prefix=f"p{parallel}-", dir=work))
    t0 = time.perf_counter()
    summary = run_batch(settings, ROOT, queries, out, parallel=parallel, show_progress=False)
    seconds = time.perf_counter() - t0
    records = index_lines(out)
    return {
        "parallel": parallel,
        "seconds": round(seconds, 2),
        "answered": summary.answered,
        "failed": summary.failed,
        "explorations_at_once": overlapping(records),
    }


def table(name: str, rows: list[dict[str, Any]], queries: int) -> None:
    """Print one engine's rows with throughput and the ratio against --parallel 1."""
    base = rows[0]["seconds"]
    print(f"\n{name}: {queries} queries")
    print(
        "parallel  seconds  queries/min  x parallel 1  at once  "
        + ("max requests in flight" if "in_flight" in rows[0] else "")
    )
    for r in rows:
        qpm = 60 * r["answered"] / r["seconds"] if r["seconds"] else 0.0
        r["queries_per_min"], r["ratio"] = round(qpm, 1), round(base / r["seconds"], 2)
        extra = f"  {r['in_flight']}" if "in_flight" in r else ""
        print(
            f"{r['parallel']:>8}  {r['seconds']:>7.1f}  {qpm:>11.1f}  {r['ratio']:>11.2f}x  {r['explorations_at_once']:>7}"
            f"{extra}   ({r['answered']} answered, {r['failed']} failed)"
        )


def scripted(levels: list[int], n: int, latency: float, work: Path) -> list[dict[str, Any]]:
    """The fixed-latency endpoint at each level."""
    queries = write_queries(work / "scripted.txt", n)
    rows = []
    with ScriptedEndpoint(latency) as ep:
        settings = Settings()
        settings.model.backend = "http"
        settings.http.endpoints = [ep.url]
        for p in levels:
            ep.reset()
            row = one_run(settings, queries, p, work)
            row["in_flight"] = ep.max_in_flight
            row["requests"] = ep.requests
            rows.append(row)
    return rows


def real(levels: list[int], n: int, model: Path, work: Path) -> list[dict[str, Any]]:
    """Two real llama_cpp.server processes at each level."""
    queries = write_queries(work / "real.txt", n)
    servers = [LlamaServer(model) for _ in range(2)]
    try:
        for s in servers:
            s.wait_ready()
        settings = Settings()
        settings.model.backend = "http"
        settings.http.endpoints = [s.url for s in servers]
        settings.http.n_ctx = 4096
        settings.model.temperature = 0.0
        settings.model.max_tokens = 64
        settings.agent.max_turns = 1
        settings.agent.task_depth = 0
        settings.agent.deadline_s = 300
        one_run(settings, write_queries(work / "warm.txt", 2), 2, work)  # both servers cache the system prompt
        return [one_run(settings, queries, p, work) for p in levels]
    finally:
        for s in servers:
            s.stop()


def main() -> None:
    """Measure both engines and print the tables (and the figures as JSON with --json)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latency", type=float, default=0.5, help="seconds per request of the scripted endpoint")
    ap.add_argument("--queries", type=int, default=16, help="queries per scripted run")
    ap.add_argument("--real-queries", type=int, default=8, help="queries per real-server run (0: skip)")
    ap.add_argument("--levels", default="1,2,4,8", help="--parallel values, the first is the baseline")
    ap.add_argument("--model", type=Path, default=None, help="GGUF for the servers (default: SmolLM2-135M)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    logs.configure("error", False)
    levels = [int(x) for x in args.levels.split(",")]
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="batch-scale-") as tmp:
        work = Path(tmp)
        figures["scripted"] = scripted(levels, args.queries, args.latency, work)
        table(f"scripted endpoint, {args.latency:g} s per request", figures["scripted"], args.queries)
        if args.real_queries:
            figures["real"] = real(levels, args.real_queries, args.model or default_model(), work)
            table("two llama_cpp.server processes, SmolLM2-135M, 1 thread each", figures["real"], args.real_queries)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
