"""The two shell habits Bash honours without a shell: stderr redirections and a final head/tail stage."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcp_loco.sandbox import Toolbox
from mcp_loco.sandbox.bash_filters import LineFilter, split_filters


@pytest.mark.parametrize(
    ("command", "rest", "stage"),
    [
        ("ls -la /x 2>/dev/null | head -50", "ls -la /x", LineFilter("head", 50)),
        ("find . -name '*.py' | head -n 20", "find . -name '*.py'", LineFilter("head", 20)),
        ("cat f | tail --lines=5", "cat f", LineFilter("tail", 5)),
        ("ls | head", "ls", LineFilter("head", 10)),
        ("ls 2>&1", "ls", None),
        ("ls 2> /dev/null", "ls", None),
        ("grep 'a|b' f", "grep 'a|b' f", None),  # a quoted pipe is a pattern
        ("grep 'x 2>/dev/null' f", "grep 'x 2>/dev/null' f", None),  # quoted: not a redirection
        ("ls | grep a", "ls | grep a", None),  # not a head/tail stage: left for the tokenizer to refuse
        ("ls | head -5 | head -3", "ls | head -5 | head -3", None),
        ("ls | head -n 5; rm -rf /", "ls | head -n 5; rm -rf /", None),
        ("ls 2>/tmp/out", "ls 2>/tmp/out", None),
        ("ls | head -n $(id)", "ls | head -n $(id)", None),
    ],
)
def test_split_filters(command: str, rest: str, stage: LineFilter | None) -> None:
    assert split_filters(command) == (rest, stage)


def test_head_and_tail_stages_cut_and_say_so(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    for i in range(30):
        (root / f"f{i:02}.txt").write_text(f"{i}\n")
    tb = Toolbox(root)
    out = tb.call("Bash", {"command": f"ls {root} 2>/dev/null | head -5"})
    assert out.ok and out.text.splitlines()[0] == f"{root}:"
    assert "f03.txt" in out.text and "f04.txt" not in out.text
    assert out.text.endswith("(26 more lines cut by `head -n 5`)")
    # Only the listed names that survived the cut count as seen.
    assert str(root / "f03.txt") in out.paths and str(root / "f20.txt") not in out.paths
    tail = tb.call("Bash", {"command": f"cat {root}/f01.txt | tail -n 1"})
    assert tail.ok and tail.text == "1" and str(root / "f01.txt") in tail.paths


@pytest.mark.parametrize(
    ("command", "needle"),
    [
        ("ls | grep f", "only a final `| head -n N`"),
        ("ls > listing.txt", "only 2>/dev/null and 2>&1"),
        ("ls 2>/tmp/elsewhere", "only 2>/dev/null and 2>&1"),
        ("cat .env | head -1", "secret"),
        ("ls | head -n 5; cat /etc/passwd", "not supported"),
    ],
)
def test_everything_else_is_still_refused(tmp_path: Path, command: str, needle: str) -> None:
    root = tmp_path / "r"
    root.mkdir()
    (root / ".env").write_text("TOKEN=sk-SECRET-123\n")
    out = Toolbox(root).call("Bash", {"command": command})
    assert not out.ok and needle in out.text, out.text
    assert "sk-SECRET" not in out.text and "root:x:" not in out.text
