"""Glob patterns: the model's (Glob, Grep's glob, Bash operands) and the deny-list's (gitignore-style).

Model patterns are hostile, so they are never turned into one big regex (`**/**/**/a` would backtrack):
a pattern is split into segments, each segment is matched with fnmatch's linear-time translation, and
`**` is handled by a small dynamic programme over segments.
"""

from __future__ import annotations

import fnmatch
import re

from mcp_loco.sandbox.limits import ToolFailure

MAX_PATTERN_CHARS = 1000
MAX_ALTERNATIVES = 64
MAX_CACHED_DIRS = 100_000
WILDCARDS = frozenset("*?[")
# Name globs ripgrep's --type-add reads exactly as fnmatch does: no classes, escapes, ':' or ','.
_SIMPLE_NAME_GLOB = re.compile(r"^[^\[\]\\:,{}]+$")


def has_wildcard(text: str) -> bool:
    """True when `text` contains a glob wildcard (*, ? or [) or a {a,b} alternation."""
    return any(c in WILDCARDS for c in text) or ("{" in text and "}" in text)


def expand_braces(pattern: str, limit: int = MAX_ALTERNATIVES) -> list[str]:
    """Expand `{a,b}` alternations (nested too); raise ToolFailure past `limit` alternatives."""
    depth = 0
    start = -1
    commas: list[int] = []
    for i, c in enumerate(pattern):
        if c == "{":
            if depth == 0:
                start, commas = i, []
            depth += 1
        elif c == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                if not commas:
                    continue
                bounds = [start, *commas, i]
                options = [pattern[bounds[k] + 1 : bounds[k + 1]] for k in range(len(bounds) - 1)]
                head, tail = pattern[:start], pattern[i + 1 :]
                out: list[str] = []
                for option in options:
                    for expanded in expand_braces(head + option + tail, limit):
                        out.append(expanded)
                        if len(out) > limit:
                            raise ToolFailure(
                                f"the pattern expands to more than {limit} alternatives; simplify its {{a,b}} parts"
                            )
                return list(dict.fromkeys(out))
        elif c == "," and depth == 1:
            commas.append(i)
    return [pattern]


def _segment_regex(segment: str) -> re.Pattern[str]:
    # A `**` inside a segment (`a**b`) means `*`, as in gitignore.
    while "**" in segment:
        segment = segment.replace("**", "*")
    return re.compile(fnmatch.translate(segment))


class _Alternative:
    """One brace alternative as a small NFA over path segments; states after each directory are cached."""

    def __init__(self, segments: list[re.Pattern[str] | None]) -> None:
        self.segments = segments
        self.accept = len(segments)
        self.start = self._closure({0})
        self._dirs: dict[str, frozenset[int]] = {}

    def _closure(self, states: set[int]) -> frozenset[int]:
        # `**` may match no segment at all, so reaching it also reaches what follows it.
        out = set(states)
        for i in sorted(states):
            while i < self.accept and self.segments[i] is None:
                i += 1
                out.add(i)
        return frozenset(out)

    def _step(self, states: frozenset[int], part: str) -> frozenset[int]:
        following: set[int] = set()
        for i in states:
            if i >= self.accept:
                continue
            seg = self.segments[i]
            if seg is None:
                following.add(i)  # `**` eats this segment and may eat more
            elif seg.match(part):
                following.add(i + 1)
        return self._closure(following) if following else frozenset()

    def _dir_state(self, directory: str) -> frozenset[int]:
        if not directory:
            return self.start
        known = self._dirs.get(directory)
        if known is not None:
            return known
        parts = directory.split("/")
        depth = len(parts) - 1
        state: frozenset[int] | None = None
        while depth > 0 and state is None:
            state = self._dirs.get("/".join(parts[:depth]))
            if state is None:
                depth -= 1
        if state is None:
            state, depth = self.start, 0
        for index in range(depth, len(parts)):
            state = self._step(state, parts[index]) if state else state
            if len(self._dirs) < MAX_CACHED_DIRS:
                self._dirs["/".join(parts[: index + 1])] = state
        return state

    def match(self, directory: str, name: str) -> bool:
        if len(self.segments) == 2 and self.segments[0] is None and self.segments[1] is not None:
            return self.segments[1].match(name) is not None  # `**/name`, the common case
        state = self._dir_state(directory)
        return bool(state) and self.accept in self._step(state, name)


class GlobMatcher:
    """Matches paths relative to a base directory against a model-supplied glob (one instance per call)."""

    def __init__(self, pattern: str, *, anchored: bool = False, case_sensitive: bool = True) -> None:
        if len(pattern) > MAX_PATTERN_CHARS:
            raise ToolFailure(f"the pattern is too long ({len(pattern)} characters; at most {MAX_PATTERN_CHARS})")
        self.pattern = pattern
        self.case_sensitive = case_sensitive
        self._alternatives: list[_Alternative] = []
        self.name_globs: list[str] | None = []
        """Globs every match's file name must fit (a prefilter for ripgrep), or None when there are none."""
        for alternative in expand_braces(pattern):
            segments = [s for s in alternative.strip("/").split("/") if s not in ("", ".")]
            if not segments:
                segments = ["**"]
            if len(segments) == 1 and segments[0] != "**" and not anchored:
                # No slash: like gitignore and ripgrep, the pattern matches a name at any depth.
                segments = ["**", segments[0]]
            if self.name_globs is not None:
                last = segments[-1]
                if "**" in last or not _SIMPLE_NAME_GLOB.match(last):
                    self.name_globs = None
                else:
                    self.name_globs.append(last)
            compiled: list[re.Pattern[str] | None] = []
            for seg in segments:
                if seg == "**":
                    if compiled and compiled[-1] is None:
                        continue
                    compiled.append(None)
                else:
                    compiled.append(_segment_regex(seg if case_sensitive else seg.casefold()))
            self._alternatives.append(_Alternative(compiled))

    def match(self, rel: str) -> bool:
        """True when `rel` (a relative path with / separators) matches."""
        if not self.case_sensitive:
            rel = rel.casefold()
        directory, _, name = rel.rpartition("/")
        return any(alt.match(directory, name) for alt in self._alternatives)


def gitignore_regex(pattern: str) -> str:
    """Regex source for one trusted gitignore-style pattern (*, ?, [..], **), matched against a whole path."""
    out: list[str] = []
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("/**", i) and i + 3 == n:
            out.append("/.*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            close = pattern.find("]", i + 2)
            if close == -1:
                out.append(re.escape(c))
                i += 1
                continue
            body = pattern[i + 1 : close]
            if body[:1] in ("!", "^"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = close + 1
        elif c == "\\" and i + 1 < n:
            out.append(re.escape(pattern[i + 1]))
            i += 2
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)
