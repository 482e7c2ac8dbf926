"""The answers folder (`--out`): batch writes only inside it, whatever links or other runs find there.

Every file is opened relative to the folder's descriptor with O_NOFOLLOW and renamed within it, so a
symbolic link planted in the folder (or swapped in during a run) is never followed, and a regular file
with a second name elsewhere (a hard link) is never written. A query is claimed by an flock on its
`ID.md.partial` before it is explored: a second run on the same folder skips what the first holds, and
an answer is never written twice.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from pathlib import Path
from types import TracebackType

from mcp_loco.errors import ConfigError

INDEX = "index.jsonl"
_OPEN = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # O_NONBLOCK: a FIFO planted here never blocks the open


class OutDirError(ConfigError):
    """Something in the answers folder that batch will not write through."""


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "not a regular file"


class OutDir:
    """The answers folder, held open by descriptor for the whole run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise ConfigError(f"--out {path}: cannot use it as the answers folder ({e.strerror})") from None

    def close(self) -> None:
        """Let go of the folder."""
        os.close(self.fd)

    def __enter__(self) -> OutDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _lstat(self, name: str) -> os.stat_result | None:
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def answered(self, qid: str) -> bool:
        """True when `ID.md` is a regular file (something else under that name is the claim's to report)."""
        st = self._lstat(f"{qid}.md")
        return st is not None and stat.S_ISREG(st.st_mode)

    def _check_answer_slot(self, qid: str) -> bool:
        """True when `ID.md` is free; False when answered; an error when something else sits there."""
        st = self._lstat(f"{qid}.md")
        if st is None:
            return True
        if stat.S_ISREG(st.st_mode):
            return False
        raise OutDirError(
            f"{self.path / (qid + '.md')} is {_kind(st.st_mode)}, not an answer: batch writes only plain files "
            f"inside --out; remove it to answer {qid}"
        )

    def _open_regular(self, name: str, flags: int) -> int:
        """Open `name` in the folder without following a link; a link, or a file with other names, is refused."""
        try:
            fd = os.open(name, flags | _OPEN, 0o644, dir_fd=self.fd)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise OutDirError(
                    f"{self.path / name} is a symbolic link: batch writes only inside --out and never follows "
                    "links; remove it"
                ) from None
            if e.errno == errno.EISDIR:
                raise OutDirError(
                    f"{self.path / name} is a directory: batch writes only plain files; remove it"
                ) from None
            raise OutDirError(f"{self.path / name}: cannot open it ({e.strerror})") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
            os.close(fd)
            why = _kind(st.st_mode) if not stat.S_ISREG(st.st_mode) else f"a file with {st.st_nlink} names"
            raise OutDirError(f"{self.path / name} is {why}: batch writes only plain files of its own; remove it")
        return fd

    def open_index(self) -> Index:
        """The index, opened for appending (created if missing)."""
        return Index(self._open_regular(INDEX, os.O_WRONLY | os.O_APPEND | os.O_CREAT), self.path / INDEX)

    def read_index(self) -> str:
        """The index's text ('' when there is none)."""
        try:
            fd = self._open_regular(INDEX, os.O_RDONLY)
        except OutDirError:
            if self._lstat(INDEX) is None:
                return ""
            raise
        with os.fdopen(fd, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def claim(self, qid: str) -> Claim | None:
        """Hold query `qid` for this run, or None when another run holds it or has answered it."""
        name = f"{qid}.md.partial"
        last: OutDirError | None = None
        for _ in range(5):
            if not self._check_answer_slot(qid):
                return None
            st = self._lstat(name)
            if st is not None and (not stat.S_ISREG(st.st_mode) or st.st_nlink > 1):
                if stat.S_ISDIR(st.st_mode):
                    raise OutDirError(f"{self.path / name} is a directory: remove it to answer {qid}")
                # A link (or a second name of some file) where batch keeps its scratch file: drop the
                # name, never write through it.
                os.unlink(name, dir_fd=self.fd)
            try:
                fd = self._open_regular(name, os.O_RDWR | os.O_CREAT)
            except OutDirError as e:
                last = e
                continue  # replaced between the check and the open: look again
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None  # another run is answering it
            held, now = os.fstat(fd), self._lstat(name)
            if now is None or (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino):
                os.close(fd)  # the holder renamed or removed it between our open and our lock
                continue
            if not self._check_answer_slot(qid):
                os.unlink(name, dir_fd=self.fd)
                os.close(fd)
                return None
            return Claim(self, qid, fd)
        raise last or OutDirError(
            f"{self.path / name}: it keeps changing under this run; is something else writing there?"
        )


class Claim:
    """A query this run holds: `commit` makes the answer appear whole, leaving without it frees the query."""

    def __init__(self, out: OutDir, qid: str, fd: int) -> None:
        self.out, self.qid, self.fd = out, qid, fd
        self.partial = f"{qid}.md.partial"
        self.done = False

    def commit(self, text: str) -> None:
        """Write the answer and rename it into place, so it is never seen half written."""
        data = text.encode("utf-8")
        os.ftruncate(self.fd, 0)
        view = memoryview(data)
        while view:
            view = view[os.pwrite(self.fd, view, len(data) - len(view)) :]
        os.fsync(self.fd)
        os.rename(self.partial, f"{self.qid}.md", src_dir_fd=self.out.fd, dst_dir_fd=self.out.fd)
        self.done = True

    def release(self) -> None:
        """Let go: a query not answered leaves no scratch file behind."""
        if not self.done:
            try:
                held, now = os.fstat(self.fd), self.out._lstat(self.partial)
                if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
                    os.unlink(self.partial, dir_fd=self.out.fd)
            except OSError:
                pass  # the folder went away: nothing of ours is left to remove
        os.close(self.fd)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, tp: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


class Index:
    """`index.jsonl`, appended one whole line per write (O_APPEND), so runs at once never interleave."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd, self.path = fd, path

    def append(self, line: str) -> None:
        """Append one line (a newline is added)."""
        data = (line.rstrip("\n") + "\n").encode("utf-8")
        written = os.write(self.fd, data)
        if written != len(data):  # a full disk: say so rather than leave a line cut short unnoticed
            raise OutDirError(f"{self.path}: only {written} of {len(data)} bytes written (disk full?)")

    def close(self) -> None:
        """Close the index."""
        os.close(self.fd)
