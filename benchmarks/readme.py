"""The results section of docs/measured.md, rendered from benchmarks/results/*.json (one column per machine)."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mcp_loco.evals.runner import EvalReport
from mcp_loco.evals.table import FORCE_NOTE, explore_table, table, tools_table, turn_table
from mcp_loco.model.backends.speculative import WINS_AT

START, END = "<!-- results:start -->", "<!-- results:end -->"
Figures = dict[str, Any]


def _get(f: Figures, *keys: str) -> Any:
    for k in keys:
        if not isinstance(f, dict) or k not in f:
            return None
        f = f[k]
    return f


def _cell(fn: Callable[[Figures], str]) -> Callable[[Figures], str]:
    def safe(f: Figures) -> str:
        try:
            return fn(f)
        except (KeyError, TypeError, ZeroDivisionError):
            return "–"

    return safe


def _ratios(f: Figures, pick: Callable[[str], bool]) -> str:
    """`**median×**, max× max (n cases)` over the tools.py rows that `pick` selects."""
    ratios = sorted(r["ratio"] for r in f["tools"]["rows"] if pick(r["case"]))
    if not ratios:
        return "–"
    return f"**{statistics.median(ratios):.2f}×** median, {ratios[-1]:.2f}× max ({len(ratios)} cases)"


def _drafting(turn: Figures) -> str:
    """Speed-up, acceptance, and where greedy outputs part (at a near-tie, when they do)."""
    same = (
        "identical output"
        if turn["identical"]
        else (
            f"outputs part at token {turn['parts_at']}, where the two best tokens are {turn['gap_there']:.2f} logits apart"
        )
    )
    bound = (
        f"; where a batch costs what one token does (a GPU), {turn['tokens_per_pass']:.2f} tokens per pass"
        if "tokens_per_pass" in turn
        else ""
    )
    return (
        f"**{turn['speedup']:.2f}×** ({turn['accepted']} of {turn['drafted']} drafted tokens accepted; {same}{bound})"
    )


ROWS: list[tuple[str, str, Callable[[Figures], str]]] = [
    (
        "prompt tokens evaluated / sent, replayed 10-turn session",
        "fresh context each turn: 1.00",
        _cell(
            lambda f: (
                f"**{f['prefix_reuse']['ratio_reuse']:.2f}** ({f['prefix_reuse']['evaluated_reuse']} of {f['prefix_reuse']['sent']})"
            )
        ),
    ),
    (
        "prompt evaluation time, same session",
        "fresh context each turn",
        _cell(
            lambda f: (
                f"**{f['prefix_reuse']['time_ratio']:.2f}×** ({f['prefix_reuse']['seconds_reuse']:.1f} s vs {f['prefix_reuse']['seconds_fresh']:.1f} s)"
            )
        ),
    ),
    (
        "decode tokens/s, `LlamaModel.complete`",
        "bare `Llama.create_completion`, same prompt",
        _cell(
            lambda f: (
                f"**{f['decode_speed']['ratio']:.2f}×** ({f['decode_speed']['ours_tok_s']} vs {f['decode_speed']['bare_tok_s']} tok/s)"
            )
        ),
    ),
    (
        "decode tokens/s, lazy grammar armed, never triggered",
        "free text",
        _cell(lambda f: f"**{f['grammar']['lazy_ratio']:.2f}×**"),
    ),
    (
        "decode tokens/s, tool call forced under the grammar",
        "the same turn unconstrained",
        _cell(lambda f: f"**{f['grammar']['forced_ratio']:.2f}×**"),
    ),
    (
        "loop overhead share of an exploration (real model)",
        "its wall time",
        _cell(
            lambda f: (
                f"**{f['loop_overhead']['overhead_share']:.1%}** (backend "
                f"{f['loop_overhead']['model']['complete_s'] / f['loop_overhead']['model']['wall_s']:.1%}, tools "
                f"{f['loop_overhead']['tools_share']:.1%}, {f['loop_overhead']['model']['turns']:.0f} turns)"
            )
        ),
    ),
    (
        "loop cost per turn without a model (replayed session)",
        "–",
        _cell(lambda f: f"**{f['loop_overhead']['replay_loop_ms_per_turn']:.1f} ms**"),
    ),
    (
        "peak RSS, `mcp-loco serve --transport http` after one call",
        "python + llama_cpp + the model + one completion",
        _cell(
            lambda f: (
                f"**{f['memory']['ratio']:.2f}×** ({f['memory']['server_mib']:.0f} vs {f['memory']['bare_mib']:.0f} MiB, "
                f"n_ctx {f['memory']['n_ctx']})"
            )
        ),
    ),
    (
        "Grep wall time (stdlib tree)",
        "raw `rg`, same flags",
        _cell(lambda f: _ratios(f, lambda case: case.startswith("Grep"))),
    ),
    (
        "Glob wall time (stdlib tree)",
        "`rg --files` with a type filter (`.gitignore` honoured, like Glob)",
        _cell(lambda f: _ratios(f, lambda case: case.startswith("Glob") and case.endswith("--type"))),
    ),
    (
        "Glob wall time (stdlib tree)",
        "`rg --files --glob` (overrides `.gitignore`, so not the same listing)",
        _cell(lambda f: _ratios(f, lambda case: case.startswith("Glob") and case.endswith("--glob"))),
    ),
    (
        "cancel latency during generation (median)",
        "–",
        _cell(lambda f: "**<1 ms**" if f["grammar"]["cancel_ms"] < 1 else f"**{f['grammar']['cancel_ms']:.0f} ms**"),
    ),
    (
        'decode tokens/s, a turn quoting a file it read, prompt-lookup drafting (`speculative = "on"`)',
        "the same turn without drafting",
        _cell(lambda f: _drafting(f["speculative"]["quote"])),
    ),
    (
        "decode tokens/s, a report turn in free text, drafting on",
        "the same turn without drafting",
        _cell(lambda f: _drafting(f["speculative"]["report"])),
    ),
    (
        "verification batch of draft_max + 1 = 9 tokens (logits at each), this model / LocoOperator-4B-shaped",
        "one one-token decode",
        _cell(
            lambda f: (
                f"**{f['speculative']['batch_ms']['9'] / f['speculative']['batch_ms']['1']:.2f}×** / "
                f"**{f['speculative']['shaped_batch_ms']['9'] / f['speculative']['shaped_batch_ms']['1']:.2f}×** "
                f'its time, so `speculative = "auto"` is {"on" if f["speculative"]["auto"]["drafting"] else "off"} '
                f"for this model and {'on' if f['speculative']['shaped_auto_drafting'] else 'off'} at the 4B shape "
                f"(it drafts where such a batch costs at most {9 / WINS_AT:g}× one token). These three rows: "
                f"speculative.py, {f['speculative']['date']}, {f['speculative']['threads']} thread"
            )
        ),
    ),
    (
        "parent turn after a Task sub-exploration, state restored",
        "no Task in between",
        _cell(
            lambda f: (
                f"**{f['task_cache']['restored_ratio']:.2f}×** ({f['task_cache']['evaluated_restored']:.0f} tokens evaluated; "
                f"cache lost: {f['task_cache']['lost_ratio']:.2f}×, {f['task_cache']['evaluated_lost']:.0f} tokens)"
            )
        ),
    ),
]


def _machine_line(m: Figures) -> str:
    gpu = f", GPU: {m['gpu']}" if m.get("gpu") else ", no GPU"
    return (
        f"- **{m['label']}** ({m['date']}): {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM{gpu}; "
        f"llama-cpp-python {m['llama_cpp_python']}, {m['threads']} llama.cpp thread(s); "
        f"model `{m['model']}` ({m['model_mib']} MiB)."
    )


def _eval_section(path: Path) -> list[str]:
    report = EvalReport.model_validate_json(path.read_text(encoding="utf-8"))
    s = report.settings
    out = [
        "",
        f"Quality, `mcp-loco eval --ablate` ({path.name}): model `{Path(report.model).name}`, temperature "
        f"{s.get('temperature')}, n_ctx {s.get('n_ctx')}, max_tokens {s.get('max_tokens')}, "
        f"max_turns {s.get('max_turns')}, {report.date[:10]}.",
    ]
    if "locooperator" not in report.model.lower():
        out += [
            "",
            "These are the named model's figures, not LocoOperator-4B's: they show the harness at work and what "
            "the scaffolding changes for a model that was never trained on these tools (the card column is "
            "LocoOperator-4B's published result). `mcp-loco eval --model LocoOperator-4B-Q4_K_M.gguf --ablate` "
            "measures the real one.",
        ]
    if report.turn_metrics:
        out += [
            "",
            turn_table(report, markdown=True),
            "",
            FORCE_NOTE,
            "",
            "Tool calls by tool (reference vs each variant):",
            "",
        ]
        out.append(tools_table(report, markdown=True))
    if report.explore_metrics:
        n = max(m.questions + m.errors for m in report.explore_metrics.values())
        out += ["", f"Explorations of this project's own source tree ({n} questions):", ""]
        out.append(explore_table(report, markdown=True))
        if "force" in report.variants and "force" not in report.explore_variants:
            out.append("")
            out.append("(No `force` column: the agent forces the first call only under the grammar.)")
    return out


def render_section(results: Path) -> str:
    """The markdown between the results markers."""
    machines = [
        json.loads(p.read_text()) for p in sorted(results.glob("*.json")) if not p.name.startswith(("eval-", "scale-"))
    ]
    labels = [m["machine"]["label"] for m in machines]
    out = [
        "_Regenerated by `.venv/bin/python benchmarks/run_all.py` (add `--eval` to re-measure quality); "
        "do not edit by hand. Ratios are against a baseline measured in the same run; medians of interleaved runs._",
        "",
        *[_machine_line(m["machine"]) for m in machines],
        "",
        "A GPU column appears by running `benchmarks/run_all.py --label gpu-<name> --gpu '<the GPU>'` on a GPU build "
        "of llama-cpp-python; none has been measured yet.",
        "",
        table(
            ["figure", "baseline", *labels],
            [[title, base, *[fn(m) for m in machines]] for title, base, fn in ROWS],
            True,
        ),
    ]
    out += scale_section(sorted(results.glob("scale-*.json")))
    for path in sorted(results.glob("eval-*.json")):
        out += _eval_section(path)
    return "\n".join(out)


def replace_section(readme: Path, body: str) -> None:
    """Put `body` between the markers, leaving the rest of the page as it is."""
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"{readme}: the markers {START} ... {END} are missing")
    readme.write_text(text[: start + len(START)] + "\n" + body + "\n" + text[end:], encoding="utf-8")


SCALE_TITLE = "LocoOperator-4B-shaped"


def _kv_row(f: Figures, n_ctx: int) -> str:
    cells = {r["type"]: r for r in f["kv"] if r["n_ctx"] == n_ctx}
    return " / ".join(f"{cells[t]['kv_mib'] / 1024:.2f}" for t in ("f16", "q8_0"))


def _speed(f: Figures, config: str, depth: int, key: str) -> str:
    if config not in f["speed"]:
        return "not measured"
    p = next(p for p in f["speed"][config] if p["depth"] == depth)
    return f"{p[key]:.2f}"


def _bound(f: Figures, depth: int) -> float:
    """Decode tok/s if every token read the weights and the KV cache once at the measured bandwidth."""
    kv = next(r for r in f["kv"] if r["type"] == "f16" and r["n_ctx"] == 32768)
    kv_per_token = kv["kv_mib"] * 1024**2 / kv["n_ctx"]
    return float(f["bandwidth_gbs"] * 1e9 / (f["model_bytes"] + kv_per_token * depth))


def scale_section(paths: list[Path]) -> list[str]:
    """The 4B-shaped figures, one column per machine (benchmarks/results/scale-<label>.json)."""
    runs = [json.loads(p.read_text(encoding="utf-8")) for p in paths]
    if not runs:
        return []
    labels = [r["machine"]["label"] for r in runs]
    rows: list[list[str]] = []

    def row(title: str, fn: Callable[[Figures], str]) -> None:
        rows.append([title, *[_cell(fn)(r) for r in runs]])

    row("load time, n_ctx 32K, f16 cache (file in the page cache)", lambda f: f"{f['load']['load_s']:.1f} s")
    row(
        "RSS after load / peak after one short completion, n_ctx 32K, f16 cache, no flash attention",
        lambda f: f"{f['load']['rss_loaded_mib'] / 1024:.2f} / {f['load']['rss_peak_mib'] / 1024:.2f} GiB",
    )
    for n_ctx in (16384, 32768, 51200):
        row(f"KV cache at n_ctx {n_ctx // 1024}K, f16 / q8_0 (GiB)", lambda f, n=n_ctx: _kv_row(f, n))
    row(
        "compute buffer at 32K: flash attention on / off",
        lambda f: (
            f"{next(r['compute_mib'] for r in f['kv'] if r['n_ctx'] == 32768 and r['type'] == 'f16'):.0f} / "
            f"{f['compute_mib_no_fa_32k']:.0f} MiB"
        ),
    )
    for depth, name in ((1024, "1K"), (8192, "8K"), (24576, "24K")):
        for key, what in (("prefill_tok_s", "prefill"), ("decode_tok_s", "decode")):
            row(
                f"{what} tok/s at {name} of context: f16 / f16+flash attn / q8_0+flash attn",
                lambda f, d=depth, k=key: " / ".join(_speed(f, c, d, k) for c in ("f16", "f16+fa", "q8_0+fa")),
            )
    row(
        "decode at 8K against the memory-bandwidth bound (weights + KV read once a token)",
        lambda f: (
            f"{float(_speed(f, f['best'], 8192, 'decode_tok_s')) / _bound(f, 8192):.0%} of {_bound(f, 8192):.1f} tok/s "
            f"({f['bandwidth_gbs']} GB/s)"
        ),
    )
    row(
        "threads: prefill / decode tok/s at 1K, 1 thread vs all",
        lambda f: " vs ".join(
            f"{v['prefill_tok_s']:.1f} / {v['decode_tok_s']:.1f}"
            for _, v in sorted(f["threads_cmp"].items(), key=lambda kv: int(kv[0]))
        ),
    )
    row(
        "n_batch 128 vs 512: prefill tok/s at 1K",
        lambda f: f"{f['batch_cmp']['128']:.1f} vs {f['batch_cmp']['512']:.1f}",
    )
    row(
        "replayed 10-turn exploration (benchmarks/_common.py), wall time",
        lambda f: (
            f"**{f['replay']['wall_s']:.0f} s** ({f['replay']['prompt_evaluated']} prompt tokens evaluated in "
            f"{f['replay']['prefill_s']:.0f} s, {f['replay']['written']} written in {f['replay']['decode_s']:.0f} s)"
        ),
    )
    row(
        "typical exploration, estimated from the speeds above",
        lambda f: (
            f"**{f['estimate']['typical_s']} s** ({f['estimate']['typical_prompt']} prompt tokens evaluated, "
            f"{f['estimate']['typical_written']} written)"
        ),
    )
    notes = [line for r in runs for line in _defaults_note(r)]
    return [
        "",
        f"### {SCALE_TITLE}",
        "",
        "Random weights in LocoOperator-4B's exact shape (Qwen3-4B: 36 layers, 151,936-token vocabulary, Q4_K_M by "
        "llama.cpp's quantiser), written by `benchmarks/synthetic_model.py`; figures by `benchmarks/scale.py`, "
        "via `benchmarks/run_all.py --scale GGUF`. One run each; depths reached by copying KV cells (see "
        "mcp_loco/model/speed.py). A GPU column appears with `--label gpu-<name> --gpu '<the GPU>' --bandwidth-gbs N`.",
        "",
        *[_machine_line(r["machine"]) + _scale_note(r) for r in runs],
        "",
        table(["figure", *labels], rows, True),
        *notes,
    ]


def _scale_note(f: Figures) -> str:
    note = f" Configuration of the rows below the speed rows: {f.get('best', '–')}."
    if f.get("note"):
        note += " " + f["note"]
    if f.get("loadavg"):
        note += (
            f" 1-minute load average after each part: {', '.join(map(str, f['loadavg']))} (other work shared "
            f"the {f['machine']['cores']} cores, so these speeds are lower than on an idle machine)."
        )
    return note


def _defaults_note(f: Figures) -> list[str]:
    """The sentences that tie the llama defaults (mcp_loco/config.py) to this run's figures."""
    try:
        kv = {(r["n_ctx"], r["type"]): r for r in f["kv"]}
        f16, q8 = kv[(32768, "f16")], kv[(32768, "q8_0")]
        on, off = _speed(f, "f16+fa", 8192, "decode_tok_s"), _speed(f, "f16", 8192, "decode_tok_s")
        lines = [
            "",
            f"Defaults chosen from the **{f['machine']['label']}** figures (`llama.*` in configs/default.toml): "
            f"`flash_attn = false` with an `f16` cache, because flash attention decoded {on} instead of {off} "
            f"tok/s at 8K of context here, and decoding is most of an exploration's time. It would save memory: "
            f"with it and a `q8_0` cache the cache at 32K takes {q8['kv_mib'] / 1024:.2f} instead of "
            f"{f16['kv_mib'] / 1024:.2f} GiB and llama.cpp's compute buffer {f16['compute_mib']:.0f} instead of "
            f"{f['compute_mib_no_fa_32k']:.0f} MiB (peak RSS {q8['rss_peak_mib'] / 1024:.1f} against "
            f'{f["load"]["rss_peak_mib"] / 1024:.1f} GiB), so `flash_attn = true` and `cache_type_k/v = "q8_0"` '
            "are the settings for a machine short of RAM, or a GPU build. `n_ctx` stays 32768: a typical exploration "
            f"needs ~{f['estimate']['typical_prompt'] + f['estimate']['typical_written']} tokens, the model was "
            f"trained on 16,384-token sequences, and 50K would cost {kv[(51200, 'f16')]['kv_mib'] / 1024:.2f} GiB of "
            "f16 cache for turns it rarely reaches.",
        ]
    except (KeyError, TypeError, StopIteration):
        return []
    if "threads_cmp" in f and "batch_cmp" in f:
        lines.append(
            "`n_threads = 0` (all cores) and `n_batch = 512` stay: see the threads and n_batch rows (on a machine "
            "whose cores are busy with other work, one thread is faster; benchmarks/README.md)."
        )
    return lines
