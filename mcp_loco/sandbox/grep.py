"""Grep: ripgrep in two passes, so what is shown was read only through descriptors of files inside the root.

Pass 1 lets rg walk the directory (fast, parallel, .gitignore-aware, links never followed). rg opens
files by name, so a link swapped in mid-walk could make it read outside the root (Landlock stops that
where the kernel has it). Pass 1 therefore only chooses candidates: the files (and lines) that would be
shown. Pass 2 opens each candidate through the confined walk (regular file, same path, not a secret)
and runs rg again over `/dev/fd/N` only; a line or file is shown only if pass 2 found it too.

The model's pattern always goes through `--regexp=`, so `--pre=sh` is a pattern, never a flag; rg never
gets `--pre`, `-z`, `-P`, `--follow`, `--no-ignore` or `--hostname-bin`. A glob filters through
`--type-add` (not `--glob`, which would override .gitignore) and exactly afterwards. Secrets are
excluded by rg globs, and again by the deny-list on every path that comes back.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from mcp_loco.interfaces import ToolResult
from mcp_loco.sandbox import arguments as A
from mcp_loco.sandbox.context import Context
from mcp_loco.sandbox.globbing import GlobMatcher
from mcp_loco.sandbox.limits import NOTE_ROOM, Deadline, ToolError, clean, cut, show_name
from mcp_loco.sandbox.paths import PathError
from mcp_loco.sandbox.ripgrep import BASE_FLAGS, RgRun, have_dev_fd, run_rg

EXAMPLE = '{"pattern": "def main", "path": "/abs/dir", "glob": "*.py", "output_mode": "content", "-n": true}'
MODES = ("files_with_matches", "content", "count")
MAX_RAW_BYTES = 8 << 20
MULTILINE_MAX_FILESIZE = "64M"
# Descriptors handed to one pass-2 rg (well under the usual 1024 open-file limit).
FDS_PER_RUN = 128
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


def _match_flags(ctx: Context, q: GrepQuery) -> list[str]:
    """What to match and how to print it: the flags both passes share."""
    args = ["--with-filename"]
    if q.mode == "files_with_matches":
        args.append("--files-with-matches")
    elif q.mode == "count":
        args.append("--count")
    else:
        # Always numbered: pass 2 confirms lines by number (they are dropped later if -n is false).
        args += ["--line-number", f"--max-columns={ctx.settings.max_line_chars}", "--max-columns-preview"]
        if q.before:
            args.append(f"--before-context={q.before}")
        if q.after:
            args.append(f"--after-context={q.after}")
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
        args.append(f"--max-count={q.max_count}")
    args.append(f"--regexp={q.pattern}")
    return args


def _walk_flags(ctx: Context, q: GrepQuery, matchers: list[GlobMatcher]) -> list[str]:
    """Which files pass 1 looks at: secrets excluded, types and name globs."""
    args = ["--glob-case-insensitive", *(f"--glob={g}" for g in ctx.deny.rg_excludes())]
    for kind in [*q.types, *q.types_not]:
        if not _TYPE_NAME.match(kind):
            raise ToolError(f"{q.tool}: file type {kind!r} is not a type name; use a glob such as '*.py' instead")
    args += [f"--type={t}" for t in q.types] + [f"--type-not={t}" for t in q.types_not]
    if matchers and not q.types and all(m.name_globs is not None for m in matchers):
        # A type, unlike --glob, keeps .gitignore in force; the exact glob is applied afterwards.
        args += [f"--type-add={_CUSTOM_TYPE}:{name}" for m in matchers for name in m.name_globs or []]
        args.append(f"--type={_CUSTOM_TYPE}")
    args += [f"--glob=!{g.lstrip('!')}" for g in q.exclude]
    return args


def run_grep(ctx: Context, q: GrepQuery, deadline: Deadline) -> ToolResult:
    """Run one search and format it as Claude Code's Grep does, with absolute paths."""
    rg = ctx.rg()
    matchers = [GlobMatcher(g) for g in q.include]
    flags = [*BASE_FLAGS, *_walk_flags(ctx, q, matchers), *_match_flags(ctx, q)]
    handle = ctx.open(q.path or ctx.root.path)
    root_fd = -1
    try:
        if handle.is_dir:
            records = _Records(ctx, q, handle.rel, matchers, None)
            run = run_rg(rg, [*flags, "--", "."], cwd_fd=handle.fd, cwd_path=handle.path, **_run_opts(ctx, q, deadline))
        else:
            # One file: it is already open beneath the root, so rg reads exactly that descriptor.
            handle.close()
            handle = ctx.open_file(q.path or "", q.tool)
            root_fd = ctx.root_fd()
            operand = f"/dev/fd/{handle.fd}" if have_dev_fd() else handle.path
            records = _Records(ctx, q, "", [], {operand: handle.rel})
            run = run_rg(
                rg,
                [*flags, "--", operand],
                cwd_fd=root_fd,
                cwd_path=ctx.root.path,
                pass_fds=(handle.fd,),
                **_run_opts(ctx, q, deadline),
            )
    finally:
        handle.close()
        if root_fd >= 0:
            os.close(root_fd)
    if run.cancelled:
        return ToolResult(f"{q.tool} was cancelled", ok=False)
    error = _rg_error(q, run)
    if error:
        return ToolResult(error, ok=False)
    records.parse(run.stdout)
    return records.render(run, deadline)


