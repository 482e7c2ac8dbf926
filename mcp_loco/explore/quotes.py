"""Verified quotes: each fenced code block of a report is checked against the file it claims to show.

Attribution: a path comment on the block's first line, else the nearest citation just before it (in
the same or the previous paragraph, with no other block between); a block with neither is looked for
in every file the tools showed. Matching compares whitespace-normalised non-blank lines and tolerates
elisions (`...`, `# ...`, `// ...`), the line-number prefixes of Read and Grep output (a jump in the
numbers is an elision too) and a cut first or last line. A block is looked for where its longest
token is (str.find over the raw text), so a file is never split or normalised whole: the check costs
little more than reading the files. Files are read through the caller's `read` (the sandbox's
confined open), at most once each, and only when a tool showed them: a denied or outside path is
never read, so a quote can never draw its content into the report. With a deadline, a block the time
left no room to check is marked `[unchecked quote: time budget]`, never taken as verified.
"""

from __future__ import annotations

import bisect
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace

from mcp_loco.explore.report import UNCHECKED, Found, Quote, find_citations

__all__ = ["Quote", "check_quotes"]

_FENCE = re.compile(r"^\s*(```|~~~)")  # the same toggle find_citations uses, so both agree on what is code
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)*")
_ELISION = re.compile(r"^(?:(?:#|//|--|;|%|/\*+|<!--|\*)\s*(?:\.\.\.|…).*|\.\.\.|…|\[\.\.\.\]|\(\.\.\.\)|--)$")
_COMMENT_ONLY = re.compile(r"^\s*(?:#+|//+|--|;+|%|/\*+|<!--|\*)?\s*(?:[A-Za-z ]{1,12}:)?\s*(?:\*/|-->)?\s*$")
# Read shows `     12\tcode`; Grep `/abs/path:12:code`, `12:code`, and `12-code` for context lines.
_NUMBERED = re.compile(r"^\s*(?:(?P<path>/[^\s:]*?)[:-])?(?P<n>\d{1,7})(?:\t|[:-]|  +)")
_LINE_CUT = re.compile(r"\.\.\. \[line cut: \d+ more characters\]$")
_LINES_SUFFIX = re.compile(r"(?::\d+(?:-\d+)?|#L\d+(?:-L?\d+)?)$")
CORRECTED = " [lines corrected]"
UNCHECKED_QUOTE = "unchecked quote: time budget"
_MAX_CANDIDATES = 256
"""Lines holding a segment's anchor token tried before giving up (a block of `}` lines is no quote)."""


@dataclass
class _Line:
    text: str
    loose: bool = False
    """Matches when it is part of the file's line (a cut first or last line)."""


@dataclass
class _Variant:
    """The block read one way: its segments (runs of lines between elisions) and the lines it claims."""

    segments: list[list[_Line]]
    claimed: tuple[int, int] | None
    key: str
    """Its longest whole token: a file without it cannot hold the block (a fast test before any match)."""


@dataclass
class _Block:
    body_start: int
    end: int
    """Just past the closing fence line (or the report's end when the block is not closed)."""
    lines: list[str]
    cite: Found | None = None
    numbered: tuple[int, int] | None = None
    """The span of the line numbers the block carries (copied from Read or Grep output)."""
    numbered_path: str = ""
    variants: list[_Variant] = field(default_factory=list)
    """Numbers stripped (claiming their lines), then as written."""


_Pos = tuple[int, int]
"""A line of a file: its number (0-based) and where it starts in the text."""


@dataclass
class _File:
    """A shown file's text: never split; a line is normalised only when a match looks at it."""

    text: str
    norms: dict[int, str] = field(default_factory=dict)

    def norm(self, start: int) -> str:
        """The line starting at `start`, normalised."""
        if start not in self.norms:
            end = self.text.find("\n", start)
            self.norms[start] = normalise(self.text[start : end if end != -1 else len(self.text)])
        return self.norms[start]

    def step(self, at: _Pos, step: int) -> _Pos | None:
        """The next non-blank line after `at` in the direction of `step` (1 or -1), or None."""
        number, start = at
        while True:
            if step > 0:
                start = self.text.find("\n", start) + 1
                if start == 0:
                    return None
            elif start == 0:
                return None
            else:
                start = self.text.rfind("\n", 0, start - 1) + 1
            number += step
            if self.norm(start):
                return number, start


