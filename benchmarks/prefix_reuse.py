"""Prefix reuse: prompt tokens evaluated over prompt tokens sent across a replayed 10-turn session.

    .venv/bin/python benchmarks/prefix_reuse.py [--model GGUF] [--threads N] [--repeat 3]

The session's assistant turns are scripted (benchmarks/_common.py); the tool results are real (the
Toolbox on this project's tree). Each turn the whole conversation is sent to LlamaModel, which
generates one token. Two sides, interleaved:
  reuse   one model, its context kept between turns (what the explorer does)
  fresh   a fresh context for every turn (the cache defeated; loading time not counted)
Prints evaluated/sent for both and the wall-time ratio of the prompt evaluations. Replayed text
tokenizes canonically, which a sampled turn (above all one under the grammar) often does not, so a
third part runs a real exploration of this project (sampled at temperature 0.7 under the grammar)
and prints, per turn, the prompt tokens evaluated against those added since the previous turn
(the prompt's growth minus the model's own reply): from turn 2 on they should be equal.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import ROOT, default_model, emit, llama_settings, median, parser, session

from mcp_loco import logs
from mcp_loco.config import LlamaSettings, Settings
from mcp_loco.explore.agent import Explorer
from mcp_loco.interfaces import GenerateOptions
from mcp_loco.model.backends.llama_cpp import LlamaModel
from mcp_loco.model.protocol import Message, render

ONE = GenerateOptions(max_tokens=1, temperature=0.0)


def play(model_path: str, settings: LlamaSettings, fresh: bool) -> tuple[int, int, float]:
    """Run the session; return prompt tokens sent, evaluated, and seconds inside `complete`."""
    opening, turns = session()
    messages = list(opening)
    sent = evaluated = 0
    seconds = 0.0
    model = None if fresh else LlamaModel(model_path, settings)
    try:
        for text, results in turns:
            turn_model = LlamaModel(model_path, settings) if fresh else model
            assert turn_model is not None
            try:
                started = time.perf_counter()
                out = turn_model.complete(render(messages), ONE)
                seconds += time.perf_counter() - started
            finally:
                if fresh:
                    turn_model.close()
            sent += out.usage.prompt_tokens
            evaluated += out.usage.prompt_tokens_evaluated
            messages.append(Message("assistant", text))
            messages.extend(Message("tool", r) for r in results)
    finally:
        if model is not None:
            model.close()
    return sent, evaluated, seconds


def real_turns(model_path: str, settings: LlamaSettings, turns: int = 4) -> list[dict[str, Any]]:
    """Per-turn usage of a real sampled exploration of this project, read back from its transcript."""
    s = Settings(llama=settings)
    s.model.temperature, s.model.seed, s.model.max_tokens = 0.7, 11, 160
    s.agent.max_turns, s.agent.task_depth, s.agent.deadline_s = turns, 0, 600
    with tempfile.TemporaryDirectory() as folder:
        s.agent.transcript_dir = folder
        model = LlamaModel(model_path, settings)
        explorer = Explorer(model, s)
        try:
            explorer.explore(ROOT, "Where is the settings precedence implemented?")
        finally:
            explorer.close()
            model.close()
        (path,) = Path(folder).glob("*.jsonl")
        events = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    usage = [e["usage"] for e in events if e["event"] == "completion" and "usage" in e]
    rows = []
    for i, u in enumerate(usage):
        new = u["prompt_tokens"] - (usage[i - 1]["prompt_tokens"] + usage[i - 1]["completion_tokens"] if i else 0)
        rows.append({"turn": i + 1, "sent": u["prompt_tokens"], "new": new, "evaluated": u["prompt_tokens_evaluated"]})
    return rows


def main() -> None:
    args = parser(__doc__).parse_args()
    logs.configure("warning")
    path = str(args.model or default_model())
    settings = llama_settings(args)
    reuse, fresh = [], []
    for _ in range(args.repeat):
        reuse.append(play(path, settings, fresh=False))
        fresh.append(play(path, settings, fresh=True))
    sent, evaluated, _ = reuse[0]
    fsent, fevaluated, _ = fresh[0]
    r_s, f_s = median([r[2] for r in reuse]), median([f[2] for f in fresh])
    print(f"model: {path.rsplit('/', 1)[-1]}, 10 turns, repeat {args.repeat} (medians)")
    print(f"reuse   sent {sent:6d} prompt tokens, evaluated {evaluated:6d}  ratio {evaluated / sent:.3f}  {r_s:6.2f}s")
    print(
        f"fresh   sent {fsent:6d} prompt tokens, evaluated {fevaluated:6d}  ratio {fevaluated / fsent:.3f}  {f_s:6.2f}s"
    )
    print(f"wall time reuse/fresh = {r_s / f_s:.2f}")
    rows = real_turns(path, settings)
    print("real exploration (sampled, grammar), per turn: prompt tokens sent, added since the last turn, evaluated")
    for r in rows:
        print(f"  turn {r['turn']:2d}  sent {r['sent']:6d}  new {r['new']:6d}  evaluated {r['evaluated']:6d}")
    later = rows[1:]
    extra = sum(r["evaluated"] - r["new"] for r in later)
    print(
        f"turns 2-{len(rows)}: evaluated {sum(r['evaluated'] for r in later)} for {sum(r['new'] for r in later)} new tokens ({extra:+d})"
    )
    emit(
        args,
        {
            "sent": sent,
            "evaluated_reuse": evaluated,
            "evaluated_fresh": fevaluated,
            "ratio_reuse": round(evaluated / sent, 3),
            "ratio_fresh": round(fevaluated / fsent, 3),
            "seconds_reuse": round(r_s, 3),
            "seconds_fresh": round(f_s, 3),
            "time_ratio": round(r_s / f_s, 3),
            "real_turns": rows,
        },
    )


if __name__ == "__main__":
    main()
