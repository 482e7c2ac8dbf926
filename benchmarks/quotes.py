"""The quote check on a report of 50 code blocks over 100 shown files of this project, against two baselines.

Run: .venv/bin/python benchmarks/quotes.py [--repeat N] [--json FILE]
Prints the median wall and CPU time of `check_quotes` (its file reads through the sandbox included)
beside reading the same files through the sandbox alone and the citation check of the same report,
measured interleaved in the same run, and the ratios (target: under 50 ms).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from mcp_loco.explore.quotes import check_quotes
from mcp_loco.explore.report import check_report
from mcp_loco.sandbox import Toolbox, path_oracle

REPO = Path(__file__).resolve().parent.parent
TARGET_MS = 50.0
KINDS = ["right"] * 20 + ["moved"] * 10 + ["invented"] * 8 + ["elided"] * 6 + ["unattributed"] * 6


def shown_files(root: str, n: int = 100) -> list[str]:
    """The first `n` Python and markdown files of 20+ lines in the package, tests, benchmarks and configs."""
    dirs = ("mcp_loco", "tests", "benchmarks", "configs")
    files = sorted(str(p) for d in dirs for ext in ("py", "md") for p in (Path(root) / d).rglob(f"*.{ext}"))
    files = [f for f in files if len(Path(f).read_text(encoding="utf-8").splitlines()) >= 20]
    if len(files) < n:
        raise SystemExit(f"only {len(files)} files of 20+ lines under {root}; expected {n}")
    return files[:n]


def build_report(files: list[str]) -> str:
    """50 blocks: right quotes, quotes at the wrong lines, invented ones, elided ones, and unattributed ones."""
    rng = random.Random(13)
    parts = ["The answer, with the code:"]
    for i, kind in enumerate(KINDS):
        path = files[(i * 37) % len(files)]
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        while True:  # a span with no fence of its own (the tests hold markdown)
            start = rng.randint(1, len(lines) - 10)
            end = start + rng.randint(3, 9)
            body = lines[start - 1 : end]
            if not any(mark in line for line in body for mark in ("```", "~~~")) and any(body):
                break
        cite = f"{path}:{start}-{end}"
        if kind == "moved":
            cite = f"{path}:{start + 3}-{end + 3}"
        elif kind == "invented":
            body[len(body) // 2] += " and_invented_token"
        elif kind == "elided":
            body = [f"{start + k:>6}\t{line}" for k, line in enumerate(body)]
            body[2:-2] = ["    ..."]
        code = "\n".join(body)
        lead = "A helper follows." if kind == "unattributed" else f"Block {i} is in {cite}:"
        parts.append(f"{lead}\n\n```python\n{code}\n```")
    return "\n\n".join(parts) + "\n"


def main() -> None:
    """Measure interleaved, print a table, check the target."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=21, help="runs of each side (medians are reported)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    tools = Toolbox(REPO)
    oracle = path_oracle(tools)
    files = shown_files(tools.root)
    report = build_report(files)

    def quotes() -> object:
        return check_quotes(report, tools.root, files, oracle.text)

    def reads() -> object:
        return [oracle.text(f) for f in files]

    def citations() -> object:
        return check_report(report, tools.root, oracle, files)

    cases: dict[str, Callable[[], object]] = {"quotes": quotes, "reads": reads, "citations": citations}
    wall: dict[str, list[float]] = {name: [] for name in cases}
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    for fn in cases.values():
        fn()  # warm-up: imports, the page cache
    for _ in range(args.repeat):  # interleaved, so a busy spell on a shared machine hits every side alike
        for name, fn in cases.items():
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(time.process_time() - c0)
    ms = {name: 1000 * statistics.median(t) for name, t in wall.items()}
    cpu_ms = {name: 1000 * statistics.median(t) for name, t in cpu.items()}
    _, found = check_quotes(report, tools.root, files, oracle.text)
    verified = sum(q.verified for q in found)
    moved = sum(q.moved for q in found)
    print(f"report: {report.count('```') // 2} blocks, {len(report)} characters; shown: {len(files)} files")
    print(f"quotes: {len(found)} ({verified} verified, {moved} of them moved); repeat: {args.repeat} (medians)")
    print("(CPU = this process's CPU time: on cores shared with other work, wall time also holds the waits)\n")
    print(f"{'case':46} {'wall':>8} {'ratio':>6} {'CPU':>8} {'ratio':>6}")
    rows = [
        ("check_quotes (reads through the sandbox incl.)", "quotes"),
        ("baseline: reading the 100 files alone", "reads"),
        ("baseline: check_report (citations)", "citations"),
    ]
    for title, name in rows:
        ratios = "" if name == "quotes" else f"{ms['quotes'] / ms[name]:5.2f}x"
        cpu_ratio = "" if name == "quotes" else f"{cpu_ms['quotes'] / cpu_ms[name]:5.2f}x"
        print(f"{title:46} {ms[name]:6.1f}ms {ratios:>6} {cpu_ms[name]:6.1f}ms {cpu_ratio:>6}")
    ok = ms["quotes"] < TARGET_MS
    print(f"\ntarget: under {TARGET_MS:.0f} ms wall: {'met' if ok else 'MISSED'}")
    if args.json is not None:
        figures = {"wall_ms": ms, "cpu_ms": cpu_ms, "quotes": len(found), "verified": verified, "moved": moved}
        args.json.write_text(json.dumps({**figures, "target_met": ok}, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
