"""Small parts on their own: the command-line reader, option allowlists, globs, ripgrep's argument list."""

from __future__ import annotations

from typing import Any

import pytest

from mcp_loco.sandbox import context as context_module
from mcp_loco.sandbox import grep_passes
from mcp_loco.sandbox.bash_parse import Spec, Word, parse_options, tokenize
from mcp_loco.sandbox.bash_search import bre_to_rg
from mcp_loco.sandbox.globbing import GlobMatcher, expand_braces
from mcp_loco.sandbox.limits import ToolFailure, cut
from mcp_loco.sandbox.ripgrep import RgRun, run_rg

from .conftest import Hostile


@pytest.mark.parametrize(
    ("command", "words"),
    [
        ("ls -la /x", ["ls", "-la", "/x"]),
        ("grep 'a b' \"c d\" e\\ f", ["grep", "a b", "c d", "e f"]),
        ("grep 'it'\\''s'", ["grep", "it's"]),
        ('grep "a\\"b" "\\$x"', ["grep", 'a"b', "$x"]),
        ("grep 'x$' \"y$\" z$", ["grep", "x$", "y$", "z$"]),
        ("find . -name '*.py'", ["find", ".", "-name", "*.py"]),
        ("ls\tsrc", ["ls", "src"]),
        ("find . -exec x {} \\;", ["find", ".", "-exec", "x", "{}", ";"]),
        ("a=b", None),
    ],
)
def test_tokenize(command: str, words: list[str] | None) -> None:
    if words is None:
        with pytest.raises(ToolFailure):
            tokenize(command)
        return
    assert [w.text for w in tokenize(command)] == words


def test_only_unquoted_wildcards_are_patterns() -> None:
    words = tokenize("cat *.py '*.md' \"a?\" b\\*c [x]")
    assert [w.pattern for w in words] == [None, "*.py", None, None, None, "[x]"]


SPEC = Spec(
    short="ab", short_value="n", long=("all",), long_value=("lines",), aliases={"all": "a", "lines": "n"}, numeric=True
)


def _words(*texts: str) -> list[Word]:
    return [Word(t) for t in texts]


def test_option_parsing_follows_getopt() -> None:
    parsed = parse_options("p", _words("-ab", "-n5", "file", "--lines=7", "--all", "-12", "--", "-a"), SPEC)
    assert parsed.options == {"a": ["", ""], "b": [""], "n": ["5", "7"], "NUM": ["12"]}
    assert [w.text for w in parsed.operands] == ["file", "-a"]
    assert parse_options("p", _words("-bn", "-3"), SPEC).value("n") == "-3"  # a value-taking flag ends its bundle


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("-x",), "option -x is not supported"),
        (("-ax",), "option -x is not supported"),
        (("--al",), "write the option in full (--all"),
        (("--lin=3",), "write the option in full (--lines"),
        (("--nope",), "option --nope is not supported"),
        (("--all=1",), "takes no value"),
        (("-n",), "needs a value"),
        (("--lines",), "needs a value"),
    ],
)
def test_option_errors(args: tuple[str, ...], fragment: str) -> None:
    with pytest.raises(ToolFailure, match=fragment.replace("(", r"\(")):
        parse_options("p", _words(*args), SPEC)


def test_bre_translation() -> None:
    assert bre_to_rg(r"a\|b") == "a|b"
    assert bre_to_rg(r"\(x\)\{2\}") == "(x){2}"
    assert bre_to_rg("a|b(c)+?") == r"a\|b\(c\)\+\?"
    assert bre_to_rg(r"\.\*") == r"\.\*"


@pytest.mark.parametrize(
    ("pattern", "path", "anchored", "expected"),
    [
        ("*.py", "a.py", False, True),
        ("*.py", "x/y/a.py", False, True),
        ("*.py", "x/y/a.pyc", False, False),
        ("**/*.py", "a.py", False, True),
        ("src/**/*.py", "src/a/b/c.py", False, True),
        ("src/**/*.py", "src/c.py", False, True),
        ("src/**/*.py", "lib/src/c.py", False, False),
        ("*.py", "x/a.py", True, False),
        ("*.{ts,tsx}", "a/b.tsx", False, True),
        ("**/test_*.py", "t/test_x.py", False, True),
        ("a/**", "a/b/c", False, True),
        ("[!a]*.py", "b.py", False, True),
        ("[!a]*.py", "a.py", False, False),
        ("**", "anything/at/all", False, True),
    ],
)
def test_glob_matcher(pattern: str, path: str, anchored: bool, expected: bool) -> None:
    assert GlobMatcher(pattern, anchored=anchored).match(path) is expected


def test_brace_expansion() -> None:
    assert expand_braces("a{b,c{d,e}}f") == ["abf", "acdf", "acef"]
    assert expand_braces("{x}") == ["{x}"]
    with pytest.raises(ToolFailure, match="more than 64"):
        expand_braces("{a,b}" * 7)


def test_cut_says_what_was_cut() -> None:
    text = "\n".join(f"line {i}" for i in range(1000))
    out = cut(text, 1000, "narrow it")
    assert len(out) <= 1000
    assert out.endswith("more lines not shown); narrow it")


@pytest.mark.parametrize(
    "arguments",
    [
        {"pattern": "--pre=sh"},
        {"pattern": "-z", "output_mode": "content", "-C": 2},
        {"pattern": "x", "glob": "--pre=sh", "type": "py"},
        {"pattern": "x", "glob": "!--follow"},
        {"pattern": "-P", "multiline": True, "-i": True},
    ],
)
def test_ripgrep_never_gets_a_dangerous_flag(
    hostile: Hostile, monkeypatch: pytest.MonkeyPatch, arguments: dict[str, Any]
) -> None:
    seen: list[list[str]] = []

    def spy(rg: str, args: list[str], **kwargs: Any) -> RgRun:
        seen.append(list(args))
        return run_rg(rg, args, **kwargs)

    monkeypatch.setattr(grep_passes, "run_rg", spy)
    monkeypatch.setattr(context_module, "run_rg", spy)  # pass 1 lists files through ToolContext.rg_paths
    hostile.call("Grep", arguments)
    assert seen
    forbidden = (
        "--pre",
        "-z",
        "--search-zip",
        "-P",
        "--pcre2",
        "-L",
        "--follow",
        "--no-ignore",
        "--hostname-bin",
        "-u",
    )
    for args in seen:
        assert args[0] == "--no-config"
        flags = args[: args.index("--")]
        assert f"--regexp={arguments['pattern']}" in flags
        for flag in flags:
            name = flag.split("=", 1)[0]
            assert name not in forbidden, flag
            assert flag.startswith("--"), flag  # values always attached: nothing can be read as a flag
