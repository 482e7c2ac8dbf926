"""The path oracle: what a path cited in a report really is, answered through the confined walk."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from mcp_loco.interfaces import PathInfo
from mcp_loco.sandbox.context import SecretPathError, ToolContext
from mcp_loco.sandbox.limits import Deadline, ToolFailure
from mcp_loco.sandbox.paths import MissingPathError, OutsideRootError, PathError
from mcp_loco.sandbox.textfile import LineReader, is_binary

if TYPE_CHECKING:
    from mcp_loco.sandbox.toolbox import Toolbox

TEXT_MAX_BYTES = 8 << 20
"""Files larger than this are not read to check a quote (Read would show them a page at a time anyway)."""


class Oracle:
    """Classifies paths inside one root; never follows a link out of it and never raises."""

    def __init__(self, ctx: ToolContext) -> None:
        self.ctx = ctx

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
            reader = LineReader(
                handle.fd, Deadline(self.ctx.settings.read_timeout_s), f"counting lines of {handle.path}"
            )
            try:
                lines = reader.count_rest(handle.st.st_size)
            except (ToolFailure, OSError):
                lines = None
            return PathInfo("file", lines=lines)

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
                deadline = Deadline(self.ctx.settings.read_timeout_s)
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


def path_oracle(toolbox: Toolbox) -> Oracle:
    """The oracle for a Toolbox's root, deny-list and settings."""
    return Oracle(toolbox.context)
