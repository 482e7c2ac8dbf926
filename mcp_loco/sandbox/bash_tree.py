"""Built-in ls and tree: directory listings through descriptors, never following links, secrets hidden."""

from __future__ import annotations

import fnmatch
import grp
import os
import pwd
import re
import stat
import time
from dataclasses import dataclass

from mcp_loco.sandbox.bash_env import Env, open_child, scan
from mcp_loco.sandbox.bash_parse import Parsed, Spec, Word, parse_options
from mcp_loco.sandbox.context import SecretPathError
from mcp_loco.sandbox.limits import ToolFailure, human_size, show_name

MAX_DEPTH = 64
SIX_MONTHS = 182 * 24 * 3600
HIDDEN_TARGET = "[hidden: secret deny-list]"


@dataclass
class Entry:
    """One directory entry, with the lstat it was listed with."""

    name: str
    st: os.stat_result
    target: str = ""


def _entries(env: Env, fd: int, rel: str, show_dots: bool) -> tuple[list[Entry], bool]:
    """Entries of an open directory: (visible entries, truncated); secrets are left out without a trace."""
    raw, truncated = scan(fd, env.deadline, hide=lambda name: env.denied(rel, name))
    out: list[Entry] = []
    for index, entry in enumerate(raw):
        if index % 1000 == 999 and env.deadline.expired():
            return out, True
        if entry.name.startswith(".") and not show_dots:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        target = ""
        if stat.S_ISLNK(st.st_mode):
            try:
                target = _link_target(env, rel, entry.name, os.readlink(entry.name, dir_fd=fd))
            except OSError:
                target = "?"
        out.append(Entry(entry.name, st, target))
    return out, truncated


def _link_target(env: Env, rel_dir: str, name: str, target: str) -> str:
    """A link's target as listings show it; hidden when it leads to a secret (the name is not shown either)."""
    if target.startswith("/"):
        parts = env.ctx.root.rel_of(target)
        if parts is None:
            return target
    else:
        parts = [*rel_dir.split("/"), *target.split("/")] if rel_dir else target.split("/")
    # Every place the target passes through is judged (`.aws/../x` names `.aws` too), as the walk does.
    walked: list[str] = []
    for part in parts:
        if part == "..":
            if walked:
                walked.pop()
        elif part not in ("", "."):
            walked.append(part)
            if env.ctx.deny.denied("/".join(walked)):
                return HIDDEN_TARGET
    # Through other links too (`x -> aws/credentials` where `aws -> ../.aws`): the confined walk judges
    # every hop by name before looking anything up, so this tells nothing about what exists.
    try:
        env.ctx.open(f"{rel_dir}/{name}" if rel_dir else name).close()
    except SecretPathError:
        return HIDDEN_TARGET
    except (ToolFailure, OSError):
        pass  # missing, outside, a loop: the target as written tells no secret
    return target


