"""The explorer: a small model in a loop over read-only tools, with budgets and a verified report."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from mcp_loco.config import AgentSettings, Settings, configs_dir
from mcp_loco.errors import Cancelled, ConfigError, LocoError
from mcp_loco.grammar import tool_call_grammar
from mcp_loco.interfaces import (
    ChatModel,
    Completion,
    GenerateOptions,
    Segment,
    Snapshots,
    ToolResult,
    Tools,
    Usage,
)
from mcp_loco.protocol import MalformedCall, Message, ToolCall, parse_turn, render
from mcp_loco.quotes import check_quotes
from mcp_loco.report import ExploreResult, PathOracle, StopReason, ToolCallRecord, cap_report, check_report
from mcp_loco.sandbox import Toolbox, path_oracle
from mcp_loco.transcript import Transcript

log = structlog.get_logger("mcp_loco.agent")

TASK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "description": {"type": "string"},
        "prompt": {"type": "string"},
        "subagent_type": {"type": "string"},
    },
    "required": ["description", "prompt"],
    "additionalProperties": False,
}
MIN_RESULT_ROOM = 256
"""Below this many free tokens another tool turn cannot bring anything in: the context budget is spent."""

FINAL_NUDGE = (
    "Your {budget} is used up: do not call any more tools. Write your final report now from what you "
    "found: a comprehensive answer with relevant code snippets and absolute file paths."
)
BUDGET_WORDS: dict[StopReason, str] = {
    "turns": "turn budget",
    "context": "context window",
    "deadline": "time budget",
    "answered": "budget",
}


@dataclass(frozen=True)
class Progress:
    """What the explorer is doing now (for progress notifications)."""

    turn: int
    max_turns: int
    message: str


ProgressFn = Callable[[Progress], None]


class StopSignal(threading.Event):
    """Set by the caller's cancel, by `set()`, or once the deadline passes; backends poll `is_set()`."""

    def __init__(self, parent: threading.Event | None, deadline: float) -> None:
        super().__init__()
        self.parent = parent
        self.deadline = deadline

    @property
    def cancelled(self) -> bool:
        """True when the caller (not the clock) asked to stop."""
        return self.parent is not None and self.parent.is_set()

    def is_set(self) -> bool:
        """True once cancelled or past the deadline."""
        return super().is_set() or self.cancelled or time.monotonic() >= self.deadline

    def wait(self, timeout: float | None = None) -> bool:
        """Wait in short steps so the deadline and the parent are noticed."""
        end = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            left = 0.05 if end is None else min(0.05, end - time.monotonic())
            if left <= 0:
                return False
            super().wait(left)
        return True


def read_prompt(path_setting: str, default_name: str) -> str:
    """A prompt file: the configured one, else the one shipped in configs/."""
    path = Path(path_setting).expanduser() if path_setting else configs_dir() / default_name
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"prompt file {path}: cannot read it ({e.strerror})") from None


def describe_call(call: ToolCall, root: str) -> str:
    """A short human line for a call: `Grep 'load_config' in src/`."""
    args = call.arguments

    def rel(p: Any) -> str:
        s = str(p)
        return s[len(root) + 1 :] or "." if s.startswith(root + "/") else s

    if call.name == "Read":
        return f"Read {rel(args.get('file_path', args.get('path', '?')))}"
    if call.name == "Grep":
        where = f" in {rel(args['path'])}" if args.get("path") else ""
        return f"Grep {str(args.get('pattern', ''))[:60]!r}{where}"
    if call.name == "Glob":
        where = f" in {rel(args['path'])}" if args.get("path") else ""
        return f"Glob {str(args.get('pattern', ''))[:60]!r}{where}"
    if call.name == "Bash":
        return f"Bash {str(args.get('command', ''))[:80]!r}"
    if call.name == "Task":
        return f"Task {str(args.get('description', args.get('prompt', '')))[:60]!r}"
    return f"{call.name} {short_json(args, 60)}"


