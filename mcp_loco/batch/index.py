"""`index.jsonl`: one JSON line per query as it ends (answered or failed), and the totals read back from it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from mcp_loco.explore.report import ExploreResult


def answer_record(
    qid: str, query: str, result: ExploreResult, *, started: float, ended: float, endpoint: str
) -> dict[str, Any]:
    """The index line of an answered query."""
    return {
        "id": qid,
        "query": query,
        "status": "answered",
        "stop_reason": result.stop_reason,
        "turns": result.turns,
        "citations": {
            "verified": [c.text for c in result.citations if c.verified],
            "unverified": [{"cite": c.text, "reason": c.reason} for c in result.citations if not c.verified],
        },
        "quotes": {
            "verified": sum(1 for q in result.quotes if q.verified),
            "unverified": sum(1 for q in result.quotes if not q.verified),
        },
        "usage": result.usage.model_dump(),
        "seconds": round(ended - started, 3),
        "started": round(started, 3),
        "ended": round(ended, 3),
        "endpoint": endpoint,
    }


def failure_record(qid: str, query: str, error: str, *, started: float, ended: float, endpoint: str) -> dict[str, Any]:
    """The index line of a query that failed (it is tried again by the next run)."""
    return {
        "id": qid,
        "query": query,
        "status": "failed",
        "error": error,
        "seconds": round(ended - started, 3),
        "started": round(started, 3),
        "ended": round(ended, 3),
        "endpoint": endpoint,
    }


def line(record: dict[str, Any]) -> str:
    """One index line: compact JSON, non-ASCII kept readable."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


@dataclass
class Totals:
    """What an answers folder's index adds up to."""

    answered: int = 0
    failed: int = 0
    verified: int = 0
    unverified: int = 0
    prompt_tokens: int = 0
    prompt_tokens_evaluated: int = 0
    completion_tokens: int = 0
    wall_s: float = 0.0
    explore_s: float = 0.0
    unreadable: int = 0
    endpoints: dict[str, int] = field(default_factory=dict)

    def text(self) -> str:
        """The totals as a few lines for people."""
        cited = self.verified + self.unverified
        share = f"{100 * self.verified / cited:.0f}%" if cited else "n/a"
        lines = [
            f"answered: {self.answered}",
            f"failed: {self.failed}",
            f"verified citations: {self.verified} of {cited} ({share})",
            f"tokens: {self.prompt_tokens:,} prompt ({self.prompt_tokens_evaluated:,} evaluated), "
            f"{self.completion_tokens:,} completion",
            f"wall time: {self.wall_s:.1f} s (explorations added up: {self.explore_s:.1f} s)",
        ]
        if self.endpoints:
            lines.append("endpoints: " + ", ".join(f"{k} {v}" for k, v in sorted(self.endpoints.items())))
        if self.unreadable:
            lines.append(f"unreadable index lines skipped: {self.unreadable}")
        return "\n".join(lines)


def _records(text: str) -> tuple[list[dict[str, Any]], int]:
    records, bad = [], 0
    for raw in text.splitlines():
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(rec, dict) and isinstance(rec.get("id"), str):
            records.append(rec)
        else:
            bad += 1
    return records, bad


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _union_seconds(spans: list[tuple[float, float]]) -> float:
    """Seconds covered by at least one span (explorations at once count once)."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(spans):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def totals(text: str) -> Totals:
    """Add up an index: a query counts by its latest line; tokens and time count every line (all were spent)."""
    records, bad = _records(text)
    t = Totals(unreadable=bad)
    latest: dict[str, dict[str, Any]] = {}
    spans: list[tuple[float, float]] = []
    for rec in records:
        latest[rec["id"]] = rec
        usage = _dict(rec.get("usage"))
        t.prompt_tokens += int(_num(usage.get("prompt_tokens")))
        t.prompt_tokens_evaluated += int(_num(usage.get("prompt_tokens_evaluated")))
        t.completion_tokens += int(_num(usage.get("completion_tokens")))
        t.explore_s += _num(rec.get("seconds"))
        start, end = _num(rec.get("started")), _num(rec.get("ended"))
        if 0 < start <= end:
            spans.append((start, end))
    for rec in latest.values():
        if rec.get("status") == "answered":
            t.answered += 1
            cites = _dict(rec.get("citations"))
            t.verified += len(cites.get("verified") or [])
            t.unverified += len(cites.get("unverified") or [])
            endpoint = str(rec.get("endpoint") or "?")
            t.endpoints[endpoint] = t.endpoints.get(endpoint, 0) + 1
        else:
            t.failed += 1
    t.wall_s = _union_seconds(spans)
    return t
