"""llama.cpp in-process backend: tokens in, tokens out, prefix cache reused across turns.

The prompt is tokenized segment by segment (backends/prompt_tokens.py: only template markers
may become control tokens, and the model's own turns keep the tokens it generated) and generation
runs token by token, so this backend owns prefix reuse, cancellation, stop conditions, the lazy
tool-call grammar and speculative decoding (backends/speculative.py). The grammar is armed lazily
in Python: free text is sampled without it, and when the text reaches `<tool_call>` the sampler is swapped for the
grammar-constrained one at that exact position (no re-evaluation when the marker starts a token).
This avoids llama.cpp's own lazy-grammar trigger, which runs std::regex over the whole output
every token and can overflow the stack on long outputs (llama.cpp #17902).
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import structlog

from mcp_loco.config import LlamaSettings
from mcp_loco.errors import BackendError, Cancelled, ModelNotFoundError
from mcp_loco.interfaces import Completion, FinishReason, GenerateOptions, Prompt, Usage
from mcp_loco.model.backends import byte_preview
from mcp_loco.model.backends.llama_load import LIB, load_llama
from mcp_loco.model.backends.prompt_tokens import PromptTokens, added_markers
from mcp_loco.model.backends.sampling import DEAD_END, Sampler
from mcp_loco.model.backends.speculative import WINS_AT, Drafter, DraftStats, batch_gain, unnumbered
from mcp_loco.model.grammar import TOOL_CALL_OPEN, generic_tool_call_grammar, validate_grammar
from mcp_loco.model.speed import Point, SpeedProfile, load_points, machine_key

log = structlog.get_logger("mcp_loco.model.backends.llama_cpp")

_TRIGGER = TOOL_CALL_OPEN.encode()


def _find_stop(text: bytes, stops: Sequence[bytes], new: int) -> int:
    """Earliest stop string ending in the last `new` bytes, or -1."""
    hits = [i for s in stops if (i := text.find(s, max(0, len(text) - new - len(s) + 1))) >= 0]
    return min(hits, default=-1)


class LlamaModel:
    """A GGUF model run in-process by llama-cpp-python; one conversation at a time."""

    def __init__(self, model_path: str | Path, settings: LlamaSettings | None = None, *, probe: bool = True) -> None:
        self.settings = settings or LlamaSettings()
        self.path = Path(model_path).expanduser()
        if not self.path.is_file():
            raise ModelNotFoundError(f"model file {self.path} does not exist: check --model / model.path")
        self._lib = LIB
        self._lock = threading.Lock()
        self._cancel: threading.Event | None = None
        self._llm = load_llama(self._lib, self.path, self.settings)
        self._n_ctx = int(self._llm.n_ctx())
        self._vocab = self._llm._model.vocab
        self._ctx = self._llm._ctx.ctx
        self._n_vocab = int(self._lib.llama_vocab_n_tokens(self._vocab))
        bos = int(self._lib.llama_vocab_bos(self._vocab))
        add_bos = bool(self._lib.llama_vocab_get_add_bos(self._vocab)) and bos >= 0
        self._tokens = PromptTokens(
            lambda text, special: self._llm.tokenize(text, add_bos=False, special=special),
            added_markers(self._lib, self._vocab, self._n_vocab, self._piece),
            bos if add_bos else None,
        )
        self.speculation = DraftStats()
        """What speculative decoding did in the last completion."""
        self._fresh = False  # whether the logits belong to the last token in the context
        self._grammars_checked: set[str] = set()
        self._generic_grammar: str | None = None
        # Checked by llama.cpp between graph nodes, so a long prompt evaluation stops promptly too.
        self._abort_cb = self._lib.ggml_abort_callback(lambda _data: bool(self._cancel and self._cancel.is_set()))
        self._lib.llama_set_abort_callback(self._ctx, self._abort_cb, None)
        self._quoted_cache: dict[str, list[int]] = {}
        self.draft_gain: float | None = None
        """How much faster a fully accepted draft is than decoding it (timed at load when speculative is auto)."""
        self._speculate = self._wants_drafts()
        self._speed = self._seed_speed(probe)

    def _seed_speed(self, probe: bool) -> SpeedProfile:
        """Speeds from `doctor --bench` for this file on this machine, else from a quick probe (~2 s on a 4B CPU)
        unless told not to (doctor --bench measures them itself)."""
        points = load_points(self.speed_key)
        if points is not None:
            return SpeedProfile(points, source="doctor --bench, then measured as it runs")
        if not probe:
            return SpeedProfile(source="measured as it runs")
        try:
            point = self._probe()
        except BackendError as e:  # the loop then budgets by context until a generation is timed
            log.warning("llama_cpp.speed_unprobed", error=str(e))
            return SpeedProfile(source="measured as it runs")
        log.info(
            "llama_cpp.speed_probe",
            prefill_tok_s=round(point.prefill_tok_s, 1),
            decode_tok_s=round(point.decode_tok_s, 1),
        )
        speed = SpeedProfile([point], source="probed at load, then measured as it runs")
        speed.measured_now()
        return speed

    @property
    def speed_key(self) -> str:
        """Identifies this model file on this machine with these offload settings (the bench cache's key)."""
        s = self.settings
        return machine_key(self.path, f"gpu_layers={s.n_gpu_layers}|threads={s.n_threads}")

    def _probe(self, prompt: int = 48, decode: int = 3) -> Point:
        """Time a short prompt evaluation and a few one-token decodes; leaves the cache empty."""
        filler = self._llm.tokenize(b" the quick brown fox jumps over the lazy dog" * (prompt // 8 + 2), add_bos=False)
        try:
            self._eval(filler[:1])  # the first evaluation builds llama.cpp's graphs: not part of the speed
            self._drop_after(0)
            started = time.perf_counter()
            self._eval(filler[:prompt])
            prefill = time.perf_counter() - started
            started = time.perf_counter()
            for token in filler[prompt : prompt + decode]:
                self._extend([token])
            dec = time.perf_counter() - started
        finally:
            self._drop_after(0)
            self._fresh = False
        return Point(0, prompt / prefill, decode / dec)

    # ---- ChatModel ---------------------------------------------------------------------------------

    @property
    def n_ctx(self) -> int:
        """Context window in tokens."""
        return self._n_ctx

    @property
    def speed(self) -> SpeedProfile:
        """Prefill and decode speed by context depth: seeded at load, updated by every generation."""
        return self._speed

    @property
    def drafting(self) -> bool:
        """Whether completions draft tokens by prompt lookup (speculative decoding)."""
        return self._speculate

    def tokenize(self, prompt: Prompt) -> list[int]:
        """Token ids of the prompt: special segments may become control tokens, nothing else can."""
        return self._tokens(prompt)

    def count_tokens(self, prompt: Prompt) -> int:
        """Exact token count."""
        return len(self.tokenize(prompt))

    def complete(self, prompt: Prompt, options: GenerateOptions, cancel: threading.Event | None = None) -> Completion:
        """Generate the assistant's next turn, reusing the cached prefix of the previous call."""
        if cancel is not None and cancel.is_set():
            raise Cancelled("cancelled before generation")
        if self._llm is None:
            raise BackendError("the model was closed")
        ids = self.tokenize(prompt)
        if not ids:
            raise BackendError("the prompt is empty")
        if len(ids) >= self.n_ctx:
            raise BackendError(
                f"the prompt is {len(ids)} tokens but the context window is {self.n_ctx} (llama.n_ctx): "
                "shorten the conversation or raise llama.n_ctx"
            )
        grammar = self._grammar_for(options)
        quoted = self._quoted(prompt) if self._speculate else []
        with self._lock:
            self._cancel = cancel
            try:
                completion, own = self._generate(ids, options, grammar, cancel, quoted)
            finally:
                self._cancel = None
        if completion.finish_reason != "cancelled" and own is not None:
            self._tokens.remember(prompt[-1].text if prompt else "", completion.text, own)
        return completion

    def cached_tokens(self, prompt: Prompt) -> int:
        """How many of the prompt's leading tokens the context already holds (evaluated, reused by the next call)."""
        ids = self.tokenize(prompt)
        with self._lock:
            llm = self._llm
            if llm is None:
                return 0
            n = min(int(llm.n_tokens), len(ids))
            differ = np.flatnonzero(llm.input_ids[:n] != np.asarray(ids[:n], dtype=llm.input_ids.dtype))
            return int(differ[0]) if differ.size else n

    def snapshot(self) -> object:
        """A copy of the evaluated context (KV cache included), to come back to after another conversation."""
        with self._lock:
            if self._llm is None:
                raise BackendError("the model is closed")
            return (self._llm.save_state(), self._fresh)

    def restore(self, state: object) -> None:
        """Return to a snapshot: the next prompt that extends it evaluates only its new tokens."""
        assert isinstance(state, tuple) and len(state) == 2, "not a snapshot of this model"
        saved, fresh = state
        with self._lock:
            if self._llm is None:
                raise BackendError("the model is closed")
            self._llm.load_state(saved)
            self._fresh = bool(fresh)

    def close(self) -> None:
        """Free the model and its context."""
        with self._lock:
            llm, self._llm = getattr(self, "_llm", None), None
            if llm is not None:
                self._lib.llama_set_abort_callback(self._ctx, self._lib.ggml_abort_callback(0), None)
                llm.close()

    # ---- internals ---------------------------------------------------------------------------------

    def _grammar_for(self, options: GenerateOptions) -> str | None:
        grammar = options.grammar
        if grammar is None and options.force_tool_call:
            if self._generic_grammar is None:
                self._generic_grammar = generic_tool_call_grammar()
            grammar = self._generic_grammar
        if grammar is not None and grammar not in self._grammars_checked:
            validate_grammar(grammar)  # llama.cpp may crash on a bad grammar: check it in Python first
            self._grammars_checked.add(grammar)
        return grammar

    def _wants_drafts(self) -> bool:
        """Whether to draft: as configured, or (auto) where a verification batch is measured to pay here."""
        mode = self.settings.speculative
        if mode != "auto":
            return mode == "on"
        batch = min(self.settings.draft_max + 1, int(self._llm.n_batch))
        try:
            self.draft_gain = batch_gain(*self._time_batches(batch), batch)
        except BackendError as e:  # the model still serves, without drafts
            log.warning("llama_cpp.speculative_untimed", error=str(e))
            return False
        on = self.draft_gain >= WINS_AT
        log.info("llama_cpp.speculative", drafting=on, full_draft_gain=round(self.draft_gain, 2), batch=batch)
        return on

    def _time_batches(self, n: int, repeat: int = 2) -> tuple[float, float]:
        """Best seconds of a one-token decode and of an n-token verification batch; leaves the cache empty."""
        filler = self._llm.tokenize(b" the quick brown fox jumps over the lazy dog" * (n // 8 + 2), add_bos=False)
        one: list[float] = []
        batch: list[float] = []
        try:
            self._eval(filler[:1])  # a context to decode after (and the one-token graph built once)
            for _ in range(repeat):
                for size, times in ((1, one), (n, batch)):
                    started = time.perf_counter()
                    self._extend(filler[1 : 1 + size])
                    times.append(time.perf_counter() - started)
                    self._drop_after(1)
        finally:
            self._drop_after(0)
            self._fresh = False
        return min(one), min(batch)

    def _piece(self, token: int) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = self._lib.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._lib.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        return buf.raw[:n]

    def _ends_turn(self, token: int) -> bool:
        lib = self._lib
        return bool(lib.llama_vocab_is_eog(self._vocab, token) or lib.llama_vocab_is_control(self._vocab, token))

    def _eval(self, tokens: Sequence[int]) -> None:
        llm = self._llm
        self._fresh = False
        try:
            llm.eval(tokens)
            self._fresh = True
        except RuntimeError as e:
            # Keep the batches that made it into the cache; drop the partial one.
            llm._ctx.kv_cache_seq_rm(-1, llm.n_tokens, -1)
            if self._cancel is not None and self._cancel.is_set():
                raise Cancelled("cancelled while evaluating the prompt") from None
            raise BackendError(f"llama.cpp failed to evaluate the prompt ({e}); try a smaller llama.n_batch") from None

    def _extend(self, tokens: Sequence[int]) -> None:
        """Evaluate a few generated (and drafted) tokens in one batch, with logits at every position."""
        llm = self._llm
        n = llm.n_tokens
        self._fresh = False
        llm._batch.set_batch(batch=tokens, n_past=n, logits_all=True)
        try:
            llm._ctx.decode(llm._batch)
        except RuntimeError as e:
            llm._ctx.kv_cache_seq_rm(-1, n, -1)
            if self._cancel is not None and self._cancel.is_set():
                raise Cancelled("cancelled while generating") from None
            raise BackendError(f"llama.cpp failed to decode ({e})") from None
        llm.input_ids[n : n + len(tokens)] = tokens
        llm.n_tokens = n + len(tokens)
        self._fresh = True  # the last row of logits is the last token's

    def _drop_after(self, n: int) -> None:
        """Remove the cache entries from position `n` on (a rejected draft)."""
        self._llm._ctx.kv_cache_seq_rm(-1, n, -1)
        self._llm.n_tokens = n

    def _sync(self, target: Sequence[int]) -> int:
        """Make the context hold exactly `target` with fresh logits; return how many tokens were evaluated."""
        llm = self._llm
        cached = llm.n_tokens
        limit = min(cached, len(target))
        differ = np.flatnonzero(llm.input_ids[:limit] != np.asarray(target[:limit], dtype=llm.input_ids.dtype))
        common = int(differ[0]) if differ.size else limit
        if common == len(target) == cached and cached > 0 and self._fresh:
            return 0  # the logits of the last evaluation are still the right ones
        if common == len(target):
            common -= 1  # re-evaluate the last token to get its logits
        if common < cached and not llm._ctx.kv_cache_seq_rm(-1, common, -1):
            common = 0
            llm.reset()
        llm.n_tokens = common
        self._eval(target[common:])
        return len(target) - common

    def _ids_for(self, gen: list[int], text: bytes, cut: int) -> list[int]:
        """Token ids for generated text cut at byte `cut`, keeping whole generated tokens where possible."""
        kept, size = 0, 0
        for tok in gen:
            n = len(self._piece(tok))
            if size + n > cut:
                break
            kept, size = kept + 1, size + n
        while True:
            rest = text[size:cut]
            try:
                rest.decode("utf-8")
                break
            except UnicodeDecodeError:
                if kept == 0:
                    break
                kept -= 1  # a multi-byte character was split across tokens: take one more token back
                size -= len(self._piece(gen[kept]))
        return gen[:kept] + (self._llm.tokenize(rest, add_bos=False, special=False) if rest else [])

    def _rewind_to(self, ids: list[int], gen: list[int], text: bytes, cut: int) -> tuple[list[int], int]:
        """Cut the generated text at byte `cut` in the context too; return its ids and the tokens re-evaluated."""
        new = self._ids_for(gen, text, cut)
        return new, self._sync(ids + new)

    def _quoted(self, prompt: Prompt) -> list[int]:
        """Tokens of the code the prompt's Read results show, without line numbers (a draft source)."""
        out: list[int] = []
        for block in unnumbered(seg.text for seg in prompt if not seg.special):
            tokens = self._quoted_cache.get(block)
            if tokens is None:
                if len(self._quoted_cache) > 512:
                    self._quoted_cache.clear()
                tokens = self._quoted_cache[block] = self._llm.tokenize(block.encode(), add_bos=False, special=False)
            out += tokens
        return out

    def _generate(
        self,
        ids: list[int],
        options: GenerateOptions,
        grammar: str | None,
        cancel: threading.Event | None,
        quoted: Sequence[int] = (),
    ) -> tuple[Completion, list[int] | None]:
        started = time.monotonic()
        try:
            evaluated = self._sync(ids)
        except Cancelled:
            return Completion("", Usage(prompt_tokens=len(ids)), "cancelled"), None
        prompt_s = time.monotonic() - started
        self._speed.observe_prefill(evaluated, prompt_s, len(ids) - evaluated)
        forced = grammar is not None and options.force_tool_call
        s = self.settings
        drafter = (
            Drafter(ids, self.n_ctx, s.draft_ngram_min, s.draft_ngram_max, s.draft_max, quoted)
            if self._speculate
            else None
        )
        turn = _Turn(
            ids, Sampler(self._lib, self._vocab, self._ctx, self._n_vocab, options, grammar if forced else None)
        )
        try:
            finish, extra = self._decode_loop(turn, options, grammar if not forced else None, drafter, cancel)
        finally:
            turn.sampler.close()
        evaluated += extra
        self.speculation = drafter.stats if drafter is not None else DraftStats()
        gen, text = turn.gen, turn.text
        usage = Usage(prompt_tokens=len(ids), prompt_tokens_evaluated=evaluated, completion_tokens=len(gen))
        gen_s = time.monotonic() - started - prompt_s
        self._speed.observe_decode(len(gen), gen_s, len(ids))
        log.debug(
            "llama_cpp.completion",
            prompt_tokens=len(ids),
            evaluated=evaluated,
            completion_tokens=len(gen),
            finish=finish,
            prompt_s=round(prompt_s, 3),
            tokens_per_s=round(len(gen) / gen_s, 1) if gen_s > 0 else None,
            drafted=self.speculation.drafted,
            accepted=self.speculation.accepted,
        )
        # The generated ids are kept for the next prompt only when they spell the returned text exactly.
        reply = text.decode("utf-8", errors="replace")
        own = turn.own if b"".join(self._piece(t) for t in turn.own) == reply.encode("utf-8") else None
        return Completion(reply, usage, finish), own

    def _decode_loop(
        self,
        turn: _Turn,
        options: GenerateOptions,
        lazy: str | None,
        drafter: Drafter | None,
        cancel: threading.Event | None,
    ) -> tuple[FinishReason, int]:
        """Sample until the turn ends; return why it ended and the tokens re-evaluated by a grammar rewind.

        Without a draft each sampled token is evaluated alone. With one, the token and the draft are
        evaluated together and the following positions are sampled from that batch's logits, one by
        one, while the sampled token equals the drafted one (it is in the cache already).
        """
        llm, gen = self._llm, turn.gen
        stops = [s.encode() for s in options.stop if s]
        preview = byte_preview(options)  # the streaming hook (GenerateOptions.on_text)
        idx = -1  # batch position whose logits give the next token
        draft: list[int] = []  # drafted tokens in the cache after the last generated one
        drafted = accepted = extra = 0
        try:
            while len(gen) < options.max_tokens:
                if cancel is not None and cancel.is_set():
                    return "cancelled", extra
                if llm.n_tokens - len(draft) >= self.n_ctx:
                    return "length", extra
                token = turn.sampler.sample(idx)
                if token == DEAD_END:
                    log.warning("llama_cpp.grammar_dead_end", text=turn.text[-80:].decode("utf-8", "replace"))
                    return "stop", extra
                if self._ends_turn(token):
                    return "stop", extra
                piece = self._piece(token)
                text = turn.text + piece
                if lazy is not None and (at := text.find(_TRIGGER, max(0, len(turn.text) - len(_TRIGGER)))) >= 0:
                    # The model opened a tool call: back up to just before `<tool_call>` (usually nothing
                    # to undo, as the marker starts a token) and go on under the grammar from there.
                    if drafter is not None:
                        drafter.verified(drafted, accepted)
                    drafted = accepted = 0
                    turn.text = text[:at]
                    try:
                        turn.gen[:], rewound = self._rewind_to(turn.ids, gen, turn.text, at)
                    except Cancelled:
                        return "cancelled", extra
                    extra += rewound
                    draft, idx = [], -1
                    turn.own = list(gen)
                    if drafter is not None:
                        drafter.reset(gen)
                    log.debug("llama_cpp.grammar_armed", at_byte=at, reevaluated=rewound)
                    turn.sampler.close()
                    turn.sampler = Sampler(self._lib, self._vocab, self._ctx, self._n_vocab, options, lazy)
                    lazy = None
                    continue
                gen.append(token)
                turn.text = text
                if drafter is not None:
                    drafter.push(token)
                hit = _find_stop(text, stops, len(piece))
                if hit >= 0:
                    turn.text = text[:hit]
                    turn.own = self._ids_for(gen, text, hit)
                    return "stop", extra
                turn.own = gen
                preview(piece)
                if draft and draft[0] == token:
                    draft.pop(0)
                    idx += 1
                    accepted += 1
                    continue
                if drafter is not None:
                    drafter.verified(drafted, accepted)
                if draft:
                    self._drop_after(llm.n_tokens - len(draft))
                room = min(options.max_tokens - len(gen), self.n_ctx - llm.n_tokens - 1, llm.n_batch - 1)
                draft = drafter.draft(room) if drafter is not None else []
                drafted, accepted = len(draft), 0
                try:
                    self._extend([token, *draft])
                except Cancelled:
                    return "cancelled", extra
                idx = 0
            return "length", extra
        finally:
            if drafter is not None:
                drafter.verified(drafted, accepted)


@dataclass
class _Turn:
    """The generation in progress: what was generated, as tokens and text, and its sampler."""

    ids: list[int]
    sampler: Sampler
    gen: list[int] = field(default_factory=list)
    text: bytes = b""
    own: list[int] = field(default_factory=list)
    """Token ids that spell `text` (the generated ones, cut at a stop string)."""
