"""The structured content a calling model reads: brief by default, bounded by the report's length."""

from __future__ import annotations

from mcp_loco.explore.payload import answer, bound, model_reads
from mcp_loco.explore.report import Citation, ExploreResult
from mcp_loco.model.backends.function import estimate_tokens
from mcp_loco.serve.server import DESCRIPTION

ROOT = "/work/repo"


def result(report: str, citations: list[Citation]) -> ExploreResult:
    return ExploreResult(report=report, citations=citations, root=ROOT, files_examined=["x"] * 50, turns=7)


def cite(path: str, ok: bool = True, line: int | None = None) -> Citation:
    return Citation(
        text=path, path=f"{ROOT}/{path}", line_start=line, line_end=line, verified=ok, reason="" if ok else "gone"
    )


def test_the_brief_payload_is_the_report_and_compact_citations() -> None:
    r = result("It is in /work/repo/a.py:3.", [cite("a.py", line=3), cite("b.py", ok=False), cite("a.py", line=3)])
    brief = answer(r)
    assert brief == {
        "report": "It is in /work/repo/a.py:3.",
        "stop_reason": "answered",
        "root": ROOT,
        "citations": {"verified": ["a.py:3"], "unverified": [{"cite": "b.py", "reason": "gone"}]},
    }
    full = answer(r, "full")
    assert full["trace"]["turns"] == 7 and len(full["trace"]["files_examined"]) == 50


def test_many_citations_in_a_short_report_are_trimmed_to_the_bound() -> None:
    cites = [cite(f"src/module_{i:03d}/deeply/nested/file_{i:03d}.py") for i in range(300)]
    r = result("Short report listing many files.", [*cites, cite("missing.py", ok=False)])
    brief = answer(r)
    assert len(model_reads(brief)) <= bound(r.report)
    assert brief["citations"]["more"] > 0 and brief["citations"]["unverified"]  # the warnings stay


def test_the_description_is_short() -> None:
    assert estimate_tokens(DESCRIPTION) < 220


def test_quotes_are_compact_in_the_brief_payload() -> None:
    from mcp_loco.explore.report import Quote

    r = result("Code from /work/repo/a.py:3-4 and /work/repo/b.py:1-2.", [cite("a.py", line=3)])
    r.quotes = [
        Quote(path=f"{ROOT}/a.py", line_start=3, line_end=4, verified=True, found_at=(3, 4)),
        Quote(path=f"{ROOT}/c.py", line_start=9, line_end=12, verified=True, found_at=(20, 23), reason="moved"),
        Quote(path=f"{ROOT}/b.py", line_start=1, line_end=2, verified=False, reason="not in the file"),
    ]
    brief = answer(r)
    assert brief["quotes"] == {
        "verified": ["a.py:3-4", "c.py:20-23"],
        "unverified": [{"cite": "b.py:1-2", "reason": "not in the file"}],
    }
    assert len(model_reads(brief)) <= bound(r.report)
