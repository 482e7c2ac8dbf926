"""Resumable downloads from the Hugging Face Hub over HTTP Range, verified before use.

The file list, each file's published size and sha256 come from the Hub's tree API
(`{HF_ENDPOINT}/api/models/{repo}/tree/main`); the bytes from `{HF_ENDPOINT}/{repo}/resolve/main/{file}`.
They go into `<target>.partial`, a file this module owns (opened without following links); a later run
asks only for the bytes it lacks (`Range: bytes=N-`). The whole file is checked against the published
size and sha256 before it is renamed into place: a partial file that does not add up is removed and
fetched again from zero, once.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import structlog

from mcp_loco.errors import ModelError, ModelNotFoundError

log = structlog.get_logger("mcp_loco.model.download")

DEFAULT_ENDPOINT = "https://huggingface.co"
REVISION = "main"
CHUNK = 1 << 20
_write = os.write  # the one call that may hit a full disk
GATED_HINT = "if it is private or gated, log in with `hf auth login` (or set HF_TOKEN)"


@dataclass(frozen=True)
class RemoteFile:
    """A file of a Hub repository, as its tree API publishes it."""

    repo: str
    name: str
    size: int
    sha256: str | None
    """The LFS object's sha256 (every GGUF is an LFS file)."""
    git_oid: str | None
    """The git blob id (sha1 of `blob <size>\\0<bytes>`), for files kept in git itself."""

    @property
    def url(self) -> str:
        """Where the bytes are served (the Hub redirects to its CDN)."""
        return f"{endpoint()}/{self.repo}/resolve/{REVISION}/{quote(self.name)}"


def endpoint() -> str:
    """The Hub's base URL: HF_ENDPOINT, as huggingface_hub reads it, else huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def _token() -> str | None:
    token = os.environ.get("HF_TOKEN")
    if token:
        return token
    try:
        from huggingface_hub import get_token
    except ImportError:  # pragma: no cover - a declared dependency
        return None
    found: str | None = get_token()
    return found


def client() -> httpx.Client:
    """An HTTP client for the Hub: follows its CDN redirects (the token is not sent to another origin)."""
    token = _token()
    return httpx.Client(
        headers={"Authorization": f"Bearer {token}"} if token else {},
        follow_redirects=True,
        timeout=httpx.Timeout(60.0, connect=15.0),
    )


def _unreachable(what: str, e: Exception, hint: str) -> ModelNotFoundError:
    return ModelNotFoundError(f"cannot reach Hugging Face ({endpoint()}) to {what} ({type(e).__name__}: {e}); {hint}")


def list_files(repo: str, http: httpx.Client, hint: str) -> list[RemoteFile]:
    """Every file of `repo` with its size and hashes (the tree API, every page)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise ModelNotFoundError(f"HF_HUB_OFFLINE is set, so {repo} cannot be listed or downloaded; {hint}")
    url: str | None = f"{endpoint()}/api/models/{repo}/tree/{REVISION}?recursive=true"
    out: list[RemoteFile] = []
    while url:
        try:
            response = http.get(url)
        except httpx.HTTPError as e:
            raise _unreachable(f"list {repo}", e, hint) from None
        if response.status_code in (401, 403, 404):
            raise ModelNotFoundError(f"repository {repo} was not found on Hugging Face (a typo? {GATED_HINT})")
        if response.status_code >= 400:
            raise ModelNotFoundError(
                f"Hugging Face answered {response.status_code} when listing {repo}; try again later, or {hint}"
            )
        try:
            entries = response.json()
            out += [_remote(repo, e) for e in entries if e.get("type") == "file"]
        except (ValueError, TypeError, AttributeError, KeyError) as e:
            raise ModelError(
                f"Hugging Face's file list of {repo} is not what was expected ({e}); try again later"
            ) from None
        url = response.links.get("next", {}).get("url")
    return out


def _remote(repo: str, entry: dict[str, Any]) -> RemoteFile:
    lfs = entry.get("lfs") or {}
    return RemoteFile(
        repo=repo,
        name=str(entry["path"]),
        size=int(lfs.get("size", entry.get("size", 0))),
        sha256=str(lfs["oid"]).lower() if lfs.get("oid") else None,
        git_oid=None if lfs else (str(entry["oid"]).lower() if entry.get("oid") else None),
    )


# ---- the partial file ------------------------------------------------------------------------------


def partial_path(target: Path) -> Path:
    """The file a download of `target` writes into until it is verified."""
    return target.with_name(target.name + ".partial")


