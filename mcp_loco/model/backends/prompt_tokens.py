"""Prompt tokenization for the llama.cpp backend: the template's markers, plain content, the model's own turns.

Three rules, so that the context holds what the model was trained on and reuses what it computed:
- Special segments (the template's markers) may become control or added tokens: `<|im_start|>`,
  and in Qwen3's vocabulary `<tool_call>`, `<tool_response>` and their closers, one token each.
- Content never does. llama.cpp matches USER_DEFINED added tokens (Qwen3's `<tool_call>`,
  `<tool_response>`, `<think>`...) even when asked not to parse special tokens, so a file that
  contains `</tool_response>` would close the tool response as the model sees it. Content is cut
  just before the last character of each such marker and the pieces are tokenized apart: the marker
  is spelled in ordinary tokens. For these markers (letters then `>`) that cut falls where the BPE
  pre-tokenizer splits anyway, so the pieces are the text's ordinary tokenization.
- The model's own turns keep the tokens it generated. A sampled reply (above all one written under
  the grammar) is often not the canonical tokenization of its own text, and retokenizing it would
  make the next turn evaluate the whole reply again. Each completion is remembered with the segment
  that preceded it (the generation prompt's last one), and a later prompt that renders that text
  right after that segment gets the generated tokens back.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from mcp_loco.interfaces import Segment

Tokenize = Callable[[bytes, bool], list[int]]
"""(text, parse_special) -> token ids, no BOS."""
_REMEMBERED = 64  # completions kept: a whole exploration with its Task sub-explorations


def added_markers(lib: Any, vocab: Any, n_vocab: int, piece: Callable[[int], bytes]) -> tuple[str, ...]:
    """Texts of the vocabulary's USER_DEFINED tokens longer than one character (matched even in content)."""
    markers = []
    for token in range(n_vocab):
        if lib.llama_vocab_get_attr(vocab, token) & lib.LLAMA_TOKEN_ATTR_USER_DEFINED:
            text = piece(token).decode("utf-8", "replace")
            if len(text) > 1:
                markers.append(text)
    return tuple(markers)


def split_markers(text: str, markers: Sequence[str]) -> list[str]:
    """`text` in pieces none of which contains a whole marker (cut before each marker's last character)."""
    pieces: list[str] = []
    while markers:
        ends = [at + len(m) for m in markers if (at := text.find(m)) >= 0]
        if not ends:
            break
        # The earliest-ending marker: no piece before the cut can hold a whole one.
        cut = min(ends) - 1
        pieces.append(text[:cut])
        text = text[cut:]
    pieces.append(text)
    return pieces


class PromptTokens:
    """Segment-wise tokenization that never lets content become a marker and reuses generated tokens."""

    def __init__(self, tokenize: Tokenize, markers: Sequence[str], bos: int | None) -> None:
        self._tokenize = tokenize
        self.markers = tuple(markers)
        self._bos = bos
        self._turns: OrderedDict[tuple[str, str], tuple[int, ...]] = OrderedDict()

    def remember(self, lead: str, text: str, ids: Sequence[int]) -> None:
        """The model wrote `text` as `ids` right after a prompt whose last segment was `lead`."""
        if not text or not ids:
            return
        self._turns[(lead, text)] = tuple(ids)
        self._turns.move_to_end((lead, text))
        while len(self._turns) > _REMEMBERED:
            self._turns.popitem(last=False)

    def last(self) -> list[int]:
        """The ids of the turn remembered last (the latest completion's own tokens), or none."""
        return list(next(reversed(self._turns.values()), ()))

    def content(self, text: str) -> list[int]:
        """Token ids of content: plain text, whatever markers it spells."""
        ids: list[int] = []
        for piece in split_markers(text, self.markers) if self.markers else [text]:
            if piece:
                ids += self._tokenize(piece.encode("utf-8"), False)
        return ids

    def __call__(self, prompt: Sequence[Segment]) -> list[int]:
        """Token ids of the whole prompt, BOS first when the model wants one."""
        ids: list[int] = []
        i = 0
        while i < len(prompt):
            own = self._own_turn(prompt, i)
            if own is not None:
                ids += own[1]
                i = own[0]
                continue
            seg = prompt[i]
            if seg.text:
                ids += self._tokenize(seg.text.encode("utf-8"), True) if seg.special else self.content(seg.text)
            i += 1
        if self._bos is not None and ids[:1] != [self._bos]:
            ids.insert(0, self._bos)
        return ids

    def _own_turn(self, prompt: Sequence[Segment], i: int) -> tuple[int, tuple[int, ...]] | None:
        """(index after the span, generated ids) when segments from `i` spell a remembered completion."""
        if i == 0 or not self._turns:
            return None
        lead = prompt[i - 1].text
        for (want_lead, text), ids in reversed(self._turns.items()):
            if want_lead != lead or not text.startswith(prompt[i].text):
                continue
            pos, j = 0, i
            # The completion may span several segments (its tool-call markers are special ones).
            while j < len(prompt) and pos < len(text) and text.startswith(prompt[j].text, pos):
                pos += len(prompt[j].text)
                j += 1
            if pos == len(text):
                return j, ids
        return None
