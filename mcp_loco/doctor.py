"""`mcp-loco doctor`: check each part a working install needs, and say what to fix."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from mcp_loco.config import Settings
from mcp_loco.errors import LocoError
from mcp_loco.interfaces import GenerateOptions, Segment
from mcp_loco.model.speed import (
    DepthBench,
    Point,
    Shape,
    SpeedProfile,
    bench,
    estimate_seconds,
    nearest_profile,
    save_points,
)

if TYPE_CHECKING:
    from mcp_loco.model.modelfiles import Located

REBUILD = (
    'CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" '
    "pip install --force-reinstall --no-cache-dir llama-cpp-python"
)


def _check_ripgrep(settings: Settings) -> str:
    from mcp_loco.sandbox import find_rg

    rg = find_rg(settings.tools.rg_path)
    out = subprocess.run([rg, "--version"], capture_output=True, text=True, timeout=10, check=True)
    return f"{out.stdout.splitlines()[0]} ({rg})"


def _check_llama_import(settings: Settings) -> str:
    import llama_cpp

    info = llama_cpp.llama_print_system_info().decode(errors="replace").strip()
    return f"llama-cpp-python {llama_cpp.__version__}; {info[:160]}"


def _local_model(settings: Settings) -> Path:
    """The model file on this machine; doctor never downloads."""
    return _located(settings).path


def _located(settings: Settings) -> Located:
    from mcp_loco.model import modelfiles

    return modelfiles.locate(settings.model.model_copy(update={"download": False}))


def _check_model_file(settings: Settings) -> str:
    if settings.model.backend != "llama":
        return f"backend is {settings.model.backend}: no local model file needed"
    found = _located(settings)
    return f"{found.path} ({found.path.stat().st_size / 1e9:.2f} GB; picked by {found.rule})"


def _check_decode(settings: Settings) -> str:
    """Load the model and decode one token: in a child process, so a crashing build cannot take us down."""
    if settings.model.backend == "replay":
        return "replay backend: nothing to decode"
    if settings.model.backend == "llama":
        try:  # the model file check says what is missing
            path = _local_model(settings)
        except LocoError:
            raise LocoError("skipped: no model file to load") from None
        settings = settings.model_copy(deep=True)
        settings.model.path = str(path)
    code = (
        "import sys\n"
        "from mcp_loco.config import Settings\n"
        "from mcp_loco.doctor import decode_one\n"
        "from mcp_loco.errors import LocoError\n"
        "try:\n"
        "    print(decode_one(Settings.model_validate_json(sys.stdin.read())))\n"
        "except LocoError as e:\n"
        "    sys.exit(str(e))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        input=settings.model_dump_json(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        # Exit code 1 is a LocoError whose message is the last line; anything else, show the end of the trace.
        tail = (done.stderr or done.stdout).strip().splitlines()[-1 if done.returncode == 1 else -3 :]
        crashed = done.returncode < 0
        hint = f" The build crashed (signal {-done.returncode}); rebuild it portably: {REBUILD}" if crashed else ""
        raise LocoError(" / ".join(tail) + hint)
    return done.stdout.strip()


def decode_one(settings: Settings) -> str:
    """Load the configured backend and generate one token."""
    from mcp_loco.model.backends import load_backend

    t0 = time.monotonic()
    model = load_backend(settings)
    loaded = time.monotonic() - t0
    try:
        prompt = [Segment("<|im_start|>", True), Segment("user\nSay OK."), Segment("<|im_end|>", True)]
        prompt += [Segment("\n"), Segment("<|im_start|>", True), Segment("assistant\n")]
        out = model.complete(prompt, GenerateOptions(max_tokens=1, temperature=0.0), threading.Event())
    finally:
        model.close()
    return f"loaded in {loaded:.1f}s, decoded {out.usage.completion_tokens} token ({out.text!r})"


CHECKS: list[tuple[str, Callable[[Settings], str]]] = [
    ("ripgrep", _check_ripgrep),
    ("llama.cpp library", _check_llama_import),
    ("model file", _check_model_file),
    ("load + decode one token", _check_decode),
]


def run_doctor(settings: Settings) -> int:
    """Run every check, print one line each; exit code 0 when all pass."""
    failed = 0
    print("settings: ok (precedence: flags > MCP_LOCO_* env > --config > defaults)")
    for name, check in CHECKS:
        try:
            detail = check(settings)
            print(f"{name}: ok - {detail}")
        except (LocoError, OSError, subprocess.SubprocessError, ImportError) as e:
            failed += 1
            print(f"{name}: FAILED - {e}")
    print("all checks passed" if not failed else f"{failed} check(s) failed: fix the lines marked FAILED")
    return 0 if failed == 0 else 1


# ---- doctor --bench ------------------------------------------------------------------------------

CLIENT_LIMIT_S = 120.0
"""Claude Code moves a call still running at 120 s to the background (configs/../shared clients notes)."""
GPU_HINT = 'a GPU build (CMAKE_ARGS="-DGGML_CUDA=on" scripts/setup) or model.backend=http to a llama-server on a GPU'


def exploration_shape(settings: Settings, opening: int) -> Shape:
    """A typical exploration under these settings: ~20K prompt tokens and ~2K written over 10 turns."""
    typical = Shape()
    chars_per_token = 3.5  # code and English, as the replay backend estimates
    return Shape(
        opening=opening,
        result_tokens=min(typical.result_tokens, int(settings.tools.max_output_chars / chars_per_token)),
        call_tokens=typical.call_tokens,
        report_tokens=min(typical.report_tokens, settings.model.max_tokens, settings.agent.report_max_tokens),
        turns=settings.agent.max_turns,
    )


def fixes(points: Sequence[Point], settings: Settings, shape: Shape, limit: float = CLIENT_LIMIT_S) -> list[str]:
    """Settings that would bring the estimate within the limit, best first (the GPU build always last)."""
    out = []
    turns = [t for t in range(shape.turns - 1, 0, -1) if estimate_seconds(points, replace(shape, turns=t)) <= limit]
    if turns:
        out.append(f"agent.max_turns={turns[0]}")
    for chars in (20000, 12000, 8000, 4000, 2000, 1000):
        capped = replace(shape, result_tokens=min(shape.result_tokens, int(chars / 3.5)))
        if chars < settings.tools.max_output_chars and estimate_seconds(points, capped) <= limit:
            out.append(f"tools.max_output_chars={chars}")
            break
    out.append(GPU_HINT)
    return out


def run_bench(settings: Settings) -> int:
    """Measure prefill and decode at a few depths (~30 s) and estimate a typical exploration's seconds."""
    from mcp_loco.explore.turns import Turns
    from mcp_loco.model.backends.llama_cpp import LlamaModel
    from mcp_loco.model.backends.speculative import WINS_AT
    from mcp_loco.model.protocol import render

    if settings.model.backend != "llama":
        print(f"bench: FAILED - measures the llama backend, not {settings.model.backend}")
        return 1
    try:
        path = _local_model(settings)
        t0 = time.monotonic()
        model = LlamaModel(path, settings.llama, probe=False)  # the bench measures more than the probe would
    except LocoError as e:
        print(f"bench: FAILED - {e}")
        return 1
    s = settings.llama
    print(
        f"bench: {path.name} loaded in {time.monotonic() - t0:.1f}s; n_ctx {model.n_ctx}, n_batch {s.n_batch}, "
        f"KV {s.cache_type_k}/{s.cache_type_v}, flash_attn {'on' if s.flash_attn else 'off'}, "
        f"threads {s.n_threads or os.cpu_count()}"
    )
    if model.draft_gain is not None:
        print(
            f"bench: speculative decoding {'on' if model.drafting else 'off'} (auto): a fully accepted draft of "
            f"{s.draft_max} tokens is {model.draft_gain:.2f}x faster than decoding it here; auto drafts from {WINS_AT}x"
        )
    try:
        turns = Turns(model, settings)
        opening = model.count_tokens(render(turns.opening("/", "")))
        turns.close()
        with bench(model) as b:
            points = _bench_points(b)
        key = model.speed_key
    finally:
        model.close()
    for p in points:
        print(
            f"bench: at {p.depth:6d} tokens of context: prefill {p.prefill_tok_s:8.1f} tok/s, "
            f"decode {p.decode_tok_s:6.1f} tok/s"
        )
    shape = exploration_shape(settings, opening)
    seconds = estimate_seconds(points, shape)
    fits = seconds <= CLIENT_LIMIT_S
    print(
        f"bench: a typical exploration ({shape.turns} turns, {shape.prompt_evaluated} prompt tokens evaluated, "
        f"{shape.written} written) takes about {seconds:.0f} s of model time here: "
        + (f"fits the clients' {CLIENT_LIMIT_S:.0f} s" if fits else f"does not fit the clients' {CLIENT_LIMIT_S:.0f} s")
    )
    needed = shape.prompt_evaluated + shape.written
    if needed > model.n_ctx:
        print(f"bench: it needs about {needed} tokens of context, more than llama.n_ctx={model.n_ctx}: raise it")
    if not fits:
        print("bench: to fit, set " + "; or ".join(fixes(points, settings, shape)))
    try:
        saved = save_points(key, points, note=f"doctor --bench, {path.name}")
        print(f"bench: saved to {saved}: the model starts from these speeds at load instead of a probe")
    except OSError as e:
        print(f"bench: could not save the speeds ({e.strerror}); the model probes its speed at load instead")
    recommend(points, settings)
    return 0


