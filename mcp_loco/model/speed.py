"""Prefill and decode speed at a context depth, and what they make of an exploration (doctor --bench, benchmarks).

Filling a 4B model's cache to 24K tokens on a CPU takes most of an hour, so a depth is reached by
copying: one chunk is evaluated, its KV cells are read back with llama_state_seq_get_data, and a state
holding that chunk repeated at consecutive positions is written back with llama_state_seq_set_data.
Attention then reads as many cells as a real conversation of that length; the values do not matter to
the cost. The state layout is llama.cpp's (llama-kv-cache.cpp state_write); a layout this code does not
know is refused with a clear error rather than misread.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import math
import os
import platform
import struct
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mcp_loco.errors import BackendError

if TYPE_CHECKING:
    from mcp_loco.model.backends.llama_cpp import LlamaModel

_MAGIC = 0xAF143CD8  # io_magic in llama-context.cpp, first word of a sequence state


@dataclass(frozen=True)
class Point:
    """One measurement: tokens per second at a context depth."""

    depth: int
    prefill_tok_s: float
    decode_tok_s: float


class DepthBench:
    """Times prefill chunks and decoded tokens at chosen depths on a loaded LlamaModel."""

    def __init__(self, model: LlamaModel, unit: int = 512, seed: int = 0) -> None:
        # The backend's own llama_cpp.Llama, so the context has exactly the product's settings.
        self._llm: Any = model._llm
        self._lib: Any = model._lib
        self._ctx = self._llm._ctx.ctx
        self._n_vocab = int(self._llm.n_vocab())
        chain = self._lib.llama_sampler_chain_init(self._lib.llama_sampler_chain_default_params())
        for s in (
            self._lib.llama_sampler_init_top_k(20),
            self._lib.llama_sampler_init_top_p(0.8, 1),
            self._lib.llama_sampler_init_temp(0.7),
            self._lib.llama_sampler_init_dist(seed),
        ):
            self._lib.llama_sampler_chain_add(chain, s)
        self._sampler = chain
        self.unit = unit
        """Tokens evaluated once and copied to reach a depth."""
        self._unit: bytes | None = None

    @property
    def n_ctx(self) -> int:
        """Context size of the loaded model."""
        return int(self._llm.n_ctx())

    @property
    def depth(self) -> int:
        """Tokens now in the cache."""
        return int(self._llm.n_tokens)

    def close(self) -> None:
        """Free the sampler (the model is the caller's)."""
        if self._sampler is not None:
            self._lib.llama_sampler_free(self._sampler)
            self._sampler = None

    def tokens(self, n: int, start: int = 0) -> list[int]:
        """N ordinary token ids (a fixed pseudo-random walk over the vocabulary)."""
        return [(1000 + 7919 * (start + i)) % min(self._n_vocab, 49000) for i in range(n)]

    def truncate(self, depth: int) -> None:
        """Drop every cell from `depth` on."""
        self._llm._ctx.kv_cache_seq_rm(-1, depth, -1)
        self._llm.n_tokens = depth

    def prefill(self, tokens: Sequence[int]) -> float:
        """Evaluate the tokens at the current depth (n_batch at a time); return seconds."""
        started = time.perf_counter()
        self._llm.eval(list(tokens))
        return time.perf_counter() - started

    def decode(self, n: int, first: int) -> float:
        """Decode n tokens one at a time, each sampled and fed back (random weights: kept to ordinary ids)."""
        token = first
        started = time.perf_counter()
        for _ in range(n):
            self._llm.eval([token])
            sampled = int(self._lib.llama_sampler_sample(self._sampler, self._ctx, -1))
            token = sampled if 0 <= sampled < 49000 else first
        return time.perf_counter() - started

    def force(self, tokens: Sequence[int]) -> float:
        """Decode recorded tokens one at a time, sampling after each as generation would; return seconds."""
        started = time.perf_counter()
        for token in tokens:
            self._llm.eval([token])
            self._lib.llama_sampler_sample(self._sampler, self._ctx, -1)
        return time.perf_counter() - started

    def fill(self, depth: int) -> None:
        """Make the cache hold `depth` cells at positions 0..depth-1 (copies of one evaluated chunk)."""
        if depth > self.n_ctx:
            raise BackendError(f"depth {depth} does not fit n_ctx {self.n_ctx}")
        if depth == 0:
            self.truncate(0)
            return
        if self._unit is None:
            self.truncate(0)
            self.prefill(self.tokens(min(self.unit, self.n_ctx)))
            self._unit = self._read_state()
        self._write_state(self._unit, depth)
        self._llm.n_tokens = depth
        got = int(self._lib.llama_memory_seq_pos_max(self._lib.llama_get_memory(self._ctx), 0)) + 1
        if got != depth:
            raise BackendError(f"filling the cache to {depth} cells left {got}: llama.cpp's state layout changed")

    def measure(self, depth: int, chunk: int, n_decode: int) -> Point:
        """Prefill `chunk` tokens after `depth` cached ones, then decode `n_decode`."""
        self.fill(depth)
        p = self.prefill(self.tokens(chunk, start=depth))
        d = self.decode(n_decode, self.tokens(1, start=depth + chunk)[0])
        self.truncate(depth)
        return Point(depth, chunk / p, n_decode / d)

    # ---- the state blob -------------------------------------------------------------------------

    def _read_state(self) -> bytes:
        size = int(self._lib.llama_state_seq_get_size(self._ctx, 0))
        buf = (ctypes.c_uint8 * size)()
        n = int(self._lib.llama_state_seq_get_data(self._ctx, buf, size, 0))
        if n == 0:
            raise BackendError("llama_state_seq_get_data failed")
        return bytes(buf)[:n]

    def _write_state(self, unit: bytes, cells: int) -> None:
        blob = repeat_state(unit, cells)
        buf = (ctypes.c_uint8 * len(blob)).from_buffer_copy(blob)
        if int(self._lib.llama_state_seq_set_data(self._ctx, buf, len(blob), 0)) == 0:
            raise BackendError("llama_state_seq_set_data refused the state")


def repeat_state(unit: bytes, cells: int) -> bytes:
    """A one-sequence KV state of `cells` cells at positions 0..cells-1, the unit's cells repeated."""
    r = _Reader(unit)
    magic, seq_id, n_stream = r.unpack("<IiI")
    if magic != _MAGIC or n_stream != 1:
        raise BackendError(f"unknown sequence state layout (magic {magic:#x}, {n_stream} streams)")
    (count,) = r.unpack("<I")
    for _ in range(count):
        _pos, n_seq = r.unpack("<iI")
        if n_seq != 1:
            raise BackendError("unknown sequence state layout (a cell with several sequences)")
        r.unpack("<i")
    v_trans, n_layer = r.unpack("<II")
    out = [struct.pack("<IiII", magic, seq_id, n_stream, cells)]
    out += [struct.pack("<iIi", p, 1, seq_id) for p in range(cells)]
    out.append(struct.pack("<II", v_trans, n_layer))
    reps: int = math.ceil(cells / count)
    cells_n: int = cells
    count_n: int = count

    def rows(row: int) -> bytes:
        data = r.take(count_n * row)
        return (data * reps)[: cells_n * row]

    for _ in range(n_layer):  # K: one row per cell
        k_type, k_row = r.unpack("<iQ")
        out += [struct.pack("<iQ", k_type, k_row), rows(k_row)]
    for _ in range(n_layer):
        if not v_trans:
            v_type, v_row = r.unpack("<iQ")
            out += [struct.pack("<iQ", v_type, v_row), rows(v_row)]
        else:  # transposed V: for each of the n_embd_v elements, one value per cell
            v_type, v_el, n_embd = r.unpack("<iII")
            out.append(struct.pack("<iII", v_type, v_el, n_embd))
            out += [rows(v_el) for _ in range(n_embd)]
    if not r.done:
        raise BackendError(f"unknown sequence state layout ({len(unit) - r.at} bytes left over)")
    return b"".join(out)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def unpack(self, fmt: str) -> tuple[Any, ...]:
        values = struct.unpack_from(fmt, self.data, self.at)
        self.at += struct.calcsize(fmt)
        return values

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise BackendError("unknown sequence state layout (truncated)")
        chunk = self.data[self.at : self.at + n]
        self.at += n
        return chunk

    @property
    def done(self) -> bool:
        return self.at == len(self.data)


# ---- what the figures make of an exploration ----------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """The token counts of one exploration: the opening prompt, then per tool turn, then the report."""

    opening: int = 1500
    result_tokens: int = 1850
    call_tokens: int = 50
    report_tokens: int = 1500
    turns: int = 10
    """Model turns, the last of which writes the report."""

    @property
    def prompt_evaluated(self) -> int:
        """Prompt tokens evaluated with prefix reuse: the opening, then each turn's tool results."""
        return self.opening + (self.turns - 1) * self.result_tokens

    @property
    def written(self) -> int:
        """Tokens the model writes."""
        return (self.turns - 1) * self.call_tokens + self.report_tokens


def _interp(points: Sequence[Point], depth: float, attr: str) -> float:
    """Seconds per token at a depth: linear in the depth (attention grows with it), fitted to the points."""
    pts = sorted(points, key=lambda p: p.depth)
    xs = [p.depth for p in pts]
    ys = [1.0 / float(getattr(p, attr)) for p in pts]
    if len(pts) == 1:
        return ys[0]
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    slope = max(0.0, sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var) if var else 0.0
    return max(min(ys), my + slope * (depth - mx))


def estimate_seconds(points: Sequence[Point], shape: Shape) -> float:
    """Seconds of prompt evaluation and decoding for an exploration of that shape (tools and overhead excluded)."""
    seconds, depth = 0.0, 0.0
    evaluate = [shape.opening] + [shape.result_tokens] * (shape.turns - 1)
    for turn, new in enumerate(evaluate):
        seconds += new * _interp(points, depth + new / 2, "prefill_tok_s")
        depth += new
        wrote = shape.report_tokens if turn == shape.turns - 1 else shape.call_tokens
        seconds += wrote * _interp(points, depth + wrote / 2, "decode_tok_s")
        depth += wrote
    return seconds


# ---- the speed a backend measures as it runs ------------------------------------------------------

HALVING_DEPTH = 10_000
"""With a single depth measured, time per token is taken to double over this many tokens of context
(published llama.cpp figures for Qwen3-4B: decode roughly halves near 10K on Metal and CPUs)."""
SEED_WEIGHT = 64.0
"""How many tokens' worth of evidence a seed point (load probe, cached bench) counts for."""
DECAY = 0.9
"""Each new observation multiplies the weight of the older ones by this: recent speed counts most."""
TRUST_S = 600.0
"""How long timings from real generations stay recent enough to refuse a call on."""
MIN_PREFILL_TOKENS = 16
"""Prompt evaluations shorter than this are mostly fixed cost and are not learned from."""


class SpeedProfile:
    """Prefill and decode seconds as a function of context depth, seeded from points and learned from timings.

    Seconds per token are modelled as linear in the depth (attention reads every cached cell), fitted by
    weighted least squares over recent observations; thread-safe (the backend writes, the loop reads).
    """

    def __init__(self, points: Sequence[Point] = (), *, source: str = "", trusted: bool = False) -> None:
        self.source = source
        """Where the seed came from (`probe at load`, `doctor --bench`, a published profile)."""
        self._trusted = trusted
        self._observed_at: float | None = None  # when a generation was last timed
        self._obs: dict[str, deque[list[float]]] = {"prefill": deque(maxlen=48), "decode": deque(maxlen=48)}
        self._lock = threading.Lock()
        for p in points:
            self._add("prefill", p.depth, 1.0 / p.prefill_tok_s, SEED_WEIGHT)
            self._add("decode", p.depth, 1.0 / p.decode_tok_s, SEED_WEIGHT)

    def _add(self, kind: str, depth: float, per_token: float, weight: float) -> None:
        with self._lock:
            obs = self._obs[kind]
            for o in obs:
                o[2] *= DECAY
            obs.append([float(depth), per_token, weight])

    def observe_prefill(self, tokens: int, seconds: float, depth: int) -> None:
        """Learn from `tokens` prompt tokens evaluated in `seconds` after `depth` cached ones."""
        if tokens >= MIN_PREFILL_TOKENS and seconds > 0:
            self._add("prefill", depth + tokens / 2, seconds / tokens, float(tokens))
            self._observed_at = time.monotonic()

    def observe_decode(self, tokens: int, seconds: float, depth: int) -> None:
        """Learn from `tokens` generated in `seconds` after a prompt of `depth` tokens."""
        if tokens >= 2 and seconds > 0:
            self._add("decode", depth + tokens / 2, seconds / tokens, float(tokens))
            self._observed_at = time.monotonic()

    def measured_now(self) -> None:
        """Say that the seed was just measured on this machine (the probe at load): trusted like a generation."""
        self._observed_at = time.monotonic()

    @property
    def trusted(self) -> bool:
        """Whether the figures are sure enough to refuse a call on: measured here (a generation, the probe at
        load) in the last TRUST_S seconds, or given as such (a simulation's). An older seed (a cached bench
        result) only shapes the budgeting, so a call still runs and its timings correct the figures."""
        if self._trusted:
            return True
        seen = self._observed_at
        return seen is not None and time.monotonic() - seen <= TRUST_S

    @property
    def known(self) -> bool:
        """Whether both speeds have at least one observation."""
        with self._lock:
            return all(self._obs.values())

    def per_token(self, kind: str, depth: float) -> float:
        """Seconds per prefill or decode token at a context depth (0 when nothing is known)."""
        with self._lock:
            obs = [tuple(o) for o in self._obs[kind]]
        if not obs:
            return 0.0
        w = sum(o[2] for o in obs)
        mx = sum(o[0] * o[2] for o in obs) / w
        my = sum(o[1] * o[2] for o in obs) / w
        var = sum(o[2] * (o[0] - mx) ** 2 for o in obs) / w
        if var >= 1024.0**2:  # depths far enough apart to see the slope
            cov = sum(o[2] * (o[0] - mx) * (o[1] - my) for o in obs) / w
            slope = max(0.0, cov / var)
            return max(min(o[1] for o in obs), my + slope * (depth - mx))
        # One depth seen: assume the published halving, scaled from where it was measured.
        return my * (1 + max(depth, 0) / HALVING_DEPTH) / (1 + mx / HALVING_DEPTH)

    def prefill_s(self, tokens: int, depth: int) -> float:
        """Seconds to evaluate `tokens` prompt tokens after `depth` cached ones."""
        return max(tokens, 0) * self.per_token("prefill", depth + max(tokens, 0) / 2)

    def decode_s(self, tokens: int, depth: int) -> float:
        """Seconds to write `tokens` tokens after a prompt of `depth` tokens."""
        return max(tokens, 0) * self.per_token("decode", depth + max(tokens, 0) / 2)

    def at(self, depth: int) -> Point:
        """The speeds at a depth as tokens per second (for messages and the bench cache)."""
        pre, dec = self.per_token("prefill", depth), self.per_token("decode", depth)
        return Point(depth, 1 / pre if pre else 0.0, 1 / dec if dec else 0.0)

    def describe(self, depths: Sequence[int] = (1024, 8192)) -> str:
        """`prefill 25 / decode 9.7 tok/s at 1K of context, ...` (where the figures came from last)."""
        parts = [
            f"prefill {p.prefill_tok_s:.1f} / decode {p.decode_tok_s:.1f} tok/s at {p.depth // 1024}K of context"
            for p in (self.at(d) for d in depths)
        ]
        return "; ".join(parts) + (f" ({self.source})" if self.source else "")


# ---- the bench result cached per model file and machine ------------------------------------------


def cache_dir() -> Path:
    """Where measured speeds are kept: the user's cache folder."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mcp-loco" / "speed"


def machine_key(model_path: Path, offload: str) -> str:
    """A key for a model file (path, size, mtime) on this machine (CPU, cores, GPU offload)."""
    st = model_path.stat()
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ident = f"{model_path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{cpu}|{os.cpu_count()}|{offload}"
    return hashlib.sha256(ident.encode()).hexdigest()[:24]


def save_points(key: str, points: Sequence[Point], note: str = "") -> Path:
    """Cache a bench result (a small JSON file) for later loads of the same model on this machine."""
    path = cache_dir() / f"{key}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"points": [p.__dict__ for p in points], "note": note, "date": time.strftime("%Y-%m-%d")}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    tmp.replace(path)
    return path


def load_points(key: str) -> list[Point] | None:
    """The cached bench result for this key, or None (missing or unreadable: the caller probes instead)."""
    try:
        data = json.loads((cache_dir() / f"{key}.json").read_text(encoding="utf-8"))
        points = [Point(int(p["depth"]), float(p["prefill_tok_s"]), float(p["decode_tok_s"])) for p in data["points"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return [p for p in points if p.prefill_tok_s > 0 and p.decode_tok_s > 0] or None


@contextmanager
def bench(model: LlamaModel) -> Iterator[DepthBench]:
    """A DepthBench on the model, freed afterwards."""
    b = DepthBench(model)
    try:
        yield b
    finally:
        b.truncate(0)
        b.close()


# ---- published speeds by hardware (the budget simulator's profiles) -----------------------------


@dataclass(frozen=True)
class Profile:
    """A kind of machine: Qwen3-4B Q4_K_M speeds at one or more depths, and where the figures come from."""

    name: str
    label: str
    points: tuple[Point, ...]
    source: str

    def speed(self) -> SpeedProfile:
        """A SpeedProfile seeded with these figures (trusted: a simulation's machine is this fast by definition)."""
        return SpeedProfile(self.points, source=self.name, trusted=True)


PROFILES: tuple[Profile, ...] = (
    Profile(
        "cpu-2core",
        "2-core x86 server CPU (this project's)",
        (Point(1024, 25.42, 9.68), Point(8192, 10.57, 4.08), Point(24576, 5.23, 1.80)),
        "measured here: benchmarks/results/scale-cpu.json (LocoOperator-4B-shaped, 2 threads, f16 cache)",
    ),
    Profile(
        "cpu-laptop",
        "laptop / desktop x86 CPU (8-10 cores)",
        (Point(512, 111.0, 5.9),),
        "published: llama.cpp on a 20-thread x86 CPU, 111 / 5.9 tok/s (a benchmark file in the code index); "
        "depth assumed to halve speed near 10K",
    ),
    Profile(
        "apple-metal",
        "Apple M-series, Metal",
        (Point(512, 337.0, 37.0), Point(10240, 209.0, 20.0)),
        "published: llama.cpp Metal on a Mac, 337 / 37 tok/s, at 10K of context 209 / 20 (a benchmark file in the "
        "code index); MLX on an M3 Pro 615 / 44.6 (ml-explore/mlx-lm PR #1569), llama.cpp on a Mac mini M4 385 / 28",
    ),
    Profile(
        "nvidia-consumer",
        "consumer NVIDIA GPU (RTX 3090 class)",
        (Point(512, 6882.0, 195.0),),
        "published: llama.cpp Vulkan on an RTX 3090, 6,882 / 195 tok/s (a benchmark file in the code index)",
    ),
    Profile(
        "nvidia-datacenter",
        "NVIDIA GPU, CUDA (a datacenter card is at least this fast)",
        (Point(512, 6005.0, 164.0),),
        "published: llama.cpp CUDA on an unnamed NVIDIA GPU, 6,005 / 164 tok/s (a benchmark file in the code "
        "index); no datacenter-card figure for Qwen3-4B on llama.cpp was found",
    ),
)


def nearest_profile(point: Point) -> Profile:
    """The published profile closest to a measured short-context point (by log-distance of both speeds)."""

    def distance(p: Profile) -> float:
        ref = min(p.points, key=lambda q: q.depth)
        return (
            math.log(point.prefill_tok_s / ref.prefill_tok_s) ** 2
            + math.log(point.decode_tok_s / ref.decode_tok_s) ** 2
        )

    return min(PROFILES, key=distance)
