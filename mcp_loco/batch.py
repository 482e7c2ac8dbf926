"""Batch mode: a file of `id<TAB>query` lines in, one markdown answer per query out (existing ones skipped)."""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from tqdm import tqdm

from mcp_loco.config import Settings
from mcp_loco.errors import ConfigError, LocoError
from mcp_loco.explore.agent import Explorer

log = structlog.get_logger("mcp_loco.batch")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass
class Summary:
    """What a batch run did."""

    answered: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        """One summary line."""
        return (
            f"batch: {self.answered} answered, {self.skipped} skipped (already answered), "
            f"{self.failed} failed, in {self.seconds:.1f}s"
        )


def read_queries(path: Path) -> list[tuple[str, str]]:
    """Parse `id<TAB>query` lines; blank lines and lines starting with # are skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"queries file {path}: cannot read it ({e.strerror})") from None
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        qid, tab, query = line.partition("\t")
        qid, query = qid.strip(), query.strip()
        if not tab or not query:
            raise ConfigError(f"queries file {path}, line {n}: expected id<TAB>query")
        if not _SAFE_ID.match(qid):
            raise ConfigError(f"queries file {path}, line {n}: id {qid!r} must be letters, digits, '.', '_', '-'")
        if qid in seen:
            raise ConfigError(f"queries file {path}, line {n}: id {qid!r} appears twice")
        seen.add(qid)
        out.append((qid, query))
    return out


def render_answer(qid: str, query: str, result: Any) -> str:
    """The markdown file for one answer."""
    unverified = sum(1 for c in result.citations if not c.verified)
    return (
        f"# {qid}: {query}\n\n{result.report.rstrip()}\n\n---\n"
        f"_mcp-loco: {result.turns} turns, stop: {result.stop_reason}, {len(result.citations)} citations "
        f"({unverified} unverified), {result.elapsed_s:.1f}s_\n"
    )


def run_batch(settings: Settings, root: Path, queries: Path, out: Path) -> Summary:
    """Answer every query not yet answered in `out`."""
    from mcp_loco.model.backends import load_backend

    items = read_queries(queries)
    out.mkdir(parents=True, exist_ok=True)
    todo = [(q, text) for q, text in items if not (out / f"{q}.md").exists()]
    summary = Summary(skipped=len(items) - len(todo))
    t0 = time.monotonic()
    if todo:
        model = load_backend(settings)
        explorer = Explorer(model, settings)
        try:
            for qid, query in tqdm(todo, desc="queries", unit="q", file=sys.stderr):
                try:
                    result = explorer.explore(root, query)
                except LocoError as e:
                    summary.failed += 1
                    log.error("query failed", id=qid, error=str(e))
                    continue
                target = out / f"{qid}.md"
                partial = target.with_suffix(".md.partial")
                partial.write_text(render_answer(qid, query, result), encoding="utf-8")
                partial.replace(target)  # an interrupted run never leaves a half answer that would be skipped
                summary.answered += 1
        finally:
            explorer.close()
            model.close()
    summary.seconds = time.monotonic() - t0
    return summary
