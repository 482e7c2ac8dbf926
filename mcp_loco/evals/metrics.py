"""The metrics: turn-level ones from the model card, and exploration ones (recall of expected files)."""

from __future__ import annotations

import os
import statistics
from collections import Counter
from collections.abc import Sequence

from pydantic import BaseModel, Field, computed_field

from mcp_loco.evals.calls import JUDGE_SCHEMAS, has_call, judge_turn
from mcp_loco.explore.report import ExploreResult

INVALID = "(invalid)"
"""Tool-distribution bucket for blocks whose JSON does not name a tool."""
UNKNOWN = "(unknown tool)"
"""Tool-distribution bucket for names that are none of Claude Code's tools (a confused model invents many)."""


class Ratio(BaseModel):
    """A count out of a total."""

    hits: int = 0
    total: int = 0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def value(self) -> float | None:
        """hits/total, or None when there is nothing to count."""
        return self.hits / self.total if self.total else None

    def __add__(self, other: Ratio) -> Ratio:
        return Ratio(hits=self.hits + other.hits, total=self.total + other.total)

    def show(self) -> str:
        """`80.0% (4/5)`, or `-` when empty."""
        v = self.value
        return "-" if v is None else f"{100 * v:.1f}% ({self.hits}/{self.total})"


# ---- turn level ----------------------------------------------------------------------------------


class TurnScore(BaseModel):
    """One model turn against the reference turn."""

    presence_match: bool
    """Both call a tool, or both answer."""
    first_tool_match: bool | None
    """Same first tool as the reference (None when the reference calls no tool)."""
    model_tools: list[str]
    reference_tools: list[str]
    calls: int
    json_valid: int
    args_valid: int
    problems: list[str] = Field(default_factory=list)


def score_turn(model_text: str, reference_text: str) -> TurnScore:
    """Judge one generated turn against the reference next turn."""
    model_calls = judge_turn(model_text)
    ref_calls = judge_turn(reference_text)
    model_tools = [c.name if c.json_valid and c.name else INVALID for c in model_calls]
    ref_tools = [c.name if c.json_valid and c.name else INVALID for c in ref_calls]
    ref_has = has_call(reference_text)
    first: bool | None = None
    if ref_has:
        first = bool(model_tools) and bool(ref_tools) and model_tools[0] == ref_tools[0] != INVALID
    return TurnScore(
        presence_match=has_call(model_text) == ref_has,
        first_tool_match=first,
        model_tools=model_tools,
        reference_tools=ref_tools,
        calls=len(model_calls),
        json_valid=sum(c.json_valid for c in model_calls),
        args_valid=sum(c.args_valid for c in model_calls),
        problems=[p for c in model_calls for p in c.problems],
    )


class TurnMetrics(BaseModel):
    """The model card's four metrics and the tool distribution, over many turns."""

    samples: int = 0
    errors: int = 0
    """Samples that failed to run (backend errors); not in the ratios."""
    presence: Ratio = Field(default_factory=Ratio)
    first_tool: Ratio = Field(default_factory=Ratio)
    json_validity: Ratio = Field(default_factory=Ratio)
    argument_syntax: Ratio = Field(default_factory=Ratio)
    model_tools: dict[str, int] = Field(default_factory=dict)
    reference_tools: dict[str, int] = Field(default_factory=dict)
    seconds_median: float | None = None
    completion_tokens: int = 0


def aggregate_turns(scores: Sequence[TurnScore], seconds: Sequence[float] = (), errors: int = 0) -> TurnMetrics:
    """Sum the per-turn scores into the card's ratios."""
    out = TurnMetrics(samples=len(scores), errors=errors)
    model, ref = Counter[str](), Counter[str]()
    for s in scores:
        out.presence += Ratio(hits=int(s.presence_match), total=1)
        if s.first_tool_match is not None:
            out.first_tool += Ratio(hits=int(s.first_tool_match), total=1)
        out.json_validity += Ratio(hits=s.json_valid, total=s.calls)
        out.argument_syntax += Ratio(hits=s.args_valid, total=s.calls)
        model.update(t if t in JUDGE_SCHEMAS or t == INVALID else UNKNOWN for t in s.model_tools)
        ref.update(t if t in JUDGE_SCHEMAS or t == INVALID else UNKNOWN for t in s.reference_tools)
    out.model_tools = dict(model.most_common())
    out.reference_tools = dict(ref.most_common())
    out.seconds_median = round(statistics.median(seconds), 3) if seconds else None
    return out


