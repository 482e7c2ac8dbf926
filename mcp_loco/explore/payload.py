"""What the calling model reads: a brief result (the report first, compact citations), the trace on request.

Clients hand a tool result to their model in different ways (`Reading`): Claude Code and VS Code pass
`JSON.stringify(structuredContent)` only, Codex the same JSON behind a "Wall time" line, Gemini CLI, Qwen
Code and opencode the text only, Copilot CLI the text and then the JSON. Whichever it is, what the model
reads stays within `1.3 x len(report) + 800` characters, and a long report is cut (its verified citations
kept) to what the strictest client passes on.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, Field

from mcp_loco.explore.report import Citation, ExploreResult, Quote, StopReason, ToolCallRecord
from mcp_loco.interfaces import Usage

Detail = Literal["brief", "full"]
Reading = Literal["structured", "text", "both", "codex"]
"""How a client hands a result to its model: the structured content's JSON, the text, the text then the JSON
(Copilot CLI), or the JSON behind Codex's "Wall time ... Output:" header."""
BOUND_RATIO = 1.3
BOUND_EXTRA = 800
POINTER = "The report and its checked citations are in the structured result below."
"""The text for clients that read both text and structured content: the report is not said twice."""
CODEX_HEADER = "Wall time: {seconds:.4f} seconds\nOutput:\n"
READS_MAX: dict[Reading, int] = {"codex": 12_000}
"""UTF-8 bytes a client passes on to its model at most (Codex CLI, for a model it does not know); the
report is cut further where the escaped JSON would pass this."""


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


def model_reads(
    payload: dict[str, Any], reading: Reading = "structured", text: str = "", seconds: float = 100.0
) -> str:
    """What a client's model reads of a result (its text and structured content), as that client renders it."""
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))  # JSON.stringify: compact, Unicode kept
    if reading == "text":
        return text
    if reading == "both":
        return f"{text}\n\n{data}"
    if reading == "codex":
        return CODEX_HEADER.format(seconds=seconds) + data
    return data


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


def answer(
    result: ExploreResult, detail: Detail = "brief", reading: Reading = "structured", text: str = ""
) -> dict[str, Any]:
    """The structured content for a result: brief by default (bounded as `reading` reads it), the trace on request."""
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
    while len(model_reads(payload, reading, text)) > bound(result.report) and citations.verified:
        cut = max(1, len(citations.verified) // 4)
        citations.verified, citations.more = citations.verified[:-cut], citations.more + cut
        payload = out.model_dump(mode="json", exclude_defaults=True)
    return payload


def present(
    result: ExploreResult, detail: Detail = "brief", reading: Reading | None = None, max_chars: int | None = None
) -> tuple[str, dict[str, Any]]:
    """The text content and structured content for a client that reads results as `reading` (None: unknown).

    A client that reads both gets a one-line pointer as text, so its model reads the report once; every
    other client (an unknown one included) gets the report as text, which text-only clients need. The
    report is cut to `max_chars` (fit_report), and further where the client passes on less (READS_MAX).
    """
    cap = max_chars if max_chars is not None else len(result.report)
    while True:
        fitted = result.model_copy(update={"report": fit_report(result.report, result.citations, cap)})
        text = POINTER if reading == "both" else fitted.report
        payload = answer(fitted, detail, reading or "structured", text)
        limit = READS_MAX.get(reading) if reading is not None and detail == "brief" else None
        over = 0 if limit is None else len(model_reads(payload, reading or "structured", text).encode()) - limit
        if over <= 0 or cap <= MIN_CAP:
            return text, payload
        cap = max(MIN_CAP, min(len(fitted.report), cap) - over)


MIN_CAP = 1000
"""The report is never cut shorter than this for a client's limit."""


def fit_report(report: str, citations: list[Citation], max_chars: int) -> str:
    """Cut a report longer than `max_chars` at a paragraph boundary, keeping its verified citations.

    The verified citations the cut removed follow as a "Sources" list, and a last line says the report
    was cut and how long it was, so a client that cuts long output never drops the part that matters.
    """
    if len(report) <= max_chars:
        return report
    note = (
        f"\n\n[report cut to fit every client: it was {len(report):,} characters, this is at most "
        f"{max_chars:,}; ask a narrower question for the rest]"
    )
    cited = list(dict.fromkeys(c.text for c in citations if c.verified))
    budget = max_chars - len(note)
    while True:
        kept = _cut_at_boundary(report, budget)
        # The whole list if it fits the cap at all: the report's text gives way to it.
        sources = _sources([c for c in cited if c not in kept], max_chars - len(note))
        over = len(kept) + len(sources) + len(note) - max_chars
        if over <= 0 or not kept:
            return kept + sources + note
        budget = min(budget - 1, len(kept) - over)  # strictly smaller: the loop ends


def _cut_at_boundary(text: str, limit: int) -> str:
    """The longest prefix within `limit` characters ending at a paragraph (else line, else word) boundary, fences closed."""
    if limit <= 0:
        return ""
    head = text[: limit + 1]  # one more: a boundary just after the limit still counts
    for sep in ("\n\n", "\n", " "):
        at = head.rfind(sep)
        if at > limit // 2 or (sep == " " and at >= 0):
            head = head[:at]
            break
    else:
        head = ""  # no boundary at all: never end inside a word or a path
    head = head.rstrip()
    if sum(1 for line in head.splitlines() if line.lstrip().startswith(("```", "~~~"))) % 2:
        head += "\n```"  # a code block left open would swallow the sources and the note
    return head


def _sources(cites: list[str], room: int) -> str:
    """The list of citations the cut removed; only when even that does not fit `room`, its head and a count."""
    if not cites:
        return ""
    head = "\n\nSources (verified citations in the part cut off):"
    out = head + "".join(f"\n- {c}" for c in cites)
    if len(out) <= room:
        return out
    shown: list[str] = []
    for c in cites:  # only reached when the list alone is longer than the cap: say how many are missing
        tail = f"\n- ... {len(cites) - len(shown) - 1} more in citations.verified of the structured result"
        if len(head) + sum(len(x) for x in shown) + len(f"\n- {c}") + len(tail) > room:
            break
        shown.append(f"\n- {c}")
    return (
        head + "".join(shown) + f"\n- ... {len(cites) - len(shown)} more in citations.verified of the structured result"
    )
