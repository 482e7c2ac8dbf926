"""Reading text from an already-opened descriptor in bounded memory: lines, skips, counts, the tail."""

from __future__ import annotations

import os

from mcp_loco.sandbox.limits import Deadline

CHUNK = 1 << 16
SNIFF_BYTES = 8192
# Beyond this many bytes left, Read says "more lines" instead of counting them.
COUNT_MAX_BYTES = 64 << 20


def is_binary(fd: int) -> bool:
    """True when the start of the file holds a NUL byte (how git and ripgrep decide too)."""
    return b"\0" in os.pread(fd, SNIFF_BYTES, 0)


class LineReader:
    """Sequential lines from a descriptor; a line longer than the cap is cut, never held whole."""

    def __init__(self, fd: int, deadline: Deadline, what: str, hint: str = "read a smaller part of the file") -> None:
        self.fd = fd
        self.deadline = deadline
        self.what = what
        self.hint = hint
        self.buf = b""
        self.pos = 0
        self.eof = False
        self.consumed = 0
        self.mid_line = False  # bytes of the current line were consumed, its newline not yet

    def _fill(self) -> bool:
        self.deadline.check(self.what, self.hint)
        if self.eof:
            return False
        chunk = os.read(self.fd, CHUNK)
        if not chunk:
            self.eof = True
            return False
        self.buf = self.buf[self.pos :] + chunk
        self.pos = 0
        return True

    def _advance(self, to: int) -> None:
        if to > self.pos:
            self.consumed += to - self.pos
            self.mid_line = self.buf[to - 1 : to] != b"\n"
            self.pos = to

    def readline(self, max_bytes: int) -> tuple[bytes, int] | None:
        """The next line without its newline and the number of bytes cut from it; None at the end."""
        while True:
            newline = self.buf.find(b"\n", self.pos, self.pos + max_bytes + 1)
            if newline != -1:
                line = self.buf[self.pos : newline]
                self._advance(newline + 1)
                return line, 0
            if len(self.buf) - self.pos > max_bytes:
                line = self.buf[self.pos : self.pos + max_bytes]
                self._advance(self.pos + max_bytes)
                return line, self._skip_rest_of_line()
            if not self._fill():
                if self.pos >= len(self.buf):
                    return None
                line = self.buf[self.pos :]
                self._advance(len(self.buf))
                return line, 0

    def _skip_rest_of_line(self) -> int:
        cut = 0
        while True:
            newline = self.buf.find(b"\n", self.pos)
            if newline != -1:
                cut += newline - self.pos
                self._advance(newline + 1)
                return cut
            cut += len(self.buf) - self.pos
            self._advance(len(self.buf))
            if not self._fill():
                return cut

    def at_end(self) -> bool:
        """True when nothing is left to read (reads at most one chunk to find out)."""
        return self.pos >= len(self.buf) and not self._fill()

    def skip_lines(self, n: int) -> int:
        """Skip up to `n` lines; returns how many were skipped (fewer at the end of the file)."""
        skipped = 0
        while skipped < n:
            count = self.buf.count(b"\n", self.pos)
            if skipped + count >= n:
                for _ in range(n - skipped):
                    self._advance(self.buf.index(b"\n", self.pos) + 1)
                return n
            skipped += count
            self._advance(len(self.buf))
            if not self._fill():
                return skipped + (1 if self.mid_line else 0)
        return skipped

    def count_rest(self, size: int) -> int | None:
        """Lines left to read, or None when more than COUNT_MAX_BYTES remain (not worth reading)."""
        if size - self.consumed > COUNT_MAX_BYTES:
            return None
        start = self.consumed
        count = 0
        while True:
            count += self.buf.count(b"\n", self.pos)
            self._advance(len(self.buf))
            if self.consumed - start > COUNT_MAX_BYTES:
                return None  # the file is growing, or its size lied
            if not self._fill():
                return count + (1 if self.mid_line else 0)


def decode_line(raw: bytes, cut: int, max_chars: int) -> str:
    """Decode (invalid UTF-8 becomes U+FFFD), drop a trailing CR, cut to `max_chars` with a marker."""
    line = raw.decode("utf-8", "replace")
    if line.endswith("\r") and not cut:
        line = line[:-1]
    extra = cut
    if len(line) > max_chars:
        extra += len(line) - max_chars
        line = line[:max_chars]
    if extra:
        line += f"... [line cut: {extra} more characters]"
    return line


# tail reads at most this much from the end: enough for any page of output, bounded for one long line.
TAIL_MAX_BYTES = 64 << 20


def tail_bytes(fd: int, size: int, lines: int, deadline: Deadline) -> tuple[bytes, bool]:
    """The last `lines` lines of a file, read backwards in blocks; True when TAIL_MAX_BYTES cut the first one."""
    # Blocks are kept in a list and their newlines counted once each, so a long line costs linear time.
    end = size
    blocks: list[bytes] = []
    newlines = 0
    # The last newline ends the last line rather than starting one, so it does not count.
    skip_final = size > 0 and os.pread(fd, 1, size - 1) == b"\n"
    while end > 0 and newlines - skip_final < lines:
        deadline.check("tail", "use tail -c N, or Read with an offset")
        start = max(0, end - CHUNK, size - TAIL_MAX_BYTES)
        if start >= end:
            break
        block = os.pread(fd, end - start, start)
        if not block:
            break
        blocks.append(block)
        newlines += block.count(b"\n")
        end = start
    data = b"".join(reversed(blocks))
    cut = end > 0 and newlines - skip_final < lines
    parts = data.split(b"\n")
    if parts and parts[-1] == b"":
        parts.pop()
        return (b"\n".join(parts[-lines:]) + b"\n" if lines else b""), cut and len(parts) <= lines
    return (b"\n".join(parts[-lines:]) if lines else b""), cut and len(parts) <= lines
