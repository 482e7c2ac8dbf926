"""Token sampling for the llama.cpp backend: one chain per turn, a grammar checked optimistically."""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from mcp_loco.errors import BackendError
from mcp_loco.interfaces import GenerateOptions

DEAD_END = -1
"""What `Sampler.sample` returns when the grammar allows no token."""


class Sampler:
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

    def sample(self, idx: int = -1) -> int:
        """The next token from the logits of batch position `idx` (-1: the last one evaluated)."""
        lib = self._lib
        token = int(lib.llama_sampler_sample(self._chain, self._ctx, idx))
        if self._grammar is None:
            return token
        self._one.id, self._one.logit, self._one.p = token, 0.0, 0.0
        self._one_arr.selected, self._one_arr.sorted = -1, False
        lib.llama_sampler_apply(self._grammar, ctypes.byref(self._one_arr))
        if self._one.logit != float("-inf"):
            lib.llama_sampler_accept(self._grammar, token)
            return token
        # Rejected: mask the whole vocabulary with the grammar, then sample from what is left.
        logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(self._ctx, idx), shape=(self._n_vocab,))
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
        """Free the samplers."""
        if self._chain:
            self._lib.llama_sampler_free(self._chain)
            self._chain = None
        if self._grammar:
            self._lib.llama_sampler_free(self._grammar)
            self._grammar = None
