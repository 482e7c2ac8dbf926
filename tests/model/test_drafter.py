"""Prompt-lookup drafting (backends/speculative.py) on token ids: what it guesses, and from which source."""

from __future__ import annotations

from mcp_loco.model.backends.speculative import Drafter, batch_gain, unnumbered

READ = "     7\tdef f(x):\n     8\t    y = x + 1\n     9\t    return y\n"
# Token ids standing in for a tokenizer: a numbered Read result in the context, the code alone in `quoted`.
NUM7, NUM8, NUM9, TAB = 907, 908, 909, 9
DEF, F, COLON, NL, INDENT, Y, EQ, X, PLUS, ONE, RETURN = range(100, 111)
LINE1 = [DEF, F, COLON, NL]
LINE2 = [INDENT, Y, EQ, X, PLUS, ONE, NL]
LINE3 = [INDENT, RETURN, Y, NL]
CONTEXT = [1, 2, 3, NUM7, TAB, *LINE1, NUM8, TAB, *LINE2, NUM9, TAB, *LINE3, 4, 5]
QUOTED = [*LINE1, *LINE2, *LINE3]


def test_unnumbered_gives_each_read_run_as_code() -> None:
    text = f"<tool_response>\n{READ}</tool_response>\nno numbers here\n    12\tx = 1\n"
    assert unnumbered([text, "plain text, no tab"]) == ["def f(x):\n    y = x + 1\n    return y\n", "x = 1\n"]


def drafter(quoted: list[int]) -> Drafter:
    return Drafter(CONTEXT, 256, ngram_min=2, ngram_max=4, draft_max=16, quoted=quoted)


def test_a_quote_without_line_numbers_is_drafted_across_line_ends() -> None:
    # The model has written `def f(x):\n` (no line number): the next line follows it in the quoted code.
    with_code = drafter(QUOTED)
    for token in LINE1:
        with_code.push(token)
    assert with_code.draft(16)[: len(LINE2)] == LINE2
    # From the numbered context alone the guess is Read's next line number, which a quote leaves out.
    numbered = drafter([])
    for token in LINE1:
        numbered.push(token)
    assert numbered.draft(16)[:2] == [NUM8, TAB]


def test_the_looked_up_ngram_is_the_context_end_then_the_generated_tokens() -> None:
    # One token generated: the n-gram is the context's last tokens and it, never the quoted code's tail.
    d = drafter(QUOTED)
    d.push(NUM7)  # after `... 4 5`, nothing in the context continues `5 907`
    assert d.draft(16) == []
    d = Drafter([*CONTEXT, 3], 256, 2, 4, 16, QUOTED)
    d.push(NUM7)  # `3 907` occurs in the context: its continuation is drafted
    assert d.draft(16)[:3] == [TAB, DEF, F]


def test_a_miss_pauses_the_guesses() -> None:
    d = drafter(QUOTED)
    for token in LINE1:
        d.push(token)
    guess = d.draft(16)
    assert len(guess) > 8
    d.verified(len(guess), 0)  # nothing matched: no guess for the next token
    assert d.draft(16) == []
    assert d.stats.drafted == len(guess) and d.stats.accepted == 0


def test_batch_gain() -> None:
    assert batch_gain(0.010, 0.030, 9) == 3.0
    assert batch_gain(0.010, 0.0, 9) == 0.0
