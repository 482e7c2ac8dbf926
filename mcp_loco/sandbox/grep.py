"""Grep: ripgrep in two passes, so what is shown, and every figure, comes only from files the tools may show.

Pass 1 lets rg walk the directory (fast, parallel, .gitignore-aware, links never followed). rg opens
files by name, so it may read a hard link to a file outside the root, or a link swapped in mid-walk
(Landlock stops the latter where the kernel has it). Pass 1 therefore only names candidate files. Pass 2
opens each through the confined walk (regular file, one link, same path, not a secret) and runs rg again
over `/dev/fd/N` only; lines, counts, "Found N" and "N more" all come from pass 2 (grep_passes.py).

The model's pattern always goes through `--regexp=`, so `--pre=sh` is a pattern, never a flag; rg never
gets `--pre`, `-z`, `-P`, `--follow`, `--no-ignore` or `--hostname-bin`. A glob filters through
`--type-add` (not `--glob`, which would override .gitignore) and exactly afterwards. Secrets are
excluded by rg globs, and again by the deny-list on every path that comes back.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from mcp_loco.interfaces import ToolResult
from mcp_loco.sandbox import arguments as A
from mcp_loco.sandbox.context import ToolContext
from mcp_loco.sandbox.globbing import GlobMatcher
from mcp_loco.sandbox.grep_passes import MAX_CANDIDATES, MAX_RAW_BYTES, Found, confirm, find_candidates
from mcp_loco.sandbox.limits import NOTE_ROOM, Deadline, ToolFailure, clean, cut, show_name
from mcp_loco.sandbox.ripgrep import RgRun

EXAMPLE = '{"pattern": "def main", "path": "/abs/dir", "glob": "*.py", "output_mode": "content", "-n": true}'
MODES = ("files_with_matches", "content", "count")
MULTILINE_MAX_FILESIZE = "64M"
# rg takes counts up to 2**64; beyond these a value means "all" anyway, and rg would fail on it.
MAX_CONTEXT = 100_000
MAX_COUNT = 1 << 40
_TYPE_NAME = re.compile(r"^[A-Za-z0-9_+-]{1,40}$")
_LINE = re.compile(r"^(\d+)([:-])")
_CUSTOM_TYPE = "locoglob"
T = TypeVar("T")


@dataclass
class GrepQuery:
    """One search, whether it came from the Grep tool or from Bash grep/rg."""

    pattern: str
    path: str | None = None
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    types_not: list[str] = field(default_factory=list)
    mode: str = "files_with_matches"
    ignore_case: bool = False
    line_numbers: bool = True
    before: int = 0
    after: int = 0
    head_limit: int | None = None
    offset: int = 0
    multiline: bool = False
    fixed: bool = False
    word: bool = False
    invert: bool = False
    only_matching: bool = False
    max_count: int | None = None
    tool: str = "Grep"
    plain: bool = False
    """Print as grep/rg do (bare paths for -l, path:N for -c, N alone for one file) instead of Claude Code's Grep."""


def parse_grep(arguments: Any) -> GrepQuery:
    """Read the Grep tool's arguments (Claude Code's current and older names)."""
    args = A.as_object(arguments, EXAMPLE)
    pattern = A.text(args, ("pattern", "regex", "query"), required=True, example=EXAMPLE)
    assert pattern is not None
    context = A.integer(args, ("-C", "context", "C"))
    q = GrepQuery(
        pattern=pattern,
        path=A.text(args, ("path", "directory", "dir")) or None,
        mode=A.choice(args, ("output_mode", "mode"), MODES, "files_with_matches"),
        ignore_case=bool(A.flag(args, ("-i", "case_insensitive", "ignore_case", "i"))),
        line_numbers=A.flag(args, ("-n", "line_numbers", "n")) is not False,
        before=A.integer(args, ("-B", "before", "B")) or context or 0,
        after=A.integer(args, ("-A", "after", "A")) or context or 0,
        head_limit=A.integer(args, ("head_limit", "limit", "max_results")) or None,
        offset=A.integer(args, ("offset",)) or 0,
        multiline=bool(A.flag(args, ("multiline",))),
    )
    glob = A.text(args, ("glob", "include", "file_pattern"))
    if glob:
        # ripgrep's own reading of a leading '!': leave these files out.
        (q.exclude if glob.startswith("!") else q.include).append(glob.removeprefix("!"))
    kind = A.text(args, ("type", "file_type"))
    if kind:
        q.types.append(kind)
    return q


