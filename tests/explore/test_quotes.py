"""Verified quotes: replayed runs through the real explorer, the matching tolerances, properties, and leaks."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_loco.config import Settings
from mcp_loco.explore.agent import Explorer
from mcp_loco.explore.quotes import check_quotes
from mcp_loco.explore.report import ExploreResult
from mcp_loco.model.backends.replay import ReplayModel
from mcp_loco.model.protocol import format_call
from mcp_loco.sandbox import Oracle, Toolbox, path_oracle
from mcp_loco.sandbox import oracle as oracle_module

CANARY = "CANARY-OUTSIDE-q13"
SECRET = "sk-live-SECRET-q13"
LOAD_CONFIG = (
    "def load_config(path):\n"
    '    """Load the TOML config file."""\n'
    "    with open(path, 'rb') as f:\n"
    "        return tomllib.load(f)\n"
)
"""Lines 4-7 of the sample repository's src/app/config.py."""


def fence(body: str, lang: str = "python") -> str:
    return f"```{lang}\n{body.rstrip(chr(10))}\n```"


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every path the sandbox's text accessor is asked for, in order (the accessor itself still runs)."""
    asked: list[str] = []
    real = Oracle.text

    def spy(self: Oracle, path: str) -> str | None:
        asked.append(path)
        return real(self, path)

    monkeypatch.setattr(Oracle, "text", spy)
    yield asked


def explore(root: Path, turns: list[str]) -> ExploreResult:
    s = Settings()
    s.agent.grammar = False  # the replay model ignores grammars
    explorer = Explorer(ReplayModel(turns), s)
    try:
        return explorer.explore(root, "Where is the config loaded?")
    finally:
        explorer.close()


def read_call(path: Path) -> str:
    return format_call("Read", {"file_path": str(path)})


# ---- replayed runs -------------------------------------------------------------------------------


def test_a_right_quote_at_the_right_lines_is_verified(sample_repo: Path) -> None:
    cfg = sample_repo / "src/app/config.py"
    answer = f"`load_config` is at {cfg}:4-7:\n\n{fence(LOAD_CONFIG)}\n"
    result = explore(sample_repo, [read_call(cfg), answer])
    [q] = result.quotes
    assert (q.path, q.line_start, q.line_end, q.verified, q.found_at, q.reason) == (str(cfg), 4, 7, True, (4, 7), "")
    assert result.report == answer.strip()
    assert all(c.verified for c in result.citations)


def test_a_right_quote_at_the_wrong_lines_gets_its_citation_corrected(sample_repo: Path) -> None:
    cfg = sample_repo / "src/app/config.py"
    result = explore(sample_repo, [read_call(cfg), f"It is in {cfg}:1-3:\n{fence(LOAD_CONFIG)}"])
    [q] = result.quotes
    assert q.verified and q.moved and (q.line_start, q.line_end, q.found_at) == (1, 3, (4, 7))
    assert q.reason == "at lines 4-7, not 1-3 as cited"
    assert f"It is in {cfg}:4-7 [lines corrected]:" in result.report and f"{cfg}:1-3" not in result.report
    # The corrected range is what the citation check then sees, and it holds.
    [c] = result.citations
    assert (c.line_start, c.line_end, c.verified) == (4, 7, True)


def test_an_invented_quote_under_a_real_path_is_marked(sample_repo: Path) -> None:
    cfg = sample_repo / "src/app/config.py"
    invented = "def load_config(path):\n    return json.load(open(path))\n"
    result = explore(sample_repo, [read_call(cfg), f"See {cfg}:4-5.\n\n{fence(invented)}\n\nThat is all."])
    [q] = result.quotes
    assert not q.verified and q.found_at is None and q.reason == "not in the file"
    assert f"{fence(invented)}\n[unverified quote: not in the file]\n\nThat is all." in result.report
    assert result.citations[0].verified  # the path and lines exist: only the quote is wrong


def test_a_quote_from_a_file_no_tool_showed_is_marked_and_the_file_is_not_read(
    sample_repo: Path, reads: list[str]
) -> None:
    cfg, main = sample_repo / "src/app/config.py", sample_repo / "src/app/main.py"
    real_main = "def main():\n    cfg = load_config('app.toml')\n"
    result = explore(sample_repo, [read_call(cfg), f"Called from {main}:\n{fence(real_main)}"])
    [q] = result.quotes
    assert (q.path, q.verified, q.reason) == (str(main), False, "the file was never shown by a tool")
    assert "[unverified quote: the file was never shown by a tool]" in result.report
    assert str(main) not in reads


