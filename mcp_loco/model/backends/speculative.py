"""Prompt-lookup drafting for speculative decoding: guess the next tokens from the conversation itself.

The explorer's report quotes paths and code that tool results already put in the context, so the
tokens that followed the last few generated tokens earlier in the context are a good guess for
what comes next. The backend evaluates the sampled token and the guess in one batch, with logits
for every position of that batch (never for the whole context, as `logits_all` would), then
samples each position in turn exactly as it would without a guess.

Acceptance rule. The draft is deterministic: q(d) = 1 for the drafted token d. The standard rule
(accept d with probability min(1, p(d)/q(d)) = p(d); on rejection sample from the residual
max(0, p - q), renormalised, which is p without d) gives each token y the probability p(y). We get
the same distribution, and the same random numbers, by sampling x from p with the turn's own
sampler (grammar included) at that position and accepting the draft while x equals it: P(x = d) is
p(d), and given x != d, x is distributed as p(y) / (1 - p(d)), the residual. The sampler draws one
random number per generated token, as without drafting, so a seeded run writes the same tokens as
long as the logits are the same. The first x that differs from the draft is the corrected token:
the draft after it is removed from the KV cache and x is evaluated with a new draft.

Sources. The context itself, and the code of its Read results without their line-number prefixes: a
report quotes `    return y`, not `     9\t    return y`, so from the numbered text alone every
draft would stop at a line end.

Same tokens, same numbers? Only as far as llama.cpp computes a row of a batch exactly as it
computes a lone token, and on the CPU it does not (matrix kernels for two or more rows differ from
the one-row path, and activations are requantised per layer): on SmolLM2 Q4_1 here the logits of
one position differ by up to 0.77. Greedy output is token-identical up to the first position where
the model's two best tokens are closer than that; tests/model/test_model_speculative.py checks it.

Drafting goes on inside a tool call: a drafted token is only ever accepted when the grammar
sampler itself chose it, so the grammar holds without being consulted for the draft.

Where it wins. A draft pays only when a verification batch costs much less than decoding its tokens
one by one: where decoding waits on memory (a GPU), not where the CPU's arithmetic is already the
limit. If a batch of k + 1 tokens is G times cheaper than k + 1 one-token decodes, drafting breaks
even when a fraction ((k + 1) / G - 1) / k of the drafted tokens is accepted. On 2 CPU cores here a
batch of 9 was 1.2-2.0x cheaper on SmolLM2 (break-even at 44-81% accepted) and 1.1-1.5x at the 4B
shape; real turns of SmolLM2 had 40-75% of their drafted tokens accepted and decoded at 0.74-1.30x.
`speculative = "auto"` therefore times a one-token decode and a full verification batch on the
loaded model (`batch_gain`) and drafts only from `WINS_AT`, where a quarter of the draft breaks even.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

WINS_AT = 3.0
"""Least speed-up of a fully accepted draft (draft_max tokens) for `speculative = "auto"` to draft."""


@dataclass
class DraftStats:
    """What speculation did during one completion."""

    batches: int = 0
    """Verification batches that carried a draft."""
    drafted: int = 0
    """Drafted tokens evaluated."""
    accepted: int = 0
    """Drafted tokens that matched what was sampled (each saved one decode)."""


_READ_PREFIX = re.compile(r"^ *\d+\t", re.M)
"""Read's line-number prefix (`     12\t`): a report quotes the code after it."""


def unnumbered(texts: Iterable[str]) -> list[str]:
    """Each run of Read-numbered lines in the texts, as the code alone (the prefixes removed)."""
    blocks: list[str] = []
    for text in texts:
        run: list[str] = []
        for line in text.split("\n") if "\t" in text else ():
            prefix = _READ_PREFIX.match(line)
            if prefix:
                run.append(line[prefix.end() :])
            elif run:
                blocks.append("\n".join(run) + "\n")
                run = []
        if run:
            blocks.append("\n".join(run) + "\n")
    return blocks


class Drafter:
    """N-gram lookup over the prompt, the code it shows without line numbers, and the tokens generated so far.

    The search buffer holds the context, then `quoted` (tokens not in the context as such: Read results
    without their line-number prefixes, which a report quoting code copies across line ends), then the
    generated tokens; a later match is preferred. The n-gram looked up is always the end of what the
    model really has: the context followed by the generated tokens.
    """

    def __init__(
        self,
        context: Sequence[int],
        capacity: int,
        ngram_min: int,
        ngram_max: int,
        draft_max: int,
        quoted: Sequence[int] = (),
    ) -> None:
        self._buf = np.zeros(max(capacity, len(context)) + len(quoted) + 1, dtype=np.int32)
        self._buf[: len(context)] = context
        self._buf[len(context) : len(context) + len(quoted)] = quoted
        self._context = len(context)
        self._prompt = self._n = len(context) + len(quoted)
        self._ngram_min, self._ngram_max = max(1, ngram_min), max(ngram_min, ngram_max)
        self._max = draft_max
        self._next = draft_max
        self._pause = self._misses = 0
        self.stats = DraftStats()

    def push(self, token: int) -> None:
        """A token was generated."""
        if self._n < len(self._buf):
            self._buf[self._n] = token
            self._n += 1

    def reset(self, generated: Sequence[int]) -> None:
        """The generated tokens were replaced (the text was rewound to a tool call's start)."""
        self._n = self._prompt
        for token in generated:
            self.push(token)

    def draft(self, limit: int) -> list[int]:
        """Up to `limit` tokens that followed the most recent match of the context's last n-gram (longest first)."""
        limit = min(limit, self._next)
        if self._pause > 0:
            self._pause -= 1
            return []
        if limit <= 0:
            return []
        buf, n = self._buf, self._n
        generated = n - self._prompt
        for size in range(min(self._ngram_max, self._context + generated - 1), self._ngram_min - 1, -1):
            if size <= generated:
                pattern = buf[n - size : n]
            else:  # the n-gram begins in the context, before the quoted tokens
                pattern = np.concatenate(
                    (buf[self._context - (size - generated) : self._context], buf[self._prompt : n])
                )
            # Starts of earlier occurrences with at least one token after them (not the suffix itself).
            starts = np.flatnonzero(buf[: n - size] == pattern[0])
            for k in range(1, size):
                starts = starts[buf[starts + k] == pattern[k]]
            if starts.size:
                begin = int(starts[-1]) + size  # the most recent: what the model read last is quoted first
                guess = [int(t) for t in buf[begin : min(n, begin + limit)]]
                self.stats.batches += 1
                self.stats.drafted += len(guess)
                return guess
        return []

    def verified(self, drafted: int, accepted: int) -> None:
        """Record how a draft fared; a miss shortens the next one, a full match lets it grow back."""
        if drafted == 0:
            return
        self.stats.accepted += accepted
        # A wrong guess costs a wider batch for nothing (on a CPU a batch of two costs up to twice
        # one token): after a partial miss guess only as far as the matches reached, grow again
        # while guesses keep matching, and after misses in a row stop guessing for a while
        # (1, 2, 4 ... 32 tokens): free text rarely repeats the context for long.
        if accepted == 0:
            self._misses += 1
            self._pause = min(32, 1 << (self._misses - 1))
            self._next = 1
            return
        self._misses = 0
        self._next = min(self._max, 2 * self._next) if accepted == drafted else accepted + 1


def batch_gain(one_token_s: float, batch_s: float, batch: int) -> float:
    """How much faster `batch` tokens come from one verification batch than from `batch` one-token decodes."""
    return batch * one_token_s / batch_s if batch_s > 0 else 0.0
