"""`mcp-loco doctor --bench`, the depth measurements under it, and the exploration estimate."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from server_helpers import BIN

from mcp_loco.config import LlamaSettings, Settings
from mcp_loco.doctor import CLIENT_LIMIT_S, GPU_HINT, exploration_shape, fixes
from mcp_loco.errors import BackendError
from mcp_loco.explore.simulate import USEFUL_TURNS, advise
from mcp_loco.model.backends.speculative import WINS_AT
from mcp_loco.model.speed import PROFILES, DepthBench, Point, Shape, estimate_seconds, repeat_state

ONE_THREAD = ["--set", "llama.n_threads=1", "--set", "llama.n_threads_batch=1"]
"""llama.cpp's worker threads spin while they wait: on a machine busy with other tests one thread is faster."""


def test_estimate_adds_each_turns_prefill_and_decode_at_its_depth() -> None:
    flat = [Point(0, prefill_tok_s=100.0, decode_tok_s=10.0), Point(8192, prefill_tok_s=100.0, decode_tok_s=10.0)]
    shape = Shape(opening=1000, result_tokens=500, call_tokens=20, report_tokens=300, turns=3)
    # 1000 + 2*500 tokens at 100 tok/s, 2*20 + 300 tokens at 10 tok/s.
    assert estimate_seconds(flat, shape) == pytest.approx(20.0 + 34.0)
    # Slower with depth: the same exploration costs more than at the shallow speed.
    sloping = [Point(0, 100.0, 10.0), Point(8192, 50.0, 5.0)]
    assert estimate_seconds(sloping, shape) > estimate_seconds(flat, shape)


def test_fixes_name_the_most_turns_that_fit_and_a_gpu_build() -> None:
    points = [Point(0, prefill_tok_s=200.0, decode_tok_s=20.0), Point(16384, prefill_tok_s=150.0, decode_tok_s=15.0)]
    settings = Settings()
    shape = exploration_shape(settings, opening=1500)
    assert estimate_seconds(points, shape) > CLIENT_LIMIT_S
    out = fixes(points, settings, shape)
    assert out[-1] == GPU_HINT
    turns = int(next(f for f in out if f.startswith("agent.max_turns=")).split("=")[1])
    assert estimate_seconds(points, Shape(**{**shape.__dict__, "turns": turns})) <= CLIENT_LIMIT_S
    assert estimate_seconds(points, Shape(**{**shape.__dict__, "turns": turns + 1})) > CLIENT_LIMIT_S


def test_shape_follows_the_settings() -> None:
    settings = Settings()
    settings.agent.max_turns = 4
    settings.tools.max_output_chars = 3500
    settings.model.max_tokens = 512
    shape = exploration_shape(settings, opening=900)
    assert (shape.turns, shape.result_tokens, shape.report_tokens) == (4, 1000, 512)
    assert shape.prompt_evaluated == 900 + 3 * 1000 and shape.written == 3 * 50 + 512


def test_an_unknown_state_layout_is_refused() -> None:
    with pytest.raises(BackendError, match="unknown sequence state layout"):
        repeat_state(b"\0" * 16, 10)


@pytest.mark.model
def test_filled_cache_holds_the_depth_and_is_read_by_attention(small_model_path: Path) -> None:
    from mcp_loco.model.backends.llama_cpp import LlamaModel

    model = LlamaModel(small_model_path, LlamaSettings(n_ctx=8192, n_threads=1, n_threads_batch=1))
    b = DepthBench(model, unit=128)
    try:
        b.fill(6000)  # raises unless llama.cpp holds exactly 6000 cells afterwards
        assert b.depth == 6000
        deep = b.measure(6000, 64, 4)
        shallow = b.measure(0, 64, 4)
        # The copied cells are attended to: the same chunk after 6000 of them is not free of them.
        assert deep.prefill_tok_s < shallow.prefill_tok_s
    finally:
        b.close()
        model.close()


def test_advice_comes_from_the_simulator_for_slow_and_fast_machines() -> None:
    slow = advise(PROFILES[0].speed())  # this project's 2 cores at the 4B shape
    assert slow.deadline_s > 100 and slow.at_advised.by_model and slow.at_advised.turns >= USEFUL_TURNS
    assert slow.max_turns == min(10, slow.at_advised.turns + 1) and slow.max_output_chars < 40000
    assert slow.at_default.budget_s == 100 and slow.at_default.turns < USEFUL_TURNS
    fast = advise(next(p for p in PROFILES if p.name == "nvidia-consumer").speed())
    assert (fast.deadline_s, fast.max_turns, fast.max_output_chars) == (100, 10, 40000)
    assert fast.at_default.by_model and fast.at_default.stop_reason == "answered"


@pytest.mark.model
@pytest.mark.slow
def test_doctor_bench_estimates_an_exploration(small_model_path: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_LOCO_")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    done = subprocess.run(
        [str(BIN), "doctor", "--bench", "--model", str(small_model_path), *ONE_THREAD, "--set", "llama.n_ctx=6144"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    depths = re.findall(
        r"^bench: at +(\d+) tokens of context: prefill +[\d.]+ tok/s, decode +[\d.]+ tok/s$", done.stdout, re.M
    )
    assert [int(d) for d in depths] == sorted({int(d) for d in depths}) and len(depths) == 3, done.stdout
    line = next(x for x in done.stdout.splitlines() if "exploration" in x)
    seconds = float(re.search(r"takes about (\d+) s", line).group(1))  # type: ignore[union-attr]
    fits = seconds <= CLIENT_LIMIT_S
    assert ("fits the clients' 120 s" in line) == fits and ("does not fit" in line) == (not fits), line
    assert ("bench: to fit, set " in done.stdout) == (not fits)
    # The default speculative = "auto" timed the model at load and says what it decided.
    spec = re.search(r"^bench: speculative decoding (on|off) \(auto\): .* is ([\d.]+)x faster", done.stdout, re.M)
    assert spec is not None, done.stdout
    assert (spec.group(1) == "on") == (float(spec.group(2)) >= WINS_AT), spec.group(0)
    # It names the budget-table profile (docs/tool.md) this machine is closest to, and the settings the simulator advises.
    named = re.search(r"^bench: this machine is closest to the '([\w-]+)' profile", done.stdout, re.M)
    assert named is not None and named.group(1) in {p.name for p in PROFILES}, done.stdout
    advice = re.search(
        r"^bench: recommended here: --set agent.deadline_s=(\d+) --set agent.max_turns=(\d+) "
        r"--set tools.max_output_chars=(\d+) \(simulated: (\d+) tool turns",
        done.stdout,
        re.M,
    )
    assert advice is not None, done.stdout
    assert 1 <= int(advice.group(2)) <= 10 and 2000 <= int(advice.group(3)) <= 40000
    # The measured speeds are cached where a model loaded on this machine starts from them.
    saved = re.search(r"^bench: saved to (\S+\.json):", done.stdout, re.M)
    assert saved is not None and Path(saved.group(1)).is_relative_to(tmp_path / "cache"), done.stdout
    points = json.loads(Path(saved.group(1)).read_text())["points"]
    assert [p["depth"] for p in points] == [int(d) for d in depths]