def _open_partial(partial: Path) -> int:
    """The partial file, created if missing; never through a link, and only a regular file."""
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(partial, flags, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ModelError(f"{partial} is a link; remove it and run the same command again") from None
        if e.errno == errno.EISDIR:
            raise ModelError(f"{partial} is not a regular file; remove it and run the same command again") from None
        raise ModelError(f"cannot open {partial}: {e.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ModelError(f"{partial} is not a regular file; remove it and run the same command again")
    if not _lock(fd):  # two writers appending to one partial file would corrupt it
        os.close(fd)
        raise ModelError(f"another download is writing {partial}; wait for it to finish, or stop it")
    return fd


def _lock(fd: int) -> bool:
    """Hold an exclusive lock on the partial file for this download (released when it is closed)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks, the hash check still catches a mix-up
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


class _Hasher:
    """The published hash of the bytes seen so far (sha256 for LFS files, the git blob id otherwise)."""

    def __init__(self, remote: RemoteFile) -> None:
        self.remote = remote
        self.reset()

    def reset(self) -> None:
        """Forget the bytes seen (the download starts over from zero)."""
        git = not self.remote.sha256 and self.remote.git_oid
        self._h = hashlib.sha1(usedforsecurity=False) if git else hashlib.sha256()
        if git:
            self._h.update(f"blob {self.remote.size}\0".encode())

    def update(self, data: bytes) -> None:
        self._h.update(data)

    def matches(self) -> bool:
        want = self.remote.sha256 or self.remote.git_oid
        return want is None or self._h.hexdigest() == want


def _hash_existing(fd: int, size: int, hasher: _Hasher) -> None:
    at = 0
    while at < size:
        data = os.pread(fd, min(CHUNK, size - at), at)
        if not data:
            break
        hasher.update(data)
        at += len(data)


def _write_all(fd: int, data: bytes, partial: Path, total: int) -> None:
    view = memoryview(data)
    while view:
        try:
            n = _write(fd, view)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                kept = os.fstat(fd).st_size
                raise ModelError(
                    f"the disk is full: {kept:,} of {total:,} bytes of {partial.name} are kept in {partial}; "
                    "free some space and run the same command again to resume"
                ) from None
            raise ModelError(f"cannot write {partial}: {e.strerror}") from None
        view = view[n:]


# ---- fetching --------------------------------------------------------------------------------------


def fetch(remote: RemoteFile, target: Path, http: httpx.Client, hint: str) -> Path:
    """Download `remote` to `target`, resuming `<target>.partial`; verified before it is renamed into place."""
    partial = partial_path(target)
    what = "sha256" if remote.sha256 else "git blob id"
    for attempt in (1, 2):
        fd = _open_partial(partial)
        try:
            hasher = _Hasher(remote)
            have = os.fstat(fd).st_size
            if have > remote.size:
                log.warning("download.partial_too_long", partial=str(partial), bytes=have, size=remote.size)
                os.ftruncate(fd, 0)
                have = 0
            _hash_existing(fd, have, hasher)
            if have < remote.size:
                _receive(remote, fd, partial, have, hasher, http, hint)
            size = os.fstat(fd).st_size
            if size < remote.size:  # the server ended the answer early without an error: resumable as it is
                raise ModelNotFoundError(
                    f"download of {remote.repo}/{remote.name} stopped at {size:,} of {remote.size:,} bytes; they are "
                    f"kept in {partial}: run the same command again to resume, or {hint}"
                )
            if size == remote.size and hasher.matches():
                partial.replace(target)  # while the lock is held
                return target
        finally:
            os.close(fd)
        partial.unlink(missing_ok=True)
        log.warning(
            "download.corrupt",
            file=remote.name,
            bytes=size,
            size=remote.size,
            check=what,
            action="removed; downloading again from zero" if attempt == 1 else "removed",
        )
    raise ModelError(
        f"{remote.repo}/{remote.name} did not match its published size and {what} twice; the file was removed. "
        "Run the same command again, or fetch it another way and pass --model PATH"
    )


def _receive(
    remote: RemoteFile, fd: int, partial: Path, have: int, hasher: _Hasher, http: httpx.Client, hint: str
) -> None:
    """Append the missing bytes, from `have` on, to the partial file."""
    from tqdm import tqdm

    headers = {"Range": f"bytes={have}-"} if have else {}
    log.info("download.start", file=remote.name, size=remote.size, resuming_from=have)
    try:
        with http.stream("GET", remote.url, headers=headers) as response:
            start = _start_of(response, remote, have, hint)
            if start != have:
                if start != 0:
                    raise ModelError(f"the download server sent bytes from {start}, not {have}; try again")
                os.ftruncate(fd, 0)  # it ignored the Range and sends the whole file: start over
                hasher.reset()
                have = 0
            os.lseek(fd, have, os.SEEK_SET)
            with tqdm(
                total=remote.size,
                initial=have,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=remote.name,
                file=sys.stderr,
                dynamic_ncols=True,
            ) as bar:
                for data in _chunks(response):
                    _write_all(fd, data, partial, remote.size)
                    hasher.update(data)
                    have += len(data)
                    bar.update(len(data))
    except httpx.HTTPError as e:
        raise ModelNotFoundError(
            f"download of {remote.repo}/{remote.name} stopped at {have:,} of {remote.size:,} bytes "
            f"({type(e).__name__}: {e}); they are kept in {partial}: run the same command again to resume, or {hint}"
        ) from None


def _chunks(response: httpx.Response) -> Iterator[bytes]:
    # As the network delivers them: a chunk size would hold back the bytes received before a drop.
    yield from response.iter_raw()


def _start_of(response: httpx.Response, remote: RemoteFile, have: int, hint: str) -> int:
    """Where the bytes of this response begin in the file (0 when the server ignored the Range)."""
    if response.status_code == 206:
        content_range = response.headers.get("content-range", "")
        try:
            return int(content_range.split(" ", 1)[1].split("-", 1)[0])
        except (IndexError, ValueError):
            raise ModelError(f"the download server sent a bad Content-Range ({content_range!r}); try again") from None
    if response.status_code == 200:
        return 0
    response.read()
    if response.status_code in (401, 403):
        raise ModelNotFoundError(
            f"Hugging Face refused {remote.repo}/{remote.name} ({response.status_code}); {GATED_HINT}"
        )
    if response.status_code == 404:
        raise ModelNotFoundError(
            f"{remote.repo} has no file {remote.name!r}; list its files with --quant or check --file"
        )
    raise ModelNotFoundError(
        f"download of {remote.repo}/{remote.name} got HTTP {response.status_code}; run the same command again to "
        f"resume, or {hint}"
    )