def normalise(line: str) -> str:
    """The line with every run of whitespace made one space, and none at either end."""
    return " ".join(line.split())


def _blocks(report: str) -> list[_Block]:
    blocks: list[_Block] = []
    offset, current = 0, None
    for raw in report.splitlines(keepends=True):
        offset += len(raw)
        if _FENCE.match(raw):
            if current is None:
                current = _Block(body_start=offset, end=offset, lines=[])
            else:
                current.end = offset
                blocks.append(current)
                current = None
        elif current is not None:
            current.lines.append(raw.rstrip("\r\n"))
    if current is not None:
        current.end = len(report)
        blocks.append(current)
    return blocks


def _attribute(report: str, root: str, blocks: list[_Block]) -> None:
    """Give each block its path comment, or the nearest citation before it in the same or previous paragraph."""
    prose = [f for f in find_citations(report, root) if not f.in_code]
    starts = [c.start for c in prose]
    prev_end = 0
    for b in blocks:
        first = b.lines[0] if b.lines else ""
        own = find_citations(first, root) if "/" in first else []
        if len(own) == 1 and _COMMENT_ONLY.match(first[: own[0].start] + first[own[0].end :]):
            b.cite = replace(own[0], start=b.body_start + own[0].start, end=b.body_start + own[0].end)
            b.lines = b.lines[1:]
        else:
            fence_start = report.rfind("\n", 0, max(b.body_start - 1, 0)) + 1
            i = bisect.bisect_right(starts, fence_start) - 1
            if i >= 0 and prose[i].end >= prev_end and prose[i].end <= fence_start:
                gap = report[prose[i].end : fence_start]
                if len(_PARAGRAPH_BREAK.findall(gap)) <= 1:
                    b.cite = prose[i]
        prev_end = b.end


def _parse(b: _Block) -> None:
    """Note the block's copied line numbers, and split it into segments, with the numbers stripped and without."""
    lines = [(raw, text) for raw in b.lines if (text := normalise(raw))]
    numbered = [_NUMBERED.match(raw) for raw, text in lines if not _ELISION.match(text)]
    numbers = [int(m.group("n")) for m in numbered if m]
    if numbers and len(numbers) == len(numbered) and numbers == sorted(set(numbers)):
        b.numbered = (numbers[0], numbers[-1])
        paths = {m.group("path") for m in numbered if m}
        if len(paths) == 1 and (only := paths.pop()):
            b.numbered_path = os.path.normpath(only)
    # A dict of numbered entries looks like copied numbers too: the block as written is the fallback.
    strips = (True, False) if b.numbered else (False,)
    for strip in strips:
        segments = _segments(lines, strip)
        tokens = [t for seg in segments for line in seg if not line.loose for t in line.text.split(" ")]
        if segments:
            b.variants.append(_Variant(segments, b.numbered if strip else None, max(tokens, key=len, default="")))


def _segments(lines: list[tuple[str, str]], strip: bool) -> list[list[_Line]]:
    segments: list[list[_Line]] = [[]]
    last = None
    for raw, text in lines:
        if _ELISION.match(text):
            segments.append([])
            continue
        if strip and (m := _NUMBERED.match(raw)):
            n = int(m.group("n"))
            if last is not None and n > last + 1:
                segments.append([])  # numbers that jump: lines were left out
            last = n
            text = normalise(raw[m.end() :])
        cut = _LINE_CUT.search(text) if "[line cut:" in text else None
        if cut:
            text = text[: cut.start()].rstrip()
        if text:
            segments[-1].append(_Line(text, loose=bool(cut)))
    segments = [s for s in segments if s]
    if segments:
        first, last_seg = segments[0], segments[-1]
        # A cut line may only be loose beside a whole one that anchors it.
        if len(first) >= 3 or (len(first) == 2 and len(segments) > 1):
            first[0].loose = True
        if len(last_seg) >= 2:
            last_seg[-1].loose = True
    return segments


def _fits(line: _Line, have: str) -> bool:
    return line.text in have if line.loose else line.text == have


