"""Bash: shell syntax, exec-capable flags and unknown programs are refused; the built-ins behave like the real ones."""

from __future__ import annotations

import threading
import time

import pytest

from .conftest import Hostile, assert_refused

REFUSED = [
    # separators and substitutions
    ("ls; cat /etc/passwd", "';'"),
    ("ls && cat .env", "'&'"),
    ("ls & cat .env", "'&'"),
    ("ls || cat .env", "pipes"),
    ("cat README.md | sort", "pipes"),
    ("echo $(cat /etc/passwd)", "substitution"),
    ("cat $HOME/.ssh/id_rsa", "variable expansion"),
    ('cat "${HOME}/.netrc"', "variable expansion"),
    ("cat `echo /etc/passwd`", "command substitution"),
    ('cat "`echo /etc/passwd`"', "command substitution"),
    ("cat <(cat /etc/passwd)", "redirections"),
    ("diff <(ls) >(ls)", "redirections"),
    ("cat README.md > out.txt", "redirections"),
    ("cat < /etc/passwd", "redirections"),
    ("ls 2>errors.txt", "redirections"),
    ("(cat /etc/passwd)", "subshells"),
    ("ls\ncat /etc/passwd", "line break"),
    ("ls\rcat /etc/passwd", "line break"),
    ("ls\x1b[2J", "control characters"),
    ("ls # cat /etc/passwd", "comments"),
    ("cat {README.md,/etc/passwd}", "brace expansion"),
    ("cat /etc/{passwd,shadow}", "brace expansion"),
    ("cat 'unterminated", "unterminated"),
    ("cat README.md\\", "lone backslash"),
    ("   ", "empty"),
    # environment prefixes
    ("FOO=1 ls", "environment assignments"),
    ("PAGER='sh -c id' ls", "environment assignments"),
    ("LD_PRELOAD=/tmp/x.so cat README.md", "environment assignments"),
    # exec-capable or writing flags of allowed programs
    ("find . -exec cat {} \\;", "-exec is not allowed: it runs a program"),
    ("find . -execdir sh -c id \\;", "runs a program"),
    ("find . -ok cat {} \\;", "runs a program"),
    ("find . -okdir cat {} \\;", "runs a program"),
    ("find . -delete", "deletes files"),
    ("find . -fprint /tmp/x", "writes a file"),
    ("find . -fprint0 /tmp/x", "writes a file"),
    ("find . -fprintf /tmp/x %p", "writes a file"),
    ("find . -fls /tmp/x", "writes a file"),
    ("find -L . -name x", "follows symbolic links"),
    ("find . -follow", "follows symbolic links"),
    ("find . -regex '(a+)+$'", "not supported"),
    ("find . -newer /etc/passwd", "outside the explored root"),
    ("rg --pre=cat CANARY", "--pre is not allowed: it runs programs"),
    ("rg --pre cat CANARY", "runs programs"),
    ("rg --pre-glob '*' x", "runs programs"),
    ("rg -z CANARY", "runs programs"),
    ("rg --search-zip CANARY", "runs programs"),
    ("rg --hostname-bin=id x", "runs programs"),
    ("rg -P 'a(?=b)'", "not linear-time"),
    ("rg -L x", "follows symbolic links"),
    ("rg --follow x", "follows symbolic links"),
    ("rg --no-ignore CANARY", "ignore rules always apply"),
    ("rg -uuu CANARY", "ignore rules always apply"),
    ("rg --ignore-file=/etc/passwd x", "ignore rules always apply"),
    ("rg -f /etc/passwd", "reads patterns from a file"),
    ("rg -nz x", "runs programs"),
    ("grep -P 'a(?=b)' README.md", "not linear-time"),
    ("grep -f /etc/passwd README.md", "reads patterns from a file"),
    ("grep -rf /etc/passwd .", "reads patterns from a file"),
    ("tail -f README.md", "forever"),
    ("tail -F README.md", "forever"),
    ("tail --follow=name README.md", "forever"),
    ("tail -fn5 README.md", "forever"),
    ("tail -n5f README.md", "needs a number"),
    ("tail --retry README.md", "forever"),
    ("sed -i s/a/b/ README.md", "not supported"),
    ("sed -n '1e id' README.md", "sed is limited here"),
    ("sed 'w /tmp/x' README.md", "sed is limited here"),
    ("sed -n '1,2w /tmp/x' README.md", "sed is limited here"),
    ("tree -o /tmp/x .", "writes a file"),
    ("stat --printf=%n README.md", "use -c FORMAT"),
    ("stat -c %Z%q README.md", "not supported"),
    # abbreviations and unknown flags
    ("grep --inc=*.py -r x .", "write the option in full"),
    ("ls --al", "write the option in full"),
    ("rg --fol x", "write the option in full"),
    ("ls -Z", "not supported"),
    ("cat -v README.md", "not supported"),
    ("ls --frobnicate", "not supported"),
    ("head -n", "needs a value"),
    ("head -n lots README.md", "needs a number"),
    ("tree -L deep", "positive number"),
    ("find . -maxdepth x", "needs a number"),
    ("find . -type q", "-type takes"),
    ("find . -name", "needs a value"),
    ("find . \\( -name x", "missing ')'"),
    ("find . -name x \\)", "unexpected"),
    ("find . ( -name x )", "subshells"),
    ("find . -size 1X", "needs a number"),
    # programs that are not here
    ("git log -p", "git is not available in this read-only explorer; use Grep/Read"),
    ("git -c core.fsmonitor=id status", "git is not available"),
    ("/usr/bin/git diff --no-index /etc/passwd x", "git is not available"),
    ("python -c 'print(1)'", "cannot run here"),
    ("python3 -m http.server", "cannot run here"),
    ("bash -c 'cat /etc/passwd'", "cannot run here"),
    ("sh -c id", "cannot run here"),
    ("/bin/sh -c id", "cannot run here"),
    ("env cat /etc/passwd", "cannot run here"),
    ("xargs cat", "cannot run here"),
    ("yes", "cannot run here"),
    ("sort -o /tmp/x README.md", "cannot run here"),
    ("man -P id ls", "cannot run here"),
    ("curl http://example.com", "cannot run here"),
    ("rm -rf src", "cannot run here"),
    ("./run.sh", "from the repository"),
    ("src/app.py", "from the repository"),
    ("sudo cat /etc/shadow", "sudo is not available"),
    ("cd /tmp", "no working directory to change"),
    ("l*", "contains a wildcard"),
    ("echo hi", "cannot run here"),
    # operands and stdin
    ("cat", "give a file operand"),
    ("head -n 3", "give a file operand"),
    ("grep x", "reads stdin here"),
    ("grep", "give a pattern"),
    ("rg", "give a pattern"),
    ("cat -", "does not exist"),
    ("pwd -P", "takes no arguments"),
    ("cat nothing-here.txt", "does not exist"),
    ("cat *.nothing", "no file matches"),
    ("cat keys/*", "no file matches"),
]