def recommend(points: Sequence[Point], settings: Settings) -> None:
    """Name the budget-table profile (docs/tool.md) this machine matches, and the budget settings the simulator advises."""
    from mcp_loco.explore.simulate import advise

    short = min(points, key=lambda p: p.depth)
    profile = nearest_profile(short)
    print(
        f"bench: this machine is closest to the '{profile.name}' profile ({profile.label}) of the budget table in docs/tool.md"
    )
    # In the simulation these speeds are the machine's by definition: trusted, as fresh timings would be.
    advice = advise(SpeedProfile(points, source="doctor --bench", trusted=True), settings)
    d, a = advice.at_default, advice.at_advised
    if d.stop_reason == "refused":
        outcome = "refused at once: reading the question and writing a short report alone outlast it"
    else:
        written = "written by the model" if d.by_model else f"not written ({d.stop_reason})"
        outcome = f"{d.turns} tool turns, {d.tokens_read} prompt tokens read, report {written}"
    print(f"bench: simulated at the default {d.budget_s:.0f} s budget: {outcome}")
    a_turns = f"{a.turns} tool turns and a {a.report_tokens}-token report in {a.wall_s:.0f} s"
    print(
        f"bench: recommended here: --set agent.deadline_s={advice.deadline_s} --set agent.max_turns={advice.max_turns} "
        f"--set tools.max_output_chars={advice.max_output_chars} (simulated: {a_turns})"
    )
    if advice.deadline_s > CLIENT_LIMIT_S:
        print(
            f"bench: a {advice.deadline_s} s call outlasts Claude Code's {CLIENT_LIMIT_S:.0f} s: raise "
            f"CLAUDE_CODE_MCP_AUTO_BACKGROUND_MS, or use {GPU_HINT}"
        )


def _bench_points(b: DepthBench, budget_s: float = 6.0) -> list[Point]:
    """Three depths up to 16K (within n_ctx), chunk and decode lengths sized from a first probe to ~budget_s each."""
    probe = 16
    rate = probe / b.prefill(b.tokens(probe))
    chunk = max(16, min(512, int(rate * budget_s / 2)))
    dec_rate = 4 / b.decode(4, b.tokens(1)[0])
    n_decode = max(4, min(64, int(dec_rate * budget_s / 2)))
    room = b.n_ctx - chunk - n_decode - 1
    depths = sorted({0, min(4096, room), min(16384, room)})
    b.unit = chunk  # evaluated once, then copied to reach each depth
    return [b.measure(d, chunk, n_decode) for d in depths]
