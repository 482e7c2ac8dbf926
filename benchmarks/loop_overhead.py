"""Loop overhead: wall time of an exploration against the time spent inside the backend and the tools.

    .venv/bin/python benchmarks/loop_overhead.py [--model GGUF] [--threads N] [--repeat 3]

Two runs of the real Explorer on this project's tree, with timers around the model's `complete` and
`count_tokens` and around every tool call (overlapping parallel calls counted once):
  model    the real small model (temperature 0, up to 10 turns)
  replay   the scripted 10-turn session of benchmarks/_common.py played back (no model: the loop alone)
Overhead = wall - backend - tools: rendering, parsing, budgeting, threads, citation checks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from _common import ROOT, default_model, emit, llama_settings, median, parser, session

from mcp_loco import logs
from mcp_loco.config import Settings
from mcp_loco.explore.agent import Explorer
from mcp_loco.interfaces import ChatModel, Completion, GenerateOptions, Prompt
from mcp_loco.model.backends.llama_cpp import LlamaModel
from mcp_loco.model.backends.replay import ReplayModel
from mcp_loco.sandbox import Toolbox

QUESTION = "Where is the settings precedence (CLI > env > file > defaults) implemented?"


class Intervals:
    """Time spans recorded from any thread; `busy` counts overlapping ones once."""

    def __init__(self) -> None:
        self.spans: list[tuple[float, float]] = []
        self._lock = threading.Lock()

    def timed(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                with self._lock:
                    self.spans.append((started, time.perf_counter()))

        return wrapper

    def busy(self) -> float:
        total, end = 0.0, float("-inf")
        for a, b in sorted(self.spans):
            if b > end:
                total += b - max(a, end)
                end = b
        return total


class TimedModel:
    """A ChatModel whose calls are timed."""

    def __init__(self, model: ChatModel) -> None:
        self.model = model
        self.complete_s = Intervals()
        self.count_s = Intervals()
        self.complete = self.complete_s.timed(self._complete)
        self.count_tokens = self.count_s.timed(self._count)

    @property
    def n_ctx(self) -> int:
        return self.model.n_ctx

    def _complete(self, prompt: Prompt, options: GenerateOptions, cancel: threading.Event | None = None) -> Completion:
        return self.model.complete(prompt, options, cancel)

    def _count(self, prompt: Prompt) -> int:
        return self.model.count_tokens(prompt)

    def close(self) -> None:
        self.model.close()


def explore_timed(model: ChatModel, settings: Settings) -> dict[str, float]:
    """One exploration with every backend and tool call timed."""
    timed = TimedModel(model)
    tools = Intervals()
    original = Toolbox.call
    Toolbox.call = tools.timed(original)  # type: ignore[method-assign]
    explorer = Explorer(timed, settings)
    try:
        started = time.perf_counter()
        result = explorer.explore(ROOT, QUESTION)
        wall = time.perf_counter() - started
    finally:
        Toolbox.call = original  # type: ignore[method-assign]
        explorer.close()
    backend, count, tool = timed.complete_s.busy(), timed.count_s.busy(), tools.busy()
    return {
        "turns": result.turns,
        "wall_s": wall,
        "complete_s": backend,
        "count_tokens_s": count,
        "tools_s": tool,
        "overhead_s": wall - backend - count - tool,
    }


def show(name: str, r: dict[str, float]) -> None:
    wall = r["wall_s"]
    print(
        f"{name:7} {int(r['turns']):2d} turns  wall {wall:7.3f}s  complete {r['complete_s']:7.3f}s "
        f"({r['complete_s'] / wall:.1%})  count_tokens {r['count_tokens_s']:6.3f}s ({r['count_tokens_s'] / wall:.1%})  "
        f"tools {r['tools_s']:6.3f}s ({r['tools_s'] / wall:.1%})  overhead {r['overhead_s']:6.3f}s ({r['overhead_s'] / wall:.1%})"
    )


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--max-tokens", type=int, default=256, help="tokens per model turn")
    args = ap.parse_args()
    logs.configure("warning")
    settings = Settings()
    settings.model.temperature, settings.model.max_tokens = 0.0, args.max_tokens
    settings.agent.task_depth, settings.agent.deadline_s = 0, 600
    settings.llama = llama_settings(args)
    model = LlamaModel(args.model or default_model(), settings.llama)
    _, turns = session()
    scripted = [text for text, _ in turns]
    real, played = [], []
    try:
        for _ in range(args.repeat):
            real.append(explore_timed(model, settings))
            played.append(explore_timed(ReplayModel(scripted, n_ctx=settings.llama.n_ctx), settings))
    finally:
        model.close()

    def med(rs: list[dict[str, float]]) -> dict[str, float]:
        return {k: median([r[k] for r in rs]) for k in rs[0]}

    m, p = med(real), med(played)
    print(f"explore of {ROOT}, repeat {args.repeat} (medians)")
    show("model", m)
    show("replay", p)
    per_turn_ms = 1000 * (p["overhead_s"] + p["count_tokens_s"]) / p["turns"]
    print(
        f"overhead share with the model: {m['overhead_s'] / m['wall_s']:.1%}; loop cost without a model: {per_turn_ms:.1f} ms/turn"
    )
    emit(
        args,
        {
            "model": {k: round(v, 4) for k, v in m.items()},
            "replay": {k: round(v, 4) for k, v in p.items()},
            "overhead_share": round(m["overhead_s"] / m["wall_s"], 4),
            "count_tokens_share": round(m["count_tokens_s"] / m["wall_s"], 4),
            "tools_share": round(m["tools_s"] / m["wall_s"], 4),
            "replay_loop_ms_per_turn": round(per_turn_ms, 2),
        },
    )


if __name__ == "__main__":
    main()