def _suffix(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "/"
    if stat.S_ISLNK(mode):
        return "@"
    if stat.S_ISFIFO(mode):
        return "|"
    if stat.S_ISSOCK(mode):
        return "="
    if stat.S_ISREG(mode) and mode & 0o111:
        return "*"
    return ""


LS = Spec(
    short="aAlh1RtSrdFpnU",
    long=(
        "all",
        "almost-all",
        "human-readable",
        "recursive",
        "reverse",
        "directory",
        "classify",
        "group-directories-first",
    ),
    long_optional=("color", "colour"),
    aliases={
        "all": "a",
        "almost-all": "A",
        "human-readable": "h",
        "recursive": "R",
        "reverse": "r",
        "directory": "d",
        "classify": "F",
    },
)


class _Lister:
    def __init__(self, env: Env, opts: Parsed) -> None:
        self.env = env
        self.opts = opts
        self.long = opts.has("l", "n")
        self.names: dict[tuple[str, int], str] = {}
        self.now = time.time()

    def _owner(self, kind: str, ident: int) -> str:
        if self.opts.has("n"):
            return str(ident)
        key = (kind, ident)
        if key not in self.names:
            try:
                self.names[key] = pwd.getpwuid(ident).pw_name if kind == "u" else grp.getgrgid(ident).gr_name
            except KeyError:
                self.names[key] = str(ident)
        return self.names[key]

    def format(self, name: str, st: os.stat_result, target: str, links: int = 0) -> str:
        shown = show_name(name)
        if self.opts.has("F"):
            shown += _suffix(st.st_mode)
        elif self.opts.has("p") and stat.S_ISDIR(st.st_mode):
            shown += "/"
        if not self.long:
            return shown
        size = human_size(st.st_size) if self.opts.has("h") else str(st.st_size)
        if self.env.withheld(st):
            size = "?"  # a hard link's or a directory's size would tell about files not shown
        stamp = time.localtime(st.st_mtime)
        recent = abs(self.now - st.st_mtime) < SIX_MONTHS
        when = time.strftime("%b %e %H:%M" if recent else "%b %e  %Y", stamp)
        line = (
            f"{stat.filemode(st.st_mode)} {links or st.st_nlink:>3} {self._owner('u', st.st_uid)} "
            f"{self._owner('g', st.st_gid)} {size:>8} {when} {shown}"
        )
        return line + (f" -> {show_name(target)}" if target else "")

    def _links(self, fd: int, rel: str, e: Entry) -> int:
        """A listed entry's link count as the tools see it (directories are opened and counted)."""
        if not self.long or not stat.S_ISDIR(e.st.st_mode):
            return 0
        if e.name in (".", ".."):
            return self.env.links(e.st, fd, rel)
        child = open_child(fd, e.name)
        if child is None:
            return 0
        try:
            return self.env.links(e.st, child, f"{rel}/{e.name}" if rel else e.name)
        finally:
            os.close(child)

    def sort(self, entries: list[Entry]) -> list[Entry]:
        if self.opts.has("U"):
            return entries
        entries = sorted(entries, key=lambda e: e.name)
        if self.opts.has("t"):
            entries.sort(key=lambda e: -e.st.st_mtime)
        elif self.opts.has("S"):
            entries.sort(key=lambda e: 0 if self.env.withheld(e.st) else -e.st.st_size)
        if self.opts.has("group-directories-first"):
            entries.sort(key=lambda e: not stat.S_ISDIR(e.st.st_mode))
        return entries[::-1] if self.opts.has("r") else entries

    def listing(self, fd: int, rel: str, path: str, depth: int) -> None:
        env = self.env
        entries, truncated = _entries(env, fd, rel, self.opts.has("a", "A"))
        if self.opts.has("a"):
            entries = [Entry(".", os.fstat(fd)), Entry("..", os.fstat(fd)), *entries]
        entries = self.sort(entries)
        env.out.saw(path)
        if not env.out.line(f"{show_name(path)}:"):
            return
        if self.long:
            blocks = sum(e.st.st_blocks for e in entries if e.name not in (".", "..") and not env.withheld(e.st)) // 2
            env.out.line(f"total {blocks}")
        for e in entries:
            # ls -l opens each subdirectory to count its visible links: that costs time, so watch the clock.
            if env.stop() or not env.out.line(self.format(e.name, e.st, e.target, self._links(fd, rel, e))):
                return
            if e.name not in (".", ".."):
                env.out.saw(env.ctx.root.abs(f"{rel}/{e.name}" if rel else e.name))
        if truncated:
            env.out.line(f"... listing stopped: more than {len(entries)} entries (use Glob with a pattern)")
        if not self.opts.has("R"):
            return
        for e in entries:
            if env.stop():
                return
            if e.name in (".", "..") or not stat.S_ISDIR(e.st.st_mode):
                continue
            if depth >= MAX_DEPTH:
                env.out.line(f"... not descending below {MAX_DEPTH} levels")
                return
            child = open_child(fd, e.name)
            if child is None:
                continue
            try:
                env.out.write("\n")
                child_rel = f"{rel}/{e.name}" if rel else e.name
                self.listing(child, child_rel, env.ctx.root.abs(child_rel), depth + 1)
            finally:
                os.close(child)


def cmd_ls(env: Env, words: list[Word]) -> None:
    """ls [-aAlh1RtSrdFpn] [PATH...] (each listing starts with the directory's absolute path)."""
    opts = parse_options("ls", words, LS)
    paths = env.paths(opts.operands) or ["."]
    lister = _Lister(env, opts)
    files: list[str] = []
    dirs: list[tuple[int, str, str]] = []
    try:
        for handle in env.opened("ls", paths):
            if handle.is_dir and not opts.has("d"):
                dirs.append((handle.fd, handle.rel, handle.path))
                handle.fd = -1
            else:
                env.out.saw(handle.path)
                links = env.links(handle.st, handle.fd, handle.rel) if lister.long else 0
                files.append(lister.format(handle.path, handle.st, "", links))
            handle.close()
        for line in files:
            env.out.line(line)
        for index, (fd, rel, path) in enumerate(dirs):
            if env.stop():
                break
            if index or files:
                env.out.write("\n")
            lister.listing(fd, rel, path, 0)
    finally:
        for fd, _, _ in dirs:
            os.close(fd)


TREE = Spec(
    short="adfFC",
    short_value="LIP",
    long=("noreport", "dirsfirst"),
    long_optional=("charset",),
    refused={"-o": "tree -o writes a file", "-R": "tree -R writes files", "-l": "tree -l follows symbolic links"},
)


def cmd_tree(env: Env, words: list[Word]) -> None:
    """tree [-adfF] [-L N] [-I PAT] [-P PAT] [--dirsfirst] [--noreport] [DIR...] (built in)."""
    opts = parse_options("tree", words, TREE)
    level = opts.value("L")
    if level is not None and not level.isdigit():
        raise ToolFailure(f"tree: -L needs a positive number, got {level!r}")
    walker = _Tree(env, opts, int(level) if level else MAX_DEPTH)
    for handle in env.opened("tree", env.paths(opts.operands) or ["."]):
        with handle:
            env.out.saw(handle.path)
            env.out.line(show_name(handle.path))
            if handle.is_dir:
                walker.walk(handle.fd, handle.rel, "", 1)
    if not opts.has("noreport"):
        dirs = f"{walker.dirs} director{'ies' if walker.dirs != 1 else 'y'}"
        files = "" if opts.has("d") else f", {walker.files} file{'s' if walker.files != 1 else ''}"
        env.out.line(f"\n{dirs}{files}")


def _name_filter(pattern: str | None) -> re.Pattern[str] | None:
    if not pattern:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in pattern.split("|") if p))