def test_unattributed_blocks_take_the_path_they_are_found_in_or_are_left_alone(sample_repo: Path) -> None:
    cfg = sample_repo / "src/app/config.py"
    shell = fence("pip install -e .", "bash")
    answer = f"The config is loaded here:\n\n{fence(LOAD_CONFIG)}\n\nInstall it with\n\n{shell}"
    result = explore(sample_repo, [read_call(cfg), answer])
    [q] = result.quotes
    assert (q.path, q.verified, q.found_at, q.line_start) == (str(cfg), True, (4, 7), None)
    assert result.report == answer and "[unverified" not in result.report


def test_the_result_payload_carries_the_quotes_compactly(sample_repo: Path) -> None:
    cfg = sample_repo / "src/app/config.py"
    result = explore(sample_repo, [read_call(cfg), f"{cfg}:4\n{fence(LOAD_CONFIG)}"])
    payload = result.model_dump(mode="json")
    assert payload["quotes"] == [
        {
            "path": str(cfg),
            "line_start": 4,
            "line_end": 4,
            "verified": True,
            "found_at": [4, 7],
            "reason": "",
            "unchecked": False,
        }
    ]


# ---- the secret and hostile angle ----------------------------------------------------------------


@pytest.fixture
def hostile_repo(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(f"token = {CANARY}\n")
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    (repo / "src/a.py").write_text("x = 1\ny = 2\n")
    (repo / ".env").write_text(f"KEY={SECRET}\n")
    (repo / "src/file_link").symlink_to(outside / "secret.txt")
    return repo


def test_quotes_under_denied_or_outside_paths_never_read_or_echo_them(hostile_repo: Path, reads: list[str]) -> None:
    outside = hostile_repo.parent / "outside/secret.txt"
    env, link = hostile_repo / ".env", hostile_repo / "src/file_link"
    answer = (
        f"The key is in {env}:\n{fence('KEY=sk-live-guess', 'ini')}\n\n"
        f"The token is in {outside}:1:\n{fence('token = CANARY-guess', 'ini')}\n\n"
        f"And in {link}:\n{fence('token = CANARY-guess', 'ini')}\n\n"
        f"The real code, {hostile_repo}/src/a.py:1-2:\n{fence('x = 1' + chr(10) + 'y = 2')}\n"
    )
    turns = ["\n".join(read_call(p) for p in (env, outside, link, hostile_repo / "src/a.py")), answer]
    result = explore(hostile_repo, turns)
    assert [(q.verified, q.reason) for q in result.quotes] == [
        (False, "the file was never shown by a tool"),
        (False, "the file was never shown by a tool"),
        (False, "the file was never shown by a tool"),
        (True, ""),
    ]
    assert reads == [str(hostile_repo / "src/a.py")]
    everything = json.dumps(result.model_dump())
    assert SECRET not in everything and CANARY not in everything


def test_the_text_accessor_refuses_what_no_tool_may_show(hostile_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tools = Toolbox(hostile_repo)
    oracle = path_oracle(tools)
    (hostile_repo / "bin.dat").write_bytes(b"\x00\x01binary")
    (hostile_repo / "hard.txt").hardlink_to(hostile_repo.parent / "outside/secret.txt")
    root = tools.root
    for rel in (".env", "src/file_link", "../outside/secret.txt", "bin.dat", "hard.txt", "src", "missing.py"):
        assert oracle.text(f"{root}/{rel}") is None, rel
    assert oracle.text(f"{root}/src/a.py") == "x = 1\ny = 2\n"
    monkeypatch.setattr(oracle_module, "TEXT_MAX_BYTES", 8)
    assert oracle.text(f"{root}/src/a.py") is None  # too big to be worth reading whole
    monkeypatch.undo()
    # Even when a caller wrongly lists them as shown, the sandbox refuses them and nothing is echoed.
    shown = [f"{root}/.env", f"{root}/src/file_link", f"{root}/hard.txt"]
    report = "\n\n".join(f"In {p}:\n{fence('KEY=guess')}" for p in shown)
    marked, quotes = check_quotes(report, root, shown, oracle.text)
    assert [q.reason for q in quotes] == ["the tools cannot show the file now"] * 3
    assert SECRET not in marked and CANARY not in marked


# ---- tolerances ----------------------------------------------------------------------------------

FILES = {
    "/r/a.py": (
        "import os\n"  # 1
        "\n"
        "\n"
        "def load(path):\n"  # 4
        '    """Read the file."""\n'
        "    if not os.path.exists(path):\n"
        "        raise FileNotFoundError(path)\n"
        "    with open(path) as f:\n"  # 8
        "        data = f.read()\n"
        "    return parse(data, strict=True, encoding='utf-8', errors='replace')\n"  # 10
        "\n"
        "\n"
        "def parse(data, **options):\n"  # 13
        "    return data.split()\n"
    ),
    "/r/b.js": "function add(a, b) {\n  return a + b;\n}\n\nfunction sub(a, b) {\n  return a - b;\n}\n",
}


def check(report: str, files: dict[str, str] = FILES) -> tuple[str, list[Any]]:
    return check_quotes(report, "/r", files, files.get)


def quote_of(body: str, cite: str = "/r/a.py:4-10") -> Any:
    marked, quotes = check(f"In {cite}:\n{fence(body)}")
    assert len(quotes) == 1, marked
    return quotes[0]


@pytest.mark.parametrize(
    ("name", "body", "found"),
    [
        ("reindented, tabs", '  def   load(path):\n\t"""Read  the file."""', (4, 5)),
        ("python elision", "def load(path):\n    ...\n    with open(path) as f:", (4, 8)),
        ("comment elision", "def load(path):\n    # ... checks\n        data = f.read()", (4, 9)),
        ("Read prefixes", '     4\tdef load(path):\n     5\t    """Read the file."""', (4, 5)),
        ("Grep prefixes", "/r/a.py:8:    with open(path) as f:\n/r/a.py-9-        data = f.read()", (8, 9)),
        ("bare prefixes", "8:    with open(path) as f:\n9-        data = f.read()", (8, 9)),
        ("numbers that jump", "4:def load(path):\n8:    with open(path) as f:", (4, 8)),
        (
            "cut first line",
            "not os.path.exists(path):\n        raise FileNotFoundError(path)\n    with open(path) as f:",
            (6, 8),
        ),
        (
            "cut last line",
            "    with open(path) as f:\n        data = f.read()\n    return parse(data, strict=True,",
            (8, 10),
        ),
        (
            "Read's cut marker",
            "        data = f.read()\n    return parse(data, stri... [line cut: 40 more characters]",
            (9, 10),
        ),
    ],
)
def test_tolerances_verify_at_the_real_lines(name: str, body: str, found: tuple[int, int]) -> None:
    q = quote_of(body)
    assert q.verified and q.found_at == found and not q.moved, name


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("cut interior line", "def load(path):\n    if not os.path\n        raise FileNotFoundError(path)"),
        ("elided lines out of order", "    with open(path) as f:\n    ...\ndef load(path):"),
        ("a single cut line", "def loa"),
        ("changed token", "def load(path):\n    '''Read the file.'''"),
        ("elision inside a line", "def load(path, ...):\n    with open(path) as f:"),
        (
            "one line shown on both sides of an elision",
            "def load(path):\n    ...\n    with open(path) as f:\n        data = f.read()\n    ...\n"
            "        data = f.read()\n    return parse(data, strict=True, encoding='utf-8', errors='replace')\n"
            "def parse(data, **options):",
        ),
    ],
)
def test_what_the_tolerances_do_not_excuse(name: str, body: str) -> None:
    q = quote_of(body)
    assert not q.verified and q.reason == "not in the file", name


