"""Settings: precedence, validation errors that name the key, and the documented defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcp_loco.cli import main
from mcp_loco.config import Settings, configs_dir, load_settings, render_toml
from mcp_loco.errors import ConfigError


def test_default_toml_documents_every_key_with_its_default() -> None:
    shipped = (configs_dir() / "default.toml").read_text(encoding="utf-8")
    assert shipped == render_toml(), "regenerate: mcp-loco config --defaults > configs/default.toml"
    for section, cls in Settings.model_fields.items():
        assert f"[{section}]" in shipped
        sub = cls.annotation
        assert sub is not None
        for key, field in sub.model_fields.items():  # type: ignore[union-attr]
            assert field.description, f"{section}.{key} has no docstring"
            assert f"\n{key} = " in shipped


def test_default_toml_loads_back_to_the_defaults() -> None:
    assert load_settings(configs_dir() / "default.toml", environ={}) == Settings()


def test_precedence_cli_over_env_over_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[agent]\nmax_turns = 3\ndeadline_s = 30\n[llama]\nn_ctx = 4096\n")
    env = {"MCP_LOCO_AGENT_MAX_TURNS": "5", "MCP_LOCO_LLAMA_N_THREADS": "2"}
    s = load_settings(cfg, {"agent": {"max_turns": 7}}, environ=env)
    assert (s.agent.max_turns, s.agent.deadline_s, s.llama.n_ctx, s.llama.n_threads) == (7, 30, 4096, 2)
    assert load_settings(cfg, environ=env).agent.max_turns == 5
    assert load_settings(cfg, environ={}).agent.max_turns == 3


def test_env_model_path_and_list_values() -> None:
    s = load_settings(environ={"MCP_LOCO_MODEL": "/m/x.gguf", "MCP_LOCO_SERVER_ROOTS": "/a, /b"})
    assert s.model.path == "/m/x.gguf"
    assert s.server.roots == ["/a", "/b"]
    s = load_settings(environ={"MCP_LOCO_HTTP_ENDPOINTS": '["http://h:1/v1"]'})
    assert s.http.endpoints == ["http://h:1/v1"]


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"environ": {"MCP_LOCO_AGENT_MAX_TURNS": "many"}}, "agent.max_turns"),
        ({"environ": {"MCP_LOCO_NOPE": "1"}}, "MCP_LOCO_NOPE"),
        ({"cli": {"agent": {"max_turns": 0}}}, "agent.max_turns"),
        ({"cli": {"agent": {"bogus": 1}}}, "agent.bogus"),
        ({"cli": {"server": {"transport": "carrier-pigeon"}}}, "server.transport"),
    ],
)
def test_bad_settings_name_the_key(kwargs: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_settings(**{"environ": {}, **kwargs})


def test_bad_config_file_names_the_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[tools]\nread_max_lines = -4\n")
    with pytest.raises(ConfigError, match=r"tools\.read_max_lines.*bad\.toml"):
        load_settings(bad, environ={})
    broken = tmp_path / "broken.toml"
    broken.write_text("[agent\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(broken, environ={})
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.toml", environ={})


def test_cli_set_and_config_command(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in __import__("os").environ if n.startswith("MCP_LOCO_")]:
        monkeypatch.delenv(name)
    assert main(["config", "--set", "agent.max_turns=4", "--set", 'tools.deny=["*.secret"]']) == 0
    out = capsys.readouterr().out
    assert "max_turns = 4" in out and '"*.secret"' in out
    assert main(["config", "--set", "agent.nope=1"]) == 2
    assert "agent.nope" in capsys.readouterr().err
