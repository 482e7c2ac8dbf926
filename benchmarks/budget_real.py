"""A replayed exploration through the real llama.cpp backend under a time budget: when it ends, what it did.

    .venv/bin/python benchmarks/budget_real.py --model loco4b-shaped-L36-Q4_K_M.gguf [--budget 100] [--json F]

The real Explorer on this project's tree with the in-process LlamaModel. Each tool turn of the recorded
typical session (mcp_loco/explore/simulate.py, the budget simulator's) is force-fed: its new prompt tokens are evaluated and the recorded call is
decoded token by token, as generation would (random weights write nonsense, so they cannot choose the
calls). The report turn is generated freely by the model, under the loop's own budgeting: what is
measured is whether the call ends within its budget with a report the model wrote (not the files-only
fallback), how many turns ran, and when.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from _common import ROOT, emit, parser

from mcp_loco import logs
from mcp_loco.config import Settings
from mcp_loco.errors import BudgetError, Cancelled
from mcp_loco.explore.agent import Explorer
from mcp_loco.explore.simulate import SESSION
from mcp_loco.interfaces import Completion, GenerateOptions, Prompt, Usage
from mcp_loco.model.backends.llama_cpp import LlamaModel
from mcp_loco.model.protocol import format_call, prompt_text

QUESTION = "Where is the settings precedence implemented?"
NUDGE_MARK = "do not call any more tools"


class ForcedModel(LlamaModel):
    """The real backend; tool turns force-fed from a recording, the report written by the model."""

    def __init__(self, path: Path, settings: Any, turns: list[str]) -> None:
        super().__init__(path, settings)
        self.recorded = turns
        self.index = 0
        self.rows: list[dict[str, Any]] = []

    def complete(self, prompt: Prompt, options: GenerateOptions, cancel: threading.Event | None = None) -> Completion:
        last_user = prompt_text(prompt).rsplit("<|im_start|>user\n", 1)[-1]
        started = time.monotonic()
        if NUDGE_MARK in last_user or self.index >= len(self.recorded) - 1:
            out = super().complete(prompt, options, cancel)
            self.rows.append({"turn": "report", "s": round(time.monotonic() - started, 1), **out.usage.model_dump()})
            return out
        text = self.recorded[self.index]
        self.index += 1
        ids = self.tokenize(prompt)
        own = self._tokens.content(text)
        with self._lock:
            self._cancel = cancel
            try:
                evaluated = self._sync(ids)
                prompt_s = time.monotonic() - started
                self._speed.observe_prefill(evaluated, prompt_s, len(ids) - evaluated)
                for written, token in enumerate(own):
                    if cancel is not None and cancel.is_set():
                        return Completion(text[:written], Usage(prompt_tokens=len(ids)), "cancelled")
                    self._extend([token])
                self._speed.observe_decode(len(own), time.monotonic() - started - prompt_s, len(ids))
            except Cancelled:
                return Completion("", Usage(prompt_tokens=len(ids)), "cancelled")
            finally:
                self._cancel = None
        self._tokens.remember(prompt[-1].text, text, own)
        usage = Usage(prompt_tokens=len(ids), prompt_tokens_evaluated=evaluated, completion_tokens=len(own))
        self.rows.append({"turn": self.index, "s": round(time.monotonic() - started, 1), **usage.model_dump()})
        return Completion(text, usage)


def one_call(explorer: Explorer, model: ForcedModel, budget: float) -> dict[str, Any]:
    """One exploration; what it did, printed and returned."""
    started = time.monotonic()
    try:
        result = explorer.explore(ROOT, QUESTION, deadline_s=budget)
    except BudgetError as e:
        wall = time.monotonic() - started
        print(f"budget {budget:.0f} s: refused after {wall:.1f} s: {e}", flush=True)
        return {"wall_s": round(wall, 1), "refused": str(e)}
    wall = time.monotonic() - started
    by_model = not result.report.startswith("The model did not write a report")
    for row in model.rows:
        print(f"  {row}", flush=True)
    report = model.rows[-1]["completion_tokens"] if model.rows and model.rows[-1]["turn"] == "report" else 0
    print(
        f"budget {budget:.0f} s: ended after {wall:.1f} s, {result.turns} turns, stop {result.stop_reason}, "
        f"report {'written by the model' if by_model else 'FILES-ONLY FALLBACK'} ({report} tokens); "
        f"speed now: {model.speed.describe()}",
        flush=True,
    )
    return {
        "wall_s": round(wall, 1),
        "turns": result.turns,
        "stop_reason": result.stop_reason,
        "report_by_model": by_model,
        "report_tokens": report,
        "usage": result.usage.model_dump(),
        "rows": model.rows,
        "speed_after": model.speed.describe(),
    }


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--budget", type=float, default=100.0, help="deadline_s of the call (default: the product's)")
    ap.add_argument("--calls", type=int, default=1, help="calls in a row on the loaded model, as a server makes them")
    args = ap.parse_args()
    if args.model is None:
        raise SystemExit("--model GGUF is required (benchmarks/synthetic_model.py writes the 4B-shaped one)")
    logs.configure("warning")
    settings = Settings()
    settings.llama.n_threads = settings.llama.n_threads_batch = args.threads
    settings.agent.task_depth = 0
    root = str(ROOT.resolve())
    recorded = [
        "\n".join(format_call(n, json.loads(json.dumps(a).replace("{root}", root))) for n, a in calls)
        for calls in SESSION
    ]
    t0 = time.monotonic()
    model = ForcedModel(args.model, settings.llama, [*recorded, "(the answer turn: never forced)"])
    load_s = time.monotonic() - t0
    print(f"loaded in {load_s:.1f} s; speed seeded: {model.speed.describe()}", flush=True)
    explorer = Explorer(model, settings)
    calls = []
    try:
        for _ in range(args.calls):
            model.index, model.rows = 0, []
            calls.append(one_call(explorer, model, args.budget))
    finally:
        explorer.close()
        model.close()
    figures = {"budget_s": args.budget, "load_s": round(load_s, 1), "calls": calls}
    emit(args, figures)


if __name__ == "__main__":
    main()