def test_a_block_of_numbered_entries_is_matched_as_written() -> None:
    files = {"/r/codes.py": "CODES = {\n    1: 'one',\n    2: 'two',\n}\n"}
    _, [q] = check(
        f"In /r/codes.py:\n{fence('    1: ' + repr('one') + ',' + chr(10) + '    2: ' + repr('two') + ',')}", files
    )
    assert q.verified and q.found_at == (2, 3) and not q.moved and q.line_start is None


def test_attribution_by_path_comment_and_hash_lines() -> None:
    marked, [q] = check(fence("// /r/b.js#L1-L2\nfunction sub(a, b) {\n  return a - b;", "js"))
    assert (q.path, q.found_at) == ("/r/b.js", (5, 6))
    assert "// /r/b.js#L5-L6 [lines corrected]\n" in marked


def test_attribution_reaches_back_one_paragraph_and_no_block_further() -> None:
    body = fence("function add(a, b) {")
    # Two paragraphs back is too far: the block is then looked for everywhere (and found in b.js).
    _, [far] = check(f"About /r/a.py.\n\nSomething else.\n\nMore.\n{body}")
    assert far.path == "/r/b.js" and far.line_start is None
    _, [near] = check(f"About /r/a.py.\n\nThe function:\n{body}")
    assert (near.path, near.verified) == ("/r/a.py", False)
    # A citation before an earlier block belongs to that block only.
    marked, quotes = check(f"In /r/a.py:\n{fence('import os')}\n{body}")
    assert [(q.path, q.verified, q.found_at) for q in quotes] == [("/r/a.py", True, (1, 1)), ("/r/b.js", True, (1, 1))]
    assert "[unverified" not in marked


def test_a_directory_citation_searches_the_files_under_it() -> None:
    files = {**FILES, "/r/src/c.js": "function sub(a, b) {\n  return b - a;\n}\n"}
    report = f"Under /r/src:\n{fence('function sub(a, b) {')}\n\nRun /r/tools/:\n{fence('make all', 'sh')}"
    marked, quotes = check(report, files)
    # Found under the directory first, though b.js (shown before it) has the same line.
    assert [(q.path, q.found_at) for q in quotes] == [("/r/src/c.js", (1, 1))]
    assert "[unverified" not in marked


