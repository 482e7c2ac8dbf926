"""Built-in cat, head, tail, wc, stat, file and `sed -n 'A,Bp'`, on descriptors from the confined walk."""

from __future__ import annotations

import collections
import grp
import os
import pwd
import re
import stat
import time
from collections.abc import Iterator

from mcp_loco.sandbox.bash_env import Env
from mcp_loco.sandbox.bash_parse import Parsed, Spec, Word, parse_count, parse_options
from mcp_loco.sandbox.limits import ToolFailure, human_size
from mcp_loco.sandbox.paths import Handle, kind_of
from mcp_loco.sandbox.textfile import (
    CHUNK,
    SNIFF_BYTES,
    TAIL_MAX_BYTES,
    LineReader,
    decode_line,
    is_binary,
    tail_bytes,
)


def _open_text(env: Env, path: str, prog: str, binary_ok: bool = False) -> Handle | None:
    try:
        handle = env.ctx.open_file(path, prog)
    except ToolFailure as e:
        env.out.error(f"{prog}: {e}")
        return None
    if not binary_ok and is_binary(handle.fd):
        env.out.error(f"{prog}: {handle.path} is a binary file ({human_size(handle.st.st_size)}B); not shown")
        handle.close()
        return None
    env.out.saw(handle.path)
    return handle


def _lines(env: Env, handle: Handle) -> Iterator[str]:
    reader = LineReader(handle.fd, env.deadline, f"reading {handle.path}")
    max_chars = env.ctx.settings.max_line_chars
    while not env.stop():
        item = reader.readline(max_chars * 4)
        if item is None:
            return
        yield decode_line(item[0], item[1], max_chars)


def _need_files(prog: str, paths: list[str]) -> None:
    if not paths:
        raise ToolFailure(f"{prog}: give a file operand (stdin is empty here), e.g. {prog} /abs/path/file")


CAT = Spec(
    short="nbsET",
    long=("number", "number-nonblank", "squeeze-blank", "show-ends", "show-tabs"),
    aliases={"number": "n", "number-nonblank": "b", "squeeze-blank": "s", "show-ends": "E", "show-tabs": "T"},
)


def cmd_cat(env: Env, words: list[Word]) -> None:
    """cat [-nbsET] FILE..."""
    opts = parse_options("cat", words, CAT)
    paths = env.paths(opts.operands)
    _need_files("cat", paths)
    number = 0
    for path in paths:
        handle = _open_text(env, path, "cat")
        if handle is None:
            continue
        with handle:
            blank_before = False
            for line in _lines(env, handle):
                if opts.has("s") and not line and blank_before:
                    continue
                blank_before = not line
                if opts.has("T"):
                    line = line.replace("\t", "^I")
                if opts.has("E"):
                    line += "$"
                numbered = line not in ("", "$") if opts.has("b") else opts.has("n")
                if numbered:
                    number += 1
                    line = f"{number:>6}\t{line}"
                if not env.out.line(line):
                    return


HEAD = Spec(
    short="qv",
    short_value="nc",
    long=("quiet", "silent", "verbose"),
    long_value=("lines", "bytes"),
    aliases={"lines": "n", "bytes": "c", "quiet": "q", "silent": "q", "verbose": "v"},
    numeric=True,
)
TAIL = Spec(
    short="qv",
    short_value="nc",
    long=("quiet", "silent", "verbose"),
    long_value=("lines", "bytes"),
    aliases={"lines": "n", "bytes": "c", "quiet": "q", "silent": "q", "verbose": "v"},
    numeric=True,
    refused={
        "-f": "tail -f waits for new lines forever; run tail without -f",
        "-F": "tail -F waits for new lines forever; run tail without -F",
        "--follow": "it waits for new lines forever; run tail without it",
        "--retry": "it waits for a file forever; run tail without it",
        "--pid": "it only matters with -f, which is not available",
        "-s": "it only matters with -f, which is not available",
        "--sleep-interval": "it only matters with -f, which is not available",
    },
)


def _count_option(prog: str, opts: Parsed) -> tuple[str, str]:
    """('lines'|'bytes', raw value) from -n/-c/-NUM (default 10 lines)."""
    if opts.has("c"):
        return "bytes", opts.value("c") or "0"
    if opts.has("n"):
        return "lines", opts.value("n") or "10"
    if opts.has("NUM"):
        return "lines", opts.value("NUM") or "10"
    return "lines", "10"


