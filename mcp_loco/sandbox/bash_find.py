"""Built-in find: names and metadata only, never a program, never a link followed, secrets hidden.

Supported: -name -iname -path -ipath -wholename -type -size -empty -mtime -mmin -newer -maxdepth
-mindepth -print -prune -quit -true -false, combined with ! -not -a -and -o -or ( ). Actions that run
programs or write files (-exec, -execdir, -ok, -okdir, -delete, -fprint*, -fls) are refused, and so are
-L/-H/-follow (they follow links) and -regex (Python regexes are not linear-time).
"""

from __future__ import annotations

import fnmatch
import math
import os
import re
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mcp_loco.sandbox.bash_env import Env, open_child, scan
from mcp_loco.sandbox.bash_parse import Word
from mcp_loco.sandbox.limits import ToolFailure, show_name

MAX_DEPTH = 100
MAX_VISITS = 500_000

_REFUSED = {
    "-exec": "it runs a program",
    "-execdir": "it runs a program",
    "-ok": "it runs a program",
    "-okdir": "it runs a program",
    "-delete": "it deletes files (this explorer is read-only)",
    "-fprint": "it writes a file (this explorer is read-only)",
    "-fprint0": "it writes a file (this explorer is read-only)",
    "-fprintf": "it writes a file (this explorer is read-only)",
    "-fls": "it writes a file (this explorer is read-only)",
    "-follow": "it follows symbolic links",
    "-L": "it follows symbolic links",
    "-H": "it follows symbolic links",
    "-regex": "regular expressions are not supported here; use -name or -path, or the Grep/Glob tools",
    "-iregex": "regular expressions are not supported here; use -name or -path, or the Grep/Glob tools",
    "-printf": "it is not supported here; plain -print shows absolute paths",
    "-print0": "it is not supported here; plain -print shows absolute paths",
    "-ls": "it is not supported here; use ls -l on the paths",
}
_NO_ARG_TESTS = {"-empty", "-true", "-false", "-print", "-prune", "-quit", "-readable"}
_ARG_TESTS = {
    "-name",
    "-iname",
    "-path",
    "-ipath",
    "-wholename",
    "-iwholename",
    "-type",
    "-size",
    "-mtime",
    "-mmin",
    "-newer",
}
_GLOBAL = {"-maxdepth", "-mindepth"}
_IGNORED = {"-depth", "-xdev", "-mount", "-noleaf", "-ignore_readdir_race", "-nowarn", "-P"}
_SIZE_UNITS = {"c": 1, "w": 2, "b": 512, "k": 1024, "M": 1 << 20, "G": 1 << 30}
_TYPES = {
    "f": stat.S_ISREG,
    "d": stat.S_ISDIR,
    "l": stat.S_ISLNK,
    "p": stat.S_ISFIFO,
    "s": stat.S_ISSOCK,
    "c": stat.S_ISCHR,
    "b": stat.S_ISBLK,
}


@dataclass
class Node:
    """The entry being tested."""

    name: str
    shown: str
    """The path as find would print it from the operand as typed (what -path matches)."""
    rel: str
    st: os.stat_result
    parent_fd: int


@dataclass
class Walk:
    """State of one find run."""

    env: Env
    prune: bool = False
    quit: bool = False
    printed: int = 0
    visits: int = 0
    deep: bool = False
    partial: bool = False
    newer: dict[str, float] = field(default_factory=dict)


Test = Callable[[Node, Walk], bool]