def short_json(value: Any, limit: int = 200) -> str:
    """JSON, cut to `limit` characters."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _call_key(call: ToolCall) -> str:
    return call.name + json.dumps(call.arguments, sort_keys=True, default=str)


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


@dataclass
class _Run:
    """State of one exploration."""

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

    def record(self, kind: str, **fields: Any) -> None:
        """Write a transcript event (when a transcript is kept), stamped with depth and turn."""
        if self.transcript is not None:
            self.transcript.event(kind, depth=self.depth, turn=self.turns, **fields)

    def tell(self, message: str) -> None:
        if self.progress is not None and self.depth == 0:
            self.progress(Progress(self.turns, self.max_turns, message))


class Explorer:
    """Runs explorations on one model (one at a time per model: backends are not re-entrant)."""

    def __init__(
        self,
        model: ChatModel,
        settings: Settings,
        *,
        fallback: Callable[[Sequence[Message], threading.Event], str] | None = None,
    ) -> None:
        self.model = model
        self.settings = settings
        self.fallback = fallback
        self._system = read_prompt(settings.agent.system_prompt, "system_prompt.md")
        self._task = read_prompt(settings.agent.task_prompt, "task_prompt.md")
        self._pool = ThreadPoolExecutor(max_workers=settings.agent.tool_workers, thread_name_prefix="loco-tool")
        self._grammars: dict[tuple[str, ...], str] = {}

    def close(self) -> None:
        """Stop the tool threads (the model is the caller's)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ---- public -----------------------------------------------------------------------------------

    def explore(
        self,
        root: str | Path,
        question: str,
        *,
        cancel: threading.Event | None = None,
        progress: ProgressFn | None = None,
        max_turns: int | None = None,
        deadline_s: float | None = None,
    ) -> ExploreResult:
        """Explore `root` to answer `question`; always returns a report unless cancelled (raises Cancelled)."""
        agent = self.settings.agent
        if not question.strip():
            raise LocoError("the question is empty: say what to find out about the codebase")
        tools = Toolbox(str(root), self.settings.tools)
        budget_s = deadline_s or agent.deadline_s
        now = time.monotonic()
        # Keep a slice of the time for the final report, so the deadline never leaves the caller empty-handed.
        reserve = min(60.0, budget_s * 0.25)
        transcript = Transcript.open(agent.transcript_dir, tools.root, question) if agent.transcript_dir else None
        run = _Run(
            root=tools.root,
            question=question,
            tools=tools,
            oracle=path_oracle(tools),
            depth=0,
            max_turns=max_turns or agent.max_turns,
            stop=StopSignal(cancel, now + budget_s - reserve),
            hard_deadline=now + budget_s,
            progress=progress,
            transcript=transcript,
        )
        try:
            return self._run(run)
        finally:
            if transcript is not None:
                transcript.close()

    # ---- the loop ---------------------------------------------------------------------------------

    def _run(self, run: _Run) -> ExploreResult:
        agent = self.settings.agent
        system = self._system.replace("{root}", run.root)
        task = self._task.replace("{root}", run.root).replace("{question}", run.question.strip())
        run.messages = [Message("system", system), Message("user", task)]
        run.record("start", root=run.root, question=run.question)
        grammar = self._grammar(run) if agent.grammar else None
        stop_reason: StopReason | None = None
        report: str | None = None
        while stop_reason is None:
            self._check_cancel(run)
            if run.turns >= run.max_turns:
                stop_reason = "turns"
                break
            if run.stop.is_set():
                stop_reason = "deadline"
                break
            prompt = render(run.messages)
            n_prompt = self.model.count_tokens(prompt)
            if n_prompt + self._reply_reserve() + MIN_RESULT_ROOM > self.model.n_ctx and run.turns > 0:
                stop_reason = "context"
                break
            run.turns += 1
            run.tell(f"turn {run.turns}/{run.max_turns}: thinking")
            options = self._options(
                max_tokens=min(self.settings.model.max_tokens, self.model.n_ctx - n_prompt),
                grammar=grammar,
                force=agent.force_first_tool and run.turns == 1 and grammar is not None,
            )
            completion = self._generate(run, prompt, options, run.stop)
            if completion is None:  # the deadline struck mid-generation
                run.turns -= 1
                stop_reason = "deadline"
                break
            run.messages.append(Message("assistant", completion.text))
            parsed = parse_turn(completion.text)
            if not parsed.calls:
                report = parsed.text.strip()
                if completion.finish_reason == "length":
                    report += "\n\n[the model's answer was cut at its per-turn token limit]"
                stop_reason = "answered"
                break
            results = self._serve_calls(run, parsed.calls)
            self._append_results(run, results)
        if report is None:
            report, escalated = self._final_report(run, stop_reason)
        else:
            escalated = False
        return self._result(run, report, stop_reason, escalated)

    def _reply_reserve(self) -> int:
        return min(self.settings.model.max_tokens, self.model.n_ctx // 4)

    def _options(self, *, max_tokens: int, grammar: str | None, force: bool) -> GenerateOptions:
        m = self.settings.model
        return GenerateOptions(
            max_tokens=max(16, max_tokens),
            temperature=m.temperature,
            top_p=m.top_p,
            top_k=m.top_k,
            min_p=m.min_p,
            seed=m.seed,
            grammar=grammar,
            force_tool_call=force,
        )

    def _grammar(self, run: _Run) -> str:
        names = tuple(run.tools.names) + (("Task",) if run.depth < self.settings.agent.task_depth else ())
        if names not in self._grammars:
            schemas = run.tools.schemas()
            if "Task" in names:
                schemas = {**schemas, "Task": TASK_SCHEMA}
            self._grammars[names] = tool_call_grammar(schemas)
        return self._grammars[names]

    def _check_cancel(self, run: _Run) -> None:
        if run.stop.cancelled:
            raise Cancelled("exploration cancelled by the caller")

    def _generate(
        self, run: _Run, prompt: Sequence[Segment], options: GenerateOptions, stop: StopSignal
    ) -> Completion | None:
        if run.transcript is not None:
            run.transcript.prompt(prompt)
        t0 = time.monotonic()
        try:
            completion = self.model.complete(prompt, options, cancel=stop)
        except Cancelled:
            self._check_cancel(run)
            return None  # the deadline, not the caller, stopped it
        run.usage = run.usage + completion.usage
        self._check_cancel(run)
        run.record(
            "completion",
            text=completion.text,
            finish_reason=completion.finish_reason,
            usage=completion.usage.model_dump(),
            elapsed_s=round(time.monotonic() - t0, 3),
        )
        log.debug("turn", turn=run.turns, depth=run.depth, usage=completion.usage.model_dump())
        if completion.finish_reason == "cancelled":
            return None
        return completion

    # ---- tool calls -------------------------------------------------------------------------------

    def _serve_calls(self, run: _Run, calls: Sequence[ToolCall | MalformedCall]) -> list[str]:
        """Run a turn's calls (concurrently; Task ones after, one at a time) and return results in call order."""
        limit = self.settings.agent.max_calls_per_turn
        served, extra = list(calls[:limit]), len(calls) - limit
        described = [describe_call(c, run.root) if isinstance(c, ToolCall) else "malformed call" for c in served]
        run.tell(f"turn {run.turns}/{run.max_turns}: " + "; ".join(described))
        started = time.monotonic()
        # The same call twice in one turn (small models repeat themselves) runs once.
        pending: dict[str, Future[ToolResult]] = {}
        for call in served:
            if isinstance(call, ToolCall) and call.name != "Task":
                key = _call_key(call)
                if key not in pending:
                    pending[key] = self._pool.submit(run.tools.call, call.name, call.arguments, run.stop)
        out: list[str] = []
        for call in served:
            if isinstance(call, MalformedCall):
                run.calls.append(ToolCallRecord(turn=run.turns, name="(malformed)", arguments="", ok=False))
                out.append(call.error)
                continue
            if call.name == "Task":  # shares this model, so after the others and one at a time
                self._check_cancel(run)
                t0 = time.monotonic()
                result = self._task_call(run, call)
                out.append(self._note_call(run, call, result, time.monotonic() - t0))
                continue
            result = pending[_call_key(call)].result()
            out.append(self._note_call(run, call, result, time.monotonic() - started))
        if extra > 0:
            out.append(
                f"{extra} more tool calls in this turn were not run: at most {limit} calls are served per turn. "
                "Repeat the ones you still need in your next turn."
            )
        return out

    def _note_call(self, run: _Run, call: ToolCall, res: ToolResult, elapsed: float) -> str:
        run.calls.append(
            ToolCallRecord(
                turn=run.turns,
                name=call.name,
                arguments=short_json(call.arguments),
                ok=res.ok,
                elapsed_s=round(elapsed, 3),
            )
        )
        for p in res.paths:
            run.seen.setdefault(p, None)
        run.record(
            "tool",
            name=call.name,
            arguments=call.arguments,
            ok=res.ok,
            text=res.text,
            elapsed_s=round(elapsed, 3),
        )
        return res.text

    def _task_call(self, run: _Run, call: ToolCall) -> ToolResult:
        """Serve Task as a depth-1 sub-exploration sharing the deadline; its report is the result."""
        if run.depth >= self.settings.agent.task_depth:
            return ToolResult(
                "Task is not available here (sub-explorations cannot start their own); "
                f"use {', '.join(run.tools.names)} directly.",
                ok=False,
            )
        prompt = call.arguments.get("prompt") or call.arguments.get("description")
        if not isinstance(prompt, str) or not prompt.strip():
            return ToolResult('Task needs "prompt": the sub-question to explore, as a string.', ok=False)
        sub = _Run(
            root=run.root,
            question=prompt,
            tools=run.tools,
            oracle=run.oracle,
            depth=run.depth + 1,
            max_turns=max(2, run.max_turns // 2),
            stop=run.stop,
            hard_deadline=run.hard_deadline,
            progress=None,
            transcript=run.transcript,
        )
        run.tell(f"turn {run.turns}/{run.max_turns}: Task sub-exploration {prompt[:60]!r}")
        # The sub-conversation displaces the parent's evaluated prefix; put it back afterwards so the
        # parent's next turn evaluates only its new tokens (benchmarks/task_cache.py measures this).
        keeper = self.model if isinstance(self.model, Snapshots) else None
        saved = keeper.snapshot() if keeper is not None else None
        try:
            result = self._run(sub)
        finally:
            if keeper is not None:
                keeper.restore(saved)
        run.usage = run.usage + result.usage
        for c in result.tool_calls:
            run.calls.append(c.model_copy(update={"name": f"Task/{c.name}", "turn": run.turns}))
        for p in result.files_examined:
            run.seen.setdefault(p, None)
        return ToolResult(result.report, ok=True, paths=tuple(result.files_examined))

    def _append_results(self, run: _Run, results: list[str]) -> None:
        """Append the results as tool messages, cut so the next turn and the report still fit."""
        base = self.model.count_tokens(render(run.messages, add_generation_prompt=True))
        # Each <tool_response> wrapper costs a few tokens; the reply reserve keeps room for the report turn.
        budget = self.model.n_ctx - base - self._reply_reserve() - 12 * len(results) - 64
        fitted = fit_results(results, budget, lambda t: self.model.count_tokens([Segment(t)]))
        run.messages.extend(Message("tool", text) for text in fitted)

    # ---- the end ----------------------------------------------------------------------------------

    def _final_report(self, run: _Run, reason: StopReason | None) -> tuple[str, bool]:
        """Budget spent: hand over to the fallback model if configured, else ask for the report once."""
        reason = reason or "turns"
        esc = self.settings.escalation
        if self.fallback is not None and run.depth == 0 and reason in esc.on and not run.stop.cancelled:
            run.tell(f"escalating to {esc.model or esc.endpoint} after the local {BUDGET_WORDS[reason]} ran out")
            try:
                return self._escalate(run), True
            except Cancelled:
                raise
            except LocoError as e:
                log.warning("escalation failed; the local model writes the report", error=str(e))
        run.tell(f"writing the report ({BUDGET_WORDS[reason]} used up)")
        run.messages.append(Message("user", FINAL_NUDGE.format(budget=BUDGET_WORDS[reason])))
        prompt = render(run.messages)
        n_prompt = self.model.count_tokens(prompt)
        room = self.model.n_ctx - n_prompt
        text = ""
        if room >= 32:
            stop = StopSignal(run.stop.parent, run.hard_deadline)
            options = self._options(max_tokens=min(room, self.settings.model.max_tokens), grammar=None, force=False)
            completion = self._generate(run, prompt, options, stop)
            if completion is not None:
                run.messages.append(Message("assistant", completion.text))
                text = parse_turn(completion.text).text.strip()
        if not text:
            text = self._files_only_report(run, reason)
        return text, False

    def _files_only_report(self, run: _Run, reason: StopReason) -> str:
        files = "\n".join(f"- {p}" for p in run.seen) or "- (none)"
        return (
            f"The model did not write a report before its {BUDGET_WORDS[reason]} ran out. "
            f"Files the tools showed while exploring {run.root}:\n{files}"
        )

    def _escalate(self, run: _Run) -> str:
        """Let the fallback model continue the same conversation with the same tools."""
        assert self.fallback is not None
        stop = StopSignal(run.stop.parent, run.hard_deadline)
        for _ in range(self.settings.escalation.max_turns):
            text = self.fallback(run.messages, stop)
            self._check_cancel(run)
            run.messages.append(Message("assistant", text))
            run.record("completion", text=text, escalated=True)
            parsed = parse_turn(text)
            if not parsed.calls:
                return parsed.text.strip()
            run.turns += 1
            run.messages.extend(Message("tool", r) for r in self._serve_calls(run, parsed.calls))
        raise LocoError("the fallback model used all its turns without a report")

    def _result(self, run: _Run, report: str, reason: StopReason | None, escalated: bool) -> ExploreResult:
        # Quotes first: a corrected line range is then checked (and counted) as the citation it now is.
        quoted, quotes = check_quotes(report, run.root, run.seen, run.oracle.text)
        marked, citations = check_report(quoted, run.root, run.oracle, run.seen)
        capped = cap_report(
            marked,
            self.settings.agent.report_max_tokens,
            lambda t: self.model.count_tokens([Segment(t)]),
        )
        result = ExploreResult(
            report=capped,
            citations=citations,
            quotes=quotes,
            files_examined=list(run.seen),
            tool_calls=run.calls,
            turns=run.turns,
            stop_reason=reason or "answered",
            escalated=escalated,
            usage=run.usage,
            elapsed_s=round(time.monotonic() - run.started, 3),
            root=run.root,
            question=run.question,
        )
        run.record(
            "end",
            stop_reason=result.stop_reason,
            turns=result.turns,
            usage=result.usage.model_dump(),
            elapsed_s=result.elapsed_s,
        )
        return result


def explore(
    root: str | Path,
    question: str,
    settings: Settings,
    model: ChatModel,
    *,
    cancel: threading.Event | None = None,
    progress: ProgressFn | None = None,
) -> ExploreResult:
    """Explore once with a fresh Explorer."""
    explorer = Explorer(model, settings)
    try:
        return explorer.explore(root, question, cancel=cancel, progress=progress)
    finally:
        explorer.close()


__all__ = ["AgentSettings", "Explorer", "Progress", "StopSignal", "explore"]
