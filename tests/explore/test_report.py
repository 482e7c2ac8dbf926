"""Citation extraction and marking."""

from __future__ import annotations

from pathlib import Path

from mcp_loco.explore.report import cap_report, check_report, find_citations
from mcp_loco.sandbox import Toolbox, path_oracle


def test_extraction_forms(tmp_path: Path) -> None:
    root = "/r/proj"
    text = (
        "See /r/proj/a.py:12, /r/proj/b.py:3-9 and [c](/r/proj/c.py#L4-L8).\n"
        "URL https://example.com/r/proj/x.py and route /api/users are not files; and/or neither.\n"
        "```python\n#!/usr/bin/env python\nx = '/r/proj/d.py'\n```\n"
        "Outside: /etc/passwd. Trailing dot: /r/proj/e.py.\n"
    )
    got = [(f.text, f.path, f.line_start, f.line_end) for f in find_citations(text, root)]
    assert got == [
        ("/r/proj/a.py:12", "/r/proj/a.py", 12, 12),
        ("/r/proj/b.py:3-9", "/r/proj/b.py", 3, 9),
        ("/r/proj/c.py#L4-L8", "/r/proj/c.py", 4, 8),
        ("/r/proj/d.py", "/r/proj/d.py", None, None),
        ("/etc/passwd", "/etc/passwd", None, None),
        ("/r/proj/e.py", "/r/proj/e.py", None, None),
    ]


def test_marks_once_and_the_root_is_not_a_citation(sample_repo: Path) -> None:
    tools = Toolbox(sample_repo)
    root = tools.root
    report = f"Root {root}; invented {root}/nope.py [unverified: no such file or directory]; again {root}/nope.py"
    marked, cites = check_report(report, root, path_oracle(tools), seen=[])
    # Restating the explored root proves nothing, so it neither counts as a verified citation nor is marked.
    assert [c.path for c in cites] == [f"{root}/nope.py"] * 2 and not any(c.verified for c in cites)
    assert marked.count("[unverified: no such file or directory]") == 2
    assert f"Root {root};" in marked
    _, with_line = check_report(f"see {root}/:3", root, path_oracle(tools), seen=[])
    assert len(with_line) == 1  # a root with a line number is still checked (and is not a file)


def test_cap_report_cuts_at_a_boundary() -> None:
    text = "\n\n".join(f"para {i} " + "x" * 100 for i in range(50))
    out = cap_report(text, 200, len)
    assert len(out) < 400 and out.endswith("ask a narrower question for the rest]")
    assert cap_report("short", 200, len) == "short"
