"""The two shell habits the model was trained on that are safe to honour without a shell.

LocoOperator learned from Claude Code traces full of `ls -la DIR 2>/dev/null | head -50`. Refusing those
costs a turn each time, so exactly two forms are accepted, found by a quote-aware scan of the command:
- stderr redirections `2>/dev/null` and `2>&1` (no-ops: nothing runs, errors already share the output);
- one final `| head [-n] N` or `| tail [-n] N` stage, applied to the output text, saying what it cut.
Anything else (other pipes, other redirections) reaches the tokenizer unchanged and is refused there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_STDERR = re.compile(r"(?<!\S)2>(?:\s*/dev/null|&1)(?!\S)")
_STAGE = re.compile(r"^\s*(head|tail)(?:\s+(?:-n\s*|--lines=|-)(\d{1,7}))?\s*$")


@dataclass(frozen=True)
class LineFilter:
    """Keep the first (head) or last (tail) `count` lines."""

    program: str
    count: int

    def apply(self, text: str) -> tuple[str, str, int]:
        """The kept text, the dropped text, and how many lines were dropped."""
        lines = text.splitlines()
        cut = min(self.count, len(lines))
        if self.program == "head":
            kept, dropped = lines[:cut], lines[cut:]
        else:
            kept, dropped = lines[len(lines) - cut :], lines[: len(lines) - cut]
        return "\n".join(kept), "\n".join(dropped), len(dropped)


def _unquoted(command: str) -> list[bool]:
    """For each character, whether it stands outside quotes and is not backslash-escaped."""
    out: list[bool] = []
    quote = ""
    escaped = False
    for ch in command:
        if escaped:
            out.append(False)
            escaped = False
        elif quote:
            out.append(False)
            if ch == quote:
                quote = ""
            elif ch == "\\" and quote == '"':
                escaped = True
        elif ch in "'\"":
            out.append(False)
            quote = ch
        elif ch == "\\":
            out.append(False)
            escaped = True
        else:
            out.append(True)
    return out


def split_filters(command: str) -> tuple[str, LineFilter | None]:
    """The command without its accepted redirections and final head/tail stage, and that stage."""
    free = _unquoted(command)
    pipes = [i for i, ch in enumerate(command) if ch == "|" and free[i]]
    line_filter = None
    if len(pipes) == 1:
        stage = _STAGE.match(command[pipes[0] + 1 :])
        if stage:
            line_filter = LineFilter(stage.group(1), int(stage.group(2) or 10))
            command = command[: pipes[0]]
            free = free[: pipes[0]]
    kept: list[str] = []
    last = 0
    for m in _STDERR.finditer(command):
        if all(free[m.start() : m.end()]):
            kept.append(command[last : m.start()])
            last = m.end()
    kept.append(command[last:])
    return "".join(kept).strip(), line_filter
