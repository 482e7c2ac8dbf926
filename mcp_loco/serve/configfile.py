"""Change a client's config file and lose nothing: its mode, owner, symlinks, backups and other writers' entries.

Every install target goes through here: hold `config_lock(path)` from `read_config_text` to `replace_config`
so that a concurrent install's change is not lost between the read and the write.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from mcp_loco.errors import ConfigError

NEW_FILE_MODE = 0o600
"""A config created here may come to hold API keys (env entries), so only its owner reads it."""
LOCK_WAIT_S = 30.0
"""How long an install waits for another one changing the same file."""

_held: dict[Path, int] = {}
# One lock for the process: a flock is per open file, so a second flock on the same file would deadlock us.
_process_lock = threading.RLock()


def config_target(path: Path) -> Path:
    """The file a config path finally names, through symlinks (and links to links)."""
    try:
        return Path(os.path.realpath(path.expanduser(), strict=True))
    except FileNotFoundError:
        # A missing file, or a link to a missing file: the file is created where the chain ends.
        return Path(os.path.realpath(path.expanduser()))
    except OSError as e:
        raise ConfigError(
            f"{path}: cannot follow it ({e.strerror}); fix the link or move it, then run this again"
        ) from None


def read_config_text(path: Path) -> str | None:
    """A config file's text through its symlinks, or None when there is none; it must be UTF-8."""
    target = config_target(path)
    try:
        raw = target.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read it ({e.strerror}); fix its permissions, then run this again") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{path} is not UTF-8 text (byte {raw[e.start]:#04x} at offset {e.start}); "
            "save it as UTF-8 or move it aside, then run this again"
        ) from None


def _check_writable(path: Path, target: Path) -> None:
    """A ConfigError, before anything is touched, when the user has made the file read-only."""
    try:
        st = target.stat()
    except FileNotFoundError:
        return
    if not st.st_mode & stat.S_IWUSR:
        raise ConfigError(
            f"{path} is read-only, so it was left as it is; to let install change it run "
            f"`chmod u+w {shlex.quote(str(target))}`, then run this again"
        )


@contextmanager
def config_lock(path: Path) -> Iterator[None]:
    """Hold the file's lock (a lock file beside it) so a read, change and replace lose no other writer's entry."""
    target = config_target(path)
    _check_writable(path, target)
    with _process_lock:
        if target in _held:
            _held[target] += 1
            try:
                yield
            finally:
                _held[target] -= 1
            return
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd = _acquire(target.with_name(f".{target.name}.lock"), path)
        except OSError as e:
            raise _cannot_write(path, target, e) from None
        _held[target] = 1
        try:
            yield
        finally:
            del _held[target]
            _release(target.with_name(f".{target.name}.lock"), fd)


