"""How a turn is built and served: the opening, generation options, the grammar, the calls and their results.

The explorer's loop and the eval runner both build every turn here, so what the evals measure is what
users are served.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcp_loco.config import ModelSettings, Settings, configs_dir
from mcp_loco.errors import Cancelled, ConfigError
from mcp_loco.explore.report import ExploreResult, StopReason, ToolCallRecord
from mcp_loco.explore.transcript import Transcript
from mcp_loco.interfaces import (
    ChatModel,
    GenerateOptions,
    Message,
    PathOracle,
    Segment,
    StopSignal,
    ToolResult,
    Tools,
    Usage,
)
from mcp_loco.model.grammar import tool_call_grammar
from mcp_loco.model.protocol import MalformedCall, ToolCall, render
from mcp_loco.sandbox.registry import describe_call, schemas, short_json

MIN_RESULT_ROOM = 256
"""Below this many free tokens another tool turn cannot bring anything in: the context budget is spent."""
WRAPPER_TOKENS = 12
"""What one <tool_response> wrapper costs, about."""
REPORT_SHARE = 0.3
"""Share of an exploration's time budget kept for writing the report (so a short budget still ends in one)."""
HEARTBEAT_S = 5.0
"""A progress line at least this often while the model reads a long prompt or writes a long turn."""


@contextmanager
def heartbeat(say: Callable[[float], None], every: float | None = None) -> Iterator[None]:
    """Call `say(seconds so far)` every HEARTBEAT_S seconds while the block runs (clients reset timeouts on it)."""
    done = threading.Event()
    t0 = time.monotonic()
    period = every or HEARTBEAT_S

    def beat() -> None:
        while not done.wait(period):
            say(time.monotonic() - t0)

    thread = threading.Thread(target=beat, name="loco-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=1.0)


def read_prompt(path_setting: str, default_name: str) -> str:
    """A prompt file: the configured one, else the one shipped in configs/."""
    path = Path(path_setting).expanduser() if path_setting else configs_dir() / default_name
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"prompt file {path}: cannot read it ({e.strerror})") from None


def fit_results(texts: list[str], budget: int, count: Callable[[str], int]) -> list[str]:
    """Cut tool results so together they take at most `budget` tokens, each saying when it was cut."""
    sizes = [count(t) for t in texts]
    if sum(sizes) <= budget:
        return texts
    # Water-filling: small results keep their size, large ones share what is left equally.
    share = max(budget, 0) // max(len(texts), 1)
    small = [s for s in sizes if s <= share]
    if len(small) < len(texts):
        share = max(0, budget - sum(small)) // (len(texts) - len(small))
    out = []
    for text, size in zip(texts, sizes, strict=True):
        if size <= share:
            out.append(text)
            continue
        keep = int(len(text) * max(share - 40, 0) / size)
        cut = text[:keep]
        if "\n" in cut:
            cut = cut[: cut.rfind("\n")]
        shown = cut.count("\n") + 1 if cut else 0
        total = text.count("\n") + 1
        out.append(
            f"{cut}\n[... result cut to fit the context window: showing {shown} of {total} lines; "
            "use offset/limit or a narrower pattern]"
            if cut
            else "[result dropped: the context window is full; write your report from what you have]"
        )
    return out


FINAL_NUDGE = (
    "Your {budget} is used up: do not call any more tools. Write your final report now from what you "
    "found: a comprehensive answer with relevant code snippets and absolute file paths."
)
BUDGET_WORDS: dict[StopReason, str] = {"turns": "turn budget", "context": "context window", "deadline": "time budget"}


def sampling(
    m: ModelSettings, max_tokens: int, *, grammar: str | None = None, force: bool = False, stop: tuple[str, ...] = ()
) -> GenerateOptions:
    """Generation options with the configured sampling (the explorer, the evals and the proxy share it)."""
    return GenerateOptions(
        max_tokens=max_tokens,
        temperature=m.temperature,
        top_p=m.top_p,
        top_k=m.top_k,
        min_p=m.min_p,
        seed=m.seed,
        grammar=grammar,
        force_tool_call=force,
        stop=stop,
    )


@dataclass(frozen=True)
class Progress:
    """What the explorer is doing now (for progress notifications)."""

    turn: int
    max_turns: int
    message: str


ProgressFn = Callable[[Progress], None]


@dataclass(frozen=True)
class Served:
    """One call of a turn and what it gave back."""

    call: ToolCall | MalformedCall
    result: ToolResult
    elapsed_s: float


