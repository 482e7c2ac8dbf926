"""llama.cpp in-process backend: tokens in, tokens out, prefix cache reused across turns.

The prompt is tokenized segment by segment (only template markers may become control tokens)
and generation runs token by token, so this backend owns prefix reuse, cancellation, stop
conditions and the lazy tool-call grammar. The grammar is armed lazily in Python: free text is
sampled without it, and when the text reaches `<tool_call>` the sampler is swapped for the
grammar-constrained one at that exact position (no re-evaluation when the marker starts a token).
This avoids llama.cpp's own lazy-grammar trigger, which runs std::regex over the whole output
every token and can overflow the stack on long outputs (llama.cpp #17902).
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import llama_cpp as _llama_cpp
import numpy as np
import structlog

from mcp_loco.backends import byte_preview
from mcp_loco.config import LlamaSettings
from mcp_loco.errors import BackendError, Cancelled, ConfigError, ModelError, ModelNotFoundError
from mcp_loco.grammar import TOOL_CALL_OPEN, generic_tool_call_grammar, validate_grammar
from mcp_loco.interfaces import Completion, FinishReason, GenerateOptions, Prompt, Usage

LIB: Any = _llama_cpp  # loosely typed: the ctypes bindings' annotations do not match how they are called
log = structlog.get_logger("mcp_loco.backends.llama_cpp")
native_log = logging.getLogger("mcp_loco.llama_cpp.native")

REBUILD_HINT = (
    'rebuild it for this CPU: CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install --force-reinstall '
    "--no-cache-dir --no-binary llama-cpp-python llama-cpp-python"
)
_CACHE_TYPES = {
    "f32": 0,
    "f16": 1,
    "q4_0": 2,
    "q4_1": 3,
    "q5_0": 6,
    "q5_1": 7,
    "q8_0": 8,
    "iq4_nl": 20,
    "bf16": 30,
}
_TRIGGER = TOOL_CALL_OPEN.encode()
DEAD_END = -1
"""What `_Sampler.sample` returns when the grammar allows no token."""
# What llama.cpp says when our abort callback stops a decode (status 1 / ret 2 = aborted): expected, not errors.
_ABORT_LINES = (
    b"graph_compute: ggml_backend_sched_graph_compute_async failed with error 1\n",
    b"process_ubatch: failed to compute graph, compute status: 1\n",
)
_ABORT_PREFIXES = (b"decode: removing memory module entries", b"llama_decode: failed to decode, ret = 2")
# ggml_log_level: NONE=0, DEBUG=1, INFO=2, WARN=3, ERROR=4, CONT=5 (continues the previous line).
_NATIVE_LEVELS = {0: logging.DEBUG, 1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}


@LIB.llama_log_callback  # type: ignore[untyped-decorator]
def _native_log_callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    """Route llama.cpp's own log lines through a logging gate (quiet unless llama.verbose)."""
    py_level = _NATIVE_LEVELS.get(level, logging.DEBUG)
    if text in _ABORT_LINES or text.startswith(_ABORT_PREFIXES):
        py_level = logging.DEBUG
    if native_log.isEnabledFor(py_level):
        native_log.log(py_level, text.decode("utf-8", "replace").rstrip())


# Installed once at import: the C side keeps this pointer for the life of the process.
LIB.llama_log_set(_native_log_callback, ctypes.c_void_p(0))


def _find_stop(text: bytes, stops: Sequence[bytes], new: int) -> int:
    """Earliest stop string ending in the last `new` bytes, or -1."""
    hits = [i for s in stops if (i := text.find(s, max(0, len(text) - new - len(s) + 1))) >= 0]
    return min(hits, default=-1)


def _threads(n: int) -> int:
    return n if n > 0 else (os.cpu_count() or 1)


