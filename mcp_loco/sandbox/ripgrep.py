"""Running ripgrep: fixed safe flags, minimal environment, own process group, deadline, output cap.

The search directory is handed over as a descriptor (the child's cwd is /proc/self/fd/N), so rg starts
in the exact directory our confined walk opened, not in whatever that name points to a moment later.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import signal
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mcp_loco.sandbox.limits import Deadline, ToolFailure

# Flags every rg run gets: never read a config file, gitignore without a git repo, hidden files but
# never .git, NUL after each path so names with ':' or newlines parse, no colour.
BASE_FLAGS = (
    "--no-config",
    "--no-require-git",
    "--hidden",
    "--glob=!.git",
    "--no-messages",
    "--color=never",
    "--null",
)
ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "HOME": "/nonexistent", "RIPGREP_CONFIG_PATH": ""}
STDERR_MAX = 16 << 10

Spawn = Callable[[Callable[[], "subprocess.Popen[bytes]"]], "subprocess.Popen[bytes]"]


def have_dev_fd() -> bool:
    """True when descriptors can be handed to a child by name (/dev/fd/N, /proc/self/fd/N)."""
    return Path("/proc/self/fd").is_dir()


def find_rg(configured: str) -> str:
    """The rg binary: the configured one, else the one installed beside this Python, else rg on PATH."""
    if configured:
        if Path(configured).is_file() and os.access(configured, os.X_OK):
            return configured
        raise ToolFailure(f"ripgrep not found at tools.rg_path={configured!r}; fix the setting or leave it empty")
    # Not resolved: a venv's python is a link out of the venv, and rg sits beside the link.
    for folder in (Path(sysconfig.get_path("scripts")), Path(sys.executable).parent):
        candidate = folder / "rg"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("rg")
    if found:
        return found
    raise ToolFailure("ripgrep (rg) is not installed: pip install ripgrep==14.1.0, or set tools.rg_path")


@dataclass
class RgRun:
    """What one rg run produced."""

    stdout: bytes
    stderr: str
    returncode: int | None
    truncated: bool = False
    """stdout went past the cap; the rest was drained (counted) or rg was stopped."""
    extra_newlines: int = 0
    """Newlines seen after the cap (for "N more lines")."""
    stopped: bool = False
    """rg was killed before it finished (cap, deadline or cancel); extra_newlines is then a lower bound."""
    timed_out: bool = False
    cancelled: bool = False


def run_rg(
    rg: str,
    args: Sequence[str],
    *,
    cwd_fd: int,
    cwd_path: str,
    deadline: Deadline,
    max_bytes: int,
    drain_bytes: int = 64 << 20,
    pass_fds: Sequence[int] = (),
    separator: bytes = b"\n",
    spawn: Spawn | None = None,
    on_stdout: Callable[[bytes], bool] | None = None,
) -> RgRun:
    """Run rg in the directory `cwd_fd`; kill its process group at the deadline, on cancel or past the caps.

    With `on_stdout`, each chunk goes to it as it arrives (so parsing overlaps the search) instead of
    being collected; it returns False to stop rg.
    """
    cwd = f"/proc/self/fd/{cwd_fd}" if have_dev_fd() else cwd_path

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [rg, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=ENV,
            cwd=cwd,
            pass_fds=(cwd_fd, *pass_fds),
            close_fds=True,
            start_new_session=True,
        )

    proc = spawn(start) if spawn is not None else start()
    result = RgRun(b"", "", None)
    out = bytearray()
    err = bytearray()
    drained = 0
    assert proc.stdout is not None and proc.stderr is not None
    sel = selectors.DefaultSelector()
    try:
        sel.register(proc.stdout, selectors.EVENT_READ)
        sel.register(proc.stderr, selectors.EVENT_READ)
        while sel.get_map():
            left = deadline.remaining()
            if left <= 0:
                result.cancelled = deadline.cancelled()
                result.timed_out = not result.cancelled
                break
            for key, _ in sel.select(timeout=min(0.05, left)):
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    sel.unregister(key.fileobj)
                elif key.fileobj is proc.stderr:
                    if len(err) < STDERR_MAX:
                        err += chunk
                elif on_stdout is not None:
                    if not on_stdout(chunk):
                        result.truncated = True
                        drained = drain_bytes + 1
                elif len(out) < max_bytes:
                    out += chunk
                else:
                    result.truncated = True
                    drained += len(chunk)
                    result.extra_newlines += chunk.count(separator)
            if drained > drain_bytes:
                break
    finally:
        finished = not sel.get_map()
        sel.close()
        if finished:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.01, deadline.remaining()))
        if proc.poll() is None:
            result.stopped = True
            _kill_group(proc)
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    if len(out) > max_bytes:
        result.truncated = True
    result.stdout = bytes(out)
    result.stderr = err.decode("utf-8", "replace")
    result.returncode = proc.returncode
    return result


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
