"""Finding, downloading and listing GGUF files, with a fake standing in for huggingface_hub's functions only."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from huggingface_hub import errors as hf_errors

from mcp_loco import cli
from mcp_loco.config import ModelSettings, Settings
from mcp_loco.errors import ConfigError, ModelNotFoundError
from mcp_loco.model import modelfiles

REPO = "SimplySara/LocoOperator-4B-i1-GGUF"
FILES = {
    "README.md": b"readme",
    "LocoOperator-4B-Q4_K_M.gguf": b"static q4km " * 100,
    "LocoOperator-4B-i1-Q4_K_M.gguf": b"imatrix q4km " * 100,
    "LocoOperator-4B-i1-Q8_0.gguf": b"q8 " * 100,
    "LocoOperator-4B-i1-IQ4_XS.gguf": b"iq4xs " * 100,
}


class FakeHub:
    """Stands in for huggingface_hub.list_repo_files, hf_hub_download and scan_cache_dir."""

    def __init__(
        self, repos: dict[str, dict[str, bytes]], online: bool = True, interrupt_at: int | None = None
    ) -> None:
        self.repos, self.online, self.interrupt_at = repos, online, interrupt_at
        self.cached: list[Path] = []
        self.resumed_from: list[int] = []

    def _check(self, repo_id: str) -> dict[str, bytes]:
        if not self.online:
            raise httpx.ConnectError("[Errno -3] Temporary failure in name resolution")
        if repo_id not in self.repos:
            url = f"https://huggingface.co/api/models/{repo_id}"
            raise hf_errors.RepositoryNotFoundError(
                "404 Repository Not Found", response=httpx.Response(404, request=httpx.Request("GET", url))
            )
        return self.repos[repo_id]

    def list_repo_files(self, repo_id: str) -> list[str]:
        return list(self._check(repo_id))

    def hf_hub_download(self, *, repo_id: str, filename: str, local_dir: str) -> str:
        # Like huggingface_hub: bytes go to an .incomplete file under local_dir/.cache, which a later call resumes.
        data = self._check(repo_id)[filename]
        partial = Path(local_dir) / ".cache" / "huggingface" / "download" / f"{filename}.incomplete"
        partial.parent.mkdir(parents=True, exist_ok=True)
        have = partial.read_bytes() if partial.exists() else b""
        self.resumed_from.append(len(have))
        if self.interrupt_at is not None and len(have) < self.interrupt_at:
            partial.write_bytes(data[: self.interrupt_at])
            raise httpx.ReadTimeout("connection lost")
        partial.write_bytes(have + data[len(have) :])
        target = Path(local_dir) / filename
        partial.replace(target)
        return str(target)

    def scan_cache_dir(self) -> Any:
        files = [SimpleNamespace(file_name=p.name, file_path=p) for p in self.cached]
        return SimpleNamespace(repos=[SimpleNamespace(repo_id=REPO, revisions=[SimpleNamespace(files=files)])])


@pytest.fixture
def hub() -> FakeHub:
    return FakeHub({REPO: dict(FILES), "LocoreMind/LocoOperator-4B-GGUF": {"LocoOperator-4B.gguf": b"only one"}})


def settings(tmp_path: Path, **kw: Any) -> ModelSettings:
    return ModelSettings(repo=REPO, models_dir=str(tmp_path / "models"), **kw)


def test_quant_labels_and_quality_figures() -> None:
    assert modelfiles.quant_label("LocoOperator-4B-i1-Q4_K_M.gguf") == "i1-Q4_K_M"
    assert modelfiles.quant_label("LocoOperator-4B-Q8_0.gguf") == "Q8_0"
    assert modelfiles.quant_label("model.q4_k_m.gguf") == "Q4_K_M"
    assert modelfiles.quant_label("LocoOperator-4B-BF16-00001-of-00002.gguf") == "BF16"
    assert modelfiles.quant_label("LocoOperator-4B.gguf") is None
    q = modelfiles.quality("LocoOperator-4B-i1-Q4_K_M.gguf")
    assert q is not None and (q.size_gb, q.top_p_match) == (2.326, 91.233)


def test_quant_picking_is_case_insensitive_and_prefers_the_exact_label() -> None:
    names = list(FILES)
    assert modelfiles.pick(names, "q4_k_m", REPO) == "LocoOperator-4B-Q4_K_M.gguf"
    assert modelfiles.pick(names, "i1-Q4_K_M", REPO) == "LocoOperator-4B-i1-Q4_K_M.gguf"
    assert modelfiles.pick(names, "Q8_0", REPO) == "LocoOperator-4B-i1-Q8_0.gguf"  # only an i1 file exists
    assert modelfiles.pick(["LocoOperator-4B.gguf"], "Q4_K_M", "x") == "LocoOperator-4B.gguf"  # sole, unlabelled


def test_ambiguous_or_missing_quant_lists_the_files() -> None:
    with pytest.raises(ModelNotFoundError, match=r"matches several files .*a-Q6_K.gguf, b-Q6_K.gguf.*--file"):
        modelfiles.pick(["a-Q6_K.gguf", "b-Q6_K.gguf"], "Q6_K", "repo")
    with pytest.raises(ModelNotFoundError, match=r"no file for quant 'Q2_K' .*LocoOperator-4B-i1-IQ4_XS.gguf"):
        modelfiles.pick(list(FILES), "Q2_K", REPO)
    with pytest.raises(ModelNotFoundError, match=r"no .gguf files"):
        modelfiles.pick(["README.md"], "Q4_K_M", REPO)


def test_pull_downloads_the_picked_file_into_the_models_folder(tmp_path: Path, hub: FakeHub) -> None:
    path = modelfiles.pull(REPO, "IQ4_XS", tmp_path / "models", hub=hub)
    assert path == tmp_path / "models" / "LocoOperator-4B-i1-IQ4_XS.gguf"
    assert path.read_bytes() == FILES[path.name]
    assert modelfiles.pull(REPO, "IQ4_XS", tmp_path / "models", hub=hub) == path  # present: no second download
    assert hub.resumed_from == [0]


def test_an_interrupted_pull_resumes_from_the_partial_file(tmp_path: Path, hub: FakeHub) -> None:
    hub.interrupt_at = 500
    with pytest.raises(ModelNotFoundError, match="run the same command again to resume"):
        modelfiles.pull(REPO, "Q4_K_M", tmp_path / "models", hub=hub)
    assert not (tmp_path / "models" / "LocoOperator-4B-Q4_K_M.gguf").exists()
    path = modelfiles.pull(REPO, "Q4_K_M", tmp_path / "models", hub=hub)
    assert hub.resumed_from == [0, 500]
    assert path.read_bytes() == FILES["LocoOperator-4B-Q4_K_M.gguf"]


def test_missing_repo_and_offline_errors_say_what_to_do(tmp_path: Path, hub: FakeHub) -> None:
    with pytest.raises(ModelNotFoundError, match=r"repository nobody/nothing was not found.*hf auth login"):
        modelfiles.pull("nobody/nothing", "Q4_K_M", tmp_path, hub=hub)
    hub.online = False
    with pytest.raises(
        ModelNotFoundError, match=r"cannot reach Hugging Face.*mcp-loco models pull.*--model PATH.*MCP_LOCO_MODEL"
    ):
        modelfiles.resolve(settings(tmp_path), hub=hub)
    with pytest.raises(ModelNotFoundError, match=r"model.download is off.*MCP_LOCO_MODEL"):
        modelfiles.resolve(settings(tmp_path, download=False), hub=hub)


def test_resolve_order_path_then_folder_then_cache_then_download(tmp_path: Path, hub: FakeHub) -> None:
    explicit = tmp_path / "mine.gguf"
    explicit.write_bytes(b"x")
    assert modelfiles.resolve(settings(tmp_path, path=str(explicit)), hub=hub) == explicit
    with pytest.raises(ModelNotFoundError, match=r"model file .*nope.gguf does not exist \(from --model"):
        modelfiles.resolve(settings(tmp_path, path=str(tmp_path / "nope.gguf")), hub=hub)

    cached = tmp_path / "hf" / "LocoOperator-4B-Q4_K_M.gguf"
    cached.parent.mkdir()
    cached.write_bytes(b"cached")
    hub.cached = [cached]
    assert modelfiles.resolve(settings(tmp_path), hub=hub) == cached

    local = tmp_path / "models" / "LocoOperator-4B-Q4_K_M.gguf"
    local.parent.mkdir()
    local.write_bytes(b"local")
    assert modelfiles.resolve(settings(tmp_path), hub=hub) == local  # the models folder wins over the cache

    downloaded = modelfiles.resolve(settings(tmp_path, quant="Q8_0"), hub=hub)  # in neither: downloaded on first use
    assert downloaded == tmp_path / "models" / "LocoOperator-4B-i1-Q8_0.gguf" and hub.resumed_from == [0]


def test_a_folder_of_other_quants_is_not_used_for_the_wrong_quant(tmp_path: Path, hub: FakeHub) -> None:
    other = tmp_path / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    other.parent.mkdir()
    other.write_bytes(b"small")
    hub.online = False
    with pytest.raises(ModelNotFoundError):
        modelfiles.resolve(settings(tmp_path), hub=hub)


def test_models_dir_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert modelfiles.models_dir(ModelSettings()) == tmp_path / "data" / "mcp-loco" / "models"
    (tmp_path / "models").mkdir()
    assert modelfiles.models_dir(ModelSettings()) == tmp_path / "models"
    assert modelfiles.models_dir(ModelSettings(models_dir="~/m")) == Path("~/m").expanduser()


def test_listing_shows_quant_size_and_quality(tmp_path: Path, hub: FakeHub) -> None:
    path = modelfiles.pull(REPO, "i1-Q4_K_M", tmp_path / "models", hub=hub)
    listed = modelfiles.list_local(settings(tmp_path), hub=hub)
    assert [(m.path, m.quant) for m in listed] == [(path, "i1-Q4_K_M")]
    table = modelfiles.format_listing(listed)
    assert "i1-Q4_K_M" in table and "91.2%" in table and str(path) in table
    assert "models pull" in modelfiles.format_listing([])


@pytest.fixture
def patched_hub(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    """The fake put in place of exactly the three huggingface_hub functions the CLI path calls."""
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "list_repo_files", hub.list_repo_files)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hub.hf_hub_download)
    monkeypatch.setattr(huggingface_hub, "scan_cache_dir", hub.scan_cache_dir)
    return hub


@pytest.mark.usefixtures("restore_logging")
def test_cli_models_pull_and_list(tmp_path: Path, patched_hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--set", f"model.models_dir={tmp_path / 'models'}", "--set", f"model.repo={REPO}"]
    assert cli.main(["models", "pull", "--quant", "i1-Q8_0", *common]) == 0
    out = capsys.readouterr().out.strip()
    assert out == str(tmp_path / "models" / "LocoOperator-4B-i1-Q8_0.gguf")
    assert cli.main(["models", "list", *common]) == 0
    listing = capsys.readouterr().out
    assert "i1-Q8_0" in listing and "97.5%" in listing
    assert "in use: none yet" in listing  # model.quant is still Q4_K_M, which is not here
    assert cli.main(["models", "list", *common, "--set", "model.quant=i1-Q8_0"]) == 0
    assert f"in use: {tmp_path / 'models' / 'LocoOperator-4B-i1-Q8_0.gguf'}" in capsys.readouterr().out
    assert cli.main(["models", "pull", "--repo", "nobody/nothing", *common]) == 2
    assert "was not found" in capsys.readouterr().err


def test_load_backend_wires_each_backend(tmp_path: Path, patched_hub: FakeHub) -> None:
    from mcp_loco.model.backends import load_backend
    from mcp_loco.model.backends.openai_compat import OpenAICompatModel
    from mcp_loco.model.backends.replay import ReplayModel

    s = Settings()
    s.model.backend = "replay"
    with pytest.raises(ConfigError, match=r"replay.file is empty"):
        load_backend(s)
    turns = tmp_path / "turns.json"
    turns.write_text('["hello"]')
    s.replay.file = str(turns)
    replay = load_backend(s)
    assert isinstance(replay, ReplayModel) and replay.n_ctx == s.llama.n_ctx
    s.model.backend = "http"
    s.http.endpoints = ["http://127.0.0.1:9/v1"]
    http = load_backend(s)
    assert isinstance(http, OpenAICompatModel)
    http.close()
    s.model.backend = "llama"
    s.model.models_dir = str(tmp_path / "empty")
    s.model.download = False
    with pytest.raises(ModelNotFoundError, match="models pull"):
        load_backend(s)