def _run_opts(ctx: Context, q: GrepQuery, deadline: Deadline) -> dict[str, Any]:
    return {
        "deadline": deadline,
        "max_bytes": MAX_RAW_BYTES,
        "separator": b"\0" if q.mode == "files_with_matches" else b"\n",
        "spawn": ctx.spawn,
    }


def _rg_error(q: GrepQuery, run: RgRun) -> str:
    if run.returncode != 2 or run.stdout or run.timed_out:
        return ""
    message = run.stderr.strip()[:2000] or "ripgrep failed without a message"
    if "regex" in message.lower():
        return (
            f"{q.tool}: invalid regular expression {q.pattern!r}:\n{message}\n"
            "Escape special characters such as ( ) [ ] { } * + ? with a backslash to match them literally."
        )
    if "file type" in message.lower():
        return f"{q.tool}: {message}\nUse a glob such as '*.py' instead, or a known type (py, js, ts, rust, go, java, c, cpp...)."
    return f"{q.tool} failed: {message}"


class _Records:
    """rg's NUL-separated output as files, counts and lines; filtered, sorted, confirmed, rendered."""

    def __init__(
        self, ctx: Context, q: GrepQuery, base_rel: str, matchers: list[GlobMatcher], operands: dict[str, str] | None
    ) -> None:
        self.ctx = ctx
        self.q = q
        self.base_rel = base_rel
        self.matchers = matchers
        # rg was given descriptors (/dev/fd/N -> root-relative path), not a directory to walk.
        self.operands = operands
        self.lines: dict[str, list[str | None]] = {}  # None: rg's "--" between context groups
        self.counts: dict[str, int] = {}
        self.files: list[str] = []
        self.binary: list[str] = []

    def _locate(self, raw: bytes) -> str | None:
        """The root-relative path of an rg output path, or None when it must not be shown."""
        path = os.fsdecode(raw)
        if self.operands is not None:
            return self.operands.get(path)
        path = path.removeprefix("./")
        rel = f"{self.base_rel}/{path}" if self.base_rel else path
        # A glob may be written relative to the searched directory or to the root.
        if self.matchers and not any(m.match(path) or m.match(rel) for m in self.matchers):
            return None
        return None if self.ctx.deny.denied(rel) else rel

    def parse(self, data: bytes) -> None:
        """Fill files/counts/lines from rg's stdout."""
        if self.q.mode == "files_with_matches":
            records = data.split(b"\0")
            records.pop()  # after the last NUL: empty, or a record cut by the cap
            for raw in records:
                rel = self._locate(raw)
                if rel is not None:
                    self.files.append(rel)
            return
        current: str | None = None
        records = data.split(b"\n")
        records.pop()
        for record in records:
            raw, nul, rest = record.partition(b"\0")
            if not nul:
                if record == b"--" and current is not None:
                    self.lines[current].append(None)
                elif b": binary file matches" in record:
                    rel = self._locate(record.split(b": binary file matches")[0])
                    if rel is not None:
                        self.binary.append(rel)
                continue
            current = self._locate(raw)
            if current is None:
                continue
            if self.q.mode == "count":
                self.counts[current] = int(rest or b"0")
            else:
                self.lines.setdefault(current, []).append(rest.decode("utf-8", "replace"))

    def render(self, run: RgRun, deadline: Deadline) -> ToolResult:
        """The text the model sees."""
        notes = _notes(self.q, run)
        if self.q.mode == "files_with_matches":
            return self._render_files(notes, deadline)
        if self.q.mode == "count":
            return self._render_counts(notes, deadline)
        return self._render_content(notes, deadline)

    def _page(self, items: Sequence[T], width: Callable[[T], int]) -> tuple[list[T], str]:
        """The entries from `offset` that head_limit and the output cap let through, and a note on the rest."""
        start = self.q.offset
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

    def _confirm(self, rels: list[str], deadline: Deadline) -> _Records:
        """Pass 2: rg again over descriptors of these files, opened beneath the root; its records."""
        if self.operands is not None:
            return self  # rg already read descriptors only
        confirmed = _Records(self.ctx, self.q, "", [], {})
        if not have_dev_fd():
            # No /dev/fd to hand over descriptors: keep what still opens at the same path inside the root.
            kept = {rel for rel in rels if self.ctx.verify_file(rel)}
            confirmed.files = [r for r in self.files if r in kept]
            confirmed.counts = {r: n for r, n in self.counts.items() if r in kept}
            confirmed.lines = {r: v for r, v in self.lines.items() if r in kept}
            confirmed.binary = [r for r in self.binary if r in kept]
            return confirmed
        for start in range(0, len(rels), FDS_PER_RUN):
            confirmed._confirm_batch(rels[start : start + FDS_PER_RUN], deadline)
        return confirmed

    def _confirm_batch(self, rels: list[str], deadline: Deadline) -> None:
        assert self.operands is not None
        fds: list[int] = []
        root_fd = self.ctx.root_fd()
        try:
            for rel in rels:
                try:
                    handle = self.ctx.open_file(rel, self.q.tool)
                except (PathError, OSError):
                    continue
                if handle.rel != rel:  # the path now leads elsewhere (a link was swapped in): drop it
                    handle.close()
                    continue
                fds.append(handle.fd)
                self.operands[f"/dev/fd/{handle.fd}"] = rel
            if not fds:
                return
            flags = [*BASE_FLAGS, *_match_flags(self.ctx, self.q), "--", *(f"/dev/fd/{fd}" for fd in fds)]
            run = run_rg(
                self.ctx.rg(),
                flags,
                cwd_fd=root_fd,
                cwd_path=self.ctx.root.path,
                pass_fds=fds,
                **_run_opts(self.ctx, self.q, deadline),
            )
        finally:
            for fd in fds:
                os.close(fd)
            os.close(root_fd)
        self.parse(run.stdout)
        self.operands.clear()

    def _display(self, rel: str) -> str:
        """A path as shown: absolute, control characters in names made visible (a newline cannot fake a line)."""
        return show_name(self.ctx.root.abs(rel))

    def _finish(self, body: list[str], notes: list[str], paths: list[str]) -> ToolResult:
        hint = "narrow the pattern, path or glob, or page with head_limit and offset"
        text = cut(clean("\n".join(body + notes)), self.ctx.settings.max_output_chars, hint)
        return ToolResult(text, paths=tuple(dict.fromkeys(clean(p) for p in paths)))

    def _render_files(self, notes: list[str], deadline: Deadline) -> ToolResult:
        if not self.files:
            return self._finish([] if self.q.plain else ["No files found"], notes, [])
        root_fd = self.ctx.root_fd()
        try:
            stamped = sorted((-_mtime(rel, root_fd), rel) for rel in self.files)
        finally:
            os.close(root_fd)
        ordered = [rel for _, rel in stamped]
        root_len = len(self.ctx.root.path) + 1
        page, more = self._page(ordered, lambda rel: root_len + len(rel))
        confirmed = set(self._confirm(page, deadline).files)
        shown = [rel for rel in page if rel in confirmed]
        if len(shown) < len(page):
            notes.append("(some files were left out: they changed during the search)")
        head = [] if self.q.plain else [f"Found {len(ordered)} file{'s' if len(ordered) != 1 else ''}"]
        body = [self._display(rel) for rel in shown]
        return self._finish([*head, *body, *([more] if more else [])], notes, [self.ctx.root.abs(r) for r in shown])

    def _render_counts(self, notes: list[str], deadline: Deadline) -> ToolResult:
        one_file = self.operands is not None and len(self.operands) == 1
        if self.q.plain and one_file:
            return self._finish([str(sum(self.counts.values()))], notes, list(map(self.ctx.root.abs, self.counts)))
        if not self.counts:
            return self._finish([] if self.q.plain else ["No matches found"], notes, [])
        ordered = sorted(self.counts)
        root_len = len(self.ctx.root.path) + 8
        page, more = self._page(ordered, lambda rel: root_len + len(rel))
        counts = self._confirm(page, deadline).counts
        shown = [rel for rel in page if rel in counts]
        if len(shown) < len(page):
            notes.append("(some files were left out: they changed during the search)")
        body = [f"{self._display(rel)}:{counts[rel]}" for rel in shown]
        total = sum(self.counts.values())
        footer = f"Found {total} total match{'es' if total != 1 else ''} across {len(ordered)} file{'s' if len(ordered) != 1 else ''}."
        tail = [] if self.q.plain else [footer]
        return self._finish([*body, *([more] if more else []), *tail], notes, [self.ctx.root.abs(r) for r in shown])

    def _render_content(self, notes: list[str], deadline: Deadline) -> ToolResult:
        flat: list[tuple[str, str]] = []
        for rel in sorted(self.lines):
            lines = self.lines[rel]
            while lines and lines[-1] is None:
                lines.pop()
            if flat and (self.q.before or self.q.after):
                flat.append(("", "--"))
            flat += [(rel, line) if line is not None else ("", "--") for line in lines]
        flat += [(rel, "") for rel in sorted(self.binary)]
        real = [i for i, (rel, _) in enumerate(flat) if rel]
        if not real:
            return self._finish([] if self.q.plain else ["No matches found"], notes, [])
        root_len = len(self.ctx.root.path) + 8
        numbers, more = self._page(real, lambda i: root_len + len(flat[i][0]) + len(flat[i][1]))
        window = flat[numbers[0] : numbers[-1] + 1] if numbers else []
        more = more.replace("more;", "more lines;")
        confirmed = self._confirm(sorted({rel for rel, _ in window if rel}), deadline)
        seen = {rel: set(filter(None, lines)) for rel, lines in confirmed.lines.items()}
        binary = set(confirmed.binary)
        body: list[str] = []
        shown: dict[str, None] = {}
        for rel, line in window:
            if not rel:
                if body and body[-1] != "--":
                    body.append("--")
                continue
            path = self.ctx.root.abs(rel)
            if not line:
                if rel in binary:
                    body.append(f"Binary file {self._display(rel)} matches (content not shown)")
                    shown[path] = None
                continue
            if line not in seen.get(rel, ()):
                continue  # not found again through the descriptor: never show it
            shown[path] = None
            body.append(_format_line(self._display(rel), line, self.q.line_numbers))
        while body and body[-1] == "--":
            body.pop()
        if not body:
            body = [] if self.q.plain else ["No matches found"]
        if any(rel and line and line not in seen.get(rel, ()) for rel, line in window):
            notes.append("(some matches were left out: their files changed during the search)")
        return self._finish([*body, *([more] if more else [])], notes, list(shown))


def _format_line(path: str, line: str, numbered: bool) -> str:
    match = _LINE.match(line)
    if match is None:
        return f"{path}:{line}"
    if numbered:
        return f"{path}{match.group(2)}{line}"
    return f"{path}{match.group(2)}{line[match.end() :]}"


def _mtime(rel: str, root_fd: int) -> float:
    try:
        return os.stat(rel, dir_fd=root_fd, follow_symlinks=False).st_mtime
    except OSError:
        return 0.0


def _notes(q: GrepQuery, run: RgRun) -> list[str]:
    notes: list[str] = []
    if run.timed_out:
        notes.append(f"({q.tool} timed out; the results above are partial: narrow the path, glob or pattern)")
    if run.truncated:
        notes.append(
            f"(the search stopped after {MAX_RAW_BYTES >> 20} MB of results; the results above are partial: "
            "narrow the path, glob or pattern)"
        )
    return notes
