"""The structured content a calling model reads: brief by default, bounded by the report's length."""

from __future__ import annotations

import pytest

from mcp_loco.explore.payload import POINTER, Answer, Reading, answer, bound, fit_report, model_reads, present
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


# ---- every client's reading -----------------------------------------------------------------------

READINGS: list[Reading] = ["structured", "text", "both", "codex"]


def long_result(paragraphs: int, cites_per_paragraph: int = 2, width: int = 300) -> ExploreResult:
    """A report of many paragraphs, each citing files (verified) and one missing file (unverified)."""
    parts, citations = [], []
    for i in range(paragraphs):
        paths = [f"src/pkg_{i:03d}/mod_{j}.py" for j in range(cites_per_paragraph)]
        text = " ".join(f"{ROOT}/{p}:{i + 1}-{i + 9}" for p in paths)
        parts.append(f"## Part {i}\n\nSee {text} and {ROOT}/gone_{i}.py [unverified: gone]. " + "word " * (width // 5))
        citations += [
            Citation(
                text=f"{ROOT}/{p}:{i + 1}-{i + 9}", path=f"{ROOT}/{p}", line_start=i + 1, line_end=i + 9, verified=True
            )
            for p in paths
        ]
        citations.append(
            Citation(text=f"{ROOT}/gone_{i}.py", path=f"{ROOT}/gone_{i}.py", verified=False, reason="gone")
        )
    return result("\n\n".join(parts), citations)


def test_model_reads_renders_each_clients_reading() -> None:
    payload = {"report": "r é", "n": 1}
    data = '{"report":"r é","n":1}'
    assert model_reads(payload) == data  # Claude Code, VS Code: JSON.stringify(structuredContent)
    assert model_reads(payload, "structured", "ignored") == data
    assert model_reads(payload, "text", "the text") == "the text"  # Gemini CLI, Qwen Code, opencode
    assert model_reads(payload, "both", "the text") == "the text\n\n" + data  # Copilot CLI
    codex = model_reads(payload, "codex", "ignored", seconds=12.5)
    assert codex == "Wall time: 12.5000 seconds\nOutput:\n" + data


@pytest.mark.parametrize("reading", [*READINGS, None])
@pytest.mark.parametrize(("paragraphs", "cites"), [(1, 1), (3, 40), (12, 3), (40, 2), (2, 200)])
def test_what_every_client_reads_stays_within_the_bound(reading: Reading | None, paragraphs: int, cites: int) -> None:
    r = long_result(paragraphs, cites)
    text, structured = present(r, "brief", reading)
    reads = model_reads(structured, reading or "structured", text)
    assert len(reads) <= bound(r.report), (len(reads), len(r.report))
    assert reads.count(r.report[:200]) <= 1 or reading is None  # the report is read once
    Answer.model_validate(structured)  # the output schema still holds


def test_a_client_reading_text_and_json_gets_the_report_once_and_a_valid_structured_result() -> None:
    r = long_result(5)
    text, structured = present(r, "brief", "both")
    assert r.report not in text and len(text) < 100
    assert structured["report"] == r.report
    reads = model_reads(structured, "both", text)
    assert reads.count("## Part 0") == 1
    assert len(reads) <= bound(r.report)


@pytest.mark.parametrize("reading", [None, "structured", "text", "codex"])
def test_every_other_client_gets_the_report_as_text(reading: Reading | None) -> None:
    r = long_result(2)
    text, structured = present(r, "brief", reading)
    assert text == r.report == structured["report"]


# ---- reports that fit every client ----------------------------------------------------------------


@pytest.mark.parametrize("cap", [1_000, 2_500, 10_000])
@pytest.mark.parametrize(("paragraphs", "cites", "width"), [(60, 2, 300), (20, 6, 900), (200, 1, 40), (5, 2, 9000)])
def test_a_long_report_is_cut_within_the_cap_and_keeps_every_verified_citation(
    cap: int, paragraphs: int, cites: int, width: int
) -> None:
    r = long_result(paragraphs, cites, width)
    assert len(r.report) > cap
    out = fit_report(r.report, r.citations, cap)
    assert len(out) <= cap, len(out)
    verified = [c.text for c in r.citations if c.verified]
    if sum(len(v) + 3 for v in verified) + 250 <= cap:  # the list fits: none is lost
        assert all(v in out for v in verified), [v for v in verified if v not in out]
    else:  # more citations than the cap holds: as many as fit, and how many are left out
        assert "more in citations.verified of the structured result" in out
    assert out.rstrip().endswith("ask a narrower question for the rest]")
    assert f"it was {len(r.report):,} characters" in out
    body = out.split("\n\nSources (verified")[0].split("\n\n[report cut")[0]
    assert r.report.startswith(body)  # a prefix of the report...
    assert body == "" or r.report[len(body)].isspace()  # ...ending at a boundary, not inside a word or path
    listed = out.split("Sources (verified citations in the part cut off):")[-1]
    assert "gone_" not in listed  # only verified citations are listed


def test_a_report_within_the_cap_is_untouched() -> None:
    r = long_result(3)
    assert fit_report(r.report, r.citations, len(r.report)) == r.report


def test_a_cut_inside_a_code_block_closes_it() -> None:
    report = "Intro.\n\n```python\n" + "\n".join(f"x_{i} = {i}" for i in range(2000)) + "\n```\n\nEnd."
    out = fit_report(report, [], 3_000)
    assert len(out) <= 3_000
    fences = [line for line in out.splitlines() if line.startswith("```")]
    assert len(fences) % 2 == 0 and out.index("[report cut") > out.rindex("```")


def test_more_citations_than_the_cap_holds_say_how_many_are_left_out() -> None:
    r = long_result(400, 3, 10)
    out = fit_report(r.report, r.citations, 2_000)
    assert len(out) <= 2_000
    assert "more in citations.verified of the structured result" in out


def test_the_description_first_line_names_what_a_tool_search_ranks_on() -> None:
    first = DESCRIPTION.splitlines()[0].lower()
    for word in ("explore", "search", "codebase", "find where", "how does"):
        assert word in first, word
    assert len(first) < 160


def test_codex_is_passed_at_most_12_kb_even_for_reports_that_escape_long() -> None:
    # Code quotes escape long in JSON ("\n", "\"") and non-ASCII takes more bytes: 10,000 characters of it
    # would pass what Codex hands on for a model it does not know.
    code = '```python\nx = "é"  # “quoted”\n```\n'
    r = long_result(40, 2, 200)
    r.report = "\n\n".join(f"{part}\n\n{code * 6}" for part in r.report.split("\n\n## "))
    _, plain = present(r, "brief", "structured", 10_000)
    assert len(model_reads(plain, "codex").encode()) > 12_000  # without the client's own limit
    text, sc = present(r, "brief", "codex", 10_000)
    assert len(model_reads(sc, "codex", text).encode()) <= 12_000
    assert len(sc["report"]) <= 10_000 and "[report cut to fit every client" in sc["report"]
    verified = [c.text for c in r.citations if c.verified]
    assert all(v in sc["report"] for v in verified)


@pytest.mark.parametrize("reading", [*READINGS, None])
def test_present_caps_the_report_for_every_client(reading: Reading | None) -> None:
    r = long_result(60)
    text, sc = present(r, "brief", reading, 5_000)
    assert len(sc["report"]) <= 5_000
    assert text == (POINTER if reading == "both" else sc["report"])
