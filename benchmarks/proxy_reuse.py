"""Proxy prefix reuse: prompt tokens evaluated over new tokens across a replayed 10-request conversation.

    .venv/bin/python benchmarks/proxy_reuse.py [--model GGUF] [--threads N] [--repeat 1]

The client plays Claude Code: it sends the whole history to `POST /v1/messages` each request, with
the model's earlier turns as the parsed text/tool_use blocks the proxy returned. The model is real
(its turns are its own, the first nine forced to be tool calls by tool_choice=any); the tool results
are the real ones of the scripted session in benchmarks/_common.py. "New" tokens are those the
client added since the previous request (tool results, turn markers); everything else was already
in the context. Two sides:
  memory      the proxy remembers the model's exact text per turn (the default)
  no memory   the turns are rendered back from the blocks (proxy.remember_turns=0)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx
from _common import default_model, emit, llama_settings, parser, session

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "proxy"))
from proxy_helpers import serve_app  # the same in-process uvicorn runner the tests use

from mcp_loco import logs
from mcp_loco.config import ModelSettings, ProxySettings, Settings
from mcp_loco.proxy import create_app

REQUESTS = 10
TOOLS = [
    {
        "name": name,
        "description": description,
        # Bounded strings: a 135M model may otherwise write one path until max_tokens runs out.
        "input_schema": {"type": "object", "properties": {key: {"type": "string", "maxLength": 80}}, "required": [key]},
    }
    for name, key, description in [
        ("Read", "file_path", "Reads a file from the local filesystem."),
        ("Grep", "pattern", "Searches file contents with ripgrep."),
        ("Glob", "pattern", "Finds files by name pattern."),
        ("Bash", "command", "Runs a shell command."),
    ]
]


def play(url: str, question: str, results: list[list[str]]) -> list[dict[str, int]]:
    """Run the conversation; return each request's usage."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": question}]
    figures = []
    with httpx.Client(base_url=url, timeout=600) as client:
        for i in range(REQUESTS):
            last = i == REQUESTS - 1
            body = {"model": "claude-haiku-4-5", "max_tokens": 96, "messages": messages, "tools": TOOLS}
            if not last:
                body["tool_choice"] = {"type": "any"}
            r = client.post("/v1/messages", json=body)
            r.raise_for_status()
            reply = r.json()
            figures.append(reply["usage"])
            messages.append({"role": "assistant", "content": reply["content"]})
            calls = [b for b in reply["content"] if b["type"] == "tool_use"]
            texts = results[i] if i < len(results) else ["(no output)"]
            if calls:
                content = [
                    {"type": "tool_result", "tool_use_id": c["id"], "content": texts[j % len(texts)][:4000]}
                    for j, c in enumerate(calls)
                ]
            else:
                content = [{"type": "text", "text": "Go on."}]
            messages.append({"role": "user", "content": content})
    return figures


def summarise(figures: list[dict[str, int]]) -> tuple[int, int, int]:
    """Prompt tokens sent, evaluated, and new, over the conversation."""
    sent = evaluated = new = 0
    previous = 0
    for u in figures:
        prompt = u["input_tokens"] + u["cache_read_input_tokens"]
        sent += prompt
        evaluated += u["input_tokens"]
        new += prompt - previous
        previous = prompt + u["output_tokens"]
    return sent, evaluated, new


def main() -> None:
    """Print evaluated / new tokens for both sides."""
    args = parser(__doc__).parse_args()
    logs.configure("warning")
    from mcp_loco.model.backends.llama_cpp import LlamaModel

    model_path = args.model or default_model()
    opening, turns = session()
    question = opening[1].content
    results = [r for _, r in turns if r]
    out: dict[str, Any] = {"model": Path(model_path).name, "requests": REQUESTS}
    for side, remember in (("memory", 4096), ("no memory", 0)):
        settings = Settings(
            model=ModelSettings(temperature=0.0, max_tokens=96),
            proxy=ProxySettings(upstream="", remember_turns=remember),
        )
        app = create_app(settings, lambda: LlamaModel(model_path, llama_settings(args, n_ctx=16384)))
        with serve_app(app) as url:
            sent, evaluated, new = summarise(play(url, question, results))
        out[side] = {"sent": sent, "evaluated": evaluated, "new": new}
        print(
            f"{side:>9}: evaluated {evaluated} / new {new} tokens ({evaluated / new:.2f}x); "
            f"{sent} prompt tokens sent over {REQUESTS} requests"
        )
    emit(args, out)


if __name__ == "__main__":
    main()