def test_marks_and_corrections_are_not_repeated() -> None:
    once, _ = check(f"In /r/a.py:1-2:\n{fence('def load(path):')}\n\nIn /r/a.py:\n{fence('nope()')}")
    twice, _ = check(once)
    assert twice == once and once.count("[lines corrected]") == 1 and once.count("[unverified quote:") == 1
    # A copied correction that is still wrong is corrected again, not marked twice.
    copied, _ = check(f"In /r/a.py:1-2 [lines corrected]:\n{fence('def load(path):')}")
    assert copied.startswith("In /r/a.py:4 [lines corrected]:\n")


def test_each_file_is_read_once_and_only_when_shown() -> None:
    asked: list[str] = []

    def read(path: str) -> str | None:
        asked.append(path)
        return FILES.get(path)

    blocks = [
        fence("nothing like this"),
        f"/r/a.py:\n{fence('import os')}",
        f"/r/c.py:\n{fence('x')}",
        f"/r/d/:\n{fence('y')}",
    ]
    check_quotes("\n\n".join(blocks * 3), "/r", ["/r/b.js", "/r/a.py", "/r/./a.py"], read)
    assert sorted(asked) == ["/r/a.py", "/r/b.js"]


def test_an_unclosed_block_is_still_checked_and_marked_after_it() -> None:
    marked, [q] = check("See /r/a.py:\n```python\nimport sys")
    assert not q.verified and marked.endswith("import sys\n[unverified quote: not in the file]\n")


# ---- properties ----------------------------------------------------------------------------------

_TOKENS = ["x", "y", "=", "def", "foo", "(", ")", "return", "1", "bar", "if", ":", "{", "}", "+"]
_LINE = st.one_of(
    st.just(""),
    st.tuples(
        st.sampled_from(["", "  ", "    ", "\t"]), st.lists(st.sampled_from(_TOKENS), min_size=1, max_size=6)
    ).map(lambda t: t[0] + " ".join(t[1])),
)
_FILES = st.lists(st.lists(_LINE, min_size=1, max_size=40), min_size=1, max_size=4)


@st.composite
def snippets(draw: Callable[..., Any]) -> tuple[dict[str, str], str, int, int, list[str]]:
    files = draw(_FILES)
    which = draw(st.integers(0, len(files) - 1))
    lines = files[which]
    start = draw(st.integers(1, len(lines)))
    end = draw(st.integers(start, len(lines)))
    if not any(line.strip() for line in lines[start - 1 : end]):
        lines[start - 1] = "return x"  # a block of blank lines shows nothing to check
    texts = {f"/r/f{i}.py": "\n".join(f) + "\n" for i, f in enumerate(files)}
    return texts, f"/r/f{which}.py", start, end, lines[start - 1 : end]


def _nonblank_span(snippet: list[str], start: int) -> tuple[int, int]:
    numbers = [start + i for i, line in enumerate(snippet) if line.strip()]
    return numbers[0], numbers[-1]


@settings(max_examples=200, deadline=None)
@given(snippets(), st.booleans(), st.booleans())
def test_a_snippet_cut_from_a_shown_file_verifies_at_its_lines(
    case: tuple[dict[str, str], str, int, int, list[str]], numbered: bool, reindent: bool
) -> None:
    files, path, start, end, snippet = case
    shown = [ln.strip() if reindent else ln for ln in snippet]
    if numbered:
        shown = [f"{start + i:>6}\t{ln}" for i, ln in enumerate(shown)]
    marked, [q] = check_quotes(f"In {path}:{start}-{end}:\n{fence(chr(10).join(shown))}", "/r", files, files.get)
    assert q.verified and not q.moved, (q, marked)
    assert q.found_at == _nonblank_span(snippet, start) and "[" not in marked.replace("[lines", "")


@settings(max_examples=200, deadline=None)
@given(snippets(), st.data())
def test_a_snippet_with_a_changed_token_does_not_verify(
    case: tuple[dict[str, str], str, int, int, list[str]], data: st.DataObject
) -> None:
    files, path, start, end, snippet = case
    nonblank = [i for i, line in enumerate(snippet) if line.strip()]
    i = data.draw(st.sampled_from(nonblank))
    tokens = snippet[i].split()
    j = data.draw(st.integers(0, len(tokens) - 1))
    tokens[j] = "changed_token"  # in no file, so the line can match nowhere, not even as a cut line
    changed = [*snippet[:i], " ".join(tokens), *snippet[i + 1 :]]
    marked, [q] = check_quotes(f"In {path}:{start}-{end}:\n{fence(chr(10).join(changed))}", "/r", files, files.get)
    assert not q.verified and q.reason == "not in the file" and "[unverified quote: not in the file]" in marked
