"""Helpers for the batch tests: the scripted endpoint, a batch process, a queries file, the index."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from server_helpers import BIN

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from llama_server import LlamaServer
from scripted_endpoint import FAIL, ScriptedEndpoint

__all__ = [
    "FAIL",
    "LlamaServer",
    "ScriptedEndpoint",
    "batch",
    "batch_args",
    "clean_env",
    "index_lines",
    "overlapping",
    "write_queries",
]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without MCP_LOCO_ settings of the developer's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_LOCO_")}
    return {**env, **extra}


def write_queries(path: Path, n: int, prefix: str = "q") -> Path:
    """A queries file of `n` queries, ids q01, q02, ..."""
    path.write_text("".join(f"{prefix}{i:02d}\tWhere is thing number {i} defined?\n" for i in range(1, n + 1)))
    return path


def batch_args(root: Path, queries: Path, out: Path, *extra: str) -> list[str]:
    """The command line of a batch run."""
    return [str(BIN), "batch", "--root", str(root), "--queries", str(queries), "--out", str(out), *extra]


def batch(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `mcp-loco ARGS` (a real process) and wait for it."""
    return subprocess.run(
        [str(BIN), *args], capture_output=True, text=True, env=clean_env(), timeout=timeout, check=False
    )


def index_lines(out: Path) -> list[dict[str, Any]]:
    """The records of `out`/index.jsonl (each line must be whole JSON)."""
    path = out / "index.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def overlapping(records: list[dict[str, Any]]) -> int:
    """The most explorations whose [started, ended] spans overlap at one moment."""
    events = sorted([(r["started"], 1) for r in records] + [(r["ended"], -1) for r in records])
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most
