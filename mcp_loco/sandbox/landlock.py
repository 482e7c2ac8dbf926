"""Landlock (Linux 5.13+): ripgrep runs unable to read anything but the root and the files it needs to start.

ripgrep walks the tree by name, so a directory swapped for a link to `/` while it searches could lead
it outside the root; our post-filter drops such results, but the bytes would already have been read.
Under Landlock the kernel itself refuses those opens. The ruleset is applied to a short-lived thread
(Landlock and no_new_privs are per thread), which only starts rg and exits, so the server's other
threads are never restricted. Where Landlock is missing or the confined rg cannot start (unusual library
locations), rg runs unconfined, as before, and a log line says so.
"""

from __future__ import annotations

import ctypes
import os
import stat
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

_SYS_CREATE_RULESET = 444  # the same on every architecture that has Landlock (asm-generic numbering)
_SYS_ADD_RULE = 445
_SYS_RESTRICT_SELF = 446
_PR_SET_NO_NEW_PRIVS = 38
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1

EXECUTE = 1 << 0
WRITE_FILE = 1 << 1
READ_FILE = 1 << 2
READ_DIR = 1 << 3
_FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | (1 << 14) | (1 << 15)
# Every filesystem right each ABI knows: all of them are handled, so whatever is not granted is denied.
_HANDLED_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1}
_HANDLED_LATEST = (1 << 16) - 1
_LIBRARY_DIRS = ("/lib", "/lib32", "/lib64", "/usr/lib", "/usr/lib32", "/usr/lib64", "/usr/local/lib", "/nix/store")
_LOADER_FILES = ("/etc/ld.so.cache", "/etc/ld.so.preload")


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


Popen = subprocess.Popen[bytes]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def abi_version() -> int:
    """The kernel's Landlock ABI version, or 0 when Landlock is unavailable."""
    try:
        version = int(_libc().syscall(_SYS_CREATE_RULESET, None, 0, _CREATE_RULESET_VERSION))
    except (OSError, AttributeError):
        return 0
    return max(version, 0)


def _restrict_this_thread(rules: list[tuple[str, int]], abi: int) -> None:
    libc = _libc()
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    attr = _RulesetAttr(_HANDLED_BY_ABI.get(abi, _HANDLED_LATEST))
    ruleset = int(libc.syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.sizeof(attr), 0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    try:
        for path, access in rules:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
                rule = _PathBeneath(access if is_dir else access & _FILE_RIGHTS, fd)
                if libc.syscall(_SYS_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), 0) != 0:
                    raise OSError(ctypes.get_errno(), f"landlock_add_rule failed for {path}")
            finally:
                os.close(fd)
        if libc.syscall(_SYS_RESTRICT_SELF, ruleset, 0) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(ruleset)


class ConfinedSpawner:
    """Starts processes from a thread confined by Landlock to read the root (and start the program) only."""

    def __init__(self, root: str, program: str, abi: int) -> None:
        self.abi = abi
        real = os.path.realpath(program)
        self.rules: list[tuple[str, int]] = [(root, READ_FILE | READ_DIR), (real, READ_FILE | EXECUTE)]
        self.rules += [(d, READ_FILE | READ_DIR | EXECUTE) for d in _LIBRARY_DIRS if Path(d).is_dir()]
        self.rules += [(f, READ_FILE) for f in _LOADER_FILES if Path(f).is_file()]
        # subprocess opens /dev/null for stdin in the confined thread itself.
        self.rules.append((os.devnull, READ_FILE | WRITE_FILE))
        self.program = program
        self._lock = threading.Lock()
        self._works: bool | None = None

    def _confined(self, start: Callable[[], Popen]) -> Popen:
        box: dict[str, Popen | BaseException] = {}

        def body() -> None:
            try:
                _restrict_this_thread(self.rules, self.abi)
                box["proc"] = start()
            except BaseException as e:  # handed to the caller's thread below
                box["error"] = e

        thread = threading.Thread(target=body, name="loco-landlock-spawn", daemon=True)
        thread.start()
        thread.join()
        error = box.get("error")
        if isinstance(error, BaseException):
            raise error
        proc = box["proc"]
        assert isinstance(proc, subprocess.Popen)
        return proc

    def works(self) -> bool:
        """Whether the confined program starts here (checked once, by running it with --version)."""
        with self._lock:
            if self._works is None:
                self._works = self._probe()
            return self._works

    def _probe(self) -> bool:
        def start() -> Popen:
            return subprocess.Popen(
                [self.program, "--version"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"},
            )

        try:
            proc = self._confined(start)
            _, err = proc.communicate(timeout=10)
        except (OSError, subprocess.SubprocessError) as e:
            log.warning("landlock_unusable", reason=str(e))
            return False
        if proc.returncode != 0:
            log.warning("landlock_unusable", reason=err.decode("utf-8", "replace")[:300])
            return False
        return True

    def __call__(self, start: Callable[[], Popen]) -> Popen:
        if not self.works():
            return start()
        return self._confined(start)


def confined_spawner(root: str, program: str) -> ConfinedSpawner | None:
    """A spawner that confines `program` to `root`, or None where the kernel has no Landlock."""
    abi = abi_version()
    if abi < 1:
        log.debug("landlock_unavailable")
        return None
    return ConfinedSpawner(root, program, abi)
