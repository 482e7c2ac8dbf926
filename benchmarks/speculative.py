"""Speculative decoding: a turn that quotes a file it read, with and without prompt-lookup drafting.

    .venv/bin/python benchmarks/speculative.py [--model GGUF] [--threads N] [--repeat 3] [--tokens 256]
                                               [--shaped GGUF]

Two turns, each decoded greedily from a cached prompt (so the time is generation), both sides
interleaved, medians of tokens/s:
- quote: the file as Read showed it, then the request to quote it in a code block. This is the turn
  drafting is for, and the last line's figure.
- report: the end of a short exploration of this project's tree (two Read results) and the request
  for the report. SmolLM2-135M paraphrases here instead of quoting, so this shows what drafting
  costs on free text.
Then the cost of one verification batch (the sampled token plus k drafted ones, logits at every
position) against a one-token decode, after 1K tokens of context on this model (256 on the 4B
shape), and what `speculative = "auto"` decides from its own timing at load. With --shaped (default:
the LocoOperator-4B-shaped GGUF in /work/synth when there is one) the same at the 4B shape. The last
line is `speculative decoding: X.XXx decode speed, identical output: yes|no`.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import ROOT, default_model, emit, llama_settings, median, parser

from mcp_loco import logs
from mcp_loco.config import LlamaSettings
from mcp_loco.explore.turns import read_prompt
from mcp_loco.interfaces import GenerateOptions, Segment
from mcp_loco.model.backends.llama_cpp import LIB, LlamaModel
from mcp_loco.model.backends.speculative import WINS_AT, Drafter, DraftStats, batch_gain
from mcp_loco.model.protocol import Message, format_call, render
from mcp_loco.sandbox import Toolbox

SYNTH = Path("/work/synth")
READS = [
    ("model/backends/prompt_tokens.py", "def split_markers", 16),
    ("model/backends/speculative.py", "    def draft(", 26),
]
"""Files the exploration read: from the line that starts with the text, so many lines."""
REPORT = (
    "Write your report now. Quote the `draft` method of {root}/model/backends/speculative.py exactly as the Read "
    "result shows it, line numbers included, in a code block, then say in one sentence what it does."
)
# A short module SmolLM2-135M does copy, fixed so the quoting turn does not move with this tree.
QUOTED = '''import tomllib
from pathlib import Path

DEFAULTS = {"name": "demo", "port": 8080, "debug": False}


def load_settings(path: Path) -> dict:
    """Read the TOML file at `path` over the defaults."""
    with path.open("rb") as f:
        data = tomllib.load(f)
    merged = dict(DEFAULTS)
    merged.update(data)
    return merged
'''
QUOTE = "Here is {path}, as Read showed it:\n{shown}\nQuote this code exactly, in a code block."
BATCH_SIZES = (1, 2, 5, 9, 17)


def conversation() -> list[Message]:
    """A short exploration of this project that ends in the request for a quoting report."""
    tools = Toolbox(ROOT)
    root = tools.root
    msgs = [
        Message("system", read_prompt("", "system_prompt.md").replace("{root}", root)),
        Message(
            "user",
            read_prompt("", "task_prompt.md")
            .replace("{root}", root)
            .replace("{question}", "How does the backend draft tokens?"),
        ),
    ]
    for rel, start, limit in READS:
        lines = (ROOT / rel).read_text(encoding="utf-8").splitlines()
        offset = next(i for i, line in enumerate(lines, 1) if line.startswith(start))
        args = {"file_path": f"{root}/{rel}", "offset": offset, "limit": limit}
        msgs.append(Message("assistant", format_call("Read", args)))
        msgs.append(Message("tool", tools.call("Read", args).text))
    msgs.append(Message("user", REPORT.replace("{root}", root)))
    return msgs


def quote_turn() -> list[Message]:
    """A file as Read showed it, then the request to quote it (a fixed file, so the turn does not move with this tree)."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "settings.py").write_text(QUOTED, encoding="utf-8")
        tools = Toolbox(tmp)
        path = f"{tools.root}/settings.py"
        shown = tools.call("Read", {"file_path": path}).text
    return [Message("system", "You are a helpful assistant."), Message("user", QUOTE.format(path=path, shown=shown))]


def decode(model: LlamaModel, prompt: list[Segment], tokens: int) -> tuple[float, str, DraftStats]:
    """Tokens/s of the turn from a cached prompt, its text, and the drafting stats."""
    # The prompt is evaluated afresh each time: how much of it the cache kept would change how it is
    # batched, and llama.cpp's CPU kernels round a batch's rows differently, so the text could change.
    model._drop_after(0)
    model.complete(prompt, GenerateOptions(max_tokens=1, temperature=0.0))  # cache the prompt
    started = time.perf_counter()
    out = model.complete(prompt, GenerateOptions(max_tokens=tokens, temperature=0.0))
    return out.usage.completion_tokens / (time.perf_counter() - started), out.text, model.speculation


