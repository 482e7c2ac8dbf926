"""Run the eval sets on a model: turn-level samples and explorations, for one or more scaffolding variants."""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field

import mcp_loco
from mcp_loco import __version__
from mcp_loco.config import Settings
from mcp_loco.errors import LocoError
from mcp_loco.evals.metrics import (
    ExploreMetrics,
    ExploreScore,
    TurnMetrics,
    TurnScore,
    aggregate_explore,
    aggregate_turns,
    score_explore,
    score_turn,
)
from mcp_loco.evals.samples import Question, TurnSample
from mcp_loco.explore.agent import Explorer
from mcp_loco.explore.turns import Turns
from mcp_loco.interfaces import ChatModel, Completion, GenerateOptions, Message
from mcp_loco.model.backends.replay import ReplayModel
from mcp_loco.model.protocol import ToolCall, parse_turn, render
from mcp_loco.sandbox import Toolbox

Say = Callable[[str], None]


@dataclass(frozen=True)
class Variant:
    """One scaffolding configuration."""

    name: str
    grammar: bool
    force: bool


ABLATION = (
    Variant("grammar+force", True, True),
    Variant("grammar", True, False),
    Variant("force", False, True),
    Variant("neither", False, False),
)
"""The 2x2 grid. `force` without the grammar forces the first call with a schema-free grammar."""


def default_variant(settings: Settings) -> Variant:
    """The configured scaffolding, named like its ablation twin."""
    agent = settings.agent
    return next(v for v in ABLATION if (v.grammar, v.force) == (agent.grammar, agent.force_first_tool))


def default_root() -> Path:
    """The project's own source tree: the installed package's folder."""
    return Path(mcp_loco.__file__).resolve().parent


# ---- results -------------------------------------------------------------------------------------


class TurnRecord(BaseModel):
    """One sample under one variant."""

    id: str
    variant: str
    text: str = ""
    score: TurnScore | None = None
    seconds: float = 0.0
    completion_tokens: int = 0
    error: str = ""


class ExploreRecord(BaseModel):
    """One question under one variant."""

    id: str
    variant: str
    question: str
    score: ExploreScore | None = None
    report: str = ""
    error: str = ""


