"""Deadlines, cancellation, output caps and the error type every tool raises for the model."""

from __future__ import annotations

import threading
import time

from mcp_loco.errors import LocoError

# Room kept for the note that says a result was cut.
NOTE_ROOM = 300


class ToolFailure(LocoError):
    """A failure whose message goes back to the model as the tool result (what was wrong, what to do)."""


class Deadline:
    """A wall-clock limit that also ends as soon as `cancel` is set."""

    def __init__(self, seconds: float, cancel: threading.Event | None = None) -> None:
        self.seconds = seconds
        self.cancel = cancel
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        """Seconds left (0 when expired or cancelled)."""
        if self.cancel is not None and self.cancel.is_set():
            return 0.0
        return max(0.0, self._end - time.monotonic())

    def expired(self) -> bool:
        """True once the time is up or the call was cancelled."""
        return self.remaining() <= 0.0

    def cancelled(self) -> bool:
        """True when the caller cancelled the call."""
        return self.cancel is not None and self.cancel.is_set()

    def check(self, what: str, hint: str = "narrow it (a smaller path or a more specific pattern)") -> None:
        """Raise a ToolFailure when the time is up or the call was cancelled."""
        if self.cancelled():
            raise ToolFailure(f"{what} was cancelled")
        if self.expired():
            raise ToolFailure(f"{what} timed out after {self.seconds:g} s; {hint}")


def cut(text: str, limit: int, hint: str) -> str:
    """Cap `text` at about `limit` characters on a line boundary, saying what was cut and what to do."""
    if len(text) <= limit:
        return text
    keep = max(0, limit - NOTE_ROOM)
    head = text[:keep]
    newline = head.rfind("\n")
    if newline > keep // 2:
        head = head[: newline + 1]
    rest = text[len(head) :]
    more_lines = rest.count("\n") + (0 if rest.endswith("\n") else 1)
    if not head.endswith("\n"):
        head += "\n"
    return f"{head}... output cut at {len(head)} characters ({more_lines} more lines not shown); {hint}"


def clean(text: str) -> str:
    """Make text safe to send as UTF-8: undecodable file-name bytes become U+FFFD."""
    try:
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        data = text.encode("utf-8", "replace")
    return data.decode("utf-8", "replace")


def show_name(name: str) -> str:
    """A file name as listings show it: control characters (newlines...) become '?', like `ls -q`."""
    if name.isprintable():
        return name
    return "".join(c if c.isprintable() or c == " " else "?" for c in name)


def human_size(size: int) -> str:
    """Bytes as a short human-readable size (1.5K, 12M...), like `ls -h`."""
    value = float(size)
    for unit in ("", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            if unit == "":
                return str(size)
            return f"{value:.1f}{unit}" if value < 10 else f"{value:.0f}{unit}"
        value /= 1024
    return str(size)
