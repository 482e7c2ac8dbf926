"""What a built-in Bash command works with: the context, its deadline, a capped output, wildcard expansion."""

from __future__ import annotations

import fnmatch
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from mcp_loco.sandbox.bash_parse import Word
from mcp_loco.sandbox.context import SecretPathError, ToolContext
from mcp_loco.sandbox.globbing import has_wildcard
from mcp_loco.sandbox.limits import NOTE_ROOM, Deadline, ToolFailure, clean
from mcp_loco.sandbox.paths import Handle, MissingPathError

MAX_EXPANSION = 500
MAX_DIR_ENTRIES = 50_000


class Output:
    """Text a command writes, capped; it remembers the paths shown and whether anything failed."""

    def __init__(self, limit: int) -> None:
        self.limit = max(0, limit - NOTE_ROOM)
        self.parts: list[str] = []
        self.size = 0
        self.full = False
        self.errors = 0
        self.notes: list[str] = []
        self.paths: dict[str, None] = {}

    def write(self, text: str) -> bool:
        """Append text; False once the cap is reached (the command should stop)."""
        if self.full:
            return False
        if self.size + len(text) > self.limit:
            room = self.limit - self.size
            head = text[:room]
            newline = head.rfind("\n")
            # Cut on a line boundary, unless that would leave nothing (head -c of a one-line file).
            self.parts.append(head[: newline + 1] if newline >= 0 or self.size else head)
            self.full = True
            return False
        self.parts.append(text)
        self.size += len(text)
        return True

    def line(self, text: str) -> bool:
        """Append one line."""
        return self.write(text + "\n")

    def error(self, text: str) -> None:
        """Append an error line and mark the command failed."""
        self.errors += 1
        self.line(text)

    def saw(self, path: str) -> None:
        """Record a path whose content or name was shown."""
        self.paths[clean(path)] = None

    def text(self) -> str:
        """Everything written, with a note when the cap was hit."""
        body = "".join(self.parts)
        notes = list(self.notes)
        if self.full:
            notes.append(
                f"... output cut at {self.limit} characters; narrow the command "
                "(head -n N, a smaller directory, find -maxdepth) or use Read with offset and limit"
            )
        if notes:
            body += ("" if not body or body.endswith("\n") else "\n") + "\n".join(notes)
        return clean(body.rstrip("\n")) if body.strip() else "(no output)"