class _Parser:
    def __init__(self, words: list[str], env: Env) -> None:
        self.words = words
        self.i = 0
        self.env = env
        self.has_action = False
        self.maxdepth = 1 << 30
        self.mindepth = 0
        self.now = time.time()

    def peek(self) -> str | None:
        return self.words[self.i] if self.i < len(self.words) else None

    def take(self) -> str:
        word = self.words[self.i]
        self.i += 1
        return word

    def parse(self) -> Test:
        if self.peek() is None:
            return lambda n, w: True
        test = self.or_expr()
        if self.peek() is not None:
            raise ToolFailure(f"find: unexpected {self.peek()!r} in the expression")
        return test

    def or_expr(self) -> Test:
        left = self.and_expr()
        while self.peek() in ("-o", "-or"):
            self.take()
            right = self.and_expr()
            left = (lambda a, b: lambda n, w: a(n, w) or b(n, w))(left, right)
        return left

    def and_expr(self) -> Test:
        left = self.unary()
        while self.peek() not in (None, "-o", "-or", ")"):
            if self.peek() in ("-a", "-and"):
                self.take()
            right = self.unary()
            left = (lambda a, b: lambda n, w: a(n, w) and b(n, w))(left, right)
        return left

    def unary(self) -> Test:
        word = self.peek()
        if word is None:
            raise ToolFailure("find: the expression ends too early")
        if word in ("!", "-not"):
            self.take()
            inner = self.unary()
            return lambda n, w: not inner(n, w)
        if word == "(":
            self.take()
            inner = self.or_expr()
            if self.peek() != ")":
                raise ToolFailure("find: missing ')' in the expression")
            self.take()
            return inner
        return self.primary()

    def primary(self) -> Test:
        word = self.take()
        if word in _REFUSED:
            raise ToolFailure(f"find: {word} is not allowed: {_REFUSED[word]}")
        if word in _IGNORED:
            return lambda n, w: True
        if word in _GLOBAL:
            value = self._arg(word)
            if not value.isdigit():
                raise ToolFailure(f"find: {word} needs a number, got {value!r}")
            if word == "-maxdepth":
                self.maxdepth = int(value)
            else:
                self.mindepth = int(value)
            return lambda n, w: True
        if word in _NO_ARG_TESTS:
            return self._simple(word)
        if word in _ARG_TESTS:
            return self._with_arg(word, self._arg(word))
        raise ToolFailure(
            f"find: {word!r} is not supported here (supported: -name -iname -path -ipath -type -size -empty "
            "-mtime -mmin -newer -maxdepth -mindepth -print -prune -quit, with ! -a -o and parentheses)"
        )

    def _arg(self, word: str) -> str:
        if self.peek() is None:
            raise ToolFailure(f"find: {word} needs a value")
        return self.take()

    def _simple(self, word: str) -> Test:
        if word == "-print":
            self.has_action = True

            def show(n: Node, w: Walk) -> bool:
                _print(n, w)
                return True

            return show
        if word == "-quit":
            self.has_action = True

            def stop(n: Node, w: Walk) -> bool:
                w.quit = True
                return True

            return stop
        if word == "-prune":

            def prune(n: Node, w: Walk) -> bool:
                w.prune = True
                return True

            return prune
        if word == "-empty":
            return _is_empty
        if word == "-false":
            return lambda n, w: False
        return lambda n, w: True

    def _with_arg(self, word: str, value: str) -> Test:
        if word in ("-name", "-iname"):
            regex = re.compile(fnmatch.translate(value), re.IGNORECASE if word == "-iname" else 0)
            return lambda n, w: regex.match(n.name) is not None
        if word in ("-path", "-ipath", "-wholename", "-iwholename"):
            regex = re.compile(fnmatch.translate(value), re.IGNORECASE if word.startswith("-i") else 0)
            return lambda n, w: regex.match(n.shown) is not None
        if word == "-type":
            checks = [_TYPES.get(t) for t in value.split(",")]
            if not value or any(c is None for c in checks):
                raise ToolFailure(f"find: -type takes f, d, l, p, s, c or b (comma-separated), got {value!r}")
            return lambda n, w: any(c(n.st.st_mode) for c in checks if c is not None)
        if word == "-size":
            return _size_test(value)
        if word in ("-mtime", "-mmin"):
            unit = 86400 if word == "-mtime" else 60
            compare = _numeric(word, value)
            now = self.now
            return lambda n, w: compare(math.floor((now - n.st.st_mtime) / unit))
        # -newer FILE: the reference file is opened like any operand (confined, secrets refused).
        with self.env.open(value) as ref:
            mtime = ref.st.st_mtime
        return lambda n, w: n.st.st_mtime > mtime


def _numeric(word: str, value: str) -> Callable[[float], bool]:
    sign = value[:1] if value[:1] in "+-" else ""
    digits = value[len(sign) :]
    if not digits.isdigit():
        raise ToolFailure(f"find: {word} needs a number like 7, +7 or -7, got {value!r}")
    number = int(digits)
    if sign == "+":
        return lambda x: x > number
    if sign == "-":
        return lambda x: x < number
    return lambda x: x == number


def _size_test(value: str) -> Test:
    unit_char = value[-1:] if value[-1:] in _SIZE_UNITS else "b"
    body = value[:-1] if value[-1:] in _SIZE_UNITS else value
    compare = _numeric("-size", body)
    unit = _SIZE_UNITS[unit_char]
    # A withheld size (a hard link's, a directory's: see Env.withheld) matches no size at all.
    return lambda n, w: not w.env.withheld(n.st) and compare(math.ceil(n.st.st_size / unit))


