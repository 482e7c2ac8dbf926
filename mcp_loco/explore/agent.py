"""The explorer: a small model in a loop over read-only tools, with budgets and a verified report.

The loop: open the conversation, ask the model, parse its turn, serve the calls, stop on a budget,
write the report. How each turn is built and served lives in turns.py.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import structlog

from mcp_loco.config import Settings
from mcp_loco.errors import Cancelled, LocoError
from mcp_loco.explore.escalation import fallback_for
from mcp_loco.explore.quotes import check_quotes
from mcp_loco.explore.report import ExploreResult, StopReason, cap_report, check_report
from mcp_loco.explore.transcript import Transcript
from mcp_loco.explore.turns import BUDGET_WORDS, FINAL_NUDGE, REPORT_SHARE, Progress, ProgressFn, Run, Turns, heartbeat
from mcp_loco.interfaces import (
    ChatModel,
    Completion,
    Fallback,
    GenerateOptions,
    Message,
    Prompt,
    Snapshots,
    StopSignal,
    ToolResult,
)
from mcp_loco.model.protocol import MalformedCall, ToolCall, parse_turn, render
from mcp_loco.sandbox import Toolbox, path_oracle

log = structlog.get_logger("mcp_loco.explore.agent")


class Explorer:
    """Runs explorations on one model (one at a time per model: backends are not re-entrant).

    It owns its fallback (made from `settings.escalation` unless one is given) and closes it in `close()`.
    """

    def __init__(self, model: ChatModel, settings: Settings, *, fallback: Fallback | None = None) -> None:
        self.model = model
        self.settings = settings
        self.fallback = fallback if fallback is not None else fallback_for(settings.escalation)
        self.turns = Turns(model, settings)

    def close(self) -> None:
        """Stop the tool threads and the fallback's client (the model is the caller's)."""
        self.turns.close()
        if self.fallback is not None:
            self.fallback.close()

    def explore(
        self,
        root: str | Path | Toolbox,
        question: str,
        *,
        cancel: threading.Event | None = None,
        progress: ProgressFn | None = None,
        max_turns: int | None = None,
        deadline_s: float | None = None,
    ) -> ExploreResult:
        """Explore `root` to answer `question`; always returns a report unless cancelled (raises Cancelled).

        `root` may be a Toolbox opened earlier (the server opens it when it checks the path); the caller
        then closes it.
        """
        agent = self.settings.agent
        if not question.strip():
            raise LocoError("the question is empty: say what to find out about the codebase")
        tools = root if isinstance(root, Toolbox) else Toolbox(str(root), self.settings.tools)
        budget_s = deadline_s or agent.deadline_s
        now = time.monotonic()
        # Keep a share of the time for the final report, so the deadline never leaves the caller empty-handed.
        reserve = budget_s * REPORT_SHARE
        transcript = Transcript.open(agent.transcript_dir, tools.root, question) if agent.transcript_dir else None
        run = Run(
            root=tools.root,
            question=question,
            tools=tools,
            oracle=path_oracle(tools, until=now + budget_s),
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
            if tools is not root:
                tools.close()

    # ---- the loop ---------------------------------------------------------------------------------

    def _run(self, run: Run) -> ExploreResult:
        run.messages = self.turns.opening(run.root, run.question)
        run.record("start", root=run.root, question=run.question)
        reason, report = self._loop(run)
        escalated = False
        if report is None:
            report, escalated = self._final_report(run, reason)
        return self._result(run, report, reason, escalated)

    def _loop(self, run: Run) -> tuple[StopReason, str | None]:
        """Turns until the model answers (reason "answered" and its text) or a budget runs out (no text)."""
        agent = self.settings.agent
        grammar = self.turns.grammar(self.turns.tool_names(run.tools, run.depth)) if agent.grammar else None
        while True:
            run.check_cancel()
            if run.turns >= run.max_turns:
                return "turns", None
            if run.stop.is_set():
                return "deadline", None
            prompt = render(run.messages)
            n_prompt = self.model.count_tokens(prompt)
            if run.turns > 0 and self.turns.context_spent(n_prompt):
                return "context", None
            run.turns += 1
            force = agent.force_first_tool and run.turns == 1 and grammar is not None
            completion = self._generate(
                run, prompt, self.turns.options(n_prompt, grammar=grammar, force=force), "thinking"
            )
            if completion is None:  # the deadline struck mid-generation
                run.turns -= 1
                return "deadline", None
            run.messages.append(Message("assistant", completion.text))
            parsed = parse_turn(completion.text)
            if not parsed.calls:
                cut = completion.finish_reason == "length"
                return "answered", parsed.text.strip() + (
                    "\n\n[the model's answer was cut at its per-turn token limit]" if cut else ""
                )
            run.messages += self.turns.tool_messages(run.messages, self._serve(run, parsed.calls))

    def _generate(
        self, run: Run, prompt: Prompt, options: GenerateOptions, doing: str, stop: StopSignal | None = None
    ) -> Completion | None:
        """One generation, said in progress lines as it goes; None when the clock (not the caller) stopped it."""
        if run.transcript is not None:
            run.transcript.prompt(prompt)
        numbered = doing == "thinking"
        run.tell(doing, numbered=numbered)
        pieces = [0]  # what the backend has written so far, for the heartbeat

        def wrote(_: str) -> None:
            pieces[0] += 1

        def beat(seconds: float) -> None:
            written = f", {pieces[0]} tokens written" if pieces[0] else ""
            run.tell(f"{doing} ({seconds:.0f} s{written})", numbered=numbered)

        t0 = time.monotonic()
        try:
            with heartbeat(beat):
                options = dataclasses.replace(options, on_text=wrote)
                completion = self.model.complete(prompt, options, cancel=stop or run.stop)
        except Cancelled:
            run.check_cancel()
            return None
        run.generating_s += time.monotonic() - t0
        run.usage = run.usage + completion.usage
        run.check_cancel()
        run.record(
            "completion",
            text=completion.text,
            finish_reason=completion.finish_reason,
            usage=completion.usage.model_dump(),
            elapsed_s=round(time.monotonic() - t0, 3),
        )
        log.debug("turn", turn=run.turns, depth=run.depth, usage=completion.usage.model_dump())
        return None if completion.finish_reason == "cancelled" else completion

    # ---- tool calls -------------------------------------------------------------------------------

    def _serve(self, run: Run, calls: tuple[ToolCall | MalformedCall, ...]) -> list[str]:
        """Serve a turn's calls and note each one; the texts come back in call order."""
        run.tell_calls(calls[: self.settings.agent.max_calls_per_turn])
        served, note = self.turns.serve(calls, run.tools, run.stop, lambda call: self._task(run, call))
        return [run.note(s) for s in served] + ([note] if note else [])

    def _task(self, run: Run, call: ToolCall) -> ToolResult:
        """Serve Task as a sub-exploration one level deeper, sharing the deadline; its report is the result."""
        run.check_cancel()
        if run.depth >= self.settings.agent.task_depth:
            return ToolResult(
                "Task is not available here (sub-explorations cannot start their own); "
                f"use {', '.join(run.tools.names)} directly.",
                ok=False,
            )
        prompt = call.arguments.get("prompt") or call.arguments.get("description")
        if not isinstance(prompt, str) or not prompt.strip():
            return ToolResult('Task needs "prompt": the sub-question to explore, as a string.', ok=False)
        sub = run.child(prompt)
        sub.progress = _relay(run)
        run.tell(f"Task sub-exploration {prompt[:60]!r}")
        # The sub-conversation displaces the parent's evaluated prefix; put it back afterwards so the
        # parent's next turn evaluates only its new tokens (benchmarks/task_cache.py measures this).
        keeper = self.model if isinstance(self.model, Snapshots) else None
        saved = keeper.snapshot() if keeper is not None else None
        try:
            result = self._run(sub)
        finally:
            if keeper is not None:
                keeper.restore(saved)
        run.absorb(sub, result)
        return ToolResult(result.report, ok=True, paths=tuple(result.files_examined))

    # ---- the end ----------------------------------------------------------------------------------

    def _final_report(self, run: Run, reason: StopReason) -> tuple[str, bool]:
        """Budget spent: hand over to the fallback model if configured, else ask for the report once."""
        esc = self.settings.escalation
        if self.fallback is not None and run.depth == 0 and reason in esc.on and not run.stop.cancelled:
            run.tell(
                f"escalating to {self.fallback.name} after the local {BUDGET_WORDS[reason]} ran out", numbered=False
            )
            try:
                return self._escalate(run, self.fallback), True
            except Cancelled:
                raise
            except LocoError as e:
                log.warning("escalation failed; the local model writes the report", error=str(e))
        run.messages.append(Message("user", FINAL_NUDGE.format(budget=BUDGET_WORDS[reason])))
        prompt = render(run.messages)
        n_prompt = self.model.count_tokens(prompt)
        text = ""
        if self.model.n_ctx - n_prompt >= 32:
            stop = StopSignal(run.stop.parent, run.hard_deadline)
            # No longer than this model can write in the time left, so the report ends rather than being cut.
            options = self.turns.options(n_prompt, limit=run.report_limit())
            doing = f"writing the report ({BUDGET_WORDS[reason]} used up)"
            completion = self._generate(run, prompt, options, doing, stop)
            if completion is not None:
                run.messages.append(Message("assistant", completion.text))
                text = parse_turn(completion.text).text.strip()
        return text or run.files_only(reason), False

    def _escalate(self, run: Run, fallback: Fallback) -> str:
        """Let the fallback model continue the same conversation with the same tools."""
        stop = StopSignal(run.stop.parent, run.hard_deadline)
        for _ in range(self.settings.escalation.max_turns):
            text = fallback.next_turn(run.messages, stop)
            run.check_cancel()
            run.messages.append(Message("assistant", text))
            run.record("completion", text=text, escalated=True)
            parsed = parse_turn(text)
            if not parsed.calls:
                return parsed.text.strip()
            run.turns += 1
            run.messages += [Message("tool", t) for t in self._serve(run, parsed.calls)]
        raise LocoError("the fallback model used all its turns without a report")

    def _result(self, run: Run, report: str, reason: StopReason, escalated: bool) -> ExploreResult:
        # Quotes first: a corrected line range is then checked (and counted) as the citation it now is.
        # Both checks stop at the call's deadline; what they could not reach is marked unchecked.
        quoted, quotes = check_quotes(report, run.root, run.seen, run.oracle.text, run.hard_deadline)
        marked, citations = check_report(quoted, run.root, run.oracle, run.seen, run.hard_deadline)
        result = ExploreResult(
            report=cap_report(marked, self.settings.agent.report_max_tokens, self.turns.count),
            citations=citations,
            quotes=quotes,
            files_examined=list(run.seen),
            tool_calls=run.calls,
            turns=run.turns,
            stop_reason=reason,
            escalated=escalated,
            usage=run.usage,
            elapsed_s=round(time.monotonic() - run.started, 3),
            root=run.root,
            question=run.question,
        )
        run.record(
            "end", stop_reason=reason, turns=result.turns, usage=result.usage.model_dump(), elapsed_s=result.elapsed_s
        )
        return result


def _relay(run: Run) -> ProgressFn | None:
    """A sub-exploration's progress, said as its parent's turn: `turn 3/10 > Task turn 2/5: Grep ...`."""
    say = run.progress
    if say is None:
        return None

    def relay(p: Progress) -> None:
        say(Progress(run.turns, run.max_turns, f"turn {run.turns}/{run.max_turns} > Task {p.message}"))

    return relay


__all__ = ["Explorer", "Progress", "StopSignal"]
