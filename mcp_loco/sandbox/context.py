"""What every tool works with: the confined root, the deny-list and the settings."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mcp_loco.config import ToolSettings
from mcp_loco.sandbox.denylist import DenyList
from mcp_loco.sandbox.limits import Deadline, ToolFailure
from mcp_loco.sandbox.paths import Handle, PathError, Root
from mcp_loco.sandbox.ripgrep import BASE_FLAGS, RgRun, Spawn, run_rg


def lexical(comps: list[str]) -> str:
    """Components with `..` applied as written (clamped at the root), joined: the path the model asked for."""
    out: list[str] = []
    for c in comps:
        if c == "..":
            if out:
                out.pop()
        elif c not in ("", "."):
            out.append(c)
    return "/".join(out)


class SecretPathError(PathError):
    """The path is (or resolves to) a file on the secret deny-list."""


@dataclass(frozen=True)
class ToolContext:
    """The root, deny-list and settings one Toolbox shares between its tools (immutable, thread-safe)."""

    root: Root
    deny: DenyList
    settings: ToolSettings
    rg_path: str = ""
    """The ripgrep binary ("" when none was found; `rg_missing` says why)."""
    rg_missing: str = ""
    spawn: Spawn | None = None
    """Starts rg confined (Landlock) where the kernel allows; None starts it plainly."""

    def rg(self) -> str:
        """The ripgrep binary, or a ToolFailure saying how to install it."""
        if not self.rg_path:
            raise ToolFailure(self.rg_missing or "ripgrep (rg) is not available")
        return self.rg_path

    def rg_paths(
        self, handle: Handle, args: Sequence[str], deadline: Deadline, on_paths: Callable[[bytes], bool]
    ) -> RgRun:
        """rg listing paths (NUL-separated, streamed to `on_paths`) in an open directory, confined and timed."""
        return run_rg(
            self.rg(),
            [*BASE_FLAGS, *args, "--", "."],
            cwd_fd=handle.fd,
            cwd_path=handle.path,
            deadline=deadline,
            max_bytes=0,
            drain_bytes=0,
            separator=b"\0",
            spawn=self.spawn,
            on_stdout=on_paths,
        )

    def open(self, user_path: str) -> Handle:
        """Open a model-supplied path beneath the root; secrets (by requested or resolved path) are refused.

        The walk asks the deny-list about every place it reaches (each link's target, each hop, each
        component) before looking it up, so a link to a secret is refused by the target's name alone:
        the same answer whether the secret exists or not, is a file or a folder.
        """
        comps = self.root.components(user_path)
        if self.deny.denied(lexical(comps)):
            raise self._secret(user_path, lexical(comps))

        def refuse(rel: str) -> PathError | None:
            return self._secret(user_path, rel) if self.deny.denied(rel) else None

        handle = self.root.open_components(comps, user_path, refuse)
        if self.deny.denied(handle.rel):
            handle.close()
            raise self._secret(user_path, handle.rel)
        return handle

    def open_file(self, user_path: str, tool: str) -> Handle:
        """Open a regular file to read; directories, special files and hard-linked files are refused."""
        handle = self.open(user_path)
        try:
            if handle.is_dir:
                raise PathError(
                    f"{handle.path} is a directory, not a file; list it with Glob "
                    f'(pattern "*", path "{handle.path}") or Bash "ls {handle.path}"'
                )
            if not handle.is_file:
                raise PathError(
                    f"{handle.path} is a {handle.kind}, not a regular file; {tool} reads regular files only"
                )
            if handle.st.st_nlink > 1 and not self.settings.allow_hard_links:
                raise PathError(
                    f"{handle.path} has {handle.st.st_nlink} hard links; hard-linked files are not read because "
                    "another link may live outside the explored root"
                )
        except PathError:
            handle.close()
            raise
        return handle

    def open_dir(self, user_path: str) -> Handle:
        """Open a directory to list or search."""
        handle = self.open(user_path)
        if not handle.is_dir:
            handle.close()
            raise PathError(f"{handle.path} is a {handle.kind}, not a directory")
        return handle

    def verify_file(self, rel: str, content: bool = True) -> bool:
        """True when `rel` still opens beneath the root as a regular file at exactly that path.

        With `content`, a hard-linked file fails too (its content is not shown unless allowed).
        """
        try:
            with self.root.open_components(rel.split("/"), rel) as handle:
                ok = handle.is_file and handle.rel == rel
                return ok and (not content or handle.st.st_nlink <= 1 or self.settings.allow_hard_links)
        except (PathError, OSError):
            return False

    def root_fd(self) -> int:
        """A new descriptor of the root directory (the caller closes it)."""
        return self.root.dup()

    def _secret(self, user_path: str, rel: str) -> PathError:
        shown = user_path if len(user_path) <= 200 else user_path[:200] + "..."
        return SecretPathError(
            f"path {shown!r} is a secret file (it matches the deny-list pattern '{self.deny.reason(rel)}'); "
            "no tool shows its content. Explore other files."
        )
