"""The command line: explore, batch, install (with the real Claude Code CLI), doctor."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from server_helpers import BIN

from mcp_loco.batch import read_queries
from mcp_loco.errors import ConfigError
from mcp_loco.model.protocol import format_call

CLAUDE = Path(__file__).parent / "clients/node_modules/.bin/claude"


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may touch the real user's client configs."""
    home = tmp_path / "isolated-home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_LOCO_")}
    return {**env, **extra}


def mcp_loco(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN), *args], capture_output=True, text=True, env=env or clean_env(), timeout=timeout, check=False
    )


def test_explore_with_replay_prints_the_report_and_json(sample_repo: Path, tmp_path: Path) -> None:
    cfg = sample_repo / "src/app/config.py"
    replay = tmp_path / "turns.json"
    replay.write_text(json.dumps([format_call("Read", {"file_path": str(cfg)}), f"Loaded in {cfg}:4."]))
    done = mcp_loco("explore", str(sample_repo), "Where is the config loaded?", "--replay", str(replay))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"Loaded in {cfg}:4."
    assert "turn 1/10: Read src/app/config.py" in done.stderr and "1 citations (0 unverified)" in done.stderr
    done = mcp_loco("explore", str(sample_repo), "q", "--replay", str(replay), "--json", "-q")
    result = json.loads(done.stdout)
    assert result["citations"][0]["verified"] and result["files_examined"] == [str(cfg)]
    assert done.stderr == ""


def test_explore_errors_are_clear(sample_repo: Path, tmp_path: Path) -> None:
    done = mcp_loco("explore", str(sample_repo), "q", "--model", str(tmp_path / "none.gguf"))
    assert done.returncode == 2 and "none.gguf" in done.stderr and "Traceback" not in done.stderr
    done = mcp_loco("explore", "/", "q", "--replay", str(tmp_path / "x.json"))
    assert done.returncode == 2 and "error:" in done.stderr and "Traceback" not in done.stderr


