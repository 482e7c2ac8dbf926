"""`models pull` over real HTTP: a local Hub (tree API, CDN redirect, Range) that drops the connection midway."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hub_server import HubState, hub_server
from server_helpers import BIN

from mcp_loco.errors import ModelError, ModelNotFoundError
from mcp_loco.model import download, modelfiles

REPO = "SimplySara/LocoOperator-4B-i1-GGUF"
NAME = "LocoOperator-4B-i1-Q4_K_M.gguf"
DATA = random.Random(7).randbytes(600_000)
SHA = hashlib.sha256(DATA).hexdigest()
FILES = {
    "README.md": b"readme\n",
    "LocoOperator-4B-Q4_K_M.gguf": b"static q4km " * 100,
    NAME: DATA,
    "LocoOperator-4B-i1-Q8_0.gguf": b"q8 " * 100,
    "LocoOperator-4B-i1-IQ4_XS.gguf": b"iq4xs " * 100,
}
HALF = len(DATA) // 2


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[HubState]:
    state = HubState({REPO: dict(FILES)})
    with hub_server(state) as url:
        monkeypatch.setenv("HF_ENDPOINT", url)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv("HF_TOKEN", "hf_test_token")
        yield state


def interrupted(hub: HubState, dest: Path, at: int = HALF) -> Path:
    """Run a pull the server cuts off after `at` bytes; the partial file it leaves."""
    hub.drop_after = at
    with pytest.raises(
        ModelNotFoundError, match=r"stopped at .* bytes.*kept in .*run the same command again to resume"
    ):
        modelfiles.pull(REPO, "i1-Q4_K_M", dest)
    partial = dest / f"{NAME}.partial"
    assert partial.is_file() and not (dest / NAME).exists()
    return partial


def test_an_interrupted_pull_asks_only_for_the_rest(tmp_path: Path, hub: HubState) -> None:
    partial = interrupted(hub, tmp_path)
    have = partial.stat().st_size
    assert 0 < have < len(DATA)
    path = modelfiles.pull(REPO, "i1-Q4_K_M", tmp_path)
    assert path == tmp_path / NAME and hashlib.sha256(path.read_bytes()).hexdigest() == SHA
    first, second = hub.served
    assert first.range is None and first.sent == HALF
    assert second.range == f"bytes={have}-" and second.status == 206
    assert second.sent == len(DATA) - have  # only the rest crossed the wire
    assert not partial.exists()
    assert modelfiles.pull(REPO, "i1-Q4_K_M", tmp_path) == path and len(hub.served) == 2  # present: no new request


def test_a_corrupted_partial_file_is_detected_removed_and_fetched_again(tmp_path: Path, hub: HubState) -> None:
    partial = interrupted(hub, tmp_path)
    have = partial.stat().st_size
    with partial.open("r+b") as f:  # one flipped byte in what was already downloaded
        f.seek(have // 3)
        byte = f.read(1)
        f.seek(have // 3)
        f.write(bytes([byte[0] ^ 0xFF]))
    path = modelfiles.pull(REPO, "i1-Q4_K_M", tmp_path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHA
    assert [s.range for s in hub.served] == [None, f"bytes={have}-", None]  # resumed, failed the check, refetched
    assert not partial.exists()


def test_a_file_that_never_matches_its_published_hash_is_never_used(tmp_path: Path, hub: HubState) -> None:
    hub.published[NAME] = "0" * 64
    with pytest.raises(ModelError, match=r"did not match its published size and sha256 twice; the file was removed"):
        modelfiles.pull(REPO, "i1-Q4_K_M", tmp_path)
    assert not (tmp_path / NAME).exists() and not (tmp_path / f"{NAME}.partial").exists()
    assert len(hub.served) == 2


def test_a_partial_file_longer_than_the_published_size_starts_over(tmp_path: Path, hub: HubState) -> None:
    (tmp_path / f"{NAME}.partial").write_bytes(DATA + b"junk")
    path = modelfiles.pull(REPO, "i1-Q4_K_M", tmp_path)
    assert path.read_bytes() == DATA and [s.range for s in hub.served] == [None]


def test_a_server_that_ignores_the_range_sends_it_all_and_the_file_is_still_right(
    tmp_path: Path, hub: HubState
) -> None:
    interrupted(hub, tmp_path)
    hub.ignore_range = True
    path = modelfiles.pull(REPO, "i1-Q4_K_M", tmp_path)
    assert path.read_bytes() == DATA and hub.served[-1].status == 200


@pytest.mark.parametrize("kind", ["symlink", "directory", "fifo"])
def test_a_partial_file_the_project_does_not_own_is_refused(tmp_path: Path, hub: HubState, kind: str) -> None:
    partial = tmp_path / f"{NAME}.partial"
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    if kind == "symlink":
        partial.symlink_to(victim)
    elif kind == "directory":
        partial.mkdir()
    else:
        os.mkfifo(partial)
    with pytest.raises(ModelError, match=r"(is a link|not a regular file).*remove it"):
        modelfiles.pull(REPO, "i1-Q4_K_M", tmp_path)
    assert victim.read_text() == "keep me\n" and not (tmp_path / NAME).exists()


def test_a_second_download_of_the_same_file_waits_its_turn(tmp_path: Path, hub: HubState) -> None:
    import fcntl

    partial = interrupted(hub, tmp_path)
    have = partial.stat().st_size
    with partial.open("rb") as other:  # another process is downloading it
        fcntl.flock(other.fileno(), fcntl.LOCK_EX)
        with pytest.raises(ModelError, match=r"another download is writing .*\.partial"):
            modelfiles.pull(REPO, "i1-Q4_K_M", tmp_path)
        assert partial.stat().st_size == have
    assert modelfiles.pull(REPO, "i1-Q4_K_M", tmp_path).read_bytes() == DATA


def test_a_full_disk_keeps_the_partial_file_and_says_so(
    tmp_path: Path, hub: HubState, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = 0

    def write(fd: int, data: memoryview) -> int:  # a disk with room for 100,000 bytes
        nonlocal written
        if written >= 100_000:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = os.write(fd, data[: 100_000 - written])
        written += n
        return n

    monkeypatch.setattr(download, "_write", write)
    with pytest.raises(ModelError, match=r"the disk is full: .* kept in .*\.partial; free some space and run"):
        modelfiles.pull(REPO, "i1-Q4_K_M", tmp_path)
    partial = tmp_path / f"{NAME}.partial"
    assert partial.stat().st_size == 100_000 and partial.read_bytes() == DATA[:100_000]
    monkeypatch.setattr(download, "_write", os.write)  # space again
    path = modelfiles.pull(REPO, "i1-Q4_K_M", tmp_path)
    assert path.read_bytes() == DATA and hub.served[-1].range == "bytes=100000-"


def test_the_progress_bar_starts_at_the_resumed_position(
    tmp_path: Path, hub: HubState, capsys: pytest.CaptureFixture[str]
) -> None:
    interrupted(hub, tmp_path)
    have = (tmp_path / f"{NAME}.partial").stat().st_size
    capsys.readouterr()
    modelfiles.pull(REPO, "i1-Q4_K_M", tmp_path)
    frames = [f for f in capsys.readouterr().err.split("\r") if "%" in f]
    assert frames, "no progress bar on stderr"
    assert f"{100 * have // len(DATA)}%" in frames[0], frames[0]  # the first frame is the resumed position


def test_the_file_list_is_read_across_pages_and_picked_by_quant(tmp_path: Path, hub: HubState) -> None:
    with download.client() as http:
        files = download.list_files(REPO, http, "hint")
    assert {f.name for f in files} == set(FILES)  # every page of the tree, directories left out
    by_name = {f.name: f for f in files}
    assert by_name[NAME].sha256 == SHA and by_name[NAME].size == len(DATA)
    assert by_name["README.md"].sha256 is None and by_name["README.md"].git_oid
    readme = modelfiles.pull(REPO, "x", tmp_path, filename="README.md")  # a git (non-LFS) file, checked by its blob id
    assert readme.read_bytes() == FILES["README.md"]
    assert modelfiles.pull(REPO, "IQ4_XS", tmp_path).name == "LocoOperator-4B-i1-IQ4_XS.gguf"


def test_unknown_repo_missing_file_offline_and_unreachable_errors_say_what_to_do(
    tmp_path: Path, hub: HubState, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ModelNotFoundError, match=r"repository nobody/nothing was not found.*hf auth login"):
        modelfiles.pull("nobody/nothing", "Q4_K_M", tmp_path)
    with pytest.raises(ModelNotFoundError, match=r"has no file 'nope.gguf'"):
        modelfiles.pull(REPO, "Q4_K_M", tmp_path, filename="nope.gguf")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match=r"HF_HUB_OFFLINE is set.*--model PATH"):
        modelfiles.pull(REPO, "Q4_K_M", tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(ModelNotFoundError, match=r"cannot reach Hugging Face \(http://127.0.0.1:9\).*MCP_LOCO_MODEL"):
        modelfiles.pull(REPO, "Q4_K_M", tmp_path)


def test_models_pull_command_resumes_over_http(tmp_path: Path, hub: HubState) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_LOCO_")}
    args = [str(BIN), "models", "pull", "--quant", "i1-Q4_K_M", "--set", f"model.models_dir={tmp_path / 'm'}"]
    hub.drop_after = HALF
    first = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == 2 and first.stdout == ""
    assert "run the same command again to resume" in first.stderr and "Traceback" not in first.stderr
    have = (tmp_path / "m" / f"{NAME}.partial").stat().st_size
    second = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == str(tmp_path / "m" / NAME)
    assert hub.served[-1].range == f"bytes={have}-" and hub.served[-1].sent == len(DATA) - have
    assert hashlib.sha256((tmp_path / "m" / NAME).read_bytes()).hexdigest() == SHA