# ---- exploration ---------------------------------------------------------------------------------


class ExploreScore(BaseModel):
    """One exploration against the files a good answer cites."""

    expected: list[str]
    cited_expected: list[str]
    """Expected files among the report's verified citations."""
    examined_expected: list[str]
    """Expected files some tool showed the model (found, whether cited or not)."""
    citations: int
    verified: int
    quotes: int = 0
    """Code blocks checked against a file (the default reads scores stored before quotes were checked)."""
    quotes_verified: int = 0
    """Of those, found in the file."""
    quotes_moved: int = 0
    """Of those found, not at the lines the report cited."""
    turns: int
    stop_reason: str
    prompt_tokens: int
    prompt_tokens_evaluated: int
    completion_tokens: int
    seconds: float

    @property
    def recall(self) -> float:
        """Share of the expected files cited and verified."""
        return len(self.cited_expected) / len(self.expected) if self.expected else 1.0


def score_explore(result: ExploreResult, expected: Sequence[str]) -> ExploreScore:
    """Score a result; `expected` are paths relative to the explored root."""
    root = result.root
    want = {os.path.normpath(f"{root.rstrip('/')}/{p}"): p for p in expected}
    verified = {c.path for c in result.citations if c.verified}
    examined = {os.path.normpath(p) for p in result.files_examined}
    return ExploreScore(
        expected=list(expected),
        cited_expected=[rel for path, rel in want.items() if path in verified],
        examined_expected=[rel for path, rel in want.items() if path in examined],
        citations=len(result.citations),
        verified=sum(c.verified for c in result.citations),
        quotes=len(result.quotes),
        quotes_verified=sum(q.verified for q in result.quotes),
        quotes_moved=sum(q.moved for q in result.quotes),
        turns=result.turns,
        stop_reason=result.stop_reason,
        prompt_tokens=result.usage.prompt_tokens,
        prompt_tokens_evaluated=result.usage.prompt_tokens_evaluated,
        completion_tokens=result.usage.completion_tokens,
        seconds=result.elapsed_s,
    )


class ExploreMetrics(BaseModel):
    """Exploration metrics over many questions."""

    questions: int = 0
    errors: int = 0
    recall: Ratio = Field(default_factory=Ratio)
    """Expected files cited and verified, over all expected files."""
    examined: Ratio = Field(default_factory=Ratio)
    """Expected files shown by a tool, over all expected files."""
    verified: Ratio = Field(default_factory=Ratio)
    """Citations verified, over all citations."""
    quotes_verified: Ratio = Field(default_factory=Ratio)
    """Quoted code blocks found in the file they are attributed to, over all quotes."""
    quotes_in_place: Ratio = Field(default_factory=Ratio)
    """Quoted code blocks found at the lines the report cited, over all quotes."""
    answered: Ratio = Field(default_factory=Ratio)
    """Explorations that ended with the model's own answer (not a spent budget)."""
    turns_mean: float | None = None
    prompt_tokens_mean: float | None = None
    prompt_tokens_evaluated_mean: float | None = None
    completion_tokens_mean: float | None = None
    seconds_median: float | None = None


def _mean(values: Sequence[float]) -> float | None:
    return round(statistics.fmean(values), 1) if values else None


def aggregate_explore(scores: Sequence[ExploreScore], errors: int = 0) -> ExploreMetrics:
    """Sum the per-question scores."""
    out = ExploreMetrics(questions=len(scores), errors=errors)
    for s in scores:
        out.recall += Ratio(hits=len(s.cited_expected), total=len(s.expected))
        out.examined += Ratio(hits=len(s.examined_expected), total=len(s.expected))
        out.verified += Ratio(hits=s.verified, total=s.citations)
        out.quotes_verified += Ratio(hits=s.quotes_verified, total=s.quotes)
        out.quotes_in_place += Ratio(hits=s.quotes_verified - s.quotes_moved, total=s.quotes)
        out.answered += Ratio(hits=int(s.stop_reason == "answered"), total=1)
    out.turns_mean = _mean([s.turns for s in scores])
    out.prompt_tokens_mean = _mean([s.prompt_tokens for s in scores])
    out.prompt_tokens_evaluated_mean = _mean([s.prompt_tokens_evaluated for s in scores])
    out.completion_tokens_mean = _mean([s.completion_tokens for s in scores])
    out.seconds_median = round(statistics.median([s.seconds for s in scores]), 3) if scores else None
    return out