TaskFn = Callable[[ToolCall], ToolResult]


@dataclass
class Run:
    """State of one exploration (a Task sub-exploration is a run of its own, one level deeper)."""

    root: str
    question: str
    tools: Tools
    oracle: PathOracle
    depth: int
    max_turns: int
    stop: StopSignal
    hard_deadline: float
    progress: ProgressFn | None
    transcript: Transcript | None
    messages: list[Message] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    calls: list[ToolCallRecord] = field(default_factory=list)
    seen: dict[str, None] = field(default_factory=dict)
    turns: int = 0
    started: float = field(default_factory=time.monotonic)
    generating_s: float = 0.0

    def child(self, question: str) -> Run:
        """A sub-exploration of `question`: one level deeper, half the turns, the same tools and deadline."""
        return Run(
            root=self.root,
            question=question,
            tools=self.tools,
            oracle=self.oracle,
            depth=self.depth + 1,
            max_turns=max(2, self.max_turns // 2),
            stop=self.stop,
            hard_deadline=self.hard_deadline,
            progress=None,
            transcript=self.transcript,
        )

    def absorb(self, sub: Run, result: ExploreResult) -> None:
        """Count a finished sub-exploration's tokens, time, calls and files as this run's."""
        self.usage = self.usage + result.usage
        self.generating_s += sub.generating_s
        self.calls += [c.model_copy(update={"name": f"Task/{c.name}", "turn": self.turns}) for c in result.tool_calls]
        for p in result.files_examined:
            self.seen.setdefault(p, None)

    def record(self, kind: str, **fields: Any) -> None:
        """Write a transcript event (when a transcript is kept), stamped with depth and turn."""
        if self.transcript is not None:
            self.transcript.event(kind, depth=self.depth, turn=self.turns, **fields)

    def tell(self, message: str, *, numbered: bool = True) -> None:
        """A progress line, `turn N/M: ` first unless not `numbered` (a sub-exploration's goes through its parent)."""
        if self.progress is not None:
            head = f"turn {self.turns}/{self.max_turns}: " if numbered else ""
            self.progress(Progress(self.turns, self.max_turns, head + message))

    def tell_calls(self, calls: Sequence[ToolCall | MalformedCall]) -> None:
        """The progress line naming a turn's calls: `turn 3/10: Grep 'load_config' in src; Read app.py`."""
        words = (
            describe_call(c.name, c.arguments, self.root) if isinstance(c, ToolCall) else "malformed call"
            for c in calls
        )
        self.tell("; ".join(words))

    def check_cancel(self) -> None:
        """Raise Cancelled when the caller asked to stop."""
        if self.stop.cancelled:
            raise Cancelled("exploration cancelled by the caller")

    def note(self, served: Served) -> str:
        """Record a served call (its call record, the paths it showed, a transcript event); its text for the model."""
        call, res = served.call, served.result
        if isinstance(call, MalformedCall):
            self.calls.append(ToolCallRecord(turn=self.turns, name="(malformed)", arguments="", ok=False))
            return res.text
        elapsed = round(served.elapsed_s, 3)
        args = short_json(call.arguments)
        self.calls.append(ToolCallRecord(turn=self.turns, name=call.name, arguments=args, ok=res.ok, elapsed_s=elapsed))
        for p in res.paths:
            self.seen.setdefault(p, None)
        self.record("tool", name=call.name, arguments=call.arguments, ok=res.ok, text=res.text, elapsed_s=elapsed)
        return res.text

    def report_limit(self) -> int | None:
        """Tokens this model can write in the time left, at the speed it wrote so far (None before it wrote)."""
        if self.generating_s <= 0 or not self.usage.completion_tokens:
            return None
        rate = self.usage.completion_tokens / self.generating_s
        return int(rate * (self.hard_deadline - time.monotonic()) * 0.9)

    def files_only(self, reason: StopReason) -> str:
        """The report when the model wrote none: the files the tools showed."""
        files = "\n".join(f"- {p}" for p in self.seen) or "- (none)"
        return (
            f"The model did not write a report before its {BUDGET_WORDS[reason]} ran out. "
            f"Files the tools showed while exploring {self.root}:\n{files}"
        )


class Turns:
    """Builds and serves turns for one model under one set of settings."""

    def __init__(self, model: ChatModel, settings: Settings) -> None:
        self.model = model
        self.settings = settings
        self._system = read_prompt(settings.agent.system_prompt, "system_prompt.md")
        self._task = read_prompt(settings.agent.task_prompt, "task_prompt.md")
        self._grammars: dict[tuple[str, ...], str] = {}
        self._pool = ThreadPoolExecutor(max_workers=settings.agent.tool_workers, thread_name_prefix="loco-tool")

    def close(self) -> None:
        """Stop the tool threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ---- building ---------------------------------------------------------------------------------

    def system(self, root: str) -> str:
        """The system prompt for a root."""
        return self._system.replace("{root}", root)

    def opening(self, root: str, question: str) -> list[Message]:
        """The conversation's first two messages: the system prompt and the task, for a root and a question."""
        task = self._task.replace("{root}", root).replace("{question}", question.strip())
        return [Message("system", self.system(root)), Message("user", task)]

    def tool_names(self, tools: Tools, depth: int) -> tuple[str, ...]:
        """The tools offered at a depth: the sandbox's, and Task where a sub-exploration may start."""
        return tuple(tools.names) + (("Task",) if depth < self.settings.agent.task_depth else ())

    def grammar(self, names: tuple[str, ...]) -> str:
        """The tool-call grammar for these tools, allowing at most `agent.max_calls_per_turn` calls."""
        if names not in self._grammars:
            self._grammars[names] = tool_call_grammar(schemas(names), max_calls=self.settings.agent.max_calls_per_turn)
        return self._grammars[names]

    @property
    def reply_reserve(self) -> int:
        """Tokens kept free for the model's reply (and the final report)."""
        return min(self.settings.model.max_tokens, self.model.n_ctx // 4)

    def count(self, text: str) -> int:
        """Tokens a piece of plain text takes."""
        return self.model.count_tokens([Segment(text)])

    def count_prompt(self, messages: Sequence[Message]) -> int:
        """Tokens the rendered conversation takes, the assistant's opening included."""
        return self.model.count_tokens(render(messages))

    def context_spent(self, n_prompt: int) -> bool:
        """True when a prompt this long leaves no room for a reply and another tool result."""
        return n_prompt + self.reply_reserve + MIN_RESULT_ROOM > self.model.n_ctx

    def options(
        self, n_prompt: int, *, grammar: str | None = None, force: bool = False, limit: int | None = None
    ) -> GenerateOptions:
        """Generation options for the room a prompt of `n_prompt` tokens leaves (and at most `limit` tokens)."""
        m = self.settings.model
        room = min(m.max_tokens, self.model.n_ctx - n_prompt, limit if limit is not None else m.max_tokens)
        return sampling(m, max(16, room), grammar=grammar, force=force)

    def tool_messages(self, messages: Sequence[Message], results: list[str]) -> list[Message]:
        """The results as tool messages, cut so the next turn and the report still fit the context."""
        base = self.count_prompt(messages)
        budget = self.model.n_ctx - base - self.reply_reserve - WRAPPER_TOKENS * len(results) - 64
        return [Message("tool", text) for text in fit_results(results, budget, self.count)]

    # ---- serving ----------------------------------------------------------------------------------

    def serve(
        self, calls: Sequence[ToolCall | MalformedCall], tools: Tools, stop: StopSignal, task: TaskFn
    ) -> tuple[list[Served], str | None]:
        """Run a turn's calls (concurrently; Task ones after, one at a time) in call order, and a note on calls cut."""
        limit = self.settings.agent.max_calls_per_turn
        served = list(calls[:limit])
        started = time.monotonic()
        # The same call twice in one turn (small models repeat themselves) runs once.
        pending: dict[str, Future[ToolResult]] = {}
        for call in served:
            if isinstance(call, ToolCall) and call.name != "Task" and _key(call) not in pending:
                pending[_key(call)] = self._pool.submit(tools.call, call.name, call.arguments, stop)
        out: list[Served] = []
        for call in served:
            if isinstance(call, MalformedCall):
                out.append(Served(call, ToolResult(call.error, ok=False), 0.0))
            elif call.name == "Task":  # shares the model, so after the others and one at a time
                t0 = time.monotonic()
                result = task(call)
                out.append(Served(call, result, time.monotonic() - t0))
            else:
                result = pending[_key(call)].result()
                out.append(Served(call, result, time.monotonic() - started))
        extra = len(calls) - limit
        note = (
            f"{extra} more tool calls in this turn were not run: at most {limit} calls are served per turn. "
            "Repeat the ones you still need in your next turn."
            if extra > 0
            else None
        )
        return out, note


def _key(call: ToolCall) -> str:
    return call.name + json.dumps(call.arguments, sort_keys=True, default=str)
