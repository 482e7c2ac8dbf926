"""Finding, downloading and listing GGUF files, with a fake standing in for huggingface_hub's functions only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hub_server import HubState, hub_server

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
    """Stands in for huggingface_hub.scan_cache_dir (the local cache); downloads go to a real HTTP Hub."""

    def __init__(self) -> None:
        self.cached: list[Path] = []

    def scan_cache_dir(self) -> Any:
        files = [SimpleNamespace(file_name=p.name, file_path=p) for p in self.cached]
        return SimpleNamespace(repos=[SimpleNamespace(repo_id=REPO, revisions=[SimpleNamespace(files=files)])])


@pytest.fixture
def hub() -> FakeHub:
    return FakeHub()


@pytest.fixture
def remote(monkeypatch: pytest.MonkeyPatch) -> Iterator[HubState]:
    """A Hub on 127.0.0.1 serving the repositories (HF_ENDPOINT points at it)."""
    state = HubState({REPO: dict(FILES), "LocoreMind/LocoOperator-4B-GGUF": {"LocoOperator-4B.gguf": b"only one"}})
    with hub_server(state) as url:
        monkeypatch.setenv("HF_ENDPOINT", url)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        yield state


@pytest.fixture
def no_user_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty user data folder, so a developer's own downloads do not change the outcome."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    return tmp_path / "xdg-data" / "mcp-loco" / "models"


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


def test_pull_downloads_the_picked_file_into_the_models_folder(tmp_path: Path, remote: HubState) -> None:
    path = modelfiles.pull(REPO, "IQ4_XS", tmp_path / "models")
    assert path == tmp_path / "models" / "LocoOperator-4B-i1-IQ4_XS.gguf"
    assert path.read_bytes() == FILES[path.name]
    assert modelfiles.pull(REPO, "IQ4_XS", tmp_path / "models") == path  # present: no second download
    assert len(remote.served) == 1


def test_missing_repo_and_offline_errors_say_what_to_do(
    tmp_path: Path, hub: FakeHub, remote: HubState, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ModelNotFoundError, match=r"repository nobody/nothing was not found.*hf auth login"):
        modelfiles.pull("nobody/nothing", "Q4_K_M", tmp_path)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(
        ModelNotFoundError, match=r"cannot reach Hugging Face.*mcp-loco models pull.*--model PATH.*MCP_LOCO_MODEL"
    ):
        modelfiles.resolve(settings(tmp_path), hub=hub)
    with pytest.raises(ModelNotFoundError, match=r"model.download is off.*MCP_LOCO_MODEL"):
        modelfiles.resolve(settings(tmp_path, download=False), hub=hub)


def test_resolve_order_path_then_folder_then_cache_then_download(
    tmp_path: Path, hub: FakeHub, remote: HubState
) -> None:
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

    downloaded = modelfiles.locate(settings(tmp_path, quant="Q8_0"), hub=hub)  # in neither: downloaded on first use
    assert downloaded.path == tmp_path / "models" / "LocoOperator-4B-i1-Q8_0.gguf" and len(remote.served) == 1
    assert downloaded.rule.startswith("downloaded from")


def test_a_folder_of_other_quants_is_not_used_for_the_wrong_quant(tmp_path: Path, hub: FakeHub) -> None:
    other = tmp_path / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    other.parent.mkdir()
    other.write_bytes(b"small")
    with pytest.raises(ModelNotFoundError):
        modelfiles.resolve(settings(tmp_path, download=False), hub=hub)


def test_models_dir_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_user_models: Path) -> None:
    monkeypatch.chdir(tmp_path)
    default = modelfiles.checkout_models_dir() or no_user_models
    assert modelfiles.models_dir(ModelSettings()) == default
    (tmp_path / "models").mkdir()
    assert modelfiles.models_dir(ModelSettings()) == default  # never the working directory's models/
    assert modelfiles.models_dir(ModelSettings(models_dir="~/m")) == Path("~/m").expanduser()


def test_listing_shows_quant_size_and_quality(tmp_path: Path, hub: FakeHub, remote: HubState) -> None:
    path = modelfiles.pull(REPO, "i1-Q4_K_M", tmp_path / "models")
    listed = modelfiles.list_local(settings(tmp_path), hub=hub)
    assert [(m.path, m.quant) for m in listed] == [(path, "i1-Q4_K_M")]
    table = modelfiles.format_listing(listed)
    assert "i1-Q4_K_M" in table and "91.2%" in table and str(path) in table
    assert "models pull" in modelfiles.format_listing([])


@pytest.fixture
def patched_hub(hub: FakeHub, remote: HubState, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    """The fake put in place of the one huggingface_hub function the CLI path calls (the local cache)."""
    import huggingface_hub

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
    in_use = f"in use: {tmp_path / 'models' / 'LocoOperator-4B-i1-Q8_0.gguf'} (picked by model.models_dir"
    assert in_use in capsys.readouterr().out
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


# ---- never from the project ------------------------------------------------------------------------

PLANTED = "models/LocoOperator-4B-Q4_K_M.gguf"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A cloned repository that ships a model of its own choosing, and settings files it hopes are read."""
    root = tmp_path / "project"
    for rel in (PLANTED, "models/sub/LocoOperator-4B-i1-Q4_K_M.gguf", "LocoOperator-4B-Q4_K_M.gguf"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"GGUF written by the project")
    toml = '[model]\npath = "models/LocoOperator-4B-Q4_K_M.gguf"\n[http]\napi_key = "planted"\n[agent]\nmax_turns = 1\n'
    for rel in ("mcp-loco.toml", ".mcp-loco.toml", "configs/default.toml", ".config/mcp-loco/config.toml"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(toml)
    (root / ".env").write_text("MCP_LOCO_MODEL=models/LocoOperator-4B-Q4_K_M.gguf\nMCP_LOCO_AGENT_MAX_TURNS=1\n")
    return root


def test_a_model_shipped_by_the_working_directory_is_never_loaded(
    project: Path, hub: FakeHub, monkeypatch: pytest.MonkeyPatch, no_user_models: Path
) -> None:
    monkeypatch.chdir(project)
    for quant in ("Q4_K_M", "i1-Q4_K_M"):
        s = ModelSettings(repo=REPO, quant=quant, download=False)
        try:
            found = modelfiles.locate(s, hub=hub)
        except ModelNotFoundError:
            continue  # nothing else on this machine: refusing is right
        assert not str(found.path.resolve()).startswith(str(project.resolve())), found
    listed = modelfiles.list_local(ModelSettings(repo=REPO), hub=hub)
    assert all(not str(m.path.resolve()).startswith(str(project.resolve())) for m in listed)


def test_each_rule_says_why_its_file_was_picked(tmp_path: Path, hub: FakeHub, no_user_models: Path) -> None:
    explicit = tmp_path / "mine.gguf"
    explicit.write_bytes(b"x")
    assert modelfiles.locate(settings(tmp_path, path=str(explicit)), hub=hub).rule.startswith("model.path")
    folder = tmp_path / "folder" / "LocoOperator-4B-Q4_K_M.gguf"
    folder.parent.mkdir()
    folder.write_bytes(b"x")
    by_folder = modelfiles.locate(settings(tmp_path, path=str(folder.parent)), hub=hub)
    assert by_folder.path == folder and by_folder.rule.startswith("model.path, a folder")
    user = no_user_models / "LocoOperator-4B-Q4_K_M.gguf"
    user.parent.mkdir(parents=True)
    user.write_bytes(b"x")
    s = ModelSettings(repo=REPO)
    found = modelfiles.locate(s, hub=hub)
    checkout = modelfiles.checkout_models_dir()
    if checkout is None or not list(checkout.rglob("*.gguf")):  # a developer's checkout may hold its own
        assert found == modelfiles.Located(user, f"the user data folder {no_user_models}, quant Q4_K_M")
    cached = tmp_path / "hf" / "LocoOperator-4B-i1-Q8_0.gguf"
    cached.parent.mkdir()
    cached.write_bytes(b"x")
    hub.cached = [cached]
    assert modelfiles.locate(ModelSettings(repo=REPO, quant="i1-Q8_0"), hub=hub).rule.startswith(
        "the Hugging Face cache"
    )


def test_the_checkout_models_folder_is_found_from_the_package_not_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    checkout = modelfiles.checkout_models_dir()
    package_top = Path(modelfiles.__file__).resolve().parents[2]
    assert checkout is None or checkout == package_top / "models"


def test_settings_files_in_the_working_directory_are_not_read(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [n for n in __import__("os").environ if n.startswith("MCP_LOCO_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    clean = tmp_path / "clean"
    clean.mkdir()
    monkeypatch.chdir(clean)
    assert cli.main(["config"]) == 0
    expected = capsys.readouterr().out
    monkeypatch.chdir(project)
    assert cli.main(["config"]) == 0
    assert capsys.readouterr().out == expected  # the project's files changed nothing