@pytest.mark.parametrize(("command", "fragment"), REFUSED, ids=[c for c, _ in REFUSED])
def test_command_is_refused_with_a_clear_message(hostile: Hostile, command: str, fragment: str) -> None:
    assert_refused(hostile.call("Bash", {"command": command}), fragment)


def test_pattern_that_looks_like_a_flag_is_a_pattern(hostile: Hostile) -> None:
    for command in ("rg -e --pre=sh .", "rg -- --pre=sh .", "grep -r -e --pre=sh ."):
        result = hostile.call("Bash", {"command": command})
        assert result.ok, result.text
        assert result.text == "(no output)"
    assert hostile.call("Grep", {"pattern": "--pre=sh"}).text == "No files found"


def test_quoted_metacharacters_are_plain_text(hostile: Hostile) -> None:
    assert hostile.call("Bash", {"command": "grep -c 'a|b;c>d' README.md"}).text == "0"
    assert hostile.call("Bash", {"command": 'grep -c "line \\"one" notes.txt'}).text == "0"
    assert hostile.call("Bash", {"command": "grep -c 'one$' notes.txt"}).text == "1"
    assert hostile.call("Bash", {"command": 'grep -c "one$" notes.txt'}).text == "1"


def test_ls_lists_with_absolute_header_and_hides_secrets(hostile: Hostile) -> None:
    result = hostile.call("Bash", {"command": "ls -la"})
    lines = result.text.splitlines()
    assert lines[0] == f"{hostile.root}:"
    assert lines[1].startswith("total ")
    names = [line.split()[-1] for line in lines[2:] if " -> " not in line and not line.startswith("(")]
    assert ".env.example" in names and "README.md" in names and "." in names
    assert ".env" not in names and ".npmrc" not in names
    assert "hidden" not in result.text  # secrets leave no trace, not even a count
    plain = hostile.call("Bash", {"command": "ls src"}).text.splitlines()
    assert plain == [f"{hostile.root}/src:", "app.py", "util"]
    assert hostile.call("Bash", {"command": "ls -d src"}).text.startswith(f"{hostile.root}/src")
    classify = hostile.call("Bash", {"command": "ls -F links"}).text
    assert "to_outside_dir@" in classify
    long_links = hostile.call("Bash", {"command": "ls -l links"}).text
    assert "inside_file -> ../README.md" in long_links