def _headers(env: Env, opts: Parsed, count: int, path: str, first: bool) -> bool:
    if (count > 1 and not opts.has("q")) or opts.has("v"):
        return env.out.line(("" if first else "\n") + f"==> {path} <==")
    return True


def cmd_head(env: Env, words: list[Word]) -> None:
    """head [-n N | -N | -c N] [-qv] FILE..."""
    opts = parse_options("head", words, HEAD)
    unit, raw = _count_option("head", opts)
    n = parse_count("head", "-c" if unit == "bytes" else "-n", raw)
    paths = env.paths(opts.operands)
    _need_files("head", paths)
    for index, path in enumerate(paths):
        handle = _open_text(env, path, "head", binary_ok=False)
        if handle is None:
            continue
        with handle:
            if not _headers(env, opts, len(paths), handle.path, index == 0):
                return
            if unit == "bytes":
                size = n if n >= 0 else max(0, handle.st.st_size + n)
                data = os.pread(handle.fd, min(size, env.out.limit + 1), 0)
                env.out.write(data.decode("utf-8", "replace"))
                continue
            if n >= 0:
                for i, line in enumerate(_lines(env, handle)):
                    if i >= n or not env.out.line(line):
                        break
                continue
            window: collections.deque[str] = collections.deque()
            for line in _lines(env, handle):
                window.append(line)
                if len(window) > -n and not env.out.line(window.popleft()):
                    break


def cmd_tail(env: Env, words: list[Word]) -> None:
    """tail [-n N | -n +N | -N | -c N] [-qv] FILE... (never -f)."""
    opts = parse_options("tail", words, TAIL)
    unit, raw = _count_option("tail", opts)
    from_start = raw.strip().startswith("+")
    n = abs(parse_count("tail", "-c" if unit == "bytes" else "-n", raw))
    paths = env.paths(opts.operands)
    _need_files("tail", paths)
    for index, path in enumerate(paths):
        handle = _open_text(env, path, "tail")
        if handle is None:
            continue
        with handle:
            if not _headers(env, opts, len(paths), handle.path, index == 0):
                return
            size = handle.st.st_size
            if unit == "bytes":
                # A start past the end (tail -c +1000000000000) is an empty tail, as in coreutils.
                start = min(size, max(0, n - 1)) if from_start else max(0, size - n)
                data = os.pread(handle.fd, min(size - start, env.out.limit + 1), start)
                env.out.write(data.decode("utf-8", "replace"))
                continue
            if from_start:
                reader_lines = _lines(env, handle)
                for i, line in enumerate(reader_lines):
                    if i + 1 >= n and not env.out.line(line):
                        break
                continue
            data, cut = tail_bytes(handle.fd, size, n, env.deadline)
            if cut:
                env.out.notes.append(
                    f"(tail read the last {TAIL_MAX_BYTES >> 20} MB of {handle.path}: its first line shown starts "
                    "inside a longer line; use head or Read to see that line from its start)"
                )
            max_chars = env.ctx.settings.max_line_chars
            for raw_line in data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n"):
                if not env.out.line(decode_line(raw_line, 0, max_chars)):
                    break


WC = Spec(
    short="lwcmL",
    long=("lines", "words", "bytes", "chars", "max-line-length"),
    aliases={"lines": "l", "words": "w", "bytes": "c", "chars": "m", "max-line-length": "L"},
)
_SPACE = re.compile(rb"\s+")


_CONTINUATION = bytes(range(0x80, 0xC0))


def _wc_counts(env: Env, handle: Handle, keys: list[str]) -> dict[str, int]:
    counts = dict.fromkeys("lwmcL", 0)
    in_word = False
    line_len = 0
    while True:
        env.deadline.check(f"wc of {handle.path}")
        chunk = os.read(handle.fd, CHUNK * 16)
        if not chunk:
            break
        counts["l"] += chunk.count(b"\n")
        counts["c"] += len(chunk)
        if "m" in keys:
            # UTF-8 characters: every byte that is not a continuation byte starts one.
            counts["m"] += len(chunk.translate(None, _CONTINUATION))
        if "w" in keys:
            words = _SPACE.split(chunk)
            counts["w"] += sum(1 for w in words if w) - (1 if in_word and words[0] else 0)
            in_word = not chunk[-1:].isspace()
        if "L" in keys:
            pieces = chunk.split(b"\n")
            for piece in pieces[:-1]:
                counts["L"] = max(counts["L"], line_len + len(piece))
                line_len = 0
            line_len += len(pieces[-1])
    counts["L"] = max(counts["L"], line_len)
    return counts