def _match_flags(ctx: ToolContext, q: GrepQuery, mode: str = "") -> list[str]:
    """What to match and how to print it (in `mode`, else the query's)."""
    args = ["--with-filename"]
    mode = mode or q.mode
    if mode == "files_with_matches":
        args.append("--files-with-matches")
    elif mode == "count":
        args.append("--count")
    else:
        # Always numbered: pass 2 confirms lines by number (they are dropped later if -n is false).
        args += ["--line-number", f"--max-columns={ctx.settings.max_line_chars}", "--max-columns-preview"]
        if q.before:
            args.append(f"--before-context={min(q.before, MAX_CONTEXT)}")
        if q.after:
            args.append(f"--after-context={min(q.after, MAX_CONTEXT)}")
        if q.only_matching:
            args.append("--only-matching")
    args.append("--ignore-case" if q.ignore_case else "--case-sensitive")
    if q.multiline:
        args += ["--multiline", "--multiline-dotall", f"--max-filesize={MULTILINE_MAX_FILESIZE}"]
    if q.fixed:
        args.append("--fixed-strings")
    if q.word:
        args.append("--word-regexp")
    if q.invert:
        args.append("--invert-match")
    if q.max_count:
        args.append(f"--max-count={min(q.max_count, MAX_COUNT)}")
    args.append(f"--regexp={q.pattern}")
    return args


def _walk_flags(ctx: ToolContext, q: GrepQuery, matchers: list[GlobMatcher]) -> list[str]:
    """Which files pass 1 looks at: secrets excluded, types and name globs."""
    args = ["--glob-case-insensitive", *(f"--glob={g}" for g in ctx.deny.rg_excludes())]
    for kind in [*q.types, *q.types_not]:
        if not _TYPE_NAME.match(kind):
            raise ToolFailure(f"{q.tool}: file type {kind!r} is not a type name; use a glob such as '*.py' instead")
    args += [f"--type={t}" for t in q.types] + [f"--type-not={t}" for t in q.types_not]
    if matchers and not q.types and all(m.name_globs is not None for m in matchers):
        # A type, unlike --glob, keeps .gitignore in force; the exact glob is applied afterwards.
        args += [f"--type-add={_CUSTOM_TYPE}:{name}" for m in matchers for name in m.name_globs or []]
        args.append(f"--type={_CUSTOM_TYPE}")
    args += [f"--glob=!{g.lstrip('!')}" for g in q.exclude]
    return args


def run_grep(ctx: ToolContext, q: GrepQuery, deadline: Deadline) -> ToolResult:
    """Run one search and format it as Claude Code's Grep does, with absolute paths."""
    matchers = [GlobMatcher(g) for g in q.include]
    match = _match_flags(ctx, q)
    with ctx.open(q.path or ctx.root.path) as handle:
        single = not handle.is_dir
        if handle.is_dir:
            # Pass 1 only names files; --files-with-matches picks the same files every mode shows.
            pick = [*_walk_flags(ctx, q, matchers), *_match_flags(ctx, q, "files_with_matches")]
            rels, run = find_candidates(ctx, handle, pick, matchers, deadline)
        else:
            rels, run = [], None
    if run is None:
        # One file: refused with the reason (a hard link, a special file) rather than silently empty.
        with ctx.open_file(q.path or "", q.tool) as handle:
            rels = [handle.rel]
    elif run.cancelled:
        return ToolResult(f"{q.tool} was cancelled", ok=False)
    elif not rels and _rg_error(q, run):
        return ToolResult(_rg_error(q, run), ok=False)
    found = confirm(ctx, q.mode, match, rels, deadline)
    if deadline.cancelled():
        return ToolResult(f"{q.tool} was cancelled", ok=False)
    notes = _notes(q, run, found)
    page = _Page(ctx, q, found, single)
    if q.mode == "files_with_matches":
        return page.files(notes)
    if q.mode == "count":
        return page.counts(notes)
    return page.content(notes)


def _rg_error(q: GrepQuery, run: RgRun) -> str:
    # With --no-messages, an unreadable file ends rg with 2 and says nothing: that is no match, not a failure
    # (and saying otherwise would tell that such a file, perhaps a secret, is there).
    message = run.stderr.strip()[:2000]
    if run.returncode != 2 or run.timed_out or not message:
        return ""
    if "regex" in message.lower():
        return (
            f"{q.tool}: invalid regular expression {q.pattern!r}:\n{message}\n"
            "Escape special characters such as ( ) [ ] { } * + ? with a backslash to match them literally."
        )
    if "file type" in message.lower():
        return f"{q.tool}: {message}\nUse a glob such as '*.py' instead, or a known type (py, js, ts, rust, go, java, c, cpp...)."
    return f"{q.tool} failed: {message}"


