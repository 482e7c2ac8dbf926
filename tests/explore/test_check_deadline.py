"""The citation and quote checks keep the call's deadline: a file is counted once, the rest is marked unchecked."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcp_loco.config import Settings
from mcp_loco.explore.agent import Explorer
from mcp_loco.explore.payload import answer
from mcp_loco.explore.quotes import check_quotes
from mcp_loco.explore.report import ExploreResult, check_report, find_citations, verify
from mcp_loco.model.backends.replay import ReplayModel
from mcp_loco.model.protocol import format_call
from mcp_loco.sandbox import Toolbox, path_oracle
from mcp_loco.sandbox.textfile import LineReader

LINE = b"value = 'a generated line, long enough to make the file large'\n"
BIG_BYTES = 40 << 20
CITES = 300
MARGIN_S = 1.0
"""What the checks may take past the deadline (a loaded machine finishes the citation in hand)."""


@pytest.fixture(scope="module")
def big_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository holding one real 40 MB text file (lines of text, not a sparse file)."""
    root = tmp_path_factory.mktemp("big") / "repo"
    root.mkdir()
    (root / "big.py").write_bytes(LINE * (BIG_BYTES // len(LINE)))
    (root / "small.py").write_text("def f():\n    return 1\n")
    return root


@pytest.fixture
def counts(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The size of every file whose lines are counted (the real count still runs)."""
    counted: list[int] = []
    real = LineReader.count_rest

    def spy(self: LineReader, size: int) -> int | None:
        counted.append(size)
        return real(self, size)

    monkeypatch.setattr(LineReader, "count_rest", spy)
    yield counted


def many_citations(path: Path, n: int = CITES) -> str:
    """A report citing `path` n times, with lines, in the forms the report check reads."""
    forms = ("{p}:{i}", "{p}:{i}-{j}", "[here]({p}#L{i}-L{j})", "`{p}`")
    return "\n".join(f"- point {i}: " + forms[i % len(forms)].format(p=path, i=i + 1, j=i + 3) for i in range(n))


def test_a_file_cited_hundreds_of_times_is_counted_once(big_repo: Path, counts: list[int]) -> None:
    big = big_repo / "big.py"
    oracle = path_oracle(Toolbox(big_repo))
    started = time.monotonic()
    marked, cites = check_report(many_citations(big), str(big_repo), oracle, [str(big)], started + 5)
    assert time.monotonic() - started < 5 + MARGIN_S
    assert len(cites) == CITES and all(c.verified for c in cites), [c for c in cites if not c.verified][:3]
    assert counts == [big.stat().st_size] and "[un" not in marked
    # Another identity (the file grew) is counted again, and the new lines are seen.
    lines = big.stat().st_size // len(LINE)
    with big.open("ab") as f:
        f.write(LINE * 5)
    _, [grown] = check_report(f"{big}:{lines + 5}", str(big_repo), oracle, [str(big)], time.monotonic() + 5)
    assert grown.verified and len(counts) == 2


def test_an_exploration_with_a_deadline_ends_on_time_however_often_a_file_is_cited(
    big_repo: Path, counts: list[int]
) -> None:
    big = big_repo / "big.py"
    settings = Settings()
    settings.agent.grammar = False  # the replay model ignores grammars
    turns = [format_call("Glob", {"pattern": "*.py"}), "Found:\n" + many_citations(big)]
    explorer = Explorer(ReplayModel(turns), settings)
    started = time.monotonic()
    try:
        result = explorer.explore(big_repo, "Where is the value set?", deadline_s=5)
    finally:
        explorer.close()
    assert time.monotonic() - started < 5 + MARGIN_S
    assert len(result.citations) == CITES
    # Every citation is verified or said to be unchecked: none is passed over in silence.
    assert all(c.verified or c.unchecked for c in result.citations)
    assert len(counts) <= 1 and any(c.verified for c in result.citations)


def sparse_files(root: Path, n: int) -> list[Path]:
    """n files of 60 MB each that take no disk (a hole reads as zeros): counting each takes real time."""
    paths = []
    for i in range(n):
        path = root / f"huge_{i}.dat"
        with path.open("wb") as f:
            f.truncate(60 << 20)
        paths.append(path)
    return paths


def test_citations_past_the_deadline_are_marked_unchecked_never_verified(tmp_path: Path) -> None:
    files = sparse_files(tmp_path, 120)  # far more counting than the deadline leaves time for
    tools = Toolbox(tmp_path)
    report = "\n".join(f"See {p}:1 and again {p}:1." for p in files)
    started = time.monotonic()
    deadline = started + 1.0
    marked, cites = check_report(report, tools.root, path_oracle(tools, until=deadline), map(str, files), deadline)
    assert time.monotonic() - started < 1.0 + MARGIN_S
    unchecked = [c for c in cites if c.unchecked]
    assert unchecked and not any(c.verified for c in unchecked)
    assert all(c.verified or c.unchecked for c in cites)
    assert all(c.reason == "unchecked: time budget" for c in unchecked)
    assert marked.count("[unchecked: time budget]") == len(unchecked)
    # The structured result flags them with the reason, among the citations that do not hold.
    payload = answer(ExploreResult(report=marked, citations=cites, root=tools.root))
    reasons = {u["reason"] for u in payload["citations"]["unverified"]}
    assert reasons == {"unchecked: time budget"}


def test_a_line_count_cut_by_the_deadline_checks_nothing(big_repo: Path) -> None:
    big = big_repo / "big.py"
    tools = Toolbox(big_repo)
    past = time.monotonic()
    [found] = find_citations(f"{big}:999999999", tools.root)
    # Without a deadline a count that gave no answer leaves the lines unjudged; with one, it is unchecked.
    cut = verify(found, tools.root, path_oracle(tools, until=past), {str(big)}, past)
    assert (cut.verified, cut.unchecked, cut.reason) == (False, True, "unchecked: time budget")
    counted = verify(found, tools.root, path_oracle(tools), {str(big)}, past)
    assert not counted.verified and "past the end of the file" in counted.reason


def test_quotes_left_when_time_runs_out_are_marked_unchecked(sample_repo: Path) -> None:
    tools = Toolbox(sample_repo)
    cfg = f"{tools.root}/src/app/config.py"
    body = 'def load_config(path):\n    """Load the TOML config file."""\n'
    unattributed = "pip install app\n"
    report = f"See {cfg}:4-5:\n```python\n{body}```\n\nThen run:\n\n```\n{unattributed}```\n"
    now = time.monotonic()
    on_time, [q] = check_quotes(report, tools.root, [cfg], path_oracle(tools).text, now + 60)
    assert q.verified and not q.unchecked and "[un" not in on_time
    late, [q] = check_quotes(report, tools.root, [cfg], path_oracle(tools, until=now).text, now)
    assert (q.path, q.verified, q.unchecked, q.reason) == (cfg, False, True, "unchecked: time budget")
    assert (q.line_start, q.line_end) == (4, 5)
    # Marked once, right after its block; the block that claims no file is left as it is.
    assert late.count("[unchecked quote: time budget]") == 1 and "[unverified" not in late
    assert f"{body}```\n[unchecked quote: time budget]\n\nThen run" in late
    assert late.endswith(f"{unattributed}```\n")