class _Sampler:
    """A sampling chain, optionally constrained by a grammar checked optimistically.

    The unconstrained chain samples first; only when the grammar rejects that token is the grammar
    applied to the whole vocabulary (what llama.cpp's own common sampler does), so a constrained
    token costs about as much as a free one.
    """

    def __init__(self, lib: Any, vocab: Any, ctx: Any, n_vocab: int, options: GenerateOptions, grammar: str | None):
        self._lib, self._ctx, self._n_vocab = lib, ctx, n_vocab
        self._chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        self._grammar: Any = None
        if options.temperature <= 0:
            lib.llama_sampler_chain_add(self._chain, lib.llama_sampler_init_greedy())
        else:
            if options.top_k > 0:
                lib.llama_sampler_chain_add(self._chain, lib.llama_sampler_init_top_k(options.top_k))
            lib.llama_sampler_chain_add(self._chain, lib.llama_sampler_init_top_p(options.top_p, 1))
            if options.min_p > 0:
                lib.llama_sampler_chain_add(self._chain, lib.llama_sampler_init_min_p(options.min_p, 1))
            lib.llama_sampler_chain_add(self._chain, lib.llama_sampler_init_temp(options.temperature))
            seed = options.seed if options.seed >= 0 else lib.LLAMA_DEFAULT_SEED
            lib.llama_sampler_chain_add(self._chain, lib.llama_sampler_init_dist(seed))
        if grammar is not None:
            self._grammar = lib.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
            if not self._grammar:
                self.close()
                raise BackendError(
                    "llama.cpp rejected the tool-call grammar (see the log above); it is a bug in the grammar"
                )
            self._one = lib.llama_token_data()
            self._one_arr = lib.llama_token_data_array(ctypes.pointer(self._one), 1, -1, False)
            self._all = (lib.llama_token_data * n_vocab)()
            self._all_arr = lib.llama_token_data_array(self._all, n_vocab, -1, False)

    def sample(self) -> int:
        lib = self._lib
        token = int(lib.llama_sampler_sample(self._chain, self._ctx, -1))
        if self._grammar is None:
            return token
        self._one.id, self._one.logit, self._one.p = token, 0.0, 0.0
        self._one_arr.selected, self._one_arr.sorted = -1, False
        lib.llama_sampler_apply(self._grammar, ctypes.byref(self._one_arr))
        if self._one.logit != float("-inf"):
            lib.llama_sampler_accept(self._grammar, token)
            return token
        # Rejected: mask the whole vocabulary with the grammar, then sample from what is left.
        logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(self._ctx, -1), shape=(self._n_vocab,))
        view = np.ctypeslib.as_array(self._all)
        view["id"] = np.arange(self._n_vocab, dtype=np.int32)
        view["logit"] = logits
        view["p"] = 0.0
        arr = self._all_arr
        arr.data, arr.size, arr.selected, arr.sorted = self._all, self._n_vocab, -1, False
        lib.llama_sampler_apply(self._grammar, ctypes.byref(arr))
        lib.llama_sampler_apply(self._chain, ctypes.byref(arr))
        if arr.selected < 0 or arr.data[arr.selected].logit == float("-inf"):
            # Nothing the grammar allows (cannot happen with our bounded grammars): accepting a
            # rejected token would throw inside llama.cpp and abort the process, so end the turn.
            return DEAD_END
        token = int(arr.data[arr.selected].id)
        lib.llama_sampler_accept(self._grammar, token)
        lib.llama_sampler_accept(self._chain, token)
        return token

    def close(self) -> None:
        if self._chain:
            self._lib.llama_sampler_free(self._chain)
            self._chain = None
        if self._grammar:
            self._lib.llama_sampler_free(self._grammar)
            self._grammar = None


