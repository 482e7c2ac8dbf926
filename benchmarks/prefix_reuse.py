"""Prefix reuse: prompt tokens evaluated over prompt tokens sent across a replayed 10-turn session.

    .venv/bin/python benchmarks/prefix_reuse.py [--model GGUF] [--threads N] [--repeat 3]

The session's assistant turns are scripted (benchmarks/_common.py); the tool results are real (the
Toolbox on this project's tree). Each turn the whole conversation is sent to LlamaModel, which
generates one token. Two sides, interleaved:
  reuse   one model, its context kept between turns (what the explorer does)
  fresh   a fresh context for every turn (the cache defeated; loading time not counted)
Prints evaluated/sent for both and the wall-time ratio of the prompt evaluations.
"""

from __future__ import annotations

import time

from _common import default_model, emit, llama_settings, median, parser, session

from mcp_loco import logs
from mcp_loco.backends.llama_cpp import LlamaModel
from mcp_loco.config import LlamaSettings
from mcp_loco.interfaces import GenerateOptions
from mcp_loco.protocol import Message, render

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
        },
    )


if __name__ == "__main__":
    main()
