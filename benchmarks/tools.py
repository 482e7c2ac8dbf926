"""Grep and Glob on the standard library tree against raw ripgrep with the same flags, side by side.

Run: .venv/bin/python benchmarks/tools.py [--repeat N] [--root DIR]
Prints the median wall time of each and the ratio (target: within 1.3x of raw rg).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sysconfig
import time
from collections.abc import Callable

from mcp_loco.config import ToolSettings
from mcp_loco.sandbox import Toolbox
from mcp_loco.sandbox.ripgrep import find_rg

BASE = ["--no-config", "--no-require-git", "--hidden", "--glob=!.git", "--color=never"]


def median_seconds(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time of `fn` over `repeat` runs (after one warm-up run)."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    """Run every case and print a table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--root", default=sysconfig.get_paths()["stdlib"])
    args = parser.parse_args()
    rg = find_rg("")
    root = args.root
    boxes = {"landlock": Toolbox(root, ToolSettings()), "plain": Toolbox(root, ToolSettings(landlock=False))}

    def raw(flags: list[str]) -> Callable[[], object]:
        return lambda: subprocess.run([rg, *BASE, *flags, "--", root], capture_output=True, check=False)

    cases: list[tuple[str, str, dict[str, object], list[str]]] = [
        (
            "Grep files_with_matches 'def dataclass'",
            "Grep",
            {"pattern": "def dataclass"},
            ["--files-with-matches", "-e", "def dataclass"],
        ),
        (
            "Grep content 'def dataclass' -n",
            "Grep",
            {"pattern": "def dataclass", "output_mode": "content"},
            ["--line-number", "-e", "def dataclass"],
        ),
        (
            "Grep content 'class \\w+Error' -n",
            "Grep",
            {"pattern": r"class \w+Error", "output_mode": "content"},
            ["--line-number", "-e", r"class \w+Error"],
        ),
        (
            "Grep files_with_matches 'import' (many files)",
            "Grep",
            {"pattern": "import"},
            ["--files-with-matches", "-e", "import"],
        ),
        # Two baselines for Glob: `--glob` is what a naive wrapper passes, but a whitelist glob overrides
        # .gitignore (ignored files that match come back); a type filter is the gitignore-correct equivalent
        # of what Glob runs (then it matches the full pattern, stats and sorts by mtime in Python).
        ("Glob '**/*.py' vs rg --glob", "Glob", {"pattern": "**/*.py"}, ["--files", "--glob=*.py"]),
        ("Glob '**/*.py' vs rg --type", "Glob", {"pattern": "**/*.py"}, ["--files", "--type-add=g:*.py", "--type=g"]),
        ("Glob '**/json/*.py' vs rg --glob", "Glob", {"pattern": "**/json/*.py"}, ["--files", "--glob=**/json/*.py"]),
        (
            "Glob '**/json/*.py' vs rg --type",
            "Glob",
            {"pattern": "**/json/*.py"},
            ["--files", "--type-add=g:*.py", "--type=g"],
        ),
    ]
    print(f"root: {root}\nrg: {rg}\nrepeat: {args.repeat} (median of each)\n")
    print(f"{'case':48} {'raw rg':>9} {'ours':>9} {'ratio':>6} {'ours, no landlock':>18} {'ratio':>6}")
    print("(ours = Grep: two rg passes, the second over descriptors; Landlock on where the kernel has it)")
    for title, tool, arguments, flags in cases:
        raw_s = median_seconds(raw(flags), args.repeat)
        ours = median_seconds(lambda t=tool, a=arguments: boxes["landlock"].call(t, a), args.repeat)
        plain = median_seconds(lambda t=tool, a=arguments: boxes["plain"].call(t, a), args.repeat)
        print(
            f"{title:48} {raw_s * 1000:8.1f}ms {ours * 1000:8.1f}ms {ours / raw_s:5.2f}x "
            f"{plain * 1000:17.1f}ms {plain / raw_s:5.2f}x"
        )


if __name__ == "__main__":
    main()