class LlamaModel:
    """A GGUF model run in-process by llama-cpp-python; one conversation at a time."""

    def __init__(self, model_path: str | Path, settings: LlamaSettings | None = None) -> None:
        self.settings = settings or LlamaSettings()
        self.path = Path(model_path).expanduser()
        if not self.path.is_file():
            raise ModelNotFoundError(f"model file {self.path} does not exist: check --model / model.path")
        self._lib = LIB
        native_log.setLevel(logging.INFO if self.settings.verbose else logging.ERROR)
        self._lock = threading.Lock()
        self._cancel: threading.Event | None = None
        self._llm = self._load()
        self._n_ctx = int(self._llm.n_ctx())
        self._vocab = self._llm._model.vocab
        self._ctx = self._llm._ctx.ctx
        self._n_vocab = int(self._lib.llama_vocab_n_tokens(self._vocab))
        self._add_bos = bool(self._lib.llama_vocab_get_add_bos(self._vocab))
        self._bos = int(self._lib.llama_vocab_bos(self._vocab))
        self._fresh = False  # whether the logits belong to the last token in the context
        self._grammars_checked: set[str] = set()
        self._generic_grammar: str | None = None
        # Checked by llama.cpp between graph nodes, so a long prompt evaluation stops promptly too.
        self._abort_cb = self._lib.ggml_abort_callback(lambda _data: bool(self._cancel and self._cancel.is_set()))
        self._lib.llama_set_abort_callback(self._ctx, self._abort_cb, None)

    def _load(self) -> Any:
        s = self.settings
        kv_types = {}
        for key, value in (("type_k", s.cache_type_k), ("type_v", s.cache_type_v)):
            if value.lower() not in _CACHE_TYPES:
                raise ConfigError(
                    f"llama.cache_{key[-1]}: unknown KV cache type {value!r}; use one of {', '.join(_CACHE_TYPES)}"
                )
            kv_types[key] = _CACHE_TYPES[value.lower()]
        started = time.monotonic()
        # verbose=True keeps llama-cpp-python from pointing file descriptor 1 at /dev/null while it
        # loads (stdout is the MCP channel and other threads may be writing to it); its Python-side
        # chatter on sys.stderr is collected and logged at debug level instead.
        chatter = io.StringIO()
        try:
            with contextlib.redirect_stderr(chatter):
                llm = self._lib.Llama(
                    model_path=str(self.path),
                    n_ctx=s.n_ctx,
                    n_batch=s.n_batch,
                    n_ubatch=min(512, s.n_batch),
                    n_threads=_threads(s.n_threads),
                    n_threads_batch=_threads(s.n_threads_batch),
                    n_gpu_layers=s.n_gpu_layers,
                    flash_attn=s.flash_attn,
                    use_mlock=s.use_mlock,
                    verbose=True,
                    **kv_types,
                )
        except (ValueError, RuntimeError, OSError) as e:
            raise ModelError(
                f"could not load {self.path}: {e}. Check that it is a complete GGUF file (re-run `mcp-loco models pull` "
                f"to finish a partial download), that llama.n_ctx={s.n_ctx} fits in memory (lower it), and that "
                f"cache_type_v={s.cache_type_v} is f16 unless flash_attn is on; if llama.cpp itself fails, {REBUILD_HINT}"
            ) from None
        finally:
            if s.verbose and chatter.getvalue():
                log.debug("llama_cpp.load_output", text=chatter.getvalue())
        llm.verbose = s.verbose
        log.info(
            "llama_cpp.loaded",
            path=str(self.path),
            n_ctx=llm.n_ctx(),
            n_ctx_train=llm._model.n_ctx_train(),
            seconds=round(time.monotonic() - started, 2),
        )
        return llm

    # ---- ChatModel ---------------------------------------------------------------------------------

    @property
    def n_ctx(self) -> int:
        """Context window in tokens."""
        return self._n_ctx

    def tokenize(self, prompt: Prompt) -> list[int]:
        """Token ids of the prompt: special segments may become control tokens, nothing else can."""
        ids: list[int] = []
        for seg in prompt:
            if seg.tokens is not None:  # the model's own tokens for an earlier turn: reused as they are
                ids += seg.tokens
            elif seg.text:
                ids += self._llm.tokenize(seg.text.encode("utf-8"), add_bos=False, special=seg.special)
        if self._add_bos and self._bos >= 0 and ids[:1] != [self._bos]:
            ids.insert(0, self._bos)
        return ids

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
        with self._lock:
            self._cancel = cancel
            try:
                return self._generate(ids, options, grammar, cancel)
            finally:
                self._cancel = None

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

    def _rewind_to(self, ids: list[int], gen: list[int], text: bytes, cut: int) -> tuple[list[int], int]:
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
        new = gen[:kept] + (self._llm.tokenize(rest, add_bos=False, special=False) if rest else [])
        return new, self._sync(ids + new)

    def _generate(
        self, ids: list[int], options: GenerateOptions, grammar: str | None, cancel: threading.Event | None
    ) -> Completion:
        lib, llm = self._lib, self._llm
        started = time.monotonic()
        try:
            evaluated = self._sync(ids)
        except Cancelled:
            return Completion("", Usage(prompt_tokens=len(ids)), "cancelled")
        prompt_s = time.monotonic() - started
        forced = grammar is not None and options.force_tool_call
        sampler = _Sampler(lib, self._vocab, self._ctx, self._n_vocab, options, grammar if forced else None)
        lazy = grammar if (grammar is not None and not forced) else None
        stops = [s.encode() for s in options.stop if s]
        gen: list[int] = []
        text = b""
        preview = byte_preview(options)  # the streaming hook (GenerateOptions.on_text)
        finish: FinishReason = "length"
        try:
            while len(gen) < options.max_tokens:
                if cancel is not None and cancel.is_set():
                    finish = "cancelled"
                    break
                if llm.n_tokens >= self.n_ctx:
                    break
                token = sampler.sample()
                if token == DEAD_END:
                    log.warning("llama_cpp.grammar_dead_end", text=text[-80:].decode("utf-8", "replace"))
                    finish = "stop"
                    break
                if self._ends_turn(token):
                    finish = "stop"
                    break
                piece = self._piece(token)
                if lazy is not None and (at := (text + piece).find(_TRIGGER, max(0, len(text) - len(_TRIGGER)))) >= 0:
                    # The model opened a tool call: back up to just before `<tool_call>` (usually nothing
                    # to undo, as the marker starts a token) and go on under the grammar from there.
                    text = (text + piece)[:at]
                    try:
                        gen, extra = self._rewind_to(ids, gen, text, at)
                    except Cancelled:
                        finish = "cancelled"
                        break
                    evaluated += extra
                    log.debug("llama_cpp.grammar_armed", at_byte=at, reevaluated=extra)
                    sampler.close()
                    sampler = _Sampler(lib, self._vocab, self._ctx, self._n_vocab, options, lazy)
                    lazy = None
                    continue
                gen.append(token)
                text += piece
                hit = _find_stop(text, stops, len(piece))
                if hit >= 0:
                    text = text[:hit]
                    finish = "stop"
                    break
                preview(piece)
                try:
                    self._eval([token])
                except Cancelled:
                    finish = "cancelled"
                    break
        finally:
            sampler.close()
        usage = Usage(prompt_tokens=len(ids), prompt_tokens_evaluated=evaluated, completion_tokens=len(gen))
        gen_s = time.monotonic() - started - prompt_s
        log.debug(
            "llama_cpp.completion",
            prompt_tokens=len(ids),
            evaluated=evaluated,
            completion_tokens=len(gen),
            finish=finish,
            prompt_s=round(prompt_s, 3),
            tokens_per_s=round(len(gen) / gen_s, 1) if gen_s > 0 else None,
        )
        # A stop string cuts the text inside a token: the tokens then no longer spell it exactly.
        tokens = () if stops else tuple(gen)
        return Completion(text.decode("utf-8", errors="replace"), usage, finish, tokens)
