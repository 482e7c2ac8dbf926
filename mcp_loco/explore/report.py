"""The explore result, and the check of every path the report cites."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field

from mcp_loco.interfaces import PathOracle, Usage, is_within

StopReason = Literal["answered", "turns", "context", "deadline"]

# A path starts after a boundary (not inside a word, URL or longer path); `path:12`, `path:12-40`
# and `path#L12-L40` carry lines.
_CITATION = re.compile(
    r"(?<![\w:/.\-~])(?P<path>/(?:[\w.\-@+%~]+/)*[\w.\-@+%~]+/?)"
    r"(?::(?P<l1>\d+)(?:-(?P<l2>\d+))?|#L(?P<h1>\d+)(?:-L?(?P<h2>\d+))?)?"
)
_EXT = re.compile(r"\.[A-Za-z0-9]{1,10}$")
_FS_PREFIXES = (
    "/home/",
    "/Users/",
    "/usr/",
    "/etc/",
    "/tmp/",  # noqa: S108 - a prefix to recognise cited paths, nothing is written there
    "/var/",
    "/opt/",
    "/root/",
    "/mnt/",
    "/srv/",
    "/private/",
    "/Volumes/",
    "/workspace/",
    "/work/",
    "/data/",
    "/proc/",
    "/dev/",
)
_FENCE = re.compile(r"^\s*(```|~~~)")
UNCHECKED = "unchecked: time budget"
"""How a citation or quote the call's deadline left no time to check is marked (never as verified)."""


class Citation(BaseModel):
    """A path the report cites, and whether it checked out."""

    text: str
    """The citation as written in the report."""
    path: str
    """Absolute, normalised path."""
    line_start: int | None = None
    line_end: int | None = None
    verified: bool
    reason: str = ""
    """Why it is not verified (empty when verified)."""
    unchecked: bool = False
    """The call's deadline came before this citation could be checked (it is not verified either)."""


class Quote(BaseModel):
    """A code block the report shows, and whether it is the code in the file (mcp_loco/explore/quotes.py checks it)."""

    path: str
    """The file it is attributed to (or, for a block the report did not attribute, the file it was found in)."""
    line_start: int | None = None
    line_end: int | None = None
    """The lines the report cited for it (None when the citation has no lines, or there is none)."""
    verified: bool
    found_at: tuple[int, int] | None = None
    """The lines where the block really is (None when it was not found)."""
    reason: str = ""
    """Why it is not verified, or where it moved from (empty when found at the cited lines)."""
    unchecked: bool = False
    """The call's deadline came before this block could be checked (it is not verified either)."""

    @property
    def moved(self) -> bool:
        """Found in the file, but not at the lines the report cited (the report's text was corrected)."""
        return self.verified and bool(self.reason)


class ToolCallRecord(BaseModel):
    """One tool call the model made."""

    turn: int
    name: str
    arguments: str
    """The arguments, shortened for display."""
    ok: bool
    elapsed_s: float = 0.0


class ExploreResult(BaseModel):
    """What one exploration returns."""

    report: str = Field(description="Markdown answer with absolute paths and snippets; unverified citations marked")
    citations: list[Citation] = Field(default_factory=list)
    quotes: list[Quote] = Field(default_factory=list, description="Code blocks checked against the files they quote")
    files_examined: list[str] = Field(default_factory=list, description="Paths the tools actually returned")
    tool_calls: list[ToolCallRecord] = Field(default_factory=list)
    turns: int = 0
    stop_reason: StopReason = "answered"
    escalated: bool = False
    """True when a fallback model finished the exploration."""
    usage: Usage = Field(default_factory=Usage)
    elapsed_s: float = 0.0
    root: str = ""
    question: str = ""


# ---- extraction ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Found:
    """A path found in the report: where, as written, and with which lines."""

    start: int
    end: int
    text: str
    path: str
    line_start: int | None
    line_end: int | None
    in_code: bool


def _looks_like_fs_path(path: str) -> bool:
    return bool(_EXT.search(path.rstrip("/"))) or path.startswith(_FS_PREFIXES)


def find_citations(report: str, root: str) -> list[Found]:
    """Every absolute path in the report but the root itself (outside the root only when it looks like a file path)."""
    found: list[Found] = []
    in_code = False
    offset = 0
    bare_root = root.rstrip("/")
    for line in report.splitlines(keepends=True):
        if _FENCE.match(line):
            in_code = not in_code
        for m in _CITATION.finditer(line):
            raw = m.group("path")
            path = os.path.normpath(raw.rstrip(".")) if raw != "/" else raw
            end_trim = len(raw) - len(raw.rstrip(".")) if raw.endswith(".") and not raw.endswith("..") else 0
            inside = is_within(path, root)
            if not inside and (in_code or not _looks_like_fs_path(path) or path.count("/") < 2):
                continue
            l1 = m.group("l1") or m.group("h1")
            l2 = m.group("l2") or m.group("h2")
            if path == bare_root and not l1:
                continue  # the explored root itself: the caller's own words, not a finding
            end = m.end() if l1 else m.end("path") - end_trim
            found.append(
                Found(
                    start=offset + m.start(),
                    end=offset + end,
                    text=line[m.start() : end],
                    path=path,
                    line_start=int(l1) if l1 else None,
                    line_end=int(l2) if l2 else (int(l1) if l1 else None),
                    in_code=in_code,
                )
            )
        offset += len(line)
    return found


