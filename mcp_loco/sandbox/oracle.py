"""The path oracle: what a path cited in a report really is, answered through the confined walk.

A report may cite one large file hundreds of times: its lines are counted once, remembered by the
file's identity (device, inode, size, modification time), and every read stops at the call's deadline.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from mcp_loco.interfaces import PathInfo
from mcp_loco.sandbox.context import SecretPathError, ToolContext
from mcp_loco.sandbox.limits import Deadline, ToolFailure
from mcp_loco.sandbox.paths import Handle, MissingPathError, OutsideRootError, PathError
from mcp_loco.sandbox.textfile import LineReader, is_binary

if TYPE_CHECKING:
    from mcp_loco.sandbox.toolbox import Toolbox

TEXT_MAX_BYTES = 8 << 20
"""Files larger than this are not read to check a quote (Read would show them a page at a time anyway)."""
COUNTS_MAX = 4096
"""Line counts remembered at most (a report cites far fewer files)."""

_Identity = tuple[int, int, int, int]


class Oracle:
    """Classifies paths inside one root; never follows a link out of it and never raises."""

    def __init__(self, ctx: ToolContext, until: float | None = None) -> None:
        self.ctx = ctx
        self.until = until  # the call's deadline (time.monotonic()): no read goes past it
        self._lines: dict[_Identity, int | None] = {}
        self.counted = 0  # line counts done: a file cited again is not counted again

    def _deadline(self) -> Deadline:
        """One read's deadline: the read timeout, cut to what is left of the call's."""
        seconds = self.ctx.settings.read_timeout_s
        if self.until is not None:
            seconds = min(seconds, self.until - time.monotonic())
        return Deadline(seconds)

    def _count(self, handle: Handle) -> int | None:
        """The file's line count, counted once per file identity; None when too large or out of time."""
        st = handle.st
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if key in self._lines:
            return self._lines[key]
        reader = LineReader(handle.fd, self._deadline(), f"counting lines of {handle.path}")
        self.counted += 1
        try:
            lines = reader.count_rest(st.st_size)
        except (ToolFailure, OSError):
            return None  # not remembered: out of time now is no answer for a later report
        if len(self._lines) >= COUNTS_MAX:
            self._lines.clear()
        self._lines[key] = lines
        return lines

    def inspect(self, path: str) -> PathInfo:
        """file (with its line count), dir, missing, outside, denied, or error (with the reason)."""
        try:
            handle = self.ctx.open(path)
        except OutsideRootError as e:
            return PathInfo("outside", reason=str(e))
        except MissingPathError as e:
            return PathInfo("missing", reason=str(e))
        except SecretPathError as e:
            return PathInfo("denied", reason=str(e))
        except (PathError, OSError, ValueError) as e:
            return PathInfo("error", reason=str(e))
        with handle:
            if handle.is_dir:
                return PathInfo("dir")
            if not handle.is_file:
                return PathInfo("error", reason=f"{handle.path} is a {handle.kind}")
            if handle.st.st_nlink > 1 and not self.ctx.settings.allow_hard_links:
                return PathInfo("error", reason=f"{handle.path} has {handle.st.st_nlink} hard links; it is not read")
            return PathInfo("file", lines=self._count(handle))

    def text(self, path: str) -> str | None:
        """A text file's content as Read decodes it, or None when no tool may show it (denied, outside, binary, huge)."""
        try:
            handle = self.ctx.open_file(path, "the quote check")
        except (PathError, OSError, ValueError):
            return None
        with handle:
            try:
                if handle.st.st_size > TEXT_MAX_BYTES or is_binary(handle.fd):
                    return None
                deadline = self._deadline()
                chunks: list[bytes] = []
                size = 0
                while chunk := os.read(handle.fd, 1 << 16):
                    deadline.check(f"reading {handle.path}")
                    size += len(chunk)
                    if size > TEXT_MAX_BYTES:  # grew since the stat
                        return None
                    chunks.append(chunk)
            except (ToolFailure, OSError):
                return None
        return b"".join(chunks).decode("utf-8", "replace")


def path_oracle(toolbox: Toolbox, until: float | None = None) -> Oracle:
    """The oracle for a Toolbox's root, deny-list and settings; its reads stop at `until` (time.monotonic())."""
    return Oracle(toolbox.context, until)