def test_batch_answers_skips_existing_and_summarises(sample_repo: Path, tmp_path: Path) -> None:
    queries = tmp_path / "queries.txt"
    queries.write_text("q001\tWhere is the config loaded?\n# a comment\n\nq002\tWhat does main do?\nq003\tskipped\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "q003.md").write_text("answered before\n")
    replay = tmp_path / "turns.json"
    replay.write_text(json.dumps(["first answer", "second answer"]))
    done = mcp_loco(
        "batch", "--root", str(sample_repo), "--queries", str(queries), "--out", str(out), "--replay", str(replay)
    )
    assert done.returncode == 0, done.stderr
    assert "batch: 2 answered, 1 skipped (already answered), 0 failed" in done.stderr
    assert (out / "q001.md").read_text().startswith("# q001: Where is the config loaded?\n\nfirst answer")
    assert "second answer" in (out / "q002.md").read_text()
    assert (out / "q003.md").read_text() == "answered before\n"
    # A second run has nothing left to do and needs no model.
    done = mcp_loco(
        "batch", "--root", str(sample_repo), "--queries", str(queries), "--out", str(out), "--model", "/none"
    )
    assert done.returncode == 0 and "0 answered, 3 skipped" in done.stderr


@pytest.mark.parametrize(
    ("content", "needle"),
    [("q1 no tab\n", "expected id<TAB>query"), ("../x\tq\n", "must be letters"), ("a\tq\na\tq2\n", "appears twice")],
)
def test_bad_query_files(tmp_path: Path, content: str, needle: str) -> None:
    f = tmp_path / "q.txt"
    f.write_text(content)
    with pytest.raises(ConfigError, match=needle):
        read_queries(f)


def test_install_claude_code_print() -> None:
    done = mcp_loco("install", "claude-code", "--print", "--root", "/srv/code", "--", "--model", "/m/x.gguf")
    assert done.returncode == 0
    assert done.stdout.strip() == (
        f"claude mcp add --scope user loco -- {BIN} serve --root /srv/code --model /m/x.gguf"
    )


@pytest.mark.slow
def test_install_claude_code_registers_a_server_claude_can_reach(
    small_model_path: Path, sample_repo: Path, tmp_path: Path
) -> None:
    if not CLAUDE.exists():
        pytest.fail("Claude Code CLI not installed: run scripts/setup --test (needs npm)")
    home = tmp_path / "home"
    home.mkdir()
    env = clean_env(HOME=str(home), PATH=f"{CLAUDE.parent}:{os.environ['PATH']}")
    done = mcp_loco(
        "install", "claude-code", "--root", str(sample_repo), "--", "--model", str(small_model_path), env=env
    )
    assert done.returncode == 0, done.stderr
    listed = subprocess.run(
        [str(CLAUDE), "mcp", "list"], capture_output=True, text=True, env=env, cwd=sample_repo, timeout=120, check=False
    )
    # `claude mcp list` exits 0 even when a server fails its health check: read the text.
    assert "loco:" in listed.stdout and "✔ Connected" in listed.stdout, listed.stdout + listed.stderr
    config = json.loads((home / ".claude.json").read_text())
    assert config["mcpServers"]["loco"]["args"][:3] == ["serve", "--root", str(sample_repo)]


def test_install_claude_desktop_keeps_other_entries_and_a_backup(tmp_path: Path) -> None:
    cfg = tmp_path / "Claude/claude_desktop_config.json"
    cfg.parent.mkdir()
    original = {"mcpServers": {"other": {"command": "x", "args": []}}, "theme": "dark"}
    cfg.write_text(json.dumps(original))
    done = mcp_loco("install", "claude-desktop", "--config-path", str(cfg), "--root", str(tmp_path))
    assert done.returncode == 0, done.stderr
    data = json.loads(cfg.read_text())
    assert data["theme"] == "dark" and data["mcpServers"]["other"] == {"command": "x", "args": []}
    assert data["mcpServers"]["loco"] == {"command": str(BIN), "args": ["serve", "--root", str(tmp_path)], "env": {}}
    backups = list(cfg.parent.glob("claude_desktop_config.json.bak-*"))
    assert len(backups) == 1 and json.loads(backups[0].read_text()) == original
    # Running it again replaces our entry, still keeping the others.
    assert mcp_loco("install", "claude-desktop", "--config-path", str(cfg), "--name", "loco").returncode == 0
    data = json.loads(cfg.read_text())
    assert set(data["mcpServers"]) == {"other", "loco"}


def test_install_claude_desktop_refuses_a_broken_config(tmp_path: Path) -> None:
    cfg = tmp_path / "claude_desktop_config.json"
    cfg.write_text("{not json")
    done = mcp_loco("install", "claude-desktop", "--config-path", str(cfg))
    assert done.returncode == 2 and "not valid JSON" in done.stderr
    assert cfg.read_text() == "{not json"


def test_install_claude_desktop_creates_a_new_config(tmp_path: Path) -> None:
    cfg = tmp_path / "new/claude_desktop_config.json"
    assert mcp_loco("install", "claude-desktop", "--config-path", str(cfg), "--root", str(tmp_path)).returncode == 0
    assert json.loads(cfg.read_text())["mcpServers"]["loco"]["command"] == str(BIN)


@pytest.mark.model
def test_doctor_passes_with_the_small_model(small_model_path: Path) -> None:
    done = mcp_loco("doctor", "--model", str(small_model_path), "--set", "llama.n_ctx=2048", timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    for check in ("ripgrep: ok", "llama.cpp library: ok", "model file: ok", "load + decode one token: ok"):
        assert check in done.stdout
    assert "decoded 1 token" in done.stdout


@pytest.mark.model
@pytest.mark.slow
def test_doctor_says_which_model_file_and_why_never_the_projects(small_model_path: Path, tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "models").mkdir(parents=True)
    (project / "models/LocoOperator-4B-Q4_K_M.gguf").write_bytes(b"GGUF written by the project")
    mine = tmp_path / "my-models"
    mine.mkdir()
    (mine / "LocoOperator-4B-Q4_K_M.gguf").symlink_to(small_model_path)
    env = clean_env(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), XDG_DATA_HOME=str(tmp_path / "data"))
    args = [str(BIN), "doctor", "--set", "llama.n_ctx=2048"]
    run = {"capture_output": True, "text": True, "env": env, "cwd": project, "timeout": 300, "check": False}
    done = subprocess.run([*args, "--set", f"model.models_dir={mine}"], **run)  # type: ignore[call-overload]
    line = next(x for x in done.stdout.splitlines() if x.startswith("model file:"))
    assert (
        line.startswith(f"model file: ok - {mine / 'LocoOperator-4B-Q4_K_M.gguf'} (")
        and "picked by model.models_dir" in line
    )
    done = subprocess.run(args, **run)  # type: ignore[call-overload]
    line = next(x for x in done.stdout.splitlines() if x.startswith("model file:"))
    assert str(project) not in line, line  # the project's models/ is never a candidate


def test_doctor_says_what_to_fix(tmp_path: Path) -> None:
    env = clean_env(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    done = mcp_loco("doctor", "--model", str(tmp_path / "missing.gguf"), env=env, timeout=300)
    assert done.returncode == 1
    assert "model file: FAILED" in done.stdout and "missing.gguf" in done.stdout
    assert "ripgrep: ok" in done.stdout and "check(s) failed" in done.stdout
    # No download is attempted and no traceback shown: the decode check says why it did not run.
    assert "load + decode one token: FAILED - skipped: no model file to load" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr and 'File "' not in done.stdout


def test_doctor_reports_a_model_that_fails_to_load_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    done = mcp_loco("doctor", "--model", str(bad), timeout=300)
    assert done.returncode == 1
    assert "model file: ok" in done.stdout
    line = next(x for x in done.stdout.splitlines() if x.startswith("load + decode one token:"))
    assert line.startswith("load + decode one token: FAILED - ") and str(bad) in line, done.stdout
    assert 'File "' not in line
