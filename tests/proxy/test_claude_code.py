"""The Claude Code CLI itself against the proxy: `claude -p ... --model haiku`, every model local, offline."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from proxy_helpers import (
    CLAUDE,
    MARKER,
    FakeUpstream,
    FileReader,
    claude_env,
    proxy_settings,
    run_claude,
    serve_app,
    upstream_message,
)

from mcp_loco.proxy import create_app

BIN = Path(sys.executable).parent / "mcp-loco"

pytestmark = pytest.mark.slow


@pytest.fixture
def claude() -> Path:
    if not CLAUDE.exists():
        pytest.fail("Claude Code CLI not installed: run scripts/setup --test (needs npm)")
    return CLAUDE


def test_claude_code_runs_the_models_tool_calls_itself(claude: Path, sample_repo: Path, tmp_path: Path) -> None:
    notes = sample_repo / "NOTES.md"
    notes.write_text(f"# notes\n\nThe release marker is {MARKER}.\n")
    model = FileReader(notes)
    app = create_app(proxy_settings(upstream="", local=["*"]), lambda: model)
    with serve_app(app) as url:
        done = run_claude(
            claude,
            "What is the release marker in NOTES.md?",
            claude_env(tmp_path / "home", url),
            sample_repo,
            "--allowedTools",
            "Read",
        )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"The marker is {MARKER}." in done.stdout
    # Claude Code read the file itself and sent its content back as the tool result.
    answered = [p for p in model.prompts if "<tool_response>" in p]
    assert answered and MARKER in answered[-1].rsplit("<tool_response>", 1)[-1]
    assert "You are a Claude agent, built on Anthropic's Claude Agent SDK." in model.prompts[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def proxy_process(*args: str) -> Iterator[tuple[str, dict[str, str]]]:
    """`mcp-loco proxy` as a process on a free port; yields its URL and, filled once it has stopped, its output."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_LOCO_")}
    proc = subprocess.Popen(
        [str(BIN), "proxy", "--port", str(port), *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    output: dict[str, str] = {}
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "proxy exited before listening"
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "proxy did not listen within 60 s"
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", output
    finally:
        proc.terminate()
        try:
            output["stdout"], output["stderr"] = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            output["stdout"], output["stderr"] = proc.communicate()


@pytest.mark.model
def test_claude_code_answers_through_the_proxy_on_the_real_model(
    claude: Path, small_model_path: Path, sample_repo: Path, tmp_path: Path, upstream: FakeUpstream
) -> None:
    # The seed's fallback catches a 135M model that rambles past its token cap (Claude Code retries those).
    upstream.body = upstream_message("fallback answer")
    flags = ["--model", str(small_model_path), "--local", "*", "--upstream", upstream.url, "--fallback-turns", "3"]
    flags += ["--set", "llama.n_ctx=4096", "--set", "model.max_tokens=48", "--set", "model.temperature=0"]
    flags += ["--set", "llama.n_threads=1", "--set", "llama.n_threads_batch=1"]
    with proxy_process(*flags) as (url, output):
        done = run_claude(
            claude, "What is this project? Answer in one sentence.", claude_env(tmp_path / "home", url), sample_repo
        )
    log = output["stderr"]
    assert done.returncode == 0, done.stdout + done.stderr + log[-3000:]
    assert done.stdout.strip(), done.stderr
    assert "proxy.local" in log and "model=claude-haiku" in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    assert output["stdout"] == ""