def _is_empty(n: Node, w: Walk) -> bool:
    if stat.S_ISREG(n.st.st_mode):
        return n.st.st_size == 0 and not w.env.withheld(n.st)
    if not stat.S_ISDIR(n.st.st_mode):
        return False
    fd = open_child(n.parent_fd, n.name) if n.parent_fd >= 0 else None
    if fd is None:
        return False
    try:
        # Empty as far as the tools can see: a directory holding only secrets is empty, or -empty would
        # tell that a secret is there.
        with os.scandir(fd) as it:
            for index, entry in enumerate(it):
                if index % 1000 == 999 and w.env.deadline.expired():
                    return False
                if not w.env.denied(n.rel, entry.name):
                    return False
            return True
    finally:
        os.close(fd)


def _print(n: Node, w: Walk) -> None:
    path = w.env.ctx.root.abs(n.rel)
    w.env.out.line(show_name(path))
    w.env.out.saw(path)
    w.printed += 1


def _split(words: list[Word]) -> tuple[list[Word], list[str]]:
    """(start paths, expression tokens): paths come first, up to the first -option, ( or !."""
    i = 0
    while i < len(words) and (words[i].text in ("-P", "-L", "-H") or words[i].text.startswith(("-D", "-O"))):
        option = words[i].text
        if option in _REFUSED:
            raise ToolFailure(f"find: {option} is not allowed: {_REFUSED[option]}")
        if option != "-P":
            raise ToolFailure(f"find: {option} is not supported here")
        i += 1
    start = i
    while (
        i < len(words)
        and not (words[i].text.startswith("-") and len(words[i].text) > 1)
        and words[i].text not in ("(", "!", ")")
    ):
        i += 1
    return words[start:i], [w.text for w in words[i:]]


def cmd_find(env: Env, words: list[Word]) -> None:
    """find [-P] [PATH...] [EXPRESSION] (prints absolute paths)."""
    path_words, expression = _split(words)
    parser = _Parser(expression, env)
    test = parser.parse()
    walk = Walk(env)
    starts = [(w.text, p) for w in path_words for p in env.paths([w])] or [(".", ".")]
    for typed, path in starts:
        if walk.quit or env.stop():
            break
        try:
            handle = env.open(path)
        except ToolFailure as e:
            env.out.error(f"find: {e}")
            continue
        shown = typed if typed == path else path
        with handle:
            node = Node(handle.path.rsplit("/", 1)[-1] or handle.path, shown, handle.rel, handle.st, -1)
            _visit(walk, parser, test, node, handle.fd if handle.is_dir else -1, 0)
    if walk.deep:
        env.out.notes.append(f"(directories deeper than {MAX_DEPTH} levels were not searched)")
    if walk.partial:
        env.out.notes.append("(some directories were too large or too slow to list completely; narrow the path)")
    if walk.visits >= MAX_VISITS:
        env.out.notes.append(f"(find stopped after {MAX_VISITS} entries; narrow the path)")


def _visit(walk: Walk, parser: _Parser, test: Test, node: Node, fd: int, depth: int) -> None:
    env = walk.env
    walk.visits += 1
    walk.prune = False
    if depth >= parser.mindepth:
        matched = test(node, walk)
        if matched and not parser.has_action:
            _print(node, walk)
    if walk.quit or walk.prune or fd < 0 or depth >= parser.maxdepth:
        return
    if depth >= MAX_DEPTH:
        walk.deep = True  # said once at the end; the descriptors stay few
        return
    # Secrets are left out as if they did not exist: never tested, counted or mentioned.
    entries, truncated = scan(fd, env.deadline, hide=lambda name: env.denied(node.rel, name))
    walk.partial = walk.partial or truncated
    for entry in sorted(entries, key=lambda e: e.name):
        if walk.quit or env.stop() or walk.visits >= MAX_VISITS:
            return
        rel = f"{node.rel}/{entry.name}" if node.rel else entry.name
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        child = Node(entry.name, f"{node.shown.rstrip('/')}/{entry.name}", rel, st, fd)
        child_fd = open_child(fd, entry.name) if stat.S_ISDIR(st.st_mode) else -1
        try:
            _visit(walk, parser, test, child, child_fd if child_fd is not None else -1, depth + 1)
        finally:
            if child_fd is not None and child_fd >= 0:
                os.close(child_fd)