def _around(f: _File, seg: list[_Line], k: int, at: _Pos) -> tuple[_Pos, _Pos] | None:
    """The first and last file lines of the segment placed with its line `k` at line `at`, or None."""
    first = last = at
    for line in reversed(seg[:k]):
        prev = f.step(first, -1)
        if prev is None or not _fits(line, f.norm(prev[1])):
            return None
        first = prev
    for line in seg[k + 1 :]:
        nxt = f.step(last, 1)
        if nxt is None or not _fits(line, f.norm(nxt[1])):
            return None
        last = nxt
    return first, last


def _occurrences(f: _File, seg: list[_Line], after: _Pos) -> Iterator[tuple[_Pos, _Pos]]:
    """The segment's matches starting at or after line `after`, in order."""
    # Anchor on the longest token of the longest whole line: str.find scans the raw text at C speed and
    # finds few places, so only the lines around them are ever normalised.
    k = max(range(len(seg)), key=lambda j: (not seg[j].loose, len(seg[j].text)))
    token = max(seg[k].text.split(" "), key=len)
    number, pos = after
    last = pos
    for _ in range(_MAX_CANDIDATES):
        hit = f.text.find(token, pos)
        if hit == -1:
            return
        number += f.text.count("\n", last, hit)
        last = hit
        at = (number, f.text.rfind("\n", 0, hit) + 1)
        span = _around(f, seg, k, at) if _fits(seg[k], f.norm(at[1])) else None
        if span is not None and span[0][0] >= after[0]:
            yield span
        pos = f.text.find("\n", hit) + 1  # on to the next line
        if pos == 0:
            return


def _rest(f: _File, segments: list[list[_Line]], last: _Pos) -> _Pos | None:
    """The last line of the earliest match of the segments in order after line `last`, or None."""
    for seg in segments:  # greedy: the earliest match of each leaves the most room for the rest
        end = f.text.find("\n", last[1])
        span = next(_occurrences(f, seg, (last[0] + 1, end + 1)), None) if end != -1 else None
        if span is None:
            return None
        last = span[1]
    return last


def _find(
    f: _File, variants: list[_Variant], cited: tuple[int, int] | None
) -> tuple[tuple[int, int], tuple[int, int] | None] | None:
    """Where the block is (the match that agrees with the lines cited, else the nearest, else the first), and those lines.

    Lines the report cites win over the numbers a block carries.
    """
    for v in variants:
        if v.key not in f.text:
            continue
        want = cited or v.claimed
        best: tuple[int, int] | None = None
        for first, last in _occurrences(f, v.segments[0], (0, 0)):
            end = _rest(f, v.segments[1:], last)
            if end is None:
                break  # the rest fits nowhere after this match, so nowhere after a later one either
            span = (first[0] + 1, end[0] + 1)
            if want is None or _agrees(span, want):
                return span, want
            if best is None or abs(span[0] - want[0]) < abs(best[0] - want[0]):
                best = span
        if best is not None:
            return best, want
    return None


def _agrees(found: tuple[int, int], cited: tuple[int, int]) -> bool:
    """The block shows part of the cited lines, or the cited lines lie within the block."""
    (s, e), (a, b) = found, cited
    return (a <= s and e <= b) or (s <= a and b <= e)


def _span(s: int, e: int) -> str:
    return f"{s}" if s == e else f"{s}-{e}"


def _corrected(cite: Found, span: tuple[int, int]) -> str:
    base = _LINES_SUFFIX.sub("", cite.text)
    if cite.text[len(base) :].startswith("#"):
        return f"{base}#L{span[0]}" + (f"-L{span[1]}" if span[1] != span[0] else "")
    return f"{base}:{_span(*span)}"


class _Files:
    """The shown files, each read on first use."""

    def __init__(self, read: Callable[[str], str | None], shown: Iterable[str]) -> None:
        self.read = read
        self.shown = list(dict.fromkeys(os.path.normpath(p) for p in shown))
        self.shown_set = set(self.shown)
        self.cache: dict[str, _File | None] = {}

    def get(self, path: str) -> _File | None:
        """The file, or None when no tool showed it or it cannot be read (never read twice)."""
        if path not in self.cache:
            text = self.read(path) if path in self.shown_set else None
            self.cache[path] = _File(text) if text is not None else None
        return self.cache[path]


