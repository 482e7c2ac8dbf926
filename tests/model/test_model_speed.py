"""The backend knows its speed: seeded at load (a probe, or the cached doctor --bench result), learned from
every generation, by context depth; backends that cannot measure say so."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from mcp_loco.config import HttpSettings, LlamaSettings
from mcp_loco.interfaces import GenerateOptions
from mcp_loco.model.backends.function import FunctionModel
from mcp_loco.model.backends.openai_compat import OpenAICompatModel
from mcp_loco.model.backends.replay import ReplayModel
from mcp_loco.model.protocol import Message, render
from mcp_loco.model.speed import (
    HALVING_DEPTH,
    PROFILES,
    Point,
    SpeedProfile,
    cache_dir,
    load_points,
    machine_key,
    nearest_profile,
    save_points,
)

# ---- the profile itself --------------------------------------------------------------------------


def test_one_depth_seen_assumes_the_published_halving() -> None:
    speed = SpeedProfile([Point(0, 100.0, 10.0)])
    assert speed.prefill_s(100, 0) == pytest.approx(1.0 * (1 + 50 / HALVING_DEPTH))
    # At ~10K of context a token costs about twice what it costs at the start.
    assert speed.decode_s(1, HALVING_DEPTH) / speed.decode_s(1, 0) == pytest.approx(2.0, rel=0.01)
    assert speed.prefill_s(0, 5000) == 0.0 and speed.decode_s(-3, 0) == 0.0


def test_several_depths_fit_the_slope_they_show() -> None:
    # The 4B shape on this CPU: 9.68 tok/s at 1K, 4.08 at 8K, 1.80 at 24K.
    speed = SpeedProfile([Point(1024, 25.42, 9.68), Point(8192, 10.57, 4.08), Point(24576, 5.23, 1.80)])
    at1k, at8k, at24k = (speed.decode_s(1, d) for d in (1024, 8192, 24576))
    assert at1k < at8k < at24k
    assert 1 / at24k == pytest.approx(1.80, rel=0.35)
    assert speed.prefill_s(1000, 8000) > speed.prefill_s(1000, 0)


def test_observations_move_the_estimate_toward_what_was_measured() -> None:
    speed = SpeedProfile([Point(512, 100.0, 10.0)])
    for _ in range(10):  # the machine got busy: a third of the seeded speed
        speed.observe_prefill(300, 9.0, 400)
        speed.observe_decode(50, 15.0, 700)
    assert speed.at(512).prefill_tok_s == pytest.approx(33.3, rel=0.1)
    assert speed.at(512).decode_tok_s == pytest.approx(3.33, rel=0.1)
    # Too short to say anything about throughput: ignored.
    before = speed.prefill_s(100, 0)
    speed.observe_prefill(1, 5.0, 0)
    speed.observe_decode(1, 5.0, 0)
    assert speed.prefill_s(100, 0) == before


def test_unmeasured_profile_prices_nothing() -> None:
    speed = SpeedProfile()
    assert not speed.known and speed.prefill_s(1000, 0) == 0.0


def test_each_published_profile_is_its_own_nearest() -> None:
    for profile in PROFILES:
        assert nearest_profile(min(profile.points, key=lambda p: p.depth)) is profile
        assert profile.source and profile.label


# ---- the cache of doctor --bench -----------------------------------------------------------------


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return cache_dir()


def test_cache_is_keyed_by_file_and_machine(cache: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    a.write_bytes(b"x" * 10)
    b.write_bytes(b"x" * 10)
    key = machine_key(a, "gpu_layers=-1")
    assert key != machine_key(b, "gpu_layers=-1") != machine_key(a, "gpu_layers=0")
    save_points(key, [Point(0, 50.0, 5.0)])
    assert load_points(key) == [Point(0, 50.0, 5.0)] and cache.is_dir()
    a.write_bytes(b"y" * 11)  # a new file at the same path is another model
    assert machine_key(a, "gpu_layers=-1") != key


@pytest.mark.parametrize(
    "content",
    ["", "{", "[]", '{"points": [{"depth": 0}]}', '{"points": [{"depth": 0, "prefill_tok_s": 0, "decode_tok_s": 1}]}'],
)
def test_a_broken_cache_file_is_ignored(cache: Path, content: str) -> None:
    cache.mkdir(parents=True)
    (cache / "k.json").write_text(content)
    assert load_points("k") is None


# ---- the real backend ----------------------------------------------------------------------------


@pytest.mark.model
def test_loaded_model_probes_its_speed_and_learns_from_each_generation(small_model_path: Path, cache: Path) -> None:
    from mcp_loco.model.backends.llama_cpp import LlamaModel

    t0 = time.monotonic()
    model = LlamaModel(small_model_path, LlamaSettings(n_ctx=4096, n_threads=1, n_threads_batch=1))
    try:
        assert time.monotonic() - t0 < 30
        speed = model.speed
        assert speed.known and "probed at load" in speed.describe()
        assert speed.trusted  # measured here just now: a call may be refused on it
        probed = speed.at(1024)
        long_text = "".join(f"def f{i}(x):\n    return x + {i}\n" for i in range(30))
        out = model.complete(
            render([Message("user", "Explain this file."), Message("tool", long_text)]),
            GenerateOptions(max_tokens=24, temperature=0.0),
        )
        assert out.usage.prompt_tokens_evaluated > 300
        learned = speed.at(1024)
        # The prompt of 300+ tokens and the reply were timed and moved both estimates.
        assert learned.prefill_tok_s != probed.prefill_tok_s
        assert learned.decode_tok_s != probed.decode_tok_s or out.usage.completion_tokens < 2
        # Pricing the turn it just ran comes out near what it took (same machine, same minute).
        assert speed.prefill_s(out.usage.prompt_tokens_evaluated, 0) > 0
    finally:
        model.close()


@pytest.mark.model
def test_loaded_model_starts_from_the_cached_bench(small_model_path: Path, cache: Path) -> None:
    from mcp_loco.model.backends.llama_cpp import LlamaModel

    settings = LlamaSettings(n_ctx=2048, n_threads=1, n_threads_batch=1)
    first = LlamaModel(small_model_path, settings)
    key = first.speed_key
    first.close()
    # Absurd figures, so their use is unmistakable.
    save_points(key, [Point(0, 3.0, 0.5), Point(4096, 2.0, 0.25)], note="test")
    model = LlamaModel(small_model_path, settings)
    try:
        assert "doctor --bench" in model.speed.describe()
        assert not model.speed.trusted  # a cached result shapes budgets but refuses no call until confirmed
        assert model.speed.at(0).prefill_tok_s == pytest.approx(3.0, rel=0.05)
        assert model.speed.at(0).decode_tok_s == pytest.approx(0.5, rel=0.05)
    finally:
        model.close()
    data = json.loads((cache / f"{key}.json").read_text())
    assert data["note"] == "test"


def test_backends_without_a_measurement_say_so() -> None:
    assert ReplayModel(["x"]).speed is None
    assert FunctionModel(lambda r: "x").speed is None
    http = OpenAICompatModel(HttpSettings(endpoints=["http://127.0.0.1:9/v1"]))
    try:
        assert http.speed is None
    finally:
        http.close()


@pytest.mark.model
def test_without_the_probe_the_speed_is_learned_from_the_first_generation(small_model_path: Path, cache: Path) -> None:
    from mcp_loco.model.backends.llama_cpp import LlamaModel

    model = LlamaModel(small_model_path, LlamaSettings(n_ctx=2048, n_threads=1, n_threads_batch=1), probe=False)
    try:
        assert not model.speed.known and not model.speed.trusted
        long_text = "".join(f"x{i} = {i}\n" for i in range(40))
        model.complete(render([Message("user", long_text)]), GenerateOptions(max_tokens=8, temperature=0.0))
        assert model.speed.prefill_s(100, 0) > 0 and model.speed.trusted
    finally:
        model.close()