def parting(plain: LlamaModel, spec: LlamaModel, prompt: list[Segment]) -> tuple[int, float] | None:
    """Where the two models' last completions part (token index) and the plain model's top-two logit gap there."""
    a, b = plain._tokens.last(), spec._tokens.last()
    at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)
    if at is None:
        return None
    plain._sync(plain.tokenize(prompt) + a[:at])
    logits = np.ctypeslib.as_array(LIB.llama_get_logits_ith(plain._ctx, -1), shape=(plain._n_vocab,))
    best, second = np.sort(logits)[-2:][::-1]
    return at, float(best - second)


def passes(model: LlamaModel, prompt: list[Segment], gen: list[int], quoted: bool) -> int:
    """Verification passes greedy drafting needs to produce `gen` after the prompt (as if every batch row
    computed what a lone token does): each pass evaluates a token and a draft, which is kept while it matches."""
    s = model.settings
    extra = model._quoted(prompt) if quoted else []
    drafter = Drafter(model.tokenize(prompt), model.n_ctx, s.draft_ngram_min, s.draft_ngram_max, s.draft_max, extra)
    i = count = 0
    while i < len(gen):
        drafter.push(gen[i])
        i += 1
        draft = drafter.draft(min(len(gen) - i, int(model._llm.n_batch) - 1))
        count += 1
        kept = 0
        while kept < len(draft) and draft[kept] == gen[i]:
            drafter.push(gen[i])
            i, kept = i + 1, kept + 1
        drafter.verified(len(draft), kept)
    return count


def batch_costs(model: LlamaModel, repeat: int, context: int) -> dict[int, float]:
    """Median milliseconds of one decode batch of each size, after `context` tokens."""
    filler = model.tokenize(render(conversation()))[:context]
    model._sync(filler)
    base = model._llm.n_tokens
    costs: dict[int, list[float]] = {n: [] for n in BATCH_SIZES}
    for _ in range(repeat):
        for n in BATCH_SIZES:
            model._drop_after(base)
            started = time.perf_counter()
            model._extend(filler[:n])
            costs[n].append((time.perf_counter() - started) * 1000)
    model._drop_after(base)
    return {n: median(v) for n, v in costs.items()}


def print_costs(label: str, costs: dict[int, float]) -> None:
    """One line: milliseconds per batch and the ratio to a one-token decode."""
    one = costs[1]
    cells = ", ".join(f"{n}: {ms:.1f} ms ({ms / one:.2f}x)" for n, ms in costs.items())
    print(f"cost per verified batch ({label}), tokens in the batch: {cells}")


def shaped_model(arg: str | None) -> Path | None:
    """The 4B-shaped GGUF to time batches on: --shaped (none: skip), else the deepest finished one in /work/synth."""
    if arg:
        return None if arg == "none" else Path(arg)
    pid = SYNTH / "build-L36.pid"
    building = pid.is_file() and Path(f"/proc/{pid.read_text().strip()}").exists()
    for name in ("loco4b-shaped-L36-Q4_K_M.gguf", "loco4b-shaped-L2-Q4_K_M.gguf"):
        path = SYNTH / name
        if path.is_file() and not (building and "L36" in name):  # a 36-layer file still being written
            return path
    return None


