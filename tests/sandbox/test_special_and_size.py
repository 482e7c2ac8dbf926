"""Special files never block or leak; huge, binary, deep and pathological inputs come back promptly and bounded."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from mcp_loco.config import ToolSettings
from mcp_loco.sandbox import Toolbox

from .conftest import Hostile, assert_refused


@pytest.mark.parametrize(
    ("name", "args", "fragment"),
    [
        ("Read", {"file_path": "fifo"}, "FIFO"),
        ("Read", {"file_path": "sock"}, "socket"),
        ("Read", {"file_path": "src"}, "is a directory"),
        ("Read", {"file_path": "links/inside_dir"}, "is a directory"),
        ("Grep", {"pattern": "x", "path": "fifo"}, "FIFO"),
        ("Grep", {"pattern": "x", "path": "sock"}, "socket"),
        ("Glob", {"pattern": "*", "path": "fifo"}, "not a directory"),
        ("Glob", {"pattern": "*", "path": "README.md"}, "not a directory"),
        ("Bash", {"command": "cat fifo"}, "FIFO"),
        ("Bash", {"command": "head -n 1 fifo"}, "FIFO"),
        ("Bash", {"command": "tail -n 1 fifo"}, "FIFO"),
        ("Bash", {"command": "wc -l fifo"}, "FIFO"),
        ("Bash", {"command": "sed -n '1,2p' fifo"}, "FIFO"),
        ("Bash", {"command": "grep x fifo"}, "FIFO"),
        ("Bash", {"command": "cat sock"}, "socket"),
        ("Bash", {"command": "cat src"}, "is a directory"),
        ("Bash", {"command": "grep x src"}, "add -r"),
        ("Bash", {"command": "cat /dev/zero"}, "outside the explored root"),
        ("Bash", {"command": "cat /proc/self/environ"}, "outside the explored root"),
        ("Bash", {"command": "head -c 10 links/to_dev_zero"}, "leads outside"),
    ],
)
def test_special_files_are_refused_without_blocking(
    hostile: Hostile, name: str, args: dict[str, object], fragment: str
) -> None:
    start = time.monotonic()
    assert_refused(hostile.call(name, args), fragment)
    assert time.monotonic() - start < 5


def test_special_files_are_described_not_opened(hostile: Hostile) -> None:
    result = hostile.call("Bash", {"command": "file fifo sock src README.md binary.bin empty.txt"})
    root = hostile.root
    assert f"{root}/fifo: FIFO (named pipe)" in result.text
    assert f"{root}/sock: socket" in result.text
    assert f"{root}/src: directory" in result.text
    assert f"{root}/README.md: ASCII text" in result.text
    assert f"{root}/binary.bin: ELF" in result.text
    assert f"{root}/empty.txt: empty" in result.text
    listing = hostile.call("Bash", {"command": "ls -l fifo sock"})
    assert listing.ok and "prw" in listing.text and "srw" in listing.text


def test_binary_file_is_refused_with_a_notice(hostile: Hostile) -> None:
    assert_refused(hostile.call("Read", {"file_path": "binary.bin"}), "binary file", "text files only")
    assert_refused(hostile.call("Bash", {"command": "cat binary.bin"}), "binary file")


def test_invalid_utf8_is_shown_with_replacement_characters(hostile: Hostile) -> None:
    result = hostile.call("Read", {"file_path": "bad_utf8.txt"})
    assert result.ok
    assert result.text == "     1\tcaf\ufffd \ufffd\ufffd ok"
    assert hostile.call("Bash", {"command": "cat bad_utf8.txt"}).text == "caf\ufffd \ufffd\ufffd ok"


def test_empty_file_says_so(hostile: Hostile) -> None:
    result = hostile.call("Read", {"file_path": "empty.txt"})
    assert result.ok and result.text == f"{hostile.root}/empty.txt is empty"


@pytest.mark.slow
def test_multi_gigabyte_sparse_file_is_bounded(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    big = root / "big.log"
    with big.open("wb") as f:
        f.write(b"".join(b"L%d\n" % i for i in range(10_000)))
        f.truncate(3 << 30)  # 3 GiB, mostly a hole
    tb = Toolbox(root, ToolSettings(read_timeout_s=2, bash_timeout_s=2, grep_timeout_s=3))
    start = time.monotonic()
    first = tb.call("Read", {"file_path": "big.log"})
    assert first.ok
    assert first.text.splitlines()[-1].startswith("... more lines follow (the file is 3.0GB)")
    assert first.lines == {str(big): (1, 2000)}
    far = tb.call("Read", {"file_path": "big.log", "offset": 9_999, "limit": 2})
    assert far.text.startswith("  9999\tL9998\n 10000\tL9999\n")
    tail = tb.call("Bash", {"command": "tail -c 20 big.log"})
    assert tail.ok
    head = tb.call("Bash", {"command": "head -n 2 big.log"})
    assert head.text == "L0\nL1"
    # The hole reads as NUL bytes, so ripgrep treats the file as binary: bounded, and no bytes shown.
    grep = tb.call("Grep", {"pattern": "^L5000$", "output_mode": "content"})
    assert grep.ok and len(grep.text) < 500
    explicit = tb.call("Grep", {"pattern": "^L5000$", "path": "big.log", "output_mode": "content"})
    assert explicit.ok and len(explicit.text) < 500
    wc = tb.call("Bash", {"command": "wc -l big.log"})
    assert "timed out" in wc.text or wc.text.startswith("10000 ")
    assert time.monotonic() - start < 30


def test_five_megabyte_single_line_file_is_cut(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "app.min.js").write_text("var a=1;" * (5 * 1024 * 1024 // 8) + "\n")
    tb = Toolbox(root)
    read = tb.call("Read", {"file_path": "app.min.js"})
    assert read.ok
    assert len(read.text) < 2200
    assert "line cut" in read.text
    grep = tb.call("Grep", {"pattern": "var a=1", "output_mode": "content"})
    assert grep.ok and len(grep.text) < 5000 and "omitted" in grep.text
    cat = tb.call("Bash", {"command": "cat app.min.js"})
    assert len(cat.text) < 3000 and "line cut" in cat.text
    assert tb.call("Bash", {"command": "wc -c app.min.js"}).text.startswith("5242881 ")


def test_many_matches_are_capped_and_counted(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "many.txt").write_text("match\n" * 1_000_000)
    tb = Toolbox(root)
    start = time.monotonic()
    content = tb.call("Grep", {"pattern": "match", "output_mode": "content"})
    assert content.ok
    assert len(content.text) <= ToolSettings().max_output_chars
    assert "more lines; use offset=" in content.text
    count = tb.call("Grep", {"pattern": "match", "output_mode": "count"})
    assert f"{root}/many.txt:1000000" in count.text
    paged = tb.call("Grep", {"pattern": "match", "output_mode": "content", "head_limit": 2, "offset": 5_000})
    assert paged.text.splitlines()[:2] == [f"{root}/many.txt:5001:match", f"{root}/many.txt:5002:match"]
    assert "the search stopped after 8 MB of results" in paged.text
    flood = tb.call("Bash", {"command": "cat many.txt"})
    assert "output cut" in flood.text and len(flood.text) <= ToolSettings().max_output_chars
    read = tb.call("Read", {"file_path": "many.txt"})
    assert read.text.endswith("... 998000 more lines; use offset=2001 to read on")
    assert time.monotonic() - start < 20


def test_thousands_of_matching_files_are_bounded(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    for i in range(3000):
        path = root / f"d{i % 30}" / f"file_{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("needle\n")
    tb = Toolbox(root)
    files = tb.call("Grep", {"pattern": "needle"})
    assert files.text.startswith("Found 3000 files")
    assert "more; use offset=" in files.text
    assert len(files.text) <= ToolSettings().max_output_chars
    glob = tb.call("Glob", {"pattern": "**/*.py"})
    assert len(glob.text.splitlines()) == 201
    assert glob.text.endswith("... 2800 more; narrow the pattern (showing the 200 newest)")


@pytest.mark.slow
def test_huge_directory_listing_is_bounded(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    big = root / "big"
    big.mkdir(parents=True)
    for i in range(60_000):
        os.close(os.open(big / f"f{i:06d}.txt", os.O_CREAT | os.O_WRONLY, 0o644))
    tb = Toolbox(root)
    start = time.monotonic()
    ls = tb.call("Bash", {"command": "ls big"})
    assert "output cut" in ls.text
    assert "listing stopped: more than 50000 entries" in ls.text or "output cut" in ls.text
    find = tb.call("Bash", {"command": "find big -name '*.txt'"})
    assert "output cut" in find.text
    glob = tb.call("Glob", {"pattern": "big/*.txt"})
    assert glob.text.endswith("... 59800 more; narrow the pattern (showing the 200 newest)")
    tree = tb.call("Bash", {"command": "tree big"})
    assert "output cut" in tree.text
    assert time.monotonic() - start < 30


def test_deep_nesting_is_bounded(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    deep = root
    for _ in range(150):
        deep = deep / "d"
    deep.mkdir(parents=True)
    (deep / "bottom.txt").write_text("bottom\n")
    tb = Toolbox(root)
    rel = "/".join(["d"] * 150) + "/bottom.txt"
    assert tb.call("Read", {"file_path": rel}).text == "     1\tbottom"
    find = tb.call("Bash", {"command": "find . -name bottom.txt"})
    assert "deeper than 100 levels" in find.text
    tree = tb.call("Bash", {"command": "tree"})
    assert tree.ok and "d" in tree.text
    ls = tb.call("Bash", {"command": "ls -R"})
    assert "not descending below 64 levels" in ls.text
    glob = tb.call("Glob", {"pattern": "**/bottom.txt"})
    assert glob.text == f"{root}/{rel}"


def test_link_loops_do_not_trap_recursive_tools(hostile: Hostile) -> None:
    start = time.monotonic()
    for name, args in [
        ("Glob", {"pattern": "**/*"}),
        ("Grep", {"pattern": "hostile", "output_mode": "content"}),
        ("Bash", {"command": "find . -name '*.md'"}),
        ("Bash", {"command": "ls -laR"}),
        ("Bash", {"command": "tree -a"}),
        ("Bash", {"command": "grep -rn hostile ."}),
    ]:
        result = hostile.call(name, args)
        assert result.ok, result.text
        assert "dir_loop/dir_loop" not in result.text
    find = hostile.call("Bash", {"command": "find . -name README.md"})
    assert find.text.splitlines() == [f"{hostile.root}/README.md"]
    assert time.monotonic() - start < 10


def test_regex_bombs_are_linear_or_refused(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "aaa.txt").write_text("a" * 100_000 + "!\n")
    (root / ("a" * 200)).write_text("x\n")
    tb = Toolbox(root)
    start = time.monotonic()
    bomb = tb.call("Grep", {"pattern": "(a+)+$", "output_mode": "count"})
    assert bomb.ok and "No matches found" in bomb.text
    assert tb.call("Grep", {"pattern": "(a|aa)*b", "output_mode": "count"}).ok
    huge = tb.call("Grep", {"pattern": "((x{1000}){1000}){1000}"})
    assert_refused(huge, "invalid regular expression", "size limit")
    glob = tb.call("Glob", {"pattern": "**/**/**/**/**/**/*a*a*a*a*a*a*a*a*a*a*a*a*b"})
    assert glob.ok and glob.text == "No files found"
    find = tb.call("Bash", {"command": "find . -name '*a*a*a*a*a*a*a*a*a*a*a*a*a*b'"})
    assert find.ok
    braces = tb.call("Glob", {"pattern": "{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}"})
    assert_refused(braces, "more than 64 alternatives")
    assert time.monotonic() - start < 10


def test_oversized_arguments_are_refused(hostile: Hostile) -> None:
    assert_refused(hostile.call("Grep", {"pattern": "a" * 100_000}), "too long")
    assert_refused(hostile.call("Bash", {"command": "ls " + "a" * 9000}), "too long")
    assert_refused(hostile.call("Glob", {"pattern": "*" * 2000}), "too long")
