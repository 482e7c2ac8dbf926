"""Grep's two ripgrep passes: pass 1 names candidate files, pass 2 (over descriptors) finds all that is shown.

Pass 1 reads files by name, so it may read a file the tools refuse: a hard link to a file outside the
root or to a secret, or a link swapped in mid-walk. Nothing it finds is shown or counted: it only
chooses, by name, which files pass 2 opens through the confined walk. Every line, count, total and
"N more" comes from pass 2, which reads only descriptors of regular, unlinked files beneath the root.
Pass 1 keeps at most MAX_CANDIDATES files, counted after the refusals, so even where it stops says
nothing about the files it may not show.
"""

from __future__ import annotations

import os
import resource
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field

from mcp_loco.sandbox.context import ToolContext
from mcp_loco.sandbox.globbing import GlobMatcher
from mcp_loco.sandbox.limits import Deadline
from mcp_loco.sandbox.paths import Handle, PathError
from mcp_loco.sandbox.ripgrep import BASE_FLAGS, RgRun, have_dev_fd, run_rg

MAX_CANDIDATES = 50_000
# Bytes of pass-2 output kept over all batches (the shown page is far smaller; the rest is "N more").
MAX_RAW_BYTES = 8 << 20


def _fds_per_run() -> int:
    """Descriptors handed to one pass-2 rg: a sixteenth of the open-file limit, from 128 to 1024."""
    # A sixteenth leaves room for concurrent calls and for rg, which opens each descriptor again; more
    # per run means fewer rg starts on a big search.
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return 1024 if soft == resource.RLIM_INFINITY else max(128, min(1024, soft // 16))


FDS_PER_RUN = _fds_per_run()


@dataclass
class Found:
    """What pass 2 found, by root-relative path."""

    files: dict[str, float] = field(default_factory=dict)
    """Files with a match, and their mtime (from the descriptor that was searched)."""
    counts: dict[str, int] = field(default_factory=dict)
    lines: dict[str, list[str | None]] = field(default_factory=dict)
    """Numbered lines as rg prints them; None is rg's "--" between context groups."""
    binary: list[str] = field(default_factory=list)
    timed_out: bool = False
    truncated: bool = False
    """The output cap was reached: later files were not searched."""


class Candidates:
    """Pass 1's `rg --files-with-matches --null` output, fed chunk by chunk; keeps files pass 2 may open."""

    def __init__(
        self, ctx: ToolContext, base_rel: str, dir_fd: int, matchers: Sequence[GlobMatcher], deadline: Deadline
    ) -> None:
        self.ctx = ctx
        self.deadline = deadline
        self.base_rel = base_rel
        self.dir_fd = dir_fd
        self.matchers = matchers
        self.pending = b""
        self.rels: list[str] = []
        self.timed_out = False

    def feed(self, chunk: bytes) -> bool:
        """Take one chunk; False once MAX_CANDIDATES files are kept or time is up (rg is then stopped)."""
        data = self.pending + chunk
        records = data.split(b"\0")
        self.pending = records.pop()
        for index, raw in enumerate(records):
            # A crafted glob can cost a millisecond a path: look at the clock within a chunk too.
            if index % 64 == 63 and self.deadline.expired():
                self.timed_out = True
                return False
            rel = self._keep(os.fsdecode(raw))
            if rel is not None:
                self.rels.append(rel)
                if len(self.rels) >= MAX_CANDIDATES:
                    return False
        return True

    def _keep(self, path: str) -> str | None:
        path = path.removeprefix("./")
        rel = f"{self.base_rel}/{path}" if self.base_rel else path
        # A glob may be written relative to the searched directory or to the root.
        if self.matchers and not any(m.match(path) or m.match(rel) for m in self.matchers):
            return None
        if self.ctx.deny.denied(rel):
            return None
        try:
            st = os.stat(path, dir_fd=self.dir_fd, follow_symlinks=False)
        except OSError:
            return None
        # Refused here as in pass 2, so the candidate cap counts only files that could be shown.
        if not stat.S_ISREG(st.st_mode) or (st.st_nlink > 1 and not self.ctx.settings.allow_hard_links):
            return None
        return rel


def find_candidates(
    ctx: ToolContext, handle: Handle, flags: list[str], matchers: Sequence[GlobMatcher], deadline: Deadline
) -> tuple[list[str], RgRun]:
    """Pass 1: rg walks the open directory; the files it names that pass 2 may open."""
    collector = Candidates(ctx, handle.rel, handle.fd, matchers, deadline)
    run = ctx.rg_paths(handle, flags, deadline, collector.feed)
    if collector.timed_out:
        run.timed_out, run.truncated = True, False
    return collector.rels, run


def confirm(ctx: ToolContext, mode: str, flags: list[str], rels: Sequence[str], deadline: Deadline) -> Found:
    """Pass 2: rg over descriptors of `rels`, each opened beneath the root (regular, unlinked, not a secret)."""
    found = Found()
    budget = MAX_RAW_BYTES
    for start in range(0, len(rels), FDS_PER_RUN):
        if deadline.expired():
            found.timed_out = not deadline.cancelled()
            break
        if budget <= 0:
            found.truncated = True
            break
        budget -= _batch(ctx, mode, flags, rels[start : start + FDS_PER_RUN], deadline, budget, found)
    return found


def _batch(
    ctx: ToolContext, mode: str, flags: list[str], rels: Sequence[str], deadline: Deadline, budget: int, found: Found
) -> int:
    """Search one batch of files into `found`; the bytes of output it used."""
    operands: dict[str, str] = {}
    mtimes: dict[str, float] = {}
    fds: list[int] = []
    root_fd = ctx.root_fd()
    try:
        for rel in rels:
            try:
                handle = ctx.open_file(rel, "Grep")
            except (PathError, OSError):
                continue  # refused (a hard link, a secret, not a regular file) or gone: never counted
            if handle.rel != rel:  # the path now leads elsewhere (a link was swapped in): drop it
                handle.close()
                continue
            fds.append(handle.fd)
            name = f"/dev/fd/{handle.fd}" if have_dev_fd() else handle.path
            operands[name] = rel
            mtimes[rel] = handle.st.st_mtime
        if not fds:
            return 0
        run = run_rg(
            ctx.rg(),
            [*BASE_FLAGS, *flags, "--", *operands],
            cwd_fd=root_fd,
            cwd_path=ctx.root.path,
            deadline=deadline,
            max_bytes=budget,
            separator=b"\0" if mode == "files_with_matches" else b"\n",
            pass_fds=fds,
            spawn=ctx.spawn,
        )
    finally:
        for fd in fds:
            os.close(fd)
        os.close(root_fd)
    found.timed_out = found.timed_out or run.timed_out
    found.truncated = found.truncated or run.truncated
    parse(run.stdout, mode, operands, mtimes, found)
    return len(run.stdout)


def parse(data: bytes, mode: str, operands: dict[str, str], mtimes: dict[str, float], found: Found) -> None:
    """Fill `found` from one pass-2 rg output (paths are the descriptor names in `operands`)."""
    if mode == "files_with_matches":
        records = data.split(b"\0")
        records.pop()  # after the last NUL: empty, or a record cut by the cap
        for raw in records:
            rel = operands.get(os.fsdecode(raw))
            if rel is not None:
                found.files[rel] = mtimes.get(rel, 0.0)
        return
    current: str | None = None
    records = data.split(b"\n")
    records.pop()
    for record in records:
        raw, nul, rest = record.partition(b"\0")
        if not nul:
            if record == b"--" and current is not None:
                found.lines[current].append(None)
            elif b": binary file matches" in record:
                rel = operands.get(os.fsdecode(record.split(b": binary file matches")[0]))
                if rel is not None:
                    found.binary.append(rel)
            continue
        current = operands.get(os.fsdecode(raw))
        if current is None:
            continue
        if mode == "count":
            found.counts[current] = int(rest or b"0")
        else:
            found.lines.setdefault(current, []).append(rest.decode("utf-8", "replace"))
