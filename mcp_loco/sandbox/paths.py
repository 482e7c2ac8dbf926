"""Root confinement: every path the model gives is opened beneath the root, one component at a time.

Nothing is ever opened by its full name. The walk starts from a descriptor of the root and opens each
component relative to the previous one with O_NOFOLLOW, after an lstat that says what it is:
- a directory is opened with O_DIRECTORY|O_NOFOLLOW and fstat-checked to be the inode just seen;
- a symbolic link is never followed by the kernel: we read its target and walk that ourselves, under
  the same rules (an absolute target must lie under the root; `..` pops our own stack of directory
  descriptors, it never asks the kernel for `..`), so a link leading out of the root is refused;
- the last component, if a regular file, is opened O_NOFOLLOW|O_NONBLOCK|O_NOCTTY and fstat-checked;
  FIFOs, sockets and devices are never opened at all;
- each place the walk reaches (every component on the way) and, at each link, the whole path it now
  heads for are offered to the caller's `refuse` before anything is looked up, so a deny-list refuses
  a link to a secret (each hop of a chain) by the target's name: the same answer whether it exists.
A link swapped in after the lstat makes the O_NOFOLLOW open fail or the inode check differ; the walk
then retries from that component, so a race can only ever lead to a place inside the root.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import stat
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mcp_loco.errors import RootError
from mcp_loco.interfaces import is_within
from mcp_loco.sandbox.limits import ToolFailure

MAX_PATH_CHARS = 4096
MAX_NAME_BYTES = 255
MAX_LINK_HOPS = 40

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | _CLOEXEC
_FORBIDDEN_ROOTS = ("/proc", "/sys", "/dev")


class PathError(ToolFailure):
    """A path the model gave cannot be used; the message says why and what to do."""


class OutsideRootError(PathError):
    """The path (or a link on its way) leads outside the explored root."""


class MissingPathError(PathError):
    """Nothing exists at the path (or a component on the way is not a directory)."""


def kind_of(mode: int) -> str:
    """A short description of a file type."""
    if stat.S_ISREG(mode):
        return "regular file"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISLNK(mode):
        return "symbolic link"
    if stat.S_ISFIFO(mode):
        return "FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    return "special file"


def _home_dirs() -> set[str]:
    homes = {str(Path("~").expanduser())}
    with contextlib.suppress(KeyError):
        homes.add(pwd.getpwuid(os.getuid()).pw_dir)
    return {os.path.realpath(h) for h in homes if h and h.startswith("/")}


def _absolute(path: str) -> str:
    """`path` made absolute, `~` expanded and normalised, without resolving links (the caller's spelling)."""
    return os.path.normpath(Path(path).expanduser().absolute())


def resolve_root(root: str | os.PathLike[str]) -> str:
    """The explored root, absolute and resolved; RootError for a missing path, a file, or a root too wide."""
    raw = os.fspath(root)
    if not raw or "\0" in raw:
        raise RootError(f"root {raw!r} is not a valid path")
    given = _absolute(raw)
    try:
        resolved = os.path.realpath(given, strict=True)
    except OSError:
        raise RootError(f"root {raw!r} does not exist") from None
    if not Path(resolved).is_dir():
        raise RootError(f"root {raw!r} is not a directory")
    if resolved == "/":
        raise RootError("root '/' is too wide: give the project directory to explore")
    for forbidden in _FORBIDDEN_ROOTS:
        if is_within(resolved, forbidden):
            raise RootError(f"root {resolved} is under {forbidden}, which is not a project directory")
    for home in _home_dirs():
        if is_within(home, resolved):
            raise RootError(
                f"root {resolved} is (or contains) the home directory {home}, which holds credentials: "
                "give the project directory to explore"
            )
    return resolved


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


def _ahead(done: list[str], todo: list[str]) -> str | None:
    """The path the walk is heading for, `..` applied as written; None when it climbs above the root."""
    out = list(done)
    for c in todo:
        if c != "..":
            out.append(c)
        elif not out:
            return None
        else:
            out.pop()
    return "/".join(out)


@dataclass
class Handle:
    """An object opened beneath the root: `fd` is -1 for special files, which are never opened."""

    fd: int
    rel: str
    path: str
    st: os.stat_result

    @property
    def is_dir(self) -> bool:
        """True for a directory."""
        return stat.S_ISDIR(self.st.st_mode)

    @property
    def is_file(self) -> bool:
        """True for a regular file."""
        return stat.S_ISREG(self.st.st_mode)

    @property
    def kind(self) -> str:
        """What the object is, in words."""
        return kind_of(self.st.st_mode)

    def close(self) -> None:
        """Close the descriptor (idempotent)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Handle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_directory(path: str) -> int:
    """A descriptor of a resolved directory, opened from `/` one component at a time without following links.

    A link swapped into the path after it was resolved makes this fail instead of leading elsewhere.
    """
    fd = os.open("/", _DIR_FLAGS)
    try:
        for name in _parts(path):
            next_fd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = next_fd
    except OSError as e:
        os.close(fd)
        raise RootError(f"root {path} changed while it was being opened ({e.strerror}); try again") from None
    return fd


class Root:
    """The explored directory, and the only way tools open anything.

    The directory is opened once, here, and every later open starts from that descriptor: a link swapped
    into the root's own path afterwards (while a call waits in a queue, say) cannot redirect the tools.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.path = resolve_root(root)
        self.fd = open_directory(self.path)
        self._close = weakref.finalize(self, os.close, self.fd)
        self.parts = tuple(_parts(self.path))
        given = _absolute(os.fspath(root))
        spellings = {self.parts, tuple(_parts(given))}
        self._spellings = sorted(spellings, key=len, reverse=True)

    def close(self) -> None:
        """Close the root's descriptor (also done when the Root is collected)."""
        self._close()

    def dup(self) -> int:
        """A new descriptor of the root directory (the caller closes it)."""
        return os.dup(self.fd)

    def abs(self, rel: str) -> str:
        """The absolute path of `rel` (relative to the root)."""
        return self.path if not rel else f"{self.path}/{rel}"

    def rel_of(self, absolute: str) -> list[str] | None:
        """Components of an absolute path below the root, or None when it is not under the root."""
        parts = [p for p in absolute.split("/") if p not in ("", ".")]
        for spelling in self._spellings:
            if tuple(parts[: len(spelling)]) == spelling:
                return parts[len(spelling) :]
        return None

    def components(self, user_path: str) -> list[str]:
        """Validate a path from the model and return its components relative to the root (may hold '..')."""
        if not isinstance(user_path, str):
            raise PathError(f"a path must be a string, got {type(user_path).__name__}")
        shown = user_path if len(user_path) <= 200 else user_path[:200] + "..."
        if not user_path.strip():
            raise PathError(f"empty path: give an absolute path inside the explored root {self.path}")
        if "\0" in user_path:
            raise PathError(f"path {shown!r} contains a NUL byte; give a plain absolute path inside {self.path}")
        if len(user_path) > MAX_PATH_CHARS:
            raise PathError(f"path is too long ({len(user_path)} characters; at most {MAX_PATH_CHARS})")
        try:
            encoded = [os.fsencode(p) for p in user_path.split("/")]
        except UnicodeError:
            raise PathError(f"path {shown!r} is not valid Unicode") from None
        if any(len(p) > MAX_NAME_BYTES for p in encoded):
            raise PathError(f"path {shown!r} has a component longer than {MAX_NAME_BYTES} bytes")
        if user_path.startswith("~"):
            raise OutsideRootError(
                f"path {shown!r} starts with '~', which is not expanded here; give an absolute path inside {self.path}"
            )
        if user_path.startswith("/"):
            rel = self.rel_of(user_path)
            if rel is None:
                raise OutsideRootError(
                    f"path {shown!r} is outside the explored root {self.path}; give a path inside it"
                )
            return rel
        return _parts(user_path)

    def open(self, user_path: str) -> Handle:
        """Open a model-supplied path beneath the root (links inside the root are followed safely)."""
        comps = self.components(user_path)
        return self.open_components(comps, user_path)

    def open_components(
        self, comps: list[str], shown: str, refuse: Callable[[str], PathError | None] | None = None
    ) -> Handle:
        """Open components relative to the root, never following a link the kernel would resolve.

        `refuse(rel)` is asked about every place the walk reaches, before it is looked up, and at each link
        about the whole path it then heads for; an error it returns is raised as it is (nothing about
        that place, not even whether it exists, is told).
        """
        shown = shown if len(shown) <= 200 else shown[:200] + "..."
        root_fd = self.dup()
        stack: list[tuple[str, int]] = []
        todo: deque[tuple[str, str | None]] = deque((c, None) for c in comps if c not in ("", "."))
        hops = 0
        try:
            while todo:
                name, via = todo.popleft()
                if name == "..":
                    if not stack:
                        raise self._escape(shown, via)
                    os.close(stack.pop()[1])
                    continue
                parent = stack[-1][1] if stack else root_fd
                here = "/".join([s for s, _ in stack] + [name])
                if refuse is not None and (refused := refuse(here)) is not None:
                    raise refused
                st = self._lstat(name, parent, here, shown, via)
                if stat.S_ISLNK(st.st_mode):
                    hops += 1
                    if hops > MAX_LINK_HOPS:
                        raise PathError(
                            f"path {shown!r}: too many levels of symbolic links (a link loop at {self.abs(here)}?)"
                        )
                    try:
                        target = os.readlink(name, dir_fd=parent)
                    except OSError:
                        todo.appendleft((name, via))  # no longer a link (swapped since the lstat): look again
                        continue
                    if target.startswith("/"):
                        target_parts = self.rel_of(target)
                        if target_parts is None:
                            raise self._escape(shown, here)
                        for _, fd in stack:
                            os.close(fd)
                        stack = []
                    else:
                        target_parts = target.split("/")
                    todo.extendleft(reversed([(c, here) for c in target_parts if c not in ("", ".")]))
                    # The path as it now reads is judged whole first, as a path spelled directly is.
                    ahead = _ahead([s for s, _ in stack], [c for c, _ in todo])
                    if refuse is not None and ahead is not None and (refused := refuse(ahead)) is not None:
                        raise refused
                    continue
                last = not todo
                if stat.S_ISDIR(st.st_mode):
                    dir_fd = self._open_checked(name, parent, _DIR_FLAGS, st, self.abs(here))
                    if dir_fd is None:
                        hops += 1  # swapped between lstat and open: look again
                        todo.appendleft((name, via))
                        continue
                    stack.append((name, dir_fd))
                    continue
                if not last:
                    raise MissingPathError(
                        f"path {shown!r}: {self.abs(here)} is a {kind_of(st.st_mode)}, not a directory"
                    )
                if not stat.S_ISREG(st.st_mode):
                    return Handle(-1, here, self.abs(here), st)
                file_fd = self._open_checked(name, parent, _FILE_FLAGS, st, self.abs(here))
                if file_fd is None:
                    hops += 1
                    todo.appendleft((name, via))
                    continue
                return Handle(file_fd, here, self.abs(here), os.fstat(file_fd))
            if stack:
                name, fd = stack.pop()
                rel = "/".join([s for s, _ in stack] + [name])
                return Handle(fd, rel, self.abs(rel), os.fstat(fd))
            handle = Handle(root_fd, "", self.path, os.fstat(root_fd))
            root_fd = -1
            return handle
        finally:
            for _, fd in stack:
                os.close(fd)
            if root_fd >= 0:
                os.close(root_fd)

    def _escape(self, shown: str, via: str | None) -> PathError:
        if via is None:
            return OutsideRootError(f"path {shown!r} is outside the explored root {self.path}; give a path inside it")
        return OutsideRootError(
            f"path {shown!r} goes through the symbolic link {self.abs(via)}, which leads outside the explored "
            f"root {self.path}; links are followed only while they stay inside the root"
        )

    def _lstat(self, name: str, parent: int, here: str, shown: str, via: str | None) -> os.stat_result:
        try:
            return os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            if via is not None:
                raise MissingPathError(
                    f"path {shown!r} does not exist: the symbolic link {self.abs(via)} points to a missing file"
                ) from None
            raise MissingPathError(f"path {self.abs(here)} does not exist; use Glob to find files by name") from None
        except PermissionError:
            raise PathError(f"permission denied: {self.abs(here)}") from None
        except OSError as e:
            raise PathError(f"cannot open {self.abs(here)}: {e.strerror}") from None

    @staticmethod
    def _open_checked(name: str, parent: int, flags: int, seen: os.stat_result, where: str) -> int | None:
        """Open without following links; None when the entry changed since `seen` (a swap: retry)."""
        try:
            fd = os.open(name, flags, dir_fd=parent)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT, errno.ENXIO):
                return None
            raise PathError(f"cannot open {where}: {e.strerror}") from None
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (seen.st_dev, seen.st_ino) or stat.S_IFMT(st.st_mode) != stat.S_IFMT(seen.st_mode):
            os.close(fd)
            return None
        return fd
