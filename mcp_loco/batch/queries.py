"""The queries file: `id<TAB>query` lines, UTF-8; every fault is a one-line error naming the line."""

from __future__ import annotations

import re
from pathlib import Path

from mcp_loco.errors import ConfigError

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def _decode(path: Path, data: bytes) -> str:
    """The file's text, or an error saying where it stops being UTF-8."""
    try:
        return data.decode("utf-8-sig")  # a byte-order mark, as some editors write, is not part of the first id
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(
            f"queries file {path}, line {line}: not UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start}); "
            "save it as UTF-8"
        ) from None


def read_queries(path: Path) -> list[tuple[str, str]]:
    """Parse `id<TAB>query` lines; blank lines and lines starting with # are skipped."""
    try:
        if path.exists() and not path.is_file():  # a FIFO or a device would block the read or never end
            raise ConfigError(f"queries file {path}: not a regular file; give a text file of id<TAB>query lines")
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"queries file {path}: cannot read it ({e.strerror})") from None
    text = _decode(path, data)
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        if "\x00" in line:
            raise ConfigError(f"queries file {path}, line {n}: contains a NUL byte; is it a text file?")
        qid, tab, query = line.partition("\t")
        qid, query = qid.strip(), query.strip()
        if not tab or not query:
            raise ConfigError(f"queries file {path}, line {n}: expected id<TAB>query")
        if not _SAFE_ID.match(qid):
            raise ConfigError(f"queries file {path}, line {n}: id {qid!r} must be letters, digits, '.', '_', '-'")
        if qid in seen:
            raise ConfigError(f"queries file {path}, line {n}: id {qid!r} appears twice")
        seen.add(qid)
        out.append((qid, query))
    if not out:
        raise ConfigError(f"queries file {path}: no queries in it; write one id<TAB>query per line")
    return out