def test_ls_recursive_does_not_follow_links(hostile: Hostile) -> None:
    result = hostile.call("Bash", {"command": "ls -R src links"})
    assert f"{hostile.root}/src/util:" in result.text
    assert "/links/inside_dir:" not in result.text
    assert "/links/to_outside_dir:" not in result.text


def test_cat_head_tail_wc_sed(hostile: Hostile) -> None:
    def run(command: str) -> str:
        result = hostile.call("Bash", {"command": command})
        assert result.ok, result.text
        return result.text

    assert run("cat notes.txt") == "line one\nline two\nline three"
    assert run("cat -n notes.txt") == "     1\tline one\n     2\tline two\n     3\tline three"
    assert run("cat crlf.txt") == "one\ntwo"
    assert run("head -n 1 notes.txt") == "line one"
    assert run("head -2 notes.txt") == "line one\nline two"
    assert run("head -n -1 notes.txt") == "line one\nline two"
    assert run("head -c 4 notes.txt") == "line"
    assert run("tail -n 1 notes.txt") == "line three"
    assert run("tail -1 notes.txt") == "line three"
    assert run("tail -n +2 notes.txt") == "line two\nline three"
    assert run("tail -c 6 notes.txt") == "three"
    assert run("wc -l notes.txt") == f"3 {hostile.root}/notes.txt"
    assert run("wc notes.txt") == f" 3  6 29 {hostile.root}/notes.txt"
    assert run("wc -l notes.txt src/app.py").splitlines()[-1] == "5 total"
    assert run("sed -n '2,3p' notes.txt") == "line two\nline three"
    assert run("sed -n 2p notes.txt") == "line two"
    assert run("sed -n '2,$p' notes.txt") == "line two\nline three"
    two = run("head -n 1 notes.txt src/app.py")
    assert two == f"==> {hostile.root}/notes.txt <==\nline one\n\n==> {hostile.root}/src/app.py <==\ndef main():"


def test_find_prints_absolute_paths_and_supports_expressions(hostile: Hostile) -> None:
    def lines(command: str) -> list[str]:
        result = hostile.call("Bash", {"command": command})
        assert result.ok, result.text
        return result.text.splitlines()

    root = str(hostile.root)
    assert lines("find src -name '*.py' -type f") == [f"{root}/src/app.py", f"{root}/src/util/helpers.py"]
    assert lines("find . -maxdepth 1 -name '*.txt'") == [
        f"{root}/bad_utf8.txt",
        f"{root}/crlf.txt",
        f"{root}/empty.txt",
        f"{root}/hard_out.txt",
        f"{root}/notes.txt",
    ]
    assert lines("find src -type d") == [f"{root}/src", f"{root}/src/util"]
    assert lines("find . -path '*/util/*'") == [f"{root}/src/util/helpers.py"]
    assert lines("find . -name src -prune -o -name '*.py' -print") == [f"{root}/build/out.py"]
    assert lines("find . -maxdepth 1 -empty -type f") == [f"{root}/empty.txt"]
    assert lines("find src ! -name '*.py' -type f") == ["(no output)"]
    assert lines("find . -iname README.MD") == [f"{root}/README.md"]
    assert lines("find links -maxdepth 1 -type l -name 'inside_*'") == [
        f"{root}/links/inside_abs",
        f"{root}/links/inside_dir",
        f"{root}/links/inside_file",
    ]
    assert lines("find . -name README.md -print -quit") == [f"{root}/README.md"]
    assert lines("find . -name README.md -quit") == ["(no output)"]
    assert lines("find src -size -25c -type f") == [f"{root}/src/util/helpers.py"]
    assert lines("find . -name '*.pem'") == ["(no output)"]  # as if no secret were there