def _unchecked(
    report: str, b: _Block, path: str, lines: tuple[int, int] | None, edits: list[tuple[int, int, str]]
) -> Quote:
    """A block the deadline left no time to check: marked so in the text, not verified."""
    if not report.startswith("[unchecked quote:", b.end):
        newline = "" if report[b.end - 1 : b.end] == "\n" else "\n"
        edits.append((b.end, b.end, f"{newline}[{UNCHECKED_QUOTE}]\n"))
    line_start, line_end = lines or b.numbered or (None, None)
    return Quote(path=path, line_start=line_start, line_end=line_end, verified=False, reason=UNCHECKED, unchecked=True)


def _check(
    report: str, b: _Block, files: _Files, edits: list[tuple[int, int, str]], expired: Callable[[], bool]
) -> Quote | None:
    """One block's quote (None for an unattributed block found nowhere); adds its fixes and marks to `edits`."""
    cite = b.cite
    path = cite.path if cite is not None else b.numbered_path
    lines = (cite.line_start, cite.line_end or cite.line_start) if cite and cite.line_start else None
    if expired():
        # Out of time: a block that names its file is marked unchecked; one that names none claims nothing.
        return _unchecked(report, b, path, lines, edits) if path else None
    a_file = bool(path) and files.get(path) is not None
    under = [] if not path or a_file else [p for p in files.shown if p.startswith(path.rstrip("/") + "/")]
    if not path or (not a_file and (under or (cite is not None and cite.text.endswith("/")))):
        # Unattributed, or attributed to a directory: a block found nowhere is no quote (a shell example).
        for candidate in under or files.shown:
            if expired():
                return None  # claims no file, so nothing is left marked verified
            f = files.get(candidate)
            if f is not None and (hit := _find(f, b.variants, None)) is not None:
                return Quote(path=candidate, verified=True, found_at=hit[0])
        return None
    reason, found, cited = "", None, lines or b.numbered
    if path not in files.shown_set:
        reason = "the file was never shown by a tool"
    elif (f := files.get(path)) is None:
        if expired():  # the read was cut by the deadline: nothing was checked
            return _unchecked(report, b, path, lines, edits)
        reason = "the tools cannot show the file now"
    elif (hit := _find(f, b.variants, lines)) is None:
        reason = "not in the file"
    else:
        found, cited = hit
        if cited is not None and not _agrees(found, cited):
            reason = f"at lines {_span(*found)}, not {_span(*cited)} as cited"
            if cite is not None and lines is not None:  # the text says where: correct it
                end = cite.end + len(CORRECTED) * report.startswith(CORRECTED, cite.end)
                edits.append((cite.start, end, _corrected(cite, found) + CORRECTED))
    # A model may copy an already marked block (from a sub-exploration's report): mark it once.
    if found is None and not report.startswith("[unverified quote:", b.end):
        newline = "" if report[b.end - 1 : b.end] == "\n" else "\n"
        edits.append((b.end, b.end, f"{newline}[unverified quote: {reason}]\n"))
    line_start, line_end = cited or (None, None)
    return Quote(
        path=path, line_start=line_start, line_end=line_end, verified=found is not None, found_at=found, reason=reason
    )


def check_quotes(
    report: str,
    root: str,
    shown: Iterable[str],
    read: Callable[[str], str | None],
    deadline: float | None = None,
) -> tuple[str, list[Quote]]:
    """Check every code block against the file it quotes; return the report with fixes and marks, and the quotes.

    `shown` are the paths the tools showed; `read(path)` returns a file's text through the sandbox (None
    when no tool may show it) and is called at most once per path, for shown paths only. Blocks left when
    `deadline` (time.monotonic()) passes are marked unchecked.
    """

    def expired() -> bool:
        return deadline is not None and time.monotonic() >= deadline

    files = _Files(read, shown)
    blocks = _blocks(report)
    _attribute(report, root, blocks)
    quotes: list[Quote] = []
    edits: list[tuple[int, int, str]] = []
    for b in blocks:
        _parse(b)
        if b.variants:  # not empty, nor nothing but elisions
            quote = _check(report, b, files, edits, expired)
            if quote is not None:
                quotes.append(quote)
    parts, at = [], 0
    for start, end, text in sorted(edits):  # one pass, so the cost stays linear in the report
        parts += [report[at:start], text]
        at = end
    return "".join([*parts, report[at:]]), quotes
