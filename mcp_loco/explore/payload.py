"""What the calling model reads: a brief result (the report first, compact citations), the trace on request.

Claude Code hands its model `JSON.stringify(structuredContent)` and not the text content, so every field
here costs the caller's context. The brief payload stays within `1.3 x len(report) + 800` characters.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, Field

from mcp_loco.interfaces import Usage
from mcp_loco.explore.report import Citation, ExploreResult, Quote, StopReason, ToolCallRecord

Detail = Literal["brief", "full"]
BOUND_RATIO = 1.3
BOUND_EXTRA = 800


class Unverified(BaseModel):
    """A citation that did not check out, and why."""

    cite: str
    reason: str


class Citations(BaseModel):
    """The report's citations, relative to `root`: the ones that hold, and the ones that do not."""

    verified: list[str] = Field(default_factory=list, description="`path`, `path:line` or `path:start-end`")
    unverified: list[Unverified] = Field(default_factory=list)
    more: int = Field(0, description="Verified citations left out to keep this payload small")


class Quotes(BaseModel):
    """The report's code blocks checked against the files they quote, relative to `root`."""

    verified: list[str] = Field(default_factory=list, description="`path:start-end` where the code really is")
    unverified: list[Unverified] = Field(default_factory=list)


class Trace(BaseModel):
    """How the exploration went (only with detail="full")."""

    citations: list[Citation]
    quotes: list[Quote]
    files_examined: list[str]
    tool_calls: list[ToolCallRecord]
    turns: int
    escalated: bool
    usage: Usage
    elapsed_s: float
    question: str


class Answer(BaseModel):
    """The result of explore_codebase."""

    report: str = Field(description="Markdown answer with absolute paths and snippets; unverified citations marked")
    stop_reason: StopReason = Field(description="answered, or the budget that ran out: turns, context, deadline")
    root: str = Field(description="The explored directory; citations are relative to it")
    citations: Citations
    quotes: Quotes = Field(default_factory=Quotes)
    trace: Trace | None = Field(None, description='Tool calls, usage, timings, files examined (detail="full")')


def model_reads(payload: dict[str, Any]) -> str:
    """The payload as Claude Code hands it to its model (JSON.stringify: compact, Unicode kept)."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def bound(report: str) -> int:
    """The most characters the brief payload may take for a report."""
    return int(BOUND_RATIO * len(report)) + BOUND_EXTRA


def _relative(c: Citation, root: str) -> str:
    path = c.path[len(root) + 1 :] if c.path.startswith(root.rstrip("/") + "/") else c.path
    if c.line_start is None:
        return path or "."
    end = f"-{c.line_end}" if c.line_end and c.line_end != c.line_start else ""
    return f"{path}:{c.line_start}{end}"


def _quotes(result: ExploreResult) -> Quotes:
    out = Quotes()
    for q in result.quotes:
        path = q.path[len(result.root) + 1 :] if q.path.startswith(result.root.rstrip("/") + "/") else q.path
        if q.verified and q.found_at:
            out.verified.append(f"{path}:{q.found_at[0]}-{q.found_at[1]}")
        elif not q.verified:
            lines = f":{q.line_start}-{q.line_end or q.line_start}" if q.line_start else ""
            out.unverified.append(Unverified(cite=path + lines, reason=q.reason))
    return out


def answer(result: ExploreResult, detail: Detail = "brief") -> dict[str, Any]:
    """The structured content for a result: brief by default, with the trace when asked for."""
    verified = list(dict.fromkeys(_relative(c, result.root) for c in result.citations if c.verified))
    unverified = list({(_relative(c, result.root), c.reason): None for c in result.citations if not c.verified})
    citations = Citations(verified=verified, unverified=[Unverified(cite=p, reason=r) for p, r in unverified])
    out = Answer(
        report=result.report,
        stop_reason=result.stop_reason,
        root=result.root,
        citations=citations,
        quotes=_quotes(result),
    )
    if detail == "full":
        out.trace = Trace(**result.model_dump(include=set(Trace.model_fields)))
        return out.model_dump(mode="json", exclude_defaults=True)
    payload = out.model_dump(mode="json", exclude_defaults=True)
    # Many citations in a short report: keep the unverified ones (they warn), drop verified ones from the end.
    while len(model_reads(payload)) > bound(result.report) and citations.verified:
        cut = max(1, len(citations.verified) // 4)
        citations.verified, citations.more = citations.verified[:-cut], citations.more + cut
        payload = out.model_dump(mode="json", exclude_defaults=True)
    return payload
