"""The real CLI clients from npm, installed with `mcp-loco install CLIENT`, calling the tool offline.

Each runs in an isolated HOME, headless, in a sample project; `install` writes its config (beside the model
provider settings already there) pointing at `mcp-loco serve --replay` (a scripted exploration); the client's
own model is a scripted OpenAI/Gemini-compatible server on 127.0.0.1 (tests/openai_stub.py) that asks for the
tool and then answers. The stub keeps what the client sent back: the tool result its model reads.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from openai_stub import Stub, serving
from server_helpers import BIN
from trees import write_tree

from mcp_loco.explore.payload import BOUND_EXTRA, BOUND_RATIO, bound
from mcp_loco.model.protocol import format_call

pytestmark = pytest.mark.slow

NODE_BIN = Path(__file__).parents[1] / "clients/node_modules/.bin"
QUESTION = "Where is the configuration loaded, and who calls it?"
PROJECT = {
    "README.md": "# shop\n\nA small shop backend.\n",
    "src/shop/__init__.py": "",
    "src/shop/config.py": (
        "import tomllib\n\n\n"
        "def load_config(path):\n"
        '    """Load the TOML config file."""\n'
        "    with open(path, 'rb') as f:\n"
        "        return tomllib.load(f)\n"
    ),
    "src/shop/main.py": (
        "from shop.config import load_config\n\n\n"
        "def main():\n"
        "    cfg = load_config('shop.toml')\n"
        "    print(cfg['name'])\n"
    ),
}


def scripted_report(repo: Path) -> str:
    """A report of about 2,300 characters (with pytest's tmp paths) whose citations hold, as the local model writes."""
    cfg, main = repo / "src/shop/config.py", repo / "src/shop/main.py"
    lines = [
        f"The configuration is loaded by `load_config` in {cfg}:4, which opens the file in binary mode "
        "and parses it with `tomllib.load` (line 7), returning a plain dict.",
        f"Its only caller is `main` in {main}:4; at {main}:5 it passes the relative path 'shop.toml', "
        "so the file is resolved against the working directory the process starts in.",
        "",
        "How it fits together:",
    ]
    lines += [
        f"- step {i}: the value read at {cfg}:7 flows back to {main}:5 and is indexed by key at {main}:6; "
        "no caching, no environment overrides and no defaults are applied on the way."
        for i in range(1, 5)
    ]
    lines.append("Nothing else in the tree reads configuration files.")
    return "\n".join(lines)


@dataclass(frozen=True)
class ClientRun:
    """How to run one client headless against the stub, and what it needs before `install`."""

    bin: str
    files: Callable[[str], dict[str, str]]
    """Config files (relative to HOME) written before `install`: the model provider, pointed at the stub."""
    env: Callable[[str], dict[str, str]]
    argv: list[str]


CLIENTS = {
    "codex": ClientRun(
        "codex",
        lambda url: {
            ".codex/config.toml": (
                "# the user's own settings, kept by install\n"
                'model = "stub-model"\nmodel_provider = "stub"\n\n'
                "[model_providers.stub]\n"
                f'name = "stub"\nbase_url = "{url}/v1"\nenv_key = "STUB_API_KEY"\n'
                'wire_api = "responses"\nsupports_websockets = false\n'
            )
        },
        lambda url: {"STUB_API_KEY": "stub"},
        ["exec", "--skip-git-repo-check", QUESTION],
    ),
    "gemini": ClientRun(
        "gemini",
        lambda url: {".gemini/settings.json": json.dumps({"security": {"auth": {"selectedType": "gemini-api-key"}}})},
        lambda url: {"GEMINI_API_KEY": "stub", "GOOGLE_GEMINI_BASE_URL": url},
        ["-p", QUESTION, "--skip-trust"],
    ),
    "qwen": ClientRun(
        "qwen",
        lambda url: {".qwen/settings.json": json.dumps({"security": {"auth": {"selectedType": "openai"}}})},
        lambda url: {"OPENAI_API_KEY": "stub", "OPENAI_BASE_URL": f"{url}/v1", "OPENAI_MODEL": "stub-model"},
        ["-p", QUESTION],
    ),
    "opencode": ClientRun(
        "opencode",
        lambda url: {
            ".config/opencode/opencode.json": json.dumps(
                {
                    "autoupdate": False,
                    "model": "stub/stub-model",
                    "provider": {
                        "stub": {
                            "npm": "@ai-sdk/openai-compatible",
                            "name": "stub",
                            "api": f"{url}/v1",
                            "options": {"baseURL": f"{url}/v1", "apiKey": "stub"},
                            "models": {"stub-model": {"name": "stub", "tool_call": True}},
                        }
                    },
                }
            )
        },
        lambda url: {
            # Offline: no plugin install, no model list, no language servers; npm points nowhere.
            "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1",
            "OPENCODE_DISABLE_MODELS_FETCH": "1",
            "OPENCODE_DISABLE_AUTOUPDATE": "1",
            "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
            "OPENCODE_DISABLE_SHARE": "1",
            "npm_config_registry": "http://127.0.0.1:9/",
        },
        ["run", QUESTION],
    ),
    "copilot": ClientRun(
        "copilot",
        lambda url: {},
        lambda url: {
            "COPILOT_PROVIDER_BASE_URL": f"{url}/v1",
            "COPILOT_PROVIDER_API_KEY": "stub",
            "COPILOT_MODEL": "stub-model",
            "COPILOT_OFFLINE": "true",
        },
        ["-p", QUESTION, "--allow-tool", "loco"],
    ),
}


@dataclass
class Outcome:
    """One client's run: its exit, its output, what reached its model, the report the server wrote."""

    client: str
    returncode: int
    output: str
    stub: Stub
    report: str
    seconds: float


def run_client(client: str, base: Path) -> Outcome:
    spec = CLIENTS[client]
    home, repo = base / "home", write_tree(base / "shop", PROJECT)
    home.mkdir()
    replay = base / "turns.json"
    report_text = scripted_report(repo)
    replay.write_text(json.dumps([format_call("Read", {"file_path": str(repo / "src/shop/config.py")}), report_text]))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MCP_LOCO_", "OPENAI_", "GEMINI_", "COPILOT_"))}
    env |= {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "PWD": str(repo), "NO_COLOR": "1"}
    # The report as the server returns it (citations checked): what the client must pass on uncut.
    done = subprocess.run(
        [str(BIN), "explore", str(repo), QUESTION, "--replay", str(replay), "--json", "-q"],
        capture_output=True, text=True, env=env, timeout=60, check=True,
    )  # fmt: skip
    report = json.loads(done.stdout)["report"]
    stub = Stub("explore_codebase", {"path": str(repo), "question": QUESTION})
    with serving(stub):
        for rel, text in spec.files(stub.url).items():
            (home / rel).parent.mkdir(parents=True, exist_ok=True)
            (home / rel).write_text(text)
        serve = ["--replay", str(replay), "--log-level", "warning"]
        done = subprocess.run(
            [str(BIN), "install", client, "--", *serve],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        started = time.monotonic()
        try:
            ran = subprocess.run(
                [str(NODE_BIN / spec.bin), *spec.argv],
                cwd=repo, env=env | spec.env(stub.url), stdin=subprocess.DEVNULL,
                capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip
            code, output = ran.returncode, ran.stdout + ran.stderr
        except subprocess.TimeoutExpired as e:
            code, output = -1, f"timed out after 120 s: {e.stdout!r} {e.stderr!r}"
    return Outcome(client, code, output, stub, report, time.monotonic() - started)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Outcome]]:
    """Each client run once, on first use; the tests below read the same run."""

    class Runs(dict[str, Outcome]):
        def __missing__(self, client: str) -> Outcome:
            if not (NODE_BIN / CLIENTS[client].bin).exists():
                pytest.fail(f"{client} is not installed: run `npm ci` in tests/clients (scripts/setup --test)")
            self[client] = run_client(client, tmp_path_factory.mktemp(client))
            return self[client]

    yield Runs()


def reads_report(result: str, report: str) -> bool:
    """The report is in what the model read, uncut: as text, or escaped inside JSON."""
    return report in result or json.dumps(report)[1:-1] in result


@pytest.mark.parametrize("client", list(CLIENTS))
def test_the_client_offers_the_tool_calls_it_and_its_model_reads_the_whole_report(
    client: str, outcomes: dict[str, Outcome]
) -> None:
    o = outcomes[client]
    assert o.returncode == 0, o.output[-3000:]
    assert "The stub model read the tool result" in o.output, o.output[-3000:]
    # On the first turn with tools, the tool is offered, or (Qwen) named for the tool search to find.
    first = next(s for s in o.stub.seen if s.tools)
    if client == "qwen":
        assert any("tool_search" in t for t in first.tools) and "explore_codebase" in json.dumps(first.body)
    else:
        assert any(t.endswith("explore_codebase") for t in first.tools), first.tools
    result = o.stub.result_text()
    assert reads_report(result, o.report), result[:2000]
    assert o.seconds < 60, o.seconds


@pytest.mark.parametrize("client", list(CLIENTS))
def test_what_the_model_reads_stays_within_the_bound(client: str, outcomes: dict[str, Outcome]) -> None:
    o = outcomes[client]
    result = o.stub.result_text()
    ratio = len(result) / len(o.report)
    print(f"{client}: the model read {len(result)} chars for a {len(o.report)}-char report ({ratio:.2f}x)")
    assert len(result) <= bound(o.report), f"{ratio:.2f}x, over {BOUND_RATIO}x + {BOUND_EXTRA}"