# ---- verification --------------------------------------------------------------------------------


def _seen(path: str, kind: str, seen: set[str]) -> bool:
    if path in seen:
        return True
    prefix = path.rstrip("/") + "/"
    # A directory counts as seen when something inside it was shown.
    return kind == "dir" and any(p.startswith(prefix) for p in seen)


def _citation(found: Found, ok: bool, reason: str = "", unchecked: bool = False) -> Citation:
    return Citation(
        text=found.text,
        path=found.path,
        line_start=found.line_start,
        line_end=found.line_end,
        verified=ok,
        reason=reason,
        unchecked=unchecked,
    )


def unchecked(found: Found) -> Citation:
    """A citation the deadline left no time to check: not verified, and said so."""
    return _citation(found, False, UNCHECKED, unchecked=True)


def verify(found: Found, root: str, oracle: PathOracle, seen: set[str], deadline: float | None = None) -> Citation:
    """Check one citation against the disk and against what the tools showed (unchecked once `deadline` passed)."""

    def result(ok: bool, reason: str = "") -> Citation:
        return _citation(found, ok, reason)

    if not is_within(found.path, root):
        return result(False, f"outside the explored root {root}")
    info = oracle.inspect(found.path)
    if info.kind == "outside":
        return result(False, info.reason or f"resolves outside the explored root {root}")
    if info.kind == "missing":
        return result(False, "no such file or directory")
    if info.kind == "denied":
        return result(False, "secret file (denied to the tools)")
    if info.kind == "error":
        return result(False, info.reason or "cannot be read")
    if found.line_start is not None:
        if info.kind != "file":
            return result(False, "line numbers given for a directory")
        end = found.line_end or found.line_start
        if found.line_start < 1 or end < found.line_start:
            return result(False, f"bad line range {found.line_start}-{end}")
        if info.lines is None and deadline is not None and time.monotonic() >= deadline:
            return unchecked(found)  # the deadline cut the line count: nothing was checked
        if info.lines is not None and end > info.lines:
            return result(False, f"line {end} is past the end of the file ({info.lines} lines)")
    if found.path != root and not _seen(found.path, info.kind, seen):  # the root is given in the task
        return result(False, "not seen by any tool call")
    return result(True)


def check_report(
    report: str, root: str, oracle: PathOracle, seen: Iterable[str], deadline: float | None = None
) -> tuple[str, list[Citation]]:
    """Verify every citation; return the report with unverified ones marked, and the citations.

    With a `deadline` (time.monotonic()), the citations not checked by then are marked `[unchecked: ...]`.
    """
    seen_set = {os.path.normpath(p) for p in seen}
    found = find_citations(report, root)
    citations: list[Citation] = []
    for f in found:
        if deadline is not None and time.monotonic() >= deadline:
            citations.append(unchecked(f))
            continue
        citations.append(verify(f, root, oracle, seen_set, deadline))
    marked = report
    for f, c in sorted(zip(found, citations, strict=True), key=lambda fc: fc[0].start, reverse=True):
        # A model may copy an already marked citation (from a sub-exploration's report): mark it once.
        mark = "unchecked" if c.unchecked else "unverified"
        if not c.verified and not marked.startswith(f" [{mark}:", f.end):
            text = c.reason if c.unchecked else f"unverified: {c.reason}"
            marked = f"{marked[: f.end]} [{text}]{marked[f.end :]}"
    return marked, citations


def cap_report(report: str, max_tokens: int, count: Callable[[str], int]) -> str:
    """Cut the report at a paragraph (or line) boundary so it stays under max_tokens, saying so."""
    if count(report) <= max_tokens:
        return report
    lo, hi = 0, len(report)
    while lo < hi:  # longest prefix that fits, by bisection on characters
        mid = (lo + hi + 1) // 2
        if count(report[:mid]) <= max_tokens - 40:
            lo = mid
        else:
            hi = mid - 1
    cut = report[:lo]
    for sep in ("\n\n", "\n"):
        at = cut.rfind(sep)
        if at > lo // 2:
            cut = cut[:at]
            break
    return f"{cut.rstrip()}\n\n[report cut at about {max_tokens} tokens to fit the caller's context; ask a narrower question for the rest]"