def shaped_figures(shaped: Path, threads: int, repeat: int) -> dict[str, Any]:
    """At the 4B shape: the cost of each verification batch against one token, and what `auto` decides at load."""
    settings = LlamaSettings(n_ctx=4096, n_threads=threads, n_threads_batch=threads)
    model = LlamaModel(shaped, settings)
    try:
        costs = batch_costs(model, repeat, 256)  # its prefill is slow on a CPU
    finally:
        model.close()
    print_costs(f"{shaped.name}, LocoOperator-4B-shaped", costs)
    full = settings.draft_max + 1
    gain = batch_gain(costs[1], costs[full], full)
    print(f'speculative = "auto" at the 4B shape: drafting {"on" if gain >= WINS_AT else "off"} ({gain:.2f}x)')
    auto = LlamaModel(shaped, settings.model_copy(update={"speculative": "auto"}))
    auto_on, auto_gain = auto.drafting, auto.draft_gain or 0.0
    auto.close()
    print(f'speculative = "auto" loading {shaped.name}: drafting {"on" if auto_on else "off"} ({auto_gain:.2f}x)')
    return {
        "shaped_model": shaped.name,
        "shaped_batch_ms": {str(n): round(v, 2) for n, v in costs.items()},
        "shaped_full_draft_gain": round(gain, 3),
        "shaped_auto_drafting": gain >= WINS_AT,
        "shaped_auto_at_load": {"drafting": auto_on, "full_draft_gain": round(auto_gain, 3)},
    }


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--shaped", default=None, help="a LocoOperator-4B-shaped GGUF for the batch costs (none: skip)")
    ap.add_argument(
        "--shaped-only", type=Path, default=None, help="only the batch costs and `auto` on this 4B-shaped GGUF"
    )
    args = ap.parse_args()
    logs.configure("warning")
    if args.shaped_only:
        figures = shaped_figures(args.shaped_only, args.threads, args.repeat)
        emit(args, figures)
        return
    path = args.model or default_model()
    base = llama_settings(args, n_ctx=4096)
    turns = {"quote": render(quote_turn()), "report": render(conversation())}
    plain = LlamaModel(path, base.model_copy(update={"speculative": "off"}))
    spec = LlamaModel(path, base.model_copy(update={"speculative": "on"}))
    speed: dict[str, dict[str, list[float]]] = {name: {"plain": [], "spec": []} for name in turns}
    texts: dict[str, dict[str, str]] = {name: {} for name in turns}
    stats: dict[str, DraftStats] = {}
    parts: dict[str, tuple[int, float] | None] = {}
    per_pass: dict[str, dict[bool, float]] = {}
    try:
        for _ in range(args.repeat):
            for name, prompt in turns.items():
                s, texts[name]["plain"], _ = decode(plain, prompt, args.tokens)
                f, texts[name]["spec"], stats[name] = decode(spec, prompt, args.tokens)
                parts[name] = parting(plain, spec, prompt)
                written = plain._tokens.last()
                per_pass[name] = {q: len(written) / passes(plain, prompt, written, q) for q in (True, False)}
                speed[name]["plain"].append(s)
                speed[name]["spec"].append(f)
        costs = batch_costs(plain, args.repeat, 1024)
    finally:
        plain.close()
        spec.close()
    auto = LlamaModel(path, base.model_copy(update={"speculative": "auto"}))
    auto_on, auto_gain = auto.drafting, auto.draft_gain or 0.0
    auto.close()
    print(f"model: {path.name}, {args.tokens} tokens, repeat {args.repeat} (medians), draft_max {base.draft_max}")
    figures: dict[str, Any] = {}
    for name in turns:
        ms, mf = median(speed[name]["plain"]), median(speed[name]["spec"])
        same = texts[name]["plain"] == texts[name]["spec"]
        st = stats[name]
        print(
            f"{name} turn: without drafting {ms:.1f} tok/s, with drafting {mf:.1f} tok/s "
            f"({st.accepted}/{st.drafted} drafted tokens accepted): {mf / ms:.2f}x, identical output: "
            + ("yes" if same else "no")
        )
        figures[name] = {
            "tok_s_plain": round(ms, 2),
            "tok_s_spec": round(mf, 2),
            "speedup": round(mf / ms, 3),
            "identical": same,
            "drafted": st.drafted,
            "accepted": st.accepted,
        }
        print(
            f"  where a batch costs one token (a GPU): {per_pass[name][True]:.2f} tokens per verification pass "
            f"on the text written without drafting ({per_pass[name][False]:.2f} without Read's code unnumbered)"
        )
        figures[name]["tokens_per_pass"] = round(per_pass[name][True], 3)
        figures[name]["tokens_per_pass_numbered_only"] = round(per_pass[name][False], 3)
        if parts[name] is not None:
            at, gap = parts[name]
            print(f"  the outputs part at token {at}, where the two best tokens are {gap:.2f} logits apart")
            figures[name]["parts_at"], figures[name]["gap_there"] = at, round(gap, 3)
    print_costs(path.name, costs)
    print(
        f'speculative = "auto" on {path.name}: drafting {"on" if auto_on else "off"} (timed at load: {auto_gain:.2f}x)'
    )
    figures["batch_ms"] = {str(n): round(v, 2) for n, v in costs.items()}
    figures["auto"] = {"drafting": auto_on, "full_draft_gain": round(auto_gain, 3)}
    shaped = shaped_model(args.shaped)
    if shaped is not None:
        figures.update(shaped_figures(shaped, args.threads, args.repeat))
    emit(args, figures)
    q = figures["quote"]
    print(
        f"speculative decoding: {q['speedup']:.2f}x decode speed, identical output: {'yes' if q['identical'] else 'no'}"
    )


if __name__ == "__main__":
    main()