def test_tree_stat_file_pwd(hostile: Hostile) -> None:
    tree = hostile.call("Bash", {"command": "tree src"}).text.splitlines()
    assert tree == [
        f"{hostile.root}/src",
        "├── app.py",
        "└── util",
        "    └── helpers.py",
        "",
        "1 directory, 2 files",
    ]
    assert hostile.call("Bash", {"command": "tree -L 1 -d src"}).text.splitlines()[1] == "└── util"
    stat = hostile.call("Bash", {"command": "stat -c '%n %s %F' notes.txt"}).text
    assert stat == f"{hostile.root}/notes.txt 29 regular file"
    full = hostile.call("Bash", {"command": "stat notes.txt"}).text
    assert full.startswith(f"  File: {hostile.root}/notes.txt\n  Size: 29")
    assert hostile.call("Bash", {"command": "file -b src/app.py"}).text == "ASCII text"
    assert hostile.call("Bash", {"command": "pwd"}).text == str(hostile.root)


def test_grep_and_rg_are_served_by_ripgrep(hostile: Hostile) -> None:
    root = hostile.root
    grep = hostile.call("Bash", {"command": "grep -rn 'def main' . --include=*.py"})
    assert grep.text == f"{root}/src/app.py:1:def main():"
    assert grep.paths == (f"{root}/src/app.py",)
    assert hostile.call("Bash", {"command": "grep -rl main src"}).text == f"{root}/src/app.py"
    assert hostile.call("Bash", {"command": "grep -rc main src"}).text == f"{root}/src/app.py:1"
    assert hostile.call("Bash", {"command": "grep -c line notes.txt"}).text == "3"
    assert hostile.call("Bash", {"command": "grep 'line t\\(wo\\|hree\\)' notes.txt"}).text == (
        f"{root}/notes.txt:line two\n{root}/notes.txt:line three"
    )
    assert hostile.call("Bash", {"command": "grep -E 'two|three' -n notes.txt"}).text.count("\n") == 1
    assert hostile.call("Bash", {"command": "grep -F 'a.b' notes.txt"}).text == "(no output)"
    rg = hostile.call("Bash", {"command": "rg -n helper -g '*.py'"})
    assert rg.text == f"{root}/src/util/helpers.py:1:def helper():"
    rg_type = hostile.call("Bash", {"command": "rg -l main -t py"})
    assert rg_type.text == f"{root}/src/app.py"
    files = hostile.call("Bash", {"command": "rg --files src"})
    assert files.text.splitlines() == [f"{root}/src/app.py", f"{root}/src/util/helpers.py"]
    assert hostile.call("Bash", {"command": "egrep -c 'one|two' notes.txt"}).text == "2"


def test_program_given_by_system_path_is_the_builtin(hostile: Hostile) -> None:
    assert hostile.call("Bash", {"command": "/bin/cat notes.txt"}).text.startswith("line one")
    assert hostile.call("Bash", {"command": "/usr/bin/head -n 1 notes.txt"}).text == "line one"


def test_bash_wildcards_are_expanded_like_a_shell(hostile: Hostile) -> None:
    root = hostile.root
    assert hostile.call("Bash", {"command": "wc -l src/*.py"}).text == f"2 {root}/src/app.py"
    assert hostile.call("Bash", {"command": "ls -d s*"}).text.splitlines()[0].startswith(f"{root}/sock")
    dotfiles = hostile.call("Bash", {"command": "ls -d .e*"}).text
    assert f"{root}/.env.example" in dotfiles and f"{root}/.env\n" not in dotfiles + "\n"
    assert hostile.call("Bash", {"command": "cat 'src/*.py'"}).ok is False  # quoted: a literal name


def test_bash_timeout_and_cancel_stop_promptly(fresh: Hostile) -> None:
    big = fresh.root / "wide"
    for i in range(200):
        sub = big / f"d{i}"
        sub.mkdir(parents=True)
        for j in range(50):
            (sub / f"f{j}").touch()
    cancel = threading.Event()
    cancel.set()
    start = time.monotonic()
    cancelled = fresh.tb.call("Bash", {"command": "find . -name nothing"}, cancel=cancel)
    assert not cancelled.ok and "cancelled" in cancelled.text
    assert time.monotonic() - start < 2


def test_bash_timeout_argument_is_in_milliseconds_and_clamped(hostile: Hostile) -> None:
    assert hostile.call("Bash", {"command": "pwd", "timeout": 120000, "description": "where"}).ok
    assert hostile.call("Bash", {"command": "pwd", "timeout": "5000"}).ok
    assert_refused(hostile.call("Bash", {"command": "pwd", "timeout": "soon"}), "must be an integer")
