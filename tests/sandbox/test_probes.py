"""Probes get the same answer whatever is hidden: no figure counts a file the tools may not show."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from mcp_loco.config import ToolSettings
from mcp_loco.sandbox import Toolbox
from mcp_loco.sandbox import context as context_module
from mcp_loco.sandbox.bash_env import Env, Output, scan
from mcp_loco.sandbox.limits import Deadline
from mcp_loco.sandbox.ripgrep import RgRun, run_rg

from .conftest import Hostile, write_tree

SHADOW = "root:$6$hash_9f3c:19000:0:99999:7:::\n"


def _grep_calls(pattern: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        ("Grep", {"pattern": pattern}),
        ("Grep", {"pattern": pattern, "output_mode": "count"}),
        ("Grep", {"pattern": pattern, "output_mode": "content"}),
        ("Grep", {"pattern": pattern, "output_mode": "content", "head_limit": 1}),
        ("Grep", {"pattern": f"{pattern}|visible", "output_mode": "count"}),
        ("Grep", {"pattern": f"{pattern}|visible", "head_limit": 1}),
        ("Bash", {"command": f"grep -rc '{pattern}' ."}),
        ("Bash", {"command": f"grep -rl '{pattern}' ."}),
        ("Bash", {"command": f"rg -c '{pattern}'"}),
        ("Bash", {"command": f"rg -l '{pattern}|visible'"}),
    ]


@pytest.fixture
def linked(tmp_path: Path) -> Path:
    """A root holding a hard link to a file outside it and a hard link to one of its own secrets."""
    outside = write_tree(tmp_path / "outside", {"shadow": SHADOW})
    root = write_tree(tmp_path / "root", {"a.txt": "visible\n", "b.txt": "visible too\n", ".env": "TOKEN=zq81\n"})
    os.link(outside / "shadow", root / "passwd_copy.txt")
    os.link(root / ".env", root / "settings.txt")
    return root


def test_grep_figures_never_count_a_hard_linked_file(linked: Path) -> None:
    # Before: pass 1 read the links by name and "Found 1 file", the counts and the notes told, letter by
    # letter, what the linked files hold.
    tb = Toolbox(linked)
    for right, wrong in (("root:.6.hash_9", "root:.6.hash_8"), ("TOKEN=zq8", "TOKEN=zq7")):
        for (name, hit), (_, miss) in zip(_grep_calls(right), _grep_calls(wrong), strict=True):
            found, missed = tb.call(name, hit), tb.call(name, miss)
            assert found.text == missed.text, (name, hit)
            assert "passwd_copy" not in found.text and "settings.txt" not in found.text
    assert tb.call("Grep", {"pattern": "visible", "output_mode": "count"}).text.endswith(
        "Found 2 total matches across 2 files."
    )


def test_allowed_hard_links_are_searched_and_counted(linked: Path) -> None:
    # The same search with hard links allowed finds them: the test above does exercise the links.
    tb = Toolbox(linked, ToolSettings(allow_hard_links=True))
    assert tb.call("Grep", {"pattern": "root:.6.hash_9"}).text == f"Found 1 file\n{linked}/passwd_copy.txt"


def test_hard_link_size_is_withheld(linked: Path) -> None:
    tb = Toolbox(linked)
    ls = tb.call("Bash", {"command": "ls -l"}).text
    row = next(line for line in ls.splitlines() if line.endswith("passwd_copy.txt"))
    assert row.split()[4] == "?"
    shown = tb.call("Bash", {"command": "stat passwd_copy.txt"}).text
    # Size and Blocks withheld (the size may still appear inside an inode number or a time: look at the fields).
    assert re.search(r"Size: (\S+)\s+Blocks: (\S+)", shown).groups() == ("?", "?"), shown  # type: ignore[union-attr]
    assert tb.call("Bash", {"command": "stat -c '%s %b' passwd_copy.txt"}).text == "? ?"
    for size in (f"-{len(SHADOW) + 1}c", f"+{len(SHADOW) - 1}c", f"{len(SHADOW)}c", "-1k", "+0"):
        assert tb.call("Bash", {"command": f"find . -name passwd_copy.txt -size {size}"}).text == "(no output)"
    assert tb.call("Bash", {"command": "find . -name 'passwd*' -empty"}).text == "(no output)"
    sizes = tb.call("Bash", {"command": "ls -S"}).text.splitlines()
    assert sizes.index("passwd_copy.txt") > sizes.index("b.txt")  # sorted as if it had no size


@pytest.mark.parametrize(
    "probe",
    [
        ("Glob", {"pattern": "**/.aws/cred*"}, {"pattern": "**/.aws/zzz*"}),
        ("Glob", {"pattern": "config/**/*"}, {"pattern": "config/**/*.nothing"}),
        ("Glob", {"pattern": "**/*.pem"}, {"pattern": "**/*.nothing"}),
        ("Bash", {"command": "rg --files keys"}, {"command": "rg --files src/util -g '*.nothing'"}),
        ("Bash", {"command": "find . -name 'cred*'"}, {"command": "find . -name 'zzz*'"}),
        ("Bash", {"command": "find . -name '*.pem' -size -1000c"}, {"command": "find . -name '*.pem' -size +1000c"}),
        ("Bash", {"command": "find config -path '*aws*'"}, {"command": "find config -path '*zzz*'"}),
        ("Grep", {"pattern": "aws_secret", "output_mode": "count"}, {"pattern": "zzz_secret", "output_mode": "count"}),
    ],
    ids=lambda p: str(p[1]),
)
def test_a_probe_for_a_secret_answers_as_for_nothing(hostile: Hostile, probe: tuple[str, dict, dict]) -> None:
    name, secret, nothing = probe
    assert hostile.call(name, secret).text == hostile.call(name, nothing).text
    assert "hidden" not in hostile.call(name, secret).text


def test_listings_of_a_folder_of_secrets_look_empty(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "root", {"keys/server.pem": "k\n", "keys/.aws/credentials": "c\n", "blank/.keep": ""})
    (root / "blank" / ".keep").unlink()
    tb = Toolbox(root)
    assert tb.call("Bash", {"command": "ls -A keys"}).text == f"{root}/keys:"
    assert tb.call("Bash", {"command": "tree -a keys"}).text == f"{root}/keys\n\n0 directories, 0 files"
    assert tb.call("Bash", {"command": "find keys"}).text == f"{root}/keys"
    empty = tb.call("Bash", {"command": "find . -empty"}).text.splitlines()
    assert sorted(empty) == [f"{root}/blank", f"{root}/keys"]  # keys holds only secrets: empty to the tools
    assert tb.call("Glob", {"pattern": "keys/**"}).text == "No files found"


def test_glob_ripgrep_run_excludes_secrets(hostile: Hostile, monkeypatch: pytest.MonkeyPatch) -> None:
    # rg should not even walk into a denied folder (a huge one would cost the whole deadline).
    seen: list[list[str]] = []

    def spy(rg: str, args: list[str], **kwargs: Any) -> RgRun:
        seen.append(list(args))
        return run_rg(rg, args, **kwargs)

    monkeypatch.setattr(context_module, "run_rg", spy)  # Glob lists files through ToolContext.rg_paths
    hostile.call("Glob", {"pattern": "**/*"})
    assert seen and "--glob=!**/.aws/**" in seen[0] and "--glob-case-insensitive" in seen[0]


def test_directory_metadata_counts_only_what_is_shown(tmp_path: Path) -> None:
    # A directory's link count includes a denied .aws, and its size grows with every entry on many file
    # systems: the tools show a count of visible subdirectories and no size.
    root = write_tree(tmp_path / "root", {"config/.aws/credentials": "c\n", "config/sub/x.txt": "x\n"})
    tb = Toolbox(root)
    assert tb.call("Bash", {"command": "stat -c '%h %s %b' config"}).text == "3 ? ?"
    assert tb.call("Bash", {"command": "ls -ld config"}).text.split()[1:5:3] == ["3", "?"]
    dot = next(line for line in tb.call("Bash", {"command": "ls -la config"}).text.splitlines() if line.endswith(" ."))
    assert dot.split()[1] == "3"
    assert "Links: 3" in tb.call("Bash", {"command": "stat config"}).text


@pytest.mark.parametrize(
    ("secret", "nothing"),
    [
        ("ls config/.a*/credentials", "ls config/.q*/credentials"),
        ("cat config/.a*/credentials", "cat config/.q*/credentials"),
        ("wc -l config/.aws/*", "wc -l src/.aws/*"),  # named outright: refused by name, there or not
        ("ls config/.aws", "ls src/.aws"),
    ],
)
def test_a_wildcard_through_a_denied_folder_answers_as_for_nothing(hostile: Hostile, secret: str, nothing: str) -> None:
    # Before, `.a*` expanded to the denied .aws, whose path was then refused as a secret: it was there.
    def answer(command: str, folder: str) -> str:
        text = hostile.call("Bash", {"command": command}).text
        return text.replace(folder, "FOLDER").replace(".a*", "X").replace(".q*", "X")

    assert answer(secret, "config") == answer(nothing, "src" if "src" in nothing else "config")


def test_where_a_listing_stops_does_not_count_secrets(tmp_path: Path) -> None:
    # A listing stops at MAX_DIR_ENTRIES; if secrets counted towards it, "listing stopped" would appear
    # or not depending on how many secrets the folder holds.
    root = write_tree(tmp_path / "root", {"d/a.txt": "", "d/b.txt": "", "d/x.pem": "", "d/y.pem": "", "d/.env": ""})
    tb = Toolbox(root)
    env = Env(tb.context, Deadline(10), Output(10_000))
    fd = os.open(root / "d", os.O_RDONLY | os.O_DIRECTORY)
    try:
        entries, truncated = scan(fd, env.deadline, limit=2, hide=lambda name: env.denied("d", name))
    finally:
        os.close(fd)
    assert sorted(e.name for e in entries) == ["a.txt", "b.txt"] and not truncated