def _acquire(lock: Path, path: Path) -> int:
    """Open and flock the lock file; retry when the holder removed it meanwhile (we then hold a stale file)."""
    if sys.platform == "win32":  # no flock: installs there are not guarded against each other
        return -1
    import fcntl

    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise ConfigError(
                            f"{path}: another install has been changing it for {LOCK_WAIT_S:.0f} s (it holds "
                            f"{lock}); let it finish, then run this again"
                        ) from None
                    time.sleep(0.02)
            held = os.fstat(fd)
            with suppress(FileNotFoundError):
                now = lock.stat()
                if (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
                    return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _release(lock: Path, fd: int) -> None:
    """Remove the lock file while still holding it (so no one can take a stale one), then let go."""
    if fd < 0:
        return
    with suppress(FileNotFoundError):
        lock.unlink()
    os.close(fd)


def _backup(path: Path, target: Path, st: os.stat_result) -> Path:
    """Copy the file to NAME.bak-YYYYmmdd-HHMMSS-N, a name no earlier backup has, with the file's own mode."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    n = 1
    while True:
        backup = target.with_name(f"{target.name}.bak-{stamp}-{n}")
        try:
            fd = os.open(backup, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            break
        except FileExistsError:
            n += 1
    try:
        with os.fdopen(fd, "wb") as out:
            _own(out.fileno(), st, path)
            out.write(target.read_bytes())
            out.flush()
            os.fsync(out.fileno())
        os.utime(backup, ns=(st.st_atime_ns, st.st_mtime_ns))
    except BaseException:
        backup.unlink(missing_ok=True)
        raise
    return backup


def _own(fd: int, st: os.stat_result, path: Path) -> None:
    """Give a new file the mode and owner of `st` (fchmod is not cut by the umask); refuse an owner we cannot keep."""
    os.fchmod(fd, stat.S_IMODE(st.st_mode))
    if hasattr(os, "fchown") and (st.st_uid, st.st_gid) != (os.getuid(), os.getgid()):
        try:
            os.fchown(fd, st.st_uid, st.st_gid)
        except PermissionError:
            # Replacing the file would hand it to us: refuse rather than change its owner.
            raise ConfigError(
                f"{path} belongs to user {st.st_uid}, group {st.st_gid}, and rewriting it here would change "
                "its owner, so it was left as it is; run this as that user (or with sudo), then run this again"
            ) from None


def replace_config(path: Path, text: str, new_mode: int = NEW_FILE_MODE) -> Path | None:
    """Replace a config's text atomically, keeping mode, owner and symlinks; returns the backup (None: none made).

    No backup is made for a new file, nor when the text is already the file's (nothing is written then).
    """
    target = config_target(path)
    with config_lock(path):
        try:
            return _replace(path, target, text.encode("utf-8"), new_mode)
        except OSError as e:
            raise _cannot_write(path, target, e) from None


def _replace(path: Path, target: Path, data: bytes, new_mode: int) -> Path | None:
    """Back up, write a temp file beside the target with its final mode, fsync, rename over (lock held)."""
    try:
        st: os.stat_result | None = target.stat()
    except FileNotFoundError:
        st = None
    if st is not None and target.read_bytes() == data:
        return None
    backup = _backup(path, target, st) if st is not None else None
    fd, tmp = _temp_beside(target)
    try:
        with os.fdopen(fd, "wb") as out:
            if st is not None:
                _own(out.fileno(), st, path)
            else:
                os.fchmod(out.fileno(), new_mode)
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _sync_dir(target.parent)
    return backup


def _cannot_write(path: Path, target: Path, e: OSError) -> ConfigError:
    """The error for a folder or disk that refuses the new file (the config itself is left as it was)."""
    return ConfigError(
        f"{path}: cannot write beside {target} ({e.strerror}); the file was left as it was. "
        f"Make {shlex.quote(str(target.parent))} writable (or free some space), then run this again"
    )


def _temp_beside(target: Path) -> tuple[int, Path]:
    """A new private file in the target's folder (so the rename is atomic), readable by no one else from the start."""
    n = 0
    while True:
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}-{n}")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), tmp
        except FileExistsError:
            n += 1


def _sync_dir(folder: Path) -> None:
    """Flush the rename itself to disk (where the platform lets a folder be opened)."""
    if sys.platform == "win32":
        return
    # The file is already in place: a filesystem that cannot sync a folder is no reason to report a failure.
    with suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ---- JSON configs (Claude Desktop, Claude Code settings) ----------------------------------------------


def _read_config(path: Path) -> dict[str, object]:
    """A client's JSON config as an object (empty when absent or blank)."""
    text = read_config_text(path)
    if text is None or not text.strip():
        return {}
    try:
        loaded = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON ({e}); fix or move it, then run this again") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path} does not hold a JSON object; fix or move it, then run this again")
    return loaded


def _write_config(path: Path, data: dict[str, object], new_mode: int = NEW_FILE_MODE) -> Path | None:
    """Write a JSON config through replace_config, saying where the backup went; returns the backup."""
    backup = replace_config(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n", new_mode)
    if backup is not None:
        print(f"backup: {backup}", file=sys.stderr)
    return backup
