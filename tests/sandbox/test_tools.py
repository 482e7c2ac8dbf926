"""Read, Grep and Glob as the model uses them: formats, arguments, truncation notes, names, concurrency, cancel."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from mcp_loco.config import ToolSettings
from mcp_loco.sandbox import TOOLS, Toolbox, find_rg, path_oracle
from mcp_loco.sandbox import read as read_module

from .conftest import Hostile, assert_refused, write_tree

ALLOWED_SCHEMA_TYPES = {"string", "integer", "boolean"}


def test_names_and_schemas_are_simple(hostile: Hostile) -> None:
    tb = hostile.tb
    assert tb.names == ("Read", "Grep", "Glob", "Bash")
    assert tb.root == str(hostile.root)
    schemas = tb.schemas()
    assert list(schemas) == list(tb.names)
    for schema in schemas.values():
        assert schema["type"] == "object"
        assert schema["additionalProperties"] is False
        assert set(schema["required"]) <= set(schema["properties"])
        for prop in schema["properties"].values():
            assert set(prop) <= {"type", "enum"}
            assert prop["type"] in ALLOWED_SCHEMA_TYPES
    assert schemas["Grep"]["properties"]["output_mode"]["enum"] == ["files_with_matches", "content", "count"]
    assert schemas["Read"]["required"] == ["file_path"]
    assert schemas["Bash"]["properties"]["timeout"] == {"type": "integer"}


def test_bash_can_be_turned_off(hostile: Hostile) -> None:
    tb = Toolbox(hostile.root, ToolSettings(bash=False))
    assert tb.names == ("Read", "Grep", "Glob")
    assert "Bash" not in tb.schemas()
    assert_refused(tb.call("Bash", {"command": "ls"}), "Bash is turned off", "Read, Grep, Glob")
    assert_refused(tb.call("LS", {"path": "."}), "unknown tool")


@pytest.mark.parametrize("name", ["Write", "Edit", "MultiEdit", "NotebookEdit", "TodoWrite"])
def test_write_tools_are_refused(hostile: Hostile, name: str) -> None:
    result = hostile.call(name, {"file_path": "README.md", "content": "pwned"})
    assert_refused(result, "read-only explorer; use Read/Grep/Glob", "available tools: Read, Grep, Glob, Bash")
    assert (hostile.root / "README.md").read_text().startswith("# hostile")


def test_task_is_left_to_the_agent_loop(hostile: Hostile) -> None:
    assert_refused(hostile.call("Task", {"description": "x", "prompt": "y"}), "Task is handled by the explorer")


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("WebFetch", "unknown tool 'WebFetch'"),
        ("rm", "unknown tool"),
        ("", "unknown tool"),
        ("x" * 500, "unknown tool"),
    ],
)
def test_unknown_tools_list_the_available_ones(hostile: Hostile, name: str, fragment: str) -> None:
    result = hostile.call(name, {})
    assert_refused(result, fragment, "available tools: Read, Grep, Glob, Bash")
    assert len(result.text) < 400


def test_tool_names_are_matched_loosely(hostile: Hostile) -> None:
    assert hostile.call("read", {"file_path": "notes.txt"}).ok
    assert hostile.call(" GREP ", {"pattern": "line"}).ok
    assert hostile.call("View", {"file_path": "notes.txt"}).ok
    ls = hostile.call("LS", {"path": str(hostile.root / "src")})
    assert ls.ok and "app.py" in ls.text
    assert_refused(hostile.tb.call(42, {}), "must be a string")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        (["README.md"], "must be a JSON object"),
        (42, "must be a JSON object"),
        ("not json", "must be a JSON object"),
        ({}, "missing required argument 'file_path'"),
        ({"file_path": None}, "missing required argument"),
        ({"file_path": ["a"]}, "must be a string"),
        ({"file_path": "notes.txt", "offset": "ten"}, "'offset' must be an integer"),
        ({"file_path": "notes.txt", "offset": -1}, "at least 0"),
        ({"file_path": "notes.txt", "limit": 0}, "at least 1"),
        ({"file_path": "notes.txt", "limit": True}, "must be an integer"),
        ({"file_path": "notes.txt", "limit": 2.5}, "must be an integer"),
    ],
)
def test_bad_read_arguments(hostile: Hostile, arguments: Any, fragment: str) -> None:
    assert_refused(hostile.call("Read", arguments), fragment)


def test_arguments_are_tolerant(hostile: Hostile) -> None:
    expected = "     2\tline two"
    for arguments in [
        {"file_path": "notes.txt", "offset": "2", "limit": "1"},
        {"file_path": "notes.txt", "offset": 2.0, "limit": 1, "unknown": {"x": 1}},
        '{"file_path": "notes.txt", "offset": 2, "limit": 1}',
        {"path": "notes.txt", "offset": 2, "limit": 1},
        {"file_path": str(Path(hostile.root) / "notes.txt"), "offset": 2, "limit": 1},
    ]:
        result = hostile.call("Read", arguments)
        assert result.text.startswith(expected), (arguments, result.text)
    grep = hostile.call("Grep", {"pattern": "LINE", "-i": "true", "output_mode": "count", "head_limit": "5"})
    assert grep.text.startswith(f"{hostile.root}/notes.txt:3")
    assert_refused(
        hostile.call("Grep", {"pattern": "x", "output_mode": "lines"}), "one of files_with_matches, content, count"
    )
    assert_refused(hostile.call("Grep", {"pattern": "x", "-i": "maybe"}), "true or false")
    assert_refused(hostile.call("Grep", {"pattern": ""}), "empty")
    assert_refused(hostile.call("Glob", {}), "missing required argument 'pattern'")


def test_read_format_offsets_and_notes(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path / "r", {"many.txt": "".join(f"row {i}\n" for i in range(1, 3001)), "long.txt": "x" * 5000 + "\nend\n"}
    )
    tb = Toolbox(root)
    first = tb.call("Read", {"file_path": "many.txt"})
    lines = first.text.splitlines()
    assert lines[0] == "     1\trow 1" and lines[1999] == "  2000\trow 2000"
    assert lines[-1] == "... 1000 more lines; use offset=2001 to read on"
    assert first.lines == {f"{root}/many.txt": (1, 2000)}
    rest = tb.call("Read", {"file_path": "many.txt", "offset": 2001})
    assert rest.text.splitlines()[-1] == "  3000\trow 3000"
    assert rest.lines == {f"{root}/many.txt": (2001, 3000)}
    window = tb.call("Read", {"file_path": "many.txt", "offset": 10, "limit": 2})
    assert window.text == "    10\trow 10\n    11\trow 11\n... 2989 more lines; use offset=12 to read on"
    past = tb.call("Read", {"file_path": "many.txt", "offset": 5000})
    assert_refused(past, "has only 3000 lines", "offset=5000 is past the end")
    long = tb.call("Read", {"file_path": "long.txt"})
    assert long.text.splitlines()[0] == "     1\t" + "x" * 2000 + "... [line cut: 3000 more characters]"
    assert long.text.splitlines()[1] == "     2\tend"
    small = Toolbox(root, ToolSettings(max_output_chars=1000))
    capped = small.call("Read", {"file_path": "many.txt"})
    assert len(capped.text) <= 1000
    assert capped.text.splitlines()[-1].startswith("... output cut at 1000 characters after line ")
    assert "more lines); use offset=" in capped.text


def test_grep_modes_paging_and_gitignore(hostile: Hostile) -> None:
    root = hostile.root
    files = hostile.call("Grep", {"pattern": "def main"})
    # build/ and *.log are ignored by .gitignore (there is no .git here: --no-require-git)
    assert files.text == f"Found 1 file\n{root}/src/app.py"
    assert files.paths == (f"{root}/src/app.py",)
    content = hostile.call("Grep", {"pattern": "line t", "output_mode": "content"})
    assert content.text == f"{root}/notes.txt:2:line two\n{root}/notes.txt:3:line three"
    unnumbered = hostile.call("Grep", {"pattern": "line t", "output_mode": "content", "-n": False})
    assert unnumbered.text == f"{root}/notes.txt:line two\n{root}/notes.txt:line three"
    ctx = hostile.call("Grep", {"pattern": "two", "path": "notes.txt", "output_mode": "content", "-C": 1})
    assert ctx.text == f"{root}/notes.txt-1-line one\n{root}/notes.txt:2:line two\n{root}/notes.txt-3-line three"
    paged = hostile.call("Grep", {"pattern": "line", "output_mode": "content", "head_limit": 1, "offset": 1})
    assert paged.text == f"{root}/notes.txt:2:line two\n... 1 more lines; use offset=2 to see them"
    glob = hostile.call("Grep", {"pattern": "def", "glob": "*.py"})
    assert glob.text == f"Found 2 files\n{root}/src/util/helpers.py\n{root}/src/app.py" or glob.text.startswith(
        "Found 2 files"
    )
    path_glob = hostile.call("Grep", {"pattern": "def", "glob": "src/util/*.py"})
    assert path_glob.text == f"Found 1 file\n{root}/src/util/helpers.py"
    typed = hostile.call("Grep", {"pattern": "def", "type": "py", "path": "src/util"})
    assert typed.text == f"Found 1 file\n{root}/src/util/helpers.py"
    multi = hostile.call("Grep", {"pattern": "main\\(\\):\\n\\s+return", "multiline": True, "output_mode": "content"})
    assert multi.text == f"{root}/src/app.py:1:def main():\n{root}/src/app.py:2:    return 42"
    one = hostile.call("Grep", {"pattern": "two", "path": "notes.txt", "output_mode": "content"})
    assert one.text == f"{root}/notes.txt:2:line two"
    assert hostile.call("Grep", {"pattern": "zzz_nothing"}).text == "No files found"
    assert hostile.call("Grep", {"pattern": "zzz_nothing", "output_mode": "content"}).text == "No matches found"
    assert_refused(hostile.call("Grep", {"pattern": "foo("}), "invalid regular expression", "escape")
    assert_refused(hostile.call("Grep", {"pattern": "x", "type": "nosuchtype"}), "unrecognized file type")
    assert_refused(hostile.call("Grep", {"pattern": "x", "type": "py:include:*"}), "not a type name")


def test_nested_gitignore_hidden_files_and_dot_git(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path / "repo",
        {
            ".gitignore": "*.tmp\n",
            "pkg/.gitignore": "generated/\n",
            "pkg/generated/gen.py": "needle\n",
            "pkg/real.py": "needle\n",
            "pkg/cache.tmp": "needle\n",
            ".hidden/tool.py": "needle\n",
            ".git/config": "needle\n",
            ".git/hooks/pre-commit": "needle\n",
        },
    )
    tb = Toolbox(root)
    found = tb.call("Grep", {"pattern": "needle"}).text.splitlines()
    assert sorted(found[1:]) == [f"{root}/.hidden/tool.py", f"{root}/pkg/real.py"]
    listed = tb.call("Glob", {"pattern": "**/*"}).text.splitlines()
    assert sorted(listed) == [
        f"{root}/.gitignore",
        f"{root}/.hidden/tool.py",
        f"{root}/pkg/.gitignore",
        f"{root}/pkg/real.py",
    ]
    sub = tb.call("Grep", {"pattern": "needle", "path": "pkg"}).text.splitlines()
    assert sub == ["Found 1 file", f"{root}/pkg/real.py"]


def test_glob_sorts_newest_first_and_bounds(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "repo", {f"m{i}.py": "" for i in range(5)} | {"docs/a.md": ""})
    for i in range(5):
        os.utime(root / f"m{i}.py", (1_000_000 + i, 1_000_000 + i))
    tb = Toolbox(root, ToolSettings(glob_max_results=3))
    result = tb.call("Glob", {"pattern": "*.py"})
    assert result.text.splitlines() == [
        f"{root}/m4.py",
        f"{root}/m3.py",
        f"{root}/m2.py",
        "... 2 more; narrow the pattern (showing the 3 newest)",
    ]
    assert result.paths == (f"{root}/m4.py", f"{root}/m3.py", f"{root}/m2.py")
    assert tb.call("Glob", {"pattern": "*.md", "path": "docs"}).text == f"{root}/docs/a.md"
    assert tb.call("Glob", {"pattern": "docs/*.{md,txt}"}).text == f"{root}/docs/a.md"
    assert tb.call("Glob", {"pattern": "*.rs"}).text == "No files found"


def test_glob_never_lists_link_targets(hostile: Hostile) -> None:
    listed = hostile.call("Glob", {"pattern": "**/*"}).text
    assert "/links/" not in listed
    assert "secret.txt" not in listed


def test_concurrent_calls_on_one_toolbox(hostile: Hostile) -> None:
    calls: list[tuple[str, dict[str, Any], str]] = [
        ("Read", {"file_path": "notes.txt"}, "line two"),
        ("Grep", {"pattern": "helper", "output_mode": "content"}, "def helper"),
        ("Glob", {"pattern": "src/**/*.py"}, "helpers.py"),
        ("Bash", {"command": "ls src"}, "app.py"),
        ("Bash", {"command": "cat links/to_outside_file"}, "leads outside"),
    ] * 12

    def run(call: tuple[str, dict[str, Any], str]) -> bool:
        result = hostile.call(call[0], call[1])
        return call[2] in result.text

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(run, calls))


def _rg_children() -> list[int]:
    me = str(os.getpid())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if fields[1] == me and comm == "rg":
            found.append(int(entry.name))
    return found


def test_cancel_kills_ripgrep_promptly(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    with (root / "big.txt").open("w") as f:
        f.write(("abcdefghij" * 10 + "\n") * 400_000)
    tb = Toolbox(root)
    cancel = threading.Event()
    timer = threading.Timer(0.2, cancel.set)
    timer.start()
    start = time.monotonic()
    result = None
    for _ in range(20):  # search repeatedly until the cancel lands mid-search
        result = tb.call("Grep", {"pattern": "(a|b)+c[d-z]{3}.*j$", "output_mode": "count"}, cancel=cancel)
        if cancel.is_set():
            break
    timer.join()
    assert result is not None
    result = tb.call("Grep", {"pattern": "abc", "output_mode": "content"}, cancel=cancel)
    assert_refused(result, "cancelled")
    assert time.monotonic() - start < 10
    assert _rg_children() == []


def test_grep_timeout_kills_ripgrep(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    with (root / "big.txt").open("w") as f:
        f.write(("abcdefghij" * 10 + "\n") * 1_000_000)
    tb = Toolbox(root, ToolSettings(grep_timeout_s=0.05))
    start = time.monotonic()
    result = tb.call("Grep", {"pattern": "[a-j]{10}[a-j]{10}.*z", "output_mode": "count"})
    assert time.monotonic() - start < 3
    assert "timed out" in result.text or result.ok
    assert _rg_children() == []


def test_call_never_raises(hostile: Hostile, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object) -> None:
        raise RuntimeError("internal detail /etc/shadow")

    monkeypatch.setitem(TOOLS, "Read", dataclasses.replace(TOOLS["Read"], handler=boom))
    result = hostile.call("Read", {"file_path": "notes.txt"})
    assert_refused(result, "Read failed unexpectedly (RuntimeError)")
    assert "/etc/shadow" not in result.text


def test_missing_ripgrep_is_a_clear_error(hostile: Hostile) -> None:
    tb = Toolbox(hostile.root, ToolSettings(rg_path="/nonexistent/rg"))
    assert_refused(tb.call("Grep", {"pattern": "x"}), "ripgrep not found at tools.rg_path")
    assert tb.call("Read", {"file_path": "notes.txt"}).ok
    assert Path(find_rg("")).name == "rg"


def test_undecodable_and_control_character_names(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    (root / os.fsdecode(b"bad\xffname.txt")).write_text("needle\n")
    (root / "two\nlines.txt").write_text("needle\n")
    tb = Toolbox(root)
    for name, args in [
        ("Glob", {"pattern": "*.txt"}),
        ("Grep", {"pattern": "needle"}),
        ("Grep", {"pattern": "needle", "output_mode": "content"}),
        ("Bash", {"command": "ls"}),
        ("Bash", {"command": "find ."}),
    ]:
        result = tb.call(name, args)
        assert result.ok, result.text
        result.text.encode("utf-8")
        assert "bad?name.txt" in result.text
        # A newline in a name never starts a line of its own; rg's line-based content output drops such a file.
        assert "\nlines.txt" not in result.text
        if args.get("output_mode") != "content":
            assert "two?lines.txt" in result.text


def test_path_oracle_classifies_paths(hostile: Hostile) -> None:
    oracle = path_oracle(hostile.tb)
    root = hostile.root
    assert oracle.inspect(f"{root}/notes.txt").kind == "file"
    assert oracle.inspect(f"{root}/notes.txt").lines == 3
    assert oracle.inspect(f"{root}/src").kind == "dir"
    assert oracle.inspect(f"{root}/nope.py").kind == "missing"
    assert oracle.inspect("/etc/passwd").kind == "outside"
    assert oracle.inspect(f"{root}/links/to_outside_file").kind == "outside"
    assert oracle.inspect(f"{root}/.env").kind == "denied"
    assert oracle.inspect(f"{root}/fifo").kind == "error"
    assert oracle.inspect(f"{root}/hard_out.txt").kind == "error"
    assert oracle.inspect(f"{root}/a\x00b").kind == "error"


def test_only_ripgrep_is_ever_started() -> None:
    # Read and every Bash command are built in: no module but ripgrep.py (and landlock.py, which starts
    # rg from a confined thread) may start a process.
    package = Path(read_module.__file__).parent
    starters = sorted(
        p.name for p in package.glob("*.py") if "subprocess" in p.read_text() or "os.exec" in p.read_text()
    )
    assert starters == ["landlock.py", "ripgrep.py"]


def test_thousands_of_calls_leak_no_descriptor(hostile: Hostile) -> None:
    before = len(os.listdir("/proc/self/fd"))
    calls: list[tuple[str, dict[str, Any]]] = [
        ("Read", {"file_path": "notes.txt"}),
        ("Read", {"file_path": "links/to_outside_dir/secret.txt"}),
        ("Read", {"file_path": "links/loop_a"}),
        ("Read", {"file_path": "fifo"}),
        ("Bash", {"command": "ls -laR src"}),
        ("Bash", {"command": "find . -name '*.py'"}),
        ("Bash", {"command": "cat notes.txt links/inside_file .env"}),
        ("Bash", {"command": "tree -a links"}),
    ] * 250
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda c: hostile.call(c[0], c[1]), calls))
    for _ in range(20):
        hostile.call("Grep", {"pattern": "def", "output_mode": "content"})
        hostile.call("Glob", {"pattern": "**/*.py"})
    assert len(os.listdir("/proc/self/fd")) <= before + 2


def test_files_whose_size_lies_are_read_to_their_end() -> None:
    # /proc-like files report st_size 0; the reader trusts EOF, never the size, and stays bounded.
    from mcp_loco.sandbox.limits import Deadline
    from mcp_loco.sandbox.textfile import LineReader

    read_end, write_end = os.pipe()
    writer = threading.Thread(target=lambda: (os.write(write_end, b"a\nb\nc\n" * 1000), os.close(write_end)))
    writer.start()
    reader = LineReader(read_end, Deadline(5), "pipe")
    assert reader.readline(100) == (b"a", 0)
    assert reader.count_rest(0) == 2999
    writer.join()
    os.close(read_end)