@dataclass
class Env:
    """One running command: the context, the deadline and the output."""

    ctx: ToolContext
    deadline: Deadline
    out: Output
    timed_out: bool = field(default=False)

    def stop(self) -> bool:
        """True when the command should stop: output full, time up or cancelled."""
        if self.deadline.expired():
            self.timed_out = True
            return True
        return self.out.full

    def withheld(self, st: os.stat_result) -> bool:
        """True when a size must not be shown: a hard-linked file's or a directory's."""
        # A hard link's inode may be a file outside the root; a directory's size grows with every entry
        # on many file systems, secrets included.
        if stat.S_ISDIR(st.st_mode):
            return True
        return stat.S_ISREG(st.st_mode) and st.st_nlink > 1 and not self.ctx.settings.allow_hard_links

    def links(self, st: os.stat_result, fd: int, rel: str) -> int:
        """The link count as the tools see it: for a directory (open as `fd`), 2 and one per visible subdirectory."""
        # The kernel's count includes denied subdirectories: it would tell that a .aws or .ssh is there.
        if not stat.S_ISDIR(st.st_mode) or fd < 0:
            return st.st_nlink
        count = 2
        with os.scandir(fd) as it:
            for index, entry in enumerate(it):
                if index % 1000 == 999 and self.deadline.expired():
                    break
                if entry.is_dir(follow_symlinks=False) and not self.denied(rel, entry.name):
                    count += 1
        return count

    def open(self, path: str) -> Handle:
        """Open any operand beneath the root (files, directories, special files)."""
        return self.ctx.open(path)

    def opened(self, program: str, paths: Iterable[str]) -> Iterator[Handle]:
        """Each operand opened beneath the root; one that cannot be opened is reported as `program: why`."""
        for path in paths:
            try:
                yield self.open(path)
            except ToolFailure as e:
                self.out.error(f"{program}: {e}")

    def paths(self, words: list[Word]) -> list[str]:
        """Operands with their wildcards expanded inside the root, as a shell would (sorted, no dotfiles)."""
        out: list[str] = []
        for word in words:
            if word.pattern is None:
                out.append(word.text)
            else:
                out += self._expand(word)
        return out

    def _expand(self, word: Word) -> list[str]:
        assert word.pattern is not None
        root = self.ctx.root
        if word.pattern.startswith("/"):
            comps = root.rel_of(word.pattern)
            if comps is None:
                raise ToolFailure(f"{word.text!r} is outside the explored root {root.path}; use paths inside it")
        else:
            comps = [c for c in word.pattern.split("/") if c not in ("", ".")]
        found: list[list[str]] = [[]]
        for comp in comps:
            if not has_wildcard(comp) or comp == "..":
                found = [[*f, _unescape(comp)] for f in found]
                continue
            if comp == "**" or "**" in comp:
                comp = comp.replace("**", "*")
            regex = re.compile(fnmatch.translate(comp))
            grown: list[list[str]] = []
            for prefix in found:
                for name in self._names("/".join(prefix) or "."):
                    self.deadline.check(f"expanding {word.text!r}", "use a narrower pattern, or Glob")
                    if (name.startswith(".") and not comp.startswith(".")) or not regex.match(name):
                        continue
                    candidate = [*prefix, name]
                    if self.ctx.deny.denied("/".join(candidate)):
                        # Dropped at every level: a denied folder kept as a prefix would be refused by name
                        # later, which tells that it exists (`ls config/.a*/x` against `ls config/.q*/x`).
                        continue
                    grown.append(candidate)
                    if len(grown) > MAX_EXPANSION:
                        raise ToolFailure(
                            f"{word.text!r} matches more than {MAX_EXPANSION} paths; narrow it or use Glob"
                        )
            found = grown
        if not found:
            raise ToolFailure(f"no file matches {word.text!r}; use Glob to find files by pattern")
        return sorted(root.abs("/".join(f)) for f in found)

    def _names(self, user_path: str) -> list[str]:
        try:
            handle = self.ctx.open(user_path)
        except (MissingPathError, SecretPathError):
            # As a shell: no match (a path leading outside the root is an error, raised). A prefix that
            # is a link to a secret matches nothing too, so `L/*` tells nothing about the secret's names.
            return []
        with handle:
            if not handle.is_dir:
                return []
            rel = handle.rel
            return [e.name for e in scan(handle.fd, self.deadline, hide=lambda n: self.denied(rel, n))[0]]

    def denied(self, rel: str, name: str) -> bool:
        """True when the entry `name` of the directory `rel` is on the deny-list."""
        return self.ctx.deny.denied(f"{rel}/{name}" if rel else name)


def _unescape(comp: str) -> str:
    for escaped, plain in (("[*]", "*"), ("[?]", "?"), ("[[]", "[")):
        comp = comp.replace(escaped, plain)
    return comp


def scan(
    fd: int, deadline: Deadline, limit: int = MAX_DIR_ENTRIES, hide: Callable[[str], bool] | None = None
) -> tuple[list[os.DirEntry[str]], bool]:
    """Entries of an open directory not hidden by `hide`, at most `limit` of them; True when there were more."""
    # Hidden entries do not count towards the limit, so where a listing stops says nothing about them.
    entries: list[os.DirEntry[str]] = []
    with os.scandir(fd) as it:
        for index, entry in enumerate(it):
            if index % 1000 == 999 and deadline.expired():
                return entries, True
            if hide is not None and hide(entry.name):
                continue
            if len(entries) >= limit:
                return entries, True
            entries.append(entry)
    return entries, False


def open_child(parent_fd: int, name: str) -> int | None:
    """Open a subdirectory of an open directory without following links; None when it cannot be opened.

    O_NOFOLLOW|O_DIRECTORY means the result is a real directory inside `parent_fd`, so inside the root.
    """
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        return os.open(name, flags, dir_fd=parent_fd)
    except OSError:
        return None