def cmd_wc(env: Env, words: list[Word]) -> None:
    """wc [-lwcmL] FILE..."""
    opts = parse_options("wc", words, WC)
    keys = [k for k in "lwmcL" if opts.has(k)] or ["l", "w", "c"]
    paths = env.paths(opts.operands)
    _need_files("wc", paths)
    rows: list[tuple[list[int], str]] = []
    total = dict.fromkeys(keys, 0)
    for path in paths:
        handle = _open_text(env, path, "wc", binary_ok=True)
        if handle is None:
            continue
        with handle:
            counts = _wc_counts(env, handle, keys)
        rows.append(([counts[k] for k in keys], handle.path))
        for k in keys:
            total[k] = max(total[k], counts[k]) if k == "L" else total[k] + counts[k]
    if len(rows) > 1:
        rows.append(([total[k] for k in keys], "total"))
    width = 1 if len(rows) == 1 and len(keys) == 1 else max((len(str(v)) for r, _ in rows for v in r), default=1)
    for values, name in rows:
        env.out.line(" ".join(f"{v:>{width}}" for v in values) + f" {name}")


STAT = Spec(
    short="L",
    short_value="c",
    long=("dereference",),
    long_value=("format",),
    aliases={"dereference": "L", "format": "c"},
    refused={"--printf": "use -c FORMAT instead", "-f": "file-system status is not available"},
)


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(seconds))


def _stat_format(fmt: str, path: str, st: os.stat_result, withheld: bool, links: int) -> str:
    fields = {
        "n": path,
        "N": f"'{path}'",
        "s": "?" if withheld else str(st.st_size),
        "F": kind_of(st.st_mode),
        "a": f"{stat.S_IMODE(st.st_mode):o}",
        "A": stat.filemode(st.st_mode),
        "U": _user(st.st_uid),
        "G": _group(st.st_gid),
        "u": str(st.st_uid),
        "g": str(st.st_gid),
        "i": str(st.st_ino),
        "h": str(links),
        "b": "?" if withheld else str(st.st_blocks),
        "Y": str(int(st.st_mtime)),
        "y": _when(st.st_mtime),
        "X": str(int(st.st_atime)),
        "x": _when(st.st_atime),
        "Z": str(int(st.st_ctime)),
        "z": _when(st.st_ctime),
        "%": "%",
    }

    def sub(m: re.Match[str]) -> str:
        key = m.group(1)
        if key not in fields:
            raise ToolFailure(f"stat: format directive %{key} is not supported (supported: %{' %'.join(fields)})")
        return fields[key]

    return re.sub(r"%(.)", sub, fmt)


def cmd_stat(env: Env, words: list[Word]) -> None:
    """stat [-L] [-c FORMAT] FILE... (links inside the root are followed, as with -L)."""
    opts = parse_options("stat", words, STAT)
    paths = env.paths(opts.operands)
    _need_files("stat", paths)
    for handle in env.opened("stat", paths):
        with handle:
            st = handle.st
            env.out.saw(handle.path)
            fmt = opts.value("c")
            # No size for a hard link or a directory, and a directory's links count only visible subdirectories.
            withheld = env.withheld(st)
            links = env.links(st, handle.fd, handle.rel)
            if fmt is not None:
                env.out.line(_stat_format(fmt, handle.path, st, withheld, links))
                continue
            size, blocks = ("?", "?") if withheld else (st.st_size, st.st_blocks)
            env.out.line(
                f"  File: {handle.path}\n"
                f"  Size: {size:<15} Blocks: {blocks:<10} IO Block: {st.st_blksize:<6} {kind_of(st.st_mode)}\n"
                f"Device: {st.st_dev:x}h/{st.st_dev}d\tInode: {st.st_ino:<11} Links: {links}\n"
                f"Access: ({stat.S_IMODE(st.st_mode):04o}/{stat.filemode(st.st_mode)})  "
                f"Uid: ({st.st_uid:>5}/{_user(st.st_uid):>8})   Gid: ({st.st_gid:>5}/{_group(st.st_gid):>8})\n"
                f"Access: {_when(st.st_atime)}\nModify: {_when(st.st_mtime)}\nChange: {_when(st.st_ctime)}"
            )