class _Page:
    """Pass 2's findings as the model sees them: sorted, paged, capped; every figure counts only these."""

    def __init__(self, ctx: ToolContext, q: GrepQuery, found: Found, single: bool) -> None:
        self.ctx = ctx
        self.q = q
        self.found = found
        self.single = single

    def _page(self, items: Sequence[T], width: Callable[[T], int]) -> tuple[list[T], str]:
        """The entries from `offset` that head_limit and the output cap let through, and a note on the rest."""
        start = min(self.q.offset, len(items))
        end = min(start + self.q.head_limit, len(items)) if self.q.head_limit else len(items)
        budget = self.ctx.settings.max_output_chars - 2 * NOTE_ROOM
        used = 0
        stop = start
        while stop < end:
            used += width(items[stop]) + 1
            if used > budget and stop > start:
                break
            stop += 1
        if stop < len(items):
            return list(items[start:stop]), f"... {len(items) - stop} more; use offset={stop} to see them"
        return list(items[start:stop]), ""

    def _display(self, rel: str) -> str:
        """A path as shown: absolute, control characters in names made visible (a newline cannot fake a line)."""
        return show_name(self.ctx.root.abs(rel))

    def _finish(self, body: list[str], notes: list[str], paths: list[str]) -> ToolResult:
        hint = "narrow the pattern, path or glob, or page with head_limit and offset"
        text = cut(clean("\n".join(body + notes)), self.ctx.settings.max_output_chars, hint)
        return ToolResult(text, paths=tuple(dict.fromkeys(clean(p) for p in paths)))

    def files(self, notes: list[str]) -> ToolResult:
        found = self.found.files
        if not found:
            return self._finish([] if self.q.plain else ["No files found"], notes, [])
        ordered = sorted(found, key=lambda rel: (-found[rel], rel))
        root_len = len(self.ctx.root.path) + 1
        page, more = self._page(ordered, lambda rel: root_len + len(rel))
        head = [] if self.q.plain else [f"Found {len(ordered)} file{'s' if len(ordered) != 1 else ''}"]
        body = [self._display(rel) for rel in page]
        return self._finish([*head, *body, *([more] if more else [])], notes, [self.ctx.root.abs(r) for r in page])

    def counts(self, notes: list[str]) -> ToolResult:
        counts = self.found.counts
        if self.q.plain and self.single:
            return self._finish([str(sum(counts.values()))], notes, list(map(self.ctx.root.abs, counts)))
        if not counts:
            return self._finish([] if self.q.plain else ["No matches found"], notes, [])
        ordered = sorted(counts)
        root_len = len(self.ctx.root.path) + 8
        page, more = self._page(ordered, lambda rel: root_len + len(rel))
        body = [f"{self._display(rel)}:{counts[rel]}" for rel in page]
        total = sum(counts.values())
        footer = f"Found {total} total match{'es' if total != 1 else ''} across {len(ordered)} file{'s' if len(ordered) != 1 else ''}."
        tail = [] if self.q.plain else [footer]
        return self._finish([*body, *([more] if more else []), *tail], notes, [self.ctx.root.abs(r) for r in page])

    def content(self, notes: list[str]) -> ToolResult:
        flat: list[tuple[str, str]] = []
        for rel in sorted(self.found.lines):
            lines = self.found.lines[rel]
            while lines and lines[-1] is None:
                lines.pop()
            if flat and (self.q.before or self.q.after):
                flat.append(("", "--"))
            flat += [(rel, line) if line is not None else ("", "--") for line in lines]
        flat += [(rel, "") for rel in sorted(self.found.binary)]
        real = [i for i, (rel, _) in enumerate(flat) if rel]
        if not real:
            return self._finish([] if self.q.plain else ["No matches found"], notes, [])
        root_len = len(self.ctx.root.path) + 8
        numbers, more = self._page(real, lambda i: root_len + len(flat[i][0]) + len(flat[i][1]))
        window = flat[numbers[0] : numbers[-1] + 1] if numbers else []
        more = more.replace("more;", "more lines;")
        body: list[str] = []
        shown: dict[str, None] = {}
        for rel, line in window:
            if not rel:
                if body and body[-1] != "--":
                    body.append("--")
                continue
            shown[self.ctx.root.abs(rel)] = None
            if not line:
                body.append(f"Binary file {self._display(rel)} matches (content not shown)")
            else:
                body.append(_format_line(self._display(rel), line, self.q.line_numbers))
        while body and body[-1] == "--":
            body.pop()
        return self._finish([*body, *([more] if more else [])], notes, list(shown))


def _format_line(path: str, line: str, numbered: bool) -> str:
    match = _LINE.match(line)
    if match is None:
        return f"{path}:{line}"
    if numbered:
        return f"{path}{match.group(2)}{line}"
    return f"{path}{match.group(2)}{line[match.end() :]}"


def _notes(q: GrepQuery, run: RgRun | None, found: Found) -> list[str]:
    notes: list[str] = []
    if found.timed_out or (run is not None and run.timed_out):
        notes.append(f"({q.tool} timed out; the results above are partial: narrow the path, glob or pattern)")
    if run is not None and run.truncated:
        notes.append(
            f"(the search stopped after {MAX_CANDIDATES} files with matches; the results above are partial: "
            "narrow the path, glob or pattern)"
        )
    if found.truncated:
        notes.append(
            f"(the search stopped after {MAX_RAW_BYTES >> 20} MB of results; the results above are partial: "
            "narrow the path, glob or pattern)"
        )
    return notes
