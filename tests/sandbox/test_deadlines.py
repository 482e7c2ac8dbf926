"""Every loop over entries or bytes honours the deadline, and huge counts and offsets get a plain answer."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from mcp_loco.config import ToolSettings
from mcp_loco.sandbox import Toolbox, grep_passes, textfile
from mcp_loco.sandbox import glob as glob_module
from mcp_loco.sandbox.globbing import GlobMatcher
from mcp_loco.sandbox.limits import Deadline

from .conftest import Hostile, write_tree

HUGE = "9" * 30  # past any C integer


@pytest.mark.slow
@pytest.mark.parametrize("flag", ["-I", "-P"])
def test_tree_name_filter_stops_at_the_deadline(tmp_path: Path, flag: str) -> None:
    # About a millisecond of matching per long name: 10,000 names took ten times the deadline before.
    root = tmp_path / "root"
    root.mkdir()
    for i in range(10_000):
        (root / f"{i:05d}{'a' * 200}").touch()
    pattern = "|".join(["*a*a*b"] * 1100)
    tb = Toolbox(root, ToolSettings(bash_timeout_s=1.0))
    start = time.monotonic()
    result = tb.call("Bash", {"command": f"tree {flag} '{pattern}' ."})
    assert time.monotonic() - start < 3.5
    assert "stopped after 1 s" in result.text


@pytest.mark.slow
def test_tail_of_one_long_line_is_linear(tmp_path: Path) -> None:
    # Before, tail prepended 64 KB blocks and recounted: 40 MB in one line ran past a 10 s deadline.
    root = write_tree(tmp_path / "root", {"one.min.js": "x" * 40_000_000 + "\nlast\n"})
    tb = Toolbox(root)
    start = time.monotonic()
    first = tb.call("Bash", {"command": "tail -n 2 one.min.js"})
    assert time.monotonic() - start < 5
    assert first.ok and first.text.endswith("more characters]\nlast")
    assert tb.call("Bash", {"command": "tail -n 1 one.min.js"}).text == "last"


def test_tail_past_its_read_cap_says_the_line_starts_earlier(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(textfile, "TAIL_MAX_BYTES", 1 << 20)
    root = write_tree(tmp_path / "root", {"long.txt": "start\n" + "y" * (3 << 20)})
    result = Toolbox(root).call("Bash", {"command": "tail -n 1 long.txt"})
    assert result.ok
    assert result.text.startswith("yyyy")
    assert "starts inside a longer line" in result.text


def test_tail_counts_lines_exactly(tmp_path: Path) -> None:
    lines = [f"line {i}" for i in range(70_000)]
    root = write_tree(tmp_path / "root", {"n.txt": "\n".join(lines) + "\n", "m.txt": "\n".join(lines)})
    tb = Toolbox(root)
    for name in ("n.txt", "m.txt"):
        assert tb.call("Bash", {"command": f"tail -n 3 {name}"}).text.splitlines() == lines[-3:]
        assert tb.call("Bash", {"command": f"tail -n 1 {name}"}).text == lines[-1]
    assert tb.call("Bash", {"command": "tail -n 0 n.txt"}).text == "(no output)"
    assert tb.call("Bash", {"command": "tail -n 80000 n.txt | head -n 1"}).text.startswith("line 0\n")


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (f"tail -c +{HUGE} f.txt", "(no output)"),
        ("tail -c +1000000000 f.txt", "(no output)"),
        (f"tail -c {HUGE} f.txt", "one\ntwo"),
        (f"tail -n +{HUGE} f.txt", "(no output)"),
        (f"tail -n {HUGE} f.txt", "one\ntwo"),
        (f"head -c {HUGE} f.txt", "one\ntwo"),
        (f"head -c -{HUGE} f.txt", "(no output)"),
        (f"head -n {HUGE} f.txt", "one\ntwo"),
        (f"head -n -{HUGE} f.txt", "(no output)"),
        (f"sed -n '{HUGE},{HUGE}p' f.txt", "(no output)"),
        (f"sed -n '2,{HUGE}p' f.txt", "two"),
        (f"grep -c -A {HUGE} one f.txt", "1"),
        (f"grep -m {HUGE} one f.txt", "{root}/f.txt:one"),
        (f"find . -maxdepth {HUGE} -name f.txt -size -{HUGE}c", "{root}/f.txt"),
    ],
)
def test_huge_counts_and_offsets_get_a_plain_answer(tmp_path: Path, command: str, expected: str) -> None:
    root = write_tree(tmp_path / "root", {"f.txt": "one\ntwo\n"})
    result = Toolbox(root).call("Bash", {"command": command})
    assert result.ok, result.text
    assert result.text == expected.format(root=root)


@pytest.mark.parametrize(
    "arguments",
    [
        {"pattern": "one", "output_mode": "content", "-A": 10**30},
        {"pattern": "one", "output_mode": "content", "-C": 10**30, "offset": 10**30},
        {"pattern": "one", "head_limit": 10**30, "offset": 10**30},
    ],
)
def test_grep_with_huge_numbers_answers_plainly(tmp_path: Path, arguments: dict[str, object]) -> None:
    root = write_tree(tmp_path / "root", {"f.txt": "one\ntwo\n"})
    result = Toolbox(root).call("Grep", arguments)
    assert result.ok, result.text
    assert "failed" not in result.text


def test_head_of_a_one_line_file_shows_its_start(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "root", {"min.js": "z" * 100_000})
    result = Toolbox(root).call("Bash", {"command": "head -c 90000 min.js"})
    assert result.text.startswith("z" * 1000)
    assert "output cut at" in result.text


def test_path_lists_from_ripgrep_are_read_against_the_deadline(hostile: Hostile) -> None:
    # A crafted glob can cost a millisecond a path, and one chunk of rg output holds thousands of paths.
    ctx = hostile.tb.context
    chunk = b"".join(f"./src/f{i}.py\0".encode() for i in range(10_000))
    fd = ctx.root_fd()
    try:
        listing = glob_module._Collector(ctx, GlobMatcher("**/*.py"), "", fd, 1 << 20, Deadline(0))
        assert listing.feed(chunk) is False and listing.timed_out
        candidates = grep_passes.Candidates(ctx, "", fd, [GlobMatcher("**/*.py")], Deadline(0))
        assert candidates.feed(chunk) is False and candidates.timed_out
    finally:
        os.close(fd)
