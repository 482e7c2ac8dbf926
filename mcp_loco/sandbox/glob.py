"""Glob: files whose path matches a pattern, newest first, gitignore-aware, bounded.

`rg --files` does the walk (fast, .gitignore honoured, never follows links); a name glob is passed as an
rg type, the full pattern is matched here. Every path listed is re-opened through the confined walk.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from mcp_loco.interfaces import ToolResult
from mcp_loco.sandbox import arguments as A
from mcp_loco.sandbox.context import ToolContext
from mcp_loco.sandbox.globbing import GlobMatcher, has_wildcard
from mcp_loco.sandbox.limits import Deadline, ToolFailure, clean, cut, show_name

EXAMPLE = '{"pattern": "**/*.py", "path": "/abs/dir"}'
MAX_LIST = 200_000
_CUSTOM_TYPE = "locoglob"


@dataclass
class Listing:
    """Files under a directory that match a glob (paths relative to the root)."""

    rels: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def split_pattern(ctx: ToolContext, pattern: str, path: str | None) -> tuple[str, str, bool]:
    """(base directory, pattern relative to it, anchored): leading literal parts move into the base."""
    if "\0" in pattern:
        raise ToolFailure("the pattern contains a NUL byte")
    if pattern.startswith("~"):
        raise ToolFailure(f"'~' is not expanded here; use a pattern relative to {ctx.root.path}, e.g. **/*.py")
    if pattern.startswith("/"):
        rest = ctx.root.rel_of(pattern)
        if rest is None:
            raise ToolFailure(
                f"pattern {pattern!r} is outside the explored root {ctx.root.path}; "
                "use a relative pattern such as **/*.py with path set to a directory inside the root"
            )
        base = ctx.root.path
        anchored = True
    else:
        rest = [c for c in pattern.split("/") if c not in ("", ".")]
        base = path or ctx.root.path
        anchored = "/" in pattern.strip("/")
    if ".." in rest:
        raise ToolFailure(f"pattern {pattern!r} contains '..'; set path to the directory to search instead")
    lead: list[str] = []
    while len(rest) > 1 and not has_wildcard(rest[0]):
        lead.append(rest.pop(0))
    if lead:
        base = "/".join([base.rstrip("/"), *lead]) if base else "/".join(lead)
        anchored = True
    return base, "/".join(rest) or "**", anchored


class _Collector:
    """Takes `rg --files --null` output chunk by chunk, keeping matching, allowed paths with their mtime."""

    def __init__(
        self, ctx: ToolContext, matcher: GlobMatcher, base_rel: str, dir_fd: int, limit: int, deadline: Deadline
    ) -> None:
        self.ctx = ctx
        self.deadline = deadline
        self.timed_out = False
        self.matcher = matcher
        self.prefix = f"{base_rel}/" if base_rel else ""
        self.dir_fd = dir_fd
        self.limit = limit
        self.pending = b""
        self.listing = Listing()
        self.mtimes: list[tuple[float, str]] = []

    def feed(self, chunk: bytes) -> bool:
        data = self.pending + chunk
        end = data.rfind(b"\0")
        if end < 0:
            self.pending = data
            return True
        self.pending = data[end + 1 :]
        match = self.matcher.match
        denied = self.ctx.deny.denied
        for index, record in enumerate(data[:end].decode("utf-8", "surrogateescape").split("\0")):
            # A crafted pattern can cost a millisecond a path: look at the clock within a chunk too.
            if index % 64 == 63 and self.deadline.expired():
                self.timed_out = True
                return False
            path = record[2:] if record.startswith("./") else record
            if not match(path):
                continue
            rel = self.prefix + path
            if denied(rel):
                continue  # never counted or mentioned: a count would say that a secret exists
            try:
                mtime = os.stat(path, dir_fd=self.dir_fd, follow_symlinks=False).st_mtime
            except OSError:
                continue
            self.mtimes.append((-mtime, rel))
        return len(self.mtimes) < self.limit


def list_files(ctx: ToolContext, base: str, matcher: GlobMatcher, deadline: Deadline, limit: int = MAX_LIST) -> Listing:
    """Run `rg --files` beneath `base`; keep what `matcher` accepts and the deny-list allows, newest first."""
    # Secrets are left out by rg already (it does not even enter a denied directory), and again below.
    args = ["--files", "--glob-case-insensitive", *(f"--glob={g}" for g in ctx.deny.rg_excludes())]
    if matcher.name_globs:
        args += [f"--type-add={_CUSTOM_TYPE}:{name}" for name in matcher.name_globs]
        args.append(f"--type={_CUSTOM_TYPE}")
    with ctx.open_dir(base) as handle:
        collector = _Collector(ctx, matcher, handle.rel, handle.fd, limit, deadline)
        run = ctx.rg_paths(handle, args, deadline, collector.feed)
    if run.cancelled or deadline.cancelled():
        raise ToolFailure("Glob was cancelled")
    if run.returncode == 2 and not collector.mtimes and run.stderr.strip():
        raise ToolFailure(f"Glob failed: {run.stderr.strip()[:1000]}")
    listing = collector.listing
    listing.rels = [rel for _, rel in sorted(collector.mtimes)]
    if run.timed_out or collector.timed_out:
        listing.notes.append("(the listing timed out; the results are partial: narrow the pattern or path)")
    elif run.truncated:
        listing.notes.append(
            f"(the listing stopped after {limit} files; the results are partial: narrow the pattern or path)"
        )
    return listing


def run_glob(ctx: ToolContext, arguments: Any, deadline: Deadline) -> ToolResult:
    """Serve one Glob call."""
    args = A.as_object(arguments, EXAMPLE)
    pattern = A.text(args, ("pattern", "glob", "file_pattern"), required=True, example=EXAMPLE)
    assert pattern is not None
    path = A.text(args, ("path", "directory", "dir", "cwd")) or None
    base, rel_pattern, anchored = split_pattern(ctx, pattern, path)
    matcher = GlobMatcher(rel_pattern, anchored=anchored)
    listing = list_files(ctx, base, matcher, deadline)
    stamped = listing.rels
    limit = ctx.settings.glob_max_results
    shown = [rel for rel in stamped[:limit] if ctx.verify_file(rel, content=False)]
    paths = [clean(ctx.root.abs(rel)) for rel in shown]
    lines = [show_name(ctx.root.abs(rel)) for rel in shown] or ["No files found"]
    if len(stamped) > limit:
        lines.append(f"... {len(stamped) - limit} more; narrow the pattern (showing the {limit} newest)")
    lines += listing.notes
    text = cut("\n".join(lines), ctx.settings.max_output_chars, "narrow the pattern or path")
    return ToolResult(text, paths=tuple(paths))