class EvalReport(BaseModel):
    """Everything one eval run measured (what `--out` writes)."""

    version: str = __version__
    date: str = Field(default_factory=lambda: datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"))
    model: str
    root: str
    settings: dict[str, object] = Field(default_factory=dict)
    variants: list[str] = Field(default_factory=list)
    explore_variants: list[str] = Field(default_factory=list)
    turn_metrics: dict[str, TurnMetrics] = Field(default_factory=dict)
    explore_metrics: dict[str, ExploreMetrics] = Field(default_factory=dict)
    turns: list[TurnRecord] = Field(default_factory=list)
    explorations: list[ExploreRecord] = Field(default_factory=list)


def describe_model(settings: Settings) -> str:
    """The model under test, in words."""
    m = settings.model
    if m.backend == "replay":
        return f"replay {settings.replay.file}"
    if m.backend == "http":
        return (
            "http " + ", ".join(settings.http.endpoints) + (f" ({settings.http.model})" if settings.http.model else "")
        )
    return m.path or f"{m.repo} {m.quant}"


def _rotated(variants: Sequence[Variant], i: int) -> list[Variant]:
    # Each item starts with a different variant, so prefix-cache reuse and machine load favour none.
    k = i % len(variants)
    return [*variants[k:], *variants[:k]]


# ---- turn level ----------------------------------------------------------------------------------


class TurnRunner:
    """Builds each sample's conversation (running its history's calls for real) and generates the next turn."""

    def __init__(self, model: ChatModel, settings: Settings, root: Path) -> None:
        self.model = model
        self.turns = Turns(model, settings)
        self.tools = Toolbox(root, settings.tools)
        self.root = self.tools.root
        self.grammar = self.turns.grammar(self.turns.tool_names(self.tools, depth=0))

    def close(self) -> None:
        """Stop the turn engine's threads."""
        self.turns.close()

    def substitute(self, text: str) -> str:
        """The text with `{root}` replaced by the absolute root."""
        return text.replace("{root}", self.root)

    def conversation(self, sample: TurnSample) -> list[Message]:
        """The messages before the reference turn, with real tool responses."""
        if sample.messages:
            return [Message(m.role, self.substitute(m.content)) for m in sample.messages]
        messages = self.turns.opening(self.root, self.substitute(sample.question))
        for turn in sample.history:
            text = self.substitute(turn)
            messages.append(Message("assistant", text))
            calls = [c for c in parse_turn(text).calls if isinstance(c, ToolCall)]
            # Results are cut as the explorer cuts them, so long histories still fit small context windows.
            messages += self.turns.tool_messages(messages, [self.tools.call(c.name, c.arguments).text for c in calls])
        return messages

    def generate(self, messages: Sequence[Message], variant: Variant, first_turn: bool) -> tuple[Completion, float]:
        """The model's next turn under `variant`, and the seconds it took."""
        prompt = render(messages)
        n_prompt = self.model.count_tokens(prompt)
        if self.model.n_ctx - n_prompt < 16:
            raise LocoError(f"the conversation takes {n_prompt} tokens; the context window is {self.model.n_ctx}")
        grammar = self.grammar if variant.grammar else None
        options = self.turns.options(n_prompt, grammar=grammar, force=variant.force and first_turn)
        started = time.perf_counter()
        completion = self.model.complete(prompt, options)
        return completion, time.perf_counter() - started


def _sample_all(
    runner: TurnRunner, samples: Sequence[TurnSample], variants: Sequence[Variant], say: Say
) -> list[TurnRecord]:
    records: list[TurnRecord] = []
    for i, sample in enumerate(samples):
        try:
            messages = runner.conversation(sample)
        except LocoError as e:
            records += [TurnRecord(id=sample.id, variant=v.name, error=str(e)) for v in variants]
            say(f"turn sample {i + 1}/{len(samples)} {sample.id}: error: {e}")
            continue
        for variant in _rotated(variants, i):
            rec = TurnRecord(id=sample.id, variant=variant.name)
            try:
                completion, rec.seconds = runner.generate(messages, variant, sample.first_turn)
                rec.text, rec.completion_tokens = completion.text, completion.usage.completion_tokens
                rec.score = score_turn(rec.text, runner.substitute(sample.reference))
                first = "yes" if rec.score.first_tool_match else "no" if rec.score.first_tool_match is False else "-"
                line = f"tools {rec.score.model_tools or 'none'}, first tool match {first}, {rec.seconds:.1f}s"
            except LocoError as e:
                rec.error = str(e)
                line = f"error: {e}"
            records.append(rec)
            say(f"turn sample {i + 1}/{len(samples)} {sample.id} [{variant.name}]: {line}")
    return records


def run_turns(
    model: ChatModel,
    settings: Settings,
    root: Path,
    samples: Sequence[TurnSample],
    variants: Sequence[Variant],
    say: Say,
) -> tuple[list[TurnRecord], dict[str, TurnMetrics]]:
    """Generate every sample's next turn under every variant and score it against the reference."""
    runner = TurnRunner(model, settings, root)
    try:
        records = _sample_all(runner, samples, variants, say)
    finally:
        runner.close()
    metrics = {}
    for v in variants:
        mine = [r for r in records if r.variant == v.name]
        scores = [r.score for r in mine if r.score is not None]
        metrics[v.name] = aggregate_turns(
            scores, [r.seconds for r in mine if r.score is not None], errors=sum(1 for r in mine if r.error)
        )
        metrics[v.name].completion_tokens = sum(r.completion_tokens for r in mine)
    return records, metrics


# ---- exploration ---------------------------------------------------------------------------------


def explore_variants(variants: Sequence[Variant]) -> list[Variant]:
    """The variants that differ in the agent: it forces the first call only under the grammar, so there `force` is `neither`."""
    has_neither = any(not v.grammar and not v.force for v in variants)
    return [v for v in variants if v.grammar or not v.force or not has_neither]


def _prime(model: ChatModel, system: str) -> None:
    """Leave the system prompt, and nothing else, in the model's prefix cache.

    Every exploration then starts alike whatever ran before it (another variant of the same question
    would otherwise leave the whole first prompt cached), as in a server exploring one root.
    """
    if isinstance(model, ReplayModel):
        return  # its turns are recorded answers, not a cache
    prompt = render([Message("system", system)], add_generation_prompt=False)
    model.complete(prompt, GenerateOptions(max_tokens=1, temperature=0.0))


def _explore_one(explorer: Explorer, root: Path, q: Question, v: Variant, resolved: str) -> ExploreRecord:
    rec = ExploreRecord(id=q.id, variant=v.name, question=q.question)
    try:
        _prime(explorer.model, explorer.turns.system(resolved))
        result = explorer.explore(root, q.question)
    except LocoError as e:
        rec.error = str(e)
        return rec
    rec.score, rec.report = score_explore(result, q.expected), result.report
    return rec


def _explore_line(rec: ExploreRecord) -> str:
    s = rec.score
    if s is None:
        return f"error: {rec.error}"
    return f"cited {len(s.cited_expected)}/{len(s.expected)} expected, {s.turns} turns, stop {s.stop_reason}, {s.seconds:.1f}s"


def run_explore(
    model: ChatModel,
    settings: Settings,
    root: Path,
    questions: Sequence[Question],
    variants: Sequence[Variant],
    say: Say,
) -> tuple[list[ExploreRecord], dict[str, ExploreMetrics]]:
    """Explore every question under every variant and score the verified citations."""
    resolved = Toolbox(root, settings.tools).root
    explorers: dict[str, Explorer] = {}
    for v in variants:
        copy = settings.model_copy(deep=True)
        copy.agent.grammar, copy.agent.force_first_tool = v.grammar, v.force
        explorers[v.name] = Explorer(model, copy)
    records: list[ExploreRecord] = []
    try:
        for i, q in enumerate(questions):
            for v in _rotated(variants, i):
                say(f"question {i + 1}/{len(questions)} {q.id} [{v.name}]: exploring")
                rec = _explore_one(explorers[v.name], root, q, v, resolved)
                records.append(rec)
                say(f"question {i + 1}/{len(questions)} {q.id} [{v.name}]: {_explore_line(rec)}")
    finally:
        for explorer in explorers.values():
            explorer.close()
    metrics = {}
    for v in variants:
        mine = [r for r in records if r.variant == v.name]
        metrics[v.name] = aggregate_explore(
            [r.score for r in mine if r.score is not None], errors=sum(1 for r in mine if r.error)
        )
    return records, metrics


def run_eval(
    model: ChatModel,
    settings: Settings,
    *,
    root: Path,
    samples: Sequence[TurnSample],
    questions: Sequence[Question],
    variants: Sequence[Variant],
    say: Say,
) -> EvalReport:
    """Run the turn-level samples, then the explorations; return everything measured."""
    m, agent = settings.model, settings.agent
    report = EvalReport(
        model=describe_model(settings),
        root=str(root),
        settings={
            "temperature": m.temperature,
            "seed": m.seed,
            "max_tokens": m.max_tokens,
            "n_ctx": model.n_ctx,
            "max_turns": agent.max_turns,
            "deadline_s": agent.deadline_s,
            "task_depth": agent.task_depth,
        },
        variants=[v.name for v in variants],
    )
    if samples:
        report.turns, report.turn_metrics = run_turns(model, settings, root, samples, variants, say)
    if questions:
        ev = explore_variants(variants)
        report.explore_variants = [v.name for v in ev]
        report.explorations, report.explore_metrics = run_explore(model, settings, root, questions, ev, say)
    return report