FILE = Spec(
    short="bLi",
    long=("brief", "dereference", "mime", "mime-type"),
    aliases={"brief": "b", "dereference": "L", "mime": "i", "mime-type": "i"},
)
_MAGIC: tuple[tuple[bytes, str, str], ...] = (
    (b"\x7fELF", "ELF executable or shared object", "application/x-executable"),
    (b"\x89PNG\r\n\x1a\n", "PNG image data", "image/png"),
    (b"\xff\xd8\xff", "JPEG image data", "image/jpeg"),
    (b"GIF8", "GIF image data", "image/gif"),
    (b"%PDF-", "PDF document", "application/pdf"),
    (b"PK\x03\x04", "Zip archive data", "application/zip"),
    (b"\x1f\x8b", "gzip compressed data", "application/gzip"),
    (b"BZh", "bzip2 compressed data", "application/x-bzip2"),
    (b"\xfd7zXZ\x00", "XZ compressed data", "application/x-xz"),
    (b"\x28\xb5\x2f\xfd", "Zstandard compressed data", "application/zstd"),
    (b"7z\xbc\xaf\x27\x1c", "7-zip archive data", "application/x-7z-compressed"),
    (b"SQLite format 3\x00", "SQLite 3.x database", "application/vnd.sqlite3"),
    (b"\x00asm", "WebAssembly (wasm) binary module", "application/wasm"),
    (b"\xca\xfe\xba\xbe", "compiled Java class data or Mach-O universal binary", "application/octet-stream"),
)


def describe_file(head: bytes, size: int) -> tuple[str, str]:
    """(description, mime type) of a regular file from its first bytes, like a small `file`."""
    if size == 0 or not head:
        return "empty", "inode/x-empty"
    for magic, text, mime in _MAGIC:
        if head.startswith(magic):
            return text, mime
    if head[257:262] == b"ustar":
        return "POSIX tar archive", "application/x-tar"
    if b"\0" in head:
        return "data", "application/octet-stream"
    try:
        decoded = head.decode("utf-8")
        charset = "ASCII" if head.isascii() else "Unicode text, UTF-8"
    except UnicodeDecodeError:
        decoded = head.decode("latin-1")
        charset = "ISO-8859"
    kind = f"{charset} text" if charset != "Unicode text, UTF-8" else charset + " text"
    if decoded.startswith("#!"):
        interpreter = decoded[2:].split("\n", 1)[0].strip().split("/")[-1]
        kind = f"{interpreter} script, {kind} executable"
    return kind, "text/plain"


def cmd_file(env: Env, words: list[Word]) -> None:
    """file [-b] [-i] FILE... (a small built-in: magic numbers and text detection)."""
    opts = parse_options("file", words, FILE)
    paths = env.paths(opts.operands)
    _need_files("file", paths)
    for handle in env.opened("file", paths):
        with handle:
            env.out.saw(handle.path)
            if handle.is_file:
                if handle.st.st_nlink > 1 and not env.ctx.settings.allow_hard_links:
                    env.out.error(f"file: {handle.path} has {handle.st.st_nlink} hard links; not read")
                    continue
                text, mime = describe_file(os.pread(handle.fd, SNIFF_BYTES, 0), handle.st.st_size)
            else:
                text = handle.kind
                mime = "inode/directory" if handle.is_dir else "inode/x-special"
            shown = mime if opts.has("i") else text
            env.out.line(shown if opts.has("b") else f"{handle.path}: {shown}")


SED = Spec(short="n", long=("quiet", "silent"), aliases={"quiet": "n", "silent": "n"})
_SED_RANGE = re.compile(r"^\s*(\d+)\s*(?:,\s*(\d+|\$)\s*)?p\s*$")
SED_ONLY = "sed is limited here to printing a line range: sed -n 'START,ENDp' FILE (or use Read with offset and limit)"


def cmd_sed(env: Env, words: list[Word]) -> None:
    """sed -n 'A,Bp' FILE: print a line range (no other sed scripts run)."""
    opts = parse_options("sed", words, SED)
    if not opts.has("n") or len(opts.operands) < 2:
        raise ToolFailure(SED_ONLY)
    match = _SED_RANGE.match(opts.operands[0].text)
    if match is None:
        raise ToolFailure(SED_ONLY)
    first = int(match.group(1))
    last = first if match.group(2) is None else (1 << 62 if match.group(2) == "$" else int(match.group(2)))
    for path in env.paths(opts.operands[1:]):
        handle = _open_text(env, path, "sed")
        if handle is None:
            continue
        with handle:
            for number, line in enumerate(_lines(env, handle), start=1):
                if number > last:
                    break
                if number >= first and not env.out.line(line):
                    return
