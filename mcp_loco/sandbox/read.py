"""Read: a text file as `cat -n` shows it (right-aligned line number, a tab, the line), bounded."""

from __future__ import annotations

from typing import Any

from mcp_loco.interfaces import ToolResult
from mcp_loco.sandbox import arguments as A
from mcp_loco.sandbox.context import ToolContext
from mcp_loco.sandbox.limits import NOTE_ROOM, Deadline, ToolFailure, human_size
from mcp_loco.sandbox.textfile import LineReader, decode_line, is_binary

EXAMPLE = '{"file_path": "/abs/path/file.py", "offset": 1, "limit": 200}'
PATH_KEYS = ("file_path", "path", "file", "filename", "filePath", "file_name")


def run_read(ctx: ToolContext, arguments: Any, deadline: Deadline) -> ToolResult:
    """Serve one Read call."""
    args = A.as_object(arguments, EXAMPLE)
    path = A.text(args, PATH_KEYS, required=True, example=EXAMPLE)
    assert path is not None
    offset = A.integer(args, ("offset", "start_line", "line"), minimum=0)
    limit = A.integer(args, ("limit", "lines", "max_lines"), minimum=1)
    settings = ctx.settings
    with ctx.open_file(path, "Read") as handle:
        if is_binary(handle.fd):
            return ToolResult(
                f"{handle.path} is a binary file ({human_size(handle.st.st_size)}B); Read shows text files only "
                f'(Bash "file {handle.path}" says what it is)',
                ok=False,
                paths=(handle.path,),
            )
        first = max(offset or 1, 1)
        count = limit or settings.read_max_lines
        reader = LineReader(
            handle.fd, deadline, f"Read of {handle.path}", "the file is huge: use Grep to find the lines you need"
        )
        skipped = reader.skip_lines(first - 1)
        if skipped < first - 1:
            if skipped == 0:
                return ToolResult(f"{handle.path} is empty", paths=(handle.path,))
            return ToolResult(
                f"{handle.path} has only {skipped} lines; offset={first} is past the end (use an offset from 1 to {skipped})",
                ok=False,
                paths=(handle.path,),
            )
        budget = settings.max_output_chars - NOTE_ROOM
        out: list[str] = []
        used = 0
        number = first - 1
        cut_by_size = False
        max_bytes = settings.max_line_chars * 4
        while len(out) < count:
            item = reader.readline(max_bytes)
            if item is None:
                break
            shown = f"{number + 1:>6}\t{decode_line(item[0], item[1], settings.max_line_chars)}"
            if used + len(shown) + 1 > budget and out:
                cut_by_size = True
                break
            out.append(shown)
            used += len(shown) + 1
            number += 1
        if not out:
            return ToolResult(f"{handle.path} is empty", paths=(handle.path,))
        note = _more_note(reader, handle.st.st_size, number, cut_by_size, settings.max_output_chars)
        text = "\n".join(out) + (f"\n{note}" if note else "")
        return ToolResult(text, paths=(handle.path,), lines={handle.path: (first, number)})


def _more_note(reader: LineReader, size: int, last: int, cut_by_size: bool, max_chars: int) -> str:
    if cut_by_size:
        try:
            rest = reader.count_rest(size)
        except ToolFailure:
            rest = None
        more = f"{rest + 1} more lines" if rest is not None else "more lines follow"
        return f"... output cut at {max_chars} characters after line {last} ({more}); use offset={last + 1} to read on"
    if reader.at_end():
        return ""
    try:
        rest = reader.count_rest(size)
    except ToolFailure:
        rest = None
    if rest is None:
        return f"... more lines follow (the file is {human_size(size)}B); use offset={last + 1} to read on"
    return f"... {rest} more lines; use offset={last + 1} to read on"
