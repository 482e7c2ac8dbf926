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
    Clock,
    GenerateOptions,
    Message,
    PathOracle,
    Segment,
    Speed,
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
CALL_TOKENS = 64
"""What a tool-call turn writes, about, until the run has timed its own (prices the next turn)."""
MIN_REPORT_TOKENS = 96
"""The shortest report worth writing (a paragraph and a few paths): the loop keeps the time to evaluate what
it read and write this much."""
TURN_REPORT_TOKENS = 2 * MIN_REPORT_TOKENS
"""Another tool turn starts only if a report this long still fits after it (more reading, but not at any price)."""
REPORT_MARGIN = 0.9
"""Share of the time left that the report is sized to, since speeds are estimates."""
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


def fit_results(
    texts: list[str], budget: int, count: Callable[[str], int], why: str = "the context window"
) -> list[str]:
    """Cut tool results so together they take at most `budget` tokens, each saying why and how to read the rest.

    `why` is what ran short: "the context window" or "the time left".
    """
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
        keep = int(len(text) * max(share - 48, 0) / size)  # room for the note
        cut = text[:keep]
        if "\n" in cut:
            cut = cut[: cut.rfind("\n")]
        shown = cut.count("\n") + 1 if cut else 0
        total = text.count("\n") + 1
        out.append(
            f"{cut}\n[... result cut to fit {why}: showing the first {shown} of {total} lines; read on with "
            "Read offset/limit, or search with a narrower pattern]"
            if cut
            else f"[result dropped: {why} cannot take it; write your report from what you have]"
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
    clock: Clock = time.monotonic
    """What the deadlines are read on (a simulation's virtual clock, else time.monotonic)."""
    cached: int = 0
    """Tokens of this conversation the model has evaluated (prompt and reply of the last turn)."""
    cached_messages: int = 0
    """Messages those tokens cover: the ones after it are results the model has not seen."""
    call_tokens: list[int] = field(default_factory=list)
    """Tokens each tool-call turn wrote (prices the next turn)."""

    def child(self, question: str) -> Run:
        """A sub-exploration of `question`: one level deeper, half the turns, the same tools.

        Its report must be written by this run's work deadline, so this run keeps its own time to report.
        """
        now = self.clock()
        end = max(now, self.stop.deadline)
        return Run(
            root=self.root,
            question=question,
            tools=self.tools,
            oracle=self.oracle,
            depth=self.depth + 1,
            max_turns=max(2, self.max_turns // 2),
            stop=StopSignal(self.stop.parent, now + (end - now) * (1 - REPORT_SHARE), self.clock),
            hard_deadline=end,
            progress=None,
            transcript=self.transcript,
            started=now,
            clock=self.clock,
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
        return int(rate * (self.hard_deadline - self.clock()) * REPORT_MARGIN)

    def turn_reply(self) -> int:
        """Tokens the next tool-call turn will write, about: the median of this run's, else CALL_TOKENS."""
        if not self.call_tokens:
            return CALL_TOKENS
        return sorted(self.call_tokens)[len(self.call_tokens) // 2]

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

    def tool_messages(self, messages: Sequence[Message], results: list[str], run: Run | None = None) -> list[Message]:
        """The results as tool messages, cut so the next turn and the report still fit the context (and,
        given the run, so the time left can still evaluate them and write a report)."""
        base = self.count_prompt(messages)
        wrappers = WRAPPER_TOKENS * len(results)
        budget = self.model.n_ctx - base - self.reply_reserve - wrappers - 64
        room = self.result_room(run, base) if run is not None else None
        timed = room - wrappers if room is not None else None
        if timed is not None and timed < budget and sum(self.count(t) for t in results) > timed:
            return [Message("tool", t) for t in fit_results(results, timed, self.count, "the time left")]
        return [Message("tool", text) for text in fit_results(results, budget, self.count)]

    # ---- time ---------------------------------------------------------------------------------------

    @property
    def speed(self) -> Speed | None:
        """The model's measured speed (None: budget by turns and context only)."""
        return getattr(self.model, "speed", None)

    def cached(self, messages: Sequence[Message]) -> int:
        """Tokens of this conversation the model's prefix cache holds already (a backend without one: 0)."""
        held = getattr(self.model, "cached_tokens", None)
        return int(held(render(messages))) if callable(held) else 0

    def nudge_tokens(self) -> int:
        """What the report request adds to the prompt, about."""
        return self.count(FINAL_NUDGE.format(budget="time budget")) + WRAPPER_TOKENS

    def report_s(self, speed: Speed, n_prompt: int, cached: int, tokens: int = MIN_REPORT_TOKENS) -> float:
        """Seconds to evaluate a report prompt of `n_prompt` tokens (`cached` of them evaluated) and write `tokens`."""
        return speed.prefill_s(max(n_prompt - cached, 0), min(cached, n_prompt)) + speed.decode_s(tokens, n_prompt)

    def turn_fits(self, run: Run, n_prompt: int) -> bool:
        """Whether a tool turn on this prompt ends by the work deadline and still leaves time for a short report."""
        speed = self.speed
        if speed is None:
            return True
        reply = run.turn_reply()
        cost = speed.prefill_s(max(n_prompt - run.cached, 0), min(run.cached, n_prompt)) + speed.decode_s(
            reply, n_prompt
        )
        after = n_prompt + reply
        report = self.report_s(speed, after + self.nudge_tokens() + MIN_RESULT_ROOM, after, TURN_REPORT_TOKENS)
        now = run.clock()
        return now + cost <= run.stop.deadline and now + cost + report <= run.hard_deadline

    def result_room(self, run: Run, base: int) -> int | None:
        """Tokens of results a prompt of `base` tokens can take so a report can still be evaluated and written in time."""
        speed = self.speed
        if speed is None:
            return None
        left = run.hard_deadline - run.clock()
        nudge = self.nudge_tokens()
        lo, hi = 0, max(self.model.n_ctx - base, 0)
        want = TURN_REPORT_TOKENS  # results that leave only the shortest report are not worth their reading time
        if self.report_s(speed, base + nudge, run.cached, want) > left:
            return 0
        while lo < hi:  # the largest size whose report still fits (the cost grows with it)
            mid = (lo + hi + 1) // 2
            if self.report_s(speed, base + mid + nudge, run.cached, want) <= left:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def fit_report(self, run: Run, nudge: Message) -> list[Message]:
        """The report prompt, trimmed to what the time left can evaluate while leaving time to write a report.

        Results the model never saw are cut first (the evaluated prefix stays token-exact); then, only
        where it is cheaper (the model lost its cache), the oldest large results it did see.
        """
        messages = [*run.messages, nudge]
        speed = self.speed
        if speed is None:
            return messages
        seen = min(run.cached_messages, len(run.messages))

        def cost(ms: list[Message], cached: int) -> float:
            return self.report_s(speed, self.count_prompt(ms), cached)

        def left() -> float:
            return run.hard_deadline - run.clock()

        if cost(messages, run.cached) <= left():
            return messages
        unseen = [i for i in range(seen, len(run.messages)) if run.messages[i].role == "tool"]
        if unseen:
            texts = [run.messages[i].content for i in unseen]

            def cut(budget: int) -> list[Message]:
                ms = list(messages)
                for i, text in zip(unseen, fit_results(texts, budget, self.count, "the time left"), strict=True):
                    ms[i] = Message("tool", text)
                return ms

            lo, hi = 0, sum(self.count(t) for t in texts)
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if cost(cut(mid), run.cached) <= left():
                    lo = mid
                else:
                    hi = mid - 1
            messages = cut(lo)
        cached = run.cached
        for i in range(seen):
            if cost(messages, cached) <= left():
                break
            text = messages[i].content
            if messages[i].role != "tool" or self.count(text) <= 4 * MIN_RESULT_ROOM:
                continue
            trial = list(messages)
            trial[i] = Message("tool", fit_results([text], MIN_RESULT_ROOM, self.count, "the time left")[0])
            prefix = min(cached, self.count_prompt(messages[:i]))  # cutting it re-evaluates what follows
            if cost(trial, prefix) < cost(messages, cached):
                messages, cached = trial, prefix
        run.cached = cached  # what the model still holds of this prompt, for sizing the report
        return messages

    def report_tokens(self, run: Run, n_prompt: int, cached: int) -> int | None:
        """Tokens the model can write after evaluating the report prompt, in the time left (None: speed unknown)."""
        speed = self.speed
        if speed is None:
            return run.report_limit()
        left = (run.hard_deadline - run.clock() - speed.prefill_s(max(n_prompt - cached, 0), cached)) * REPORT_MARGIN
        lo, hi = 0, max(self.model.n_ctx - n_prompt, 0)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if speed.decode_s(mid, n_prompt) <= left:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def opening_s(self, messages: Sequence[Message]) -> tuple[int, float] | None:
        """Tokens of the opening and the seconds to evaluate it and write a short report (None: speed unknown)."""
        speed = self.speed
        if speed is None:
            return None
        n = self.count_prompt(messages)
        return n, self.report_s(speed, n, self.cached(messages))

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
