"""What an exploration gets done in 50, 100 and 300 s on each kind of machine: the budget simulator.

    .venv/bin/python benchmarks/budget_sim.py [--budgets 50 100 300] [--markdown] [--json FILE]

Runs the real explorer (real tools on this project's tree, the loop's own budgeting) over the recorded
typical session of mcp_loco/explore/simulate.py with a model stand-in whose prompt evaluation and writing
take what a speed profile says, on a virtual clock: each run takes well under a second. The profiles are
published Qwen3-4B Q4_K_M llama.cpp figures (sources in mcp_loco/model/speed.py PROFILES and printed
below) and this project's own 2-core measurement at the 4B shape. Tool time is not charged.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mcp_loco import logs
from mcp_loco.explore.simulate import simulate
from mcp_loco.model.speed import PROFILES


def cell(r: dict[str, Any]) -> str:
    """One simulated exploration in a few words."""
    if r["stop_reason"] == "refused":
        return "refused at once (the question alone outlasts the budget)"
    turns = f"{r['turns']} tool turn{'s' if r['turns'] != 1 else ''}"
    report = f"{r['report_tokens']:,}-token report" if r["by_model"] else "NO model report"
    return f"{turns}, {r['tokens_read']:,} tokens read, {report}, ended at {r['wall_s']:.0f} s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budgets", type=float, nargs="+", default=[50.0, 100.0, 300.0])
    ap.add_argument("--markdown", action="store_true", help="print the table of docs/tool.md")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    logs.configure("error")
    started = time.perf_counter()
    rows = []
    for profile in PROFILES:
        for budget in args.budgets:
            sim = simulate(profile.speed(), budget)
            rows.append({"profile": profile.name, "label": profile.label, **asdict(sim)})
    took = time.perf_counter() - started
    if args.markdown:  # one row per machine, one cell per budget
        print(
            "| machine (prefill / decode tok/s, short context) | "
            + " | ".join(f"{b:.0f} s" for b in args.budgets)
            + " |"
        )
        print("|:---|" + ":---|" * len(args.budgets))
        for profile in PROFILES:
            short = min(profile.points, key=lambda p: p.depth)
            cells = [cell(r) for r in rows if r["profile"] == profile.name]
            head = f"{profile.label} ({short.prefill_tok_s:,g} / {short.decode_tok_s:,g})"
            print(f"| {head} | " + " | ".join(cells) + " |")
    else:
        print(f"{'profile':18} {'budget':>7} {'turns':>6} {'read':>7} {'report':>7} {'wall':>7}  by model  stop")
        for r in rows:
            print(
                f"{r['profile']:18} {r['budget_s']:6.0f}s {r['turns']:6d} {r['tokens_read']:7d} {r['report_tokens']:7d} "
                f"{r['wall_s']:6.1f}s  {'yes' if r['by_model'] else 'NO ':3}       {r['stop_reason']}"
            )
    print(f"\n{len(rows)} simulated explorations in {took:.1f} s of real time. Sources:")
    for profile in PROFILES:
        points = ", ".join(f"{p.prefill_tok_s:g} / {p.decode_tok_s:g} at {p.depth}" for p in profile.points)
        print(f"- {profile.name} ({points} tokens of context): {profile.source}")
    if args.json is not None:
        args.json.write_text(json.dumps({"rows": rows, "seconds": round(took, 1)}, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