class _Tree:
    def __init__(self, env: Env, opts: Parsed, max_level: int) -> None:
        self.env = env
        self.opts = opts
        self.max_level = min(max_level, MAX_DEPTH)
        self.ignore = _name_filter(opts.value("I"))
        self.only = _name_filter(opts.value("P"))
        self.dirs = 0
        self.files = 0

    def walk(self, fd: int, rel: str, prefix: str, level: int) -> None:
        env = self.env
        entries, truncated = _entries(env, fd, rel, self.opts.has("a"))
        keep: list[Entry] = []
        for index, e in enumerate(sorted(entries, key=lambda e: e.name)):
            # A crafted -I/-P pattern can cost a millisecond a name: look at the clock as we go.
            if index % 16 == 15 and env.stop():
                return
            is_dir = stat.S_ISDIR(e.st.st_mode)
            if self.ignore is not None and self.ignore.match(e.name):
                continue
            if self.opts.has("d") and not is_dir:
                continue
            if self.only is not None and not is_dir and not self.only.match(e.name):
                continue
            keep.append(e)
        if self.opts.has("dirsfirst"):
            keep.sort(key=lambda e: not stat.S_ISDIR(e.st.st_mode))
        for index, e in enumerate(keep):
            if env.stop():
                return
            last = index == len(keep) - 1 and not truncated
            child_rel = f"{rel}/{e.name}" if rel else e.name
            shown = env.ctx.root.abs(child_rel) if self.opts.has("f") else e.name
            shown = show_name(shown) + (_suffix(e.st.st_mode) if self.opts.has("F") else "")
            if e.target:
                shown += f" -> {show_name(e.target)}"
            if not env.out.line(f"{prefix}{'└── ' if last else '├── '}{shown}"):
                return
            env.out.saw(env.ctx.root.abs(child_rel))  # a listed name is evidence for a citation
            if not stat.S_ISDIR(e.st.st_mode):
                self.files += 1
                continue
            self.dirs += 1
            if level >= self.max_level:
                continue
            child = open_child(fd, e.name)
            if child is None:
                continue
            try:
                self.walk(child, child_rel, prefix + ("    " if last else "│   "), level + 1)
            finally:
                os.close(child)
        if truncated:
            env.out.line(f"{prefix}└── ... (more entries not listed)")
