"""What an exploration gets done in a time budget at a given speed (benchmarks/budget_sim.py, doctor --bench).

The real explorer runs a recorded session on this package's own source tree (real tools, real results)
with a model stand-in whose prompt evaluation and writing take what a speed profile says, on a virtual
clock the loop reads: a 300 s exploration simulates in well under a second. Tool time is not charged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcp_loco.config import Settings
from mcp_loco.errors import BudgetError
from mcp_loco.explore.agent import Explorer
from mcp_loco.interfaces import Completion, GenerateOptions, Prompt, Speed
from mcp_loco.model.backends.function import CHARS_PER_TOKEN, FunctionModel, Request, VirtualClock
from mcp_loco.model.protocol import format_call

PACKAGE = Path(__file__).resolve().parent.parent
"""The tree the recorded session explores: this package's source."""

# A typical exploration of this package, as a trained explorer runs it: 9 tool turns of ~1.5-2K tokens each
# (docs/measured.md's typical exploration evaluates ~17K prompt tokens), then a ~1,500-token report.
SESSION: list[list[tuple[str, dict[str, Any]]]] = [
    [("Grep", {"pattern": "def load_settings", "path": "{root}", "output_mode": "content", "-n": True})],
    [("Read", {"file_path": "{root}/config.py", "offset": 330, "limit": 100})],
    [("Glob", {"pattern": "**/*.py", "path": "{root}"})],
    [("Read", {"file_path": "{root}/cli.py", "offset": 1, "limit": 110})],
    [("Grep", {"pattern": "ENV_PREFIX|MCP_LOCO_", "path": "{root}", "output_mode": "content", "-n": True})],
    [("Read", {"file_path": "{root}/config.py", "offset": 1, "limit": 110})],
    [("Read", {"file_path": "{root}/model/backends/__init__.py"})],
    [
        ("Bash", {"command": "ls {root}/model/backends"}),
        ("Read", {"file_path": "{root}/config.py", "offset": 110, "limit": 90}),
    ],
    [("Read", {"file_path": "{root}/cli.py", "offset": 110, "limit": 100})],
]
REPORT_TOKENS = 1500
"""What the stand-in writes when asked for its report (the typical exploration's report)."""
NUDGE_MARK = "do not call any more tools"


@dataclass(frozen=True)
class Simulated:
    """What one simulated exploration got done."""

    budget_s: float
    turns: int
    """Tool turns completed."""
    tokens_read: int
    """Prompt tokens evaluated."""
    report_tokens: int
    wall_s: float
    by_model: bool
    """The model wrote the report (not the files-only fallback, not refused)."""
    stop_reason: str


class StandIn(FunctionModel):
    """Plays the session's calls, writes a report when asked; remembers what its last turn was."""

    def __init__(self, root: str, speed: Speed, clock: VirtualClock, n_ctx: int) -> None:
        self.turns = [
            "\n".join(format_call(n, json.loads(json.dumps(a).replace("{root}", root))) for n, a in calls)
            for calls in SESSION
        ]
        words = f"The settings are merged in {root}/config.py by load_settings; the command line builds its layer. "
        self.report = (words * (int(REPORT_TOKENS * CHARS_PER_TOKEN) // len(words) + 1))[
            : int(REPORT_TOKENS * CHARS_PER_TOKEN)
        ]
        self.tool_turns = 0
        self.last: Completion | None = None
        self.reported = False
        super().__init__(self._reply, n_ctx=n_ctx, speed=speed, clock=clock)

    def _reply(self, request: Request) -> str:
        last_user = request.prompt.rsplit("<|im_start|>user\n", 1)[-1]
        if NUDGE_MARK in last_user or self.tool_turns >= len(self.turns):
            self.reported = True
            return self.report
        self.tool_turns += 1
        return self.turns[self.tool_turns - 1]

    def complete(self, prompt: Prompt, options: GenerateOptions, cancel: Any = None) -> Completion:
        """The stand-in's turn, remembered."""
        self.last = super().complete(prompt, options, cancel)
        return self.last


def simulate(speed: Speed, budget_s: float, settings: Settings | None = None, root: Path = PACKAGE) -> Simulated:
    """Run the recorded session at `speed` under `budget_s` seconds and say what it got done."""
    s = settings.model_copy(deep=True) if settings is not None else Settings()
    s.agent.transcript_dir = ""
    s.escalation.endpoint = ""
    clock = VirtualClock()
    model = StandIn(str(root), speed, clock, s.llama.n_ctx)
    explorer = Explorer(model, s, clock=clock)
    try:
        result = explorer.explore(
            root, "Where is the settings precedence (flags > env > file) implemented?", deadline_s=budget_s
        )
    except BudgetError:
        return Simulated(budget_s, 0, 0, 0, 0.0, False, "refused")
    finally:
        explorer.close()
    wrote = model.last.usage.completion_tokens if model.reported and model.last is not None else 0
    by_model = model.reported and bool(model.last and model.last.text.strip())
    calls_done = len({c.turn for c in result.tool_calls})
    return Simulated(
        budget_s=budget_s,
        turns=calls_done,
        tokens_read=result.usage.prompt_tokens_evaluated,
        report_tokens=wrote,
        wall_s=round(result.elapsed_s, 1),
        by_model=by_model,
        stop_reason=result.stop_reason,
    )


CANDIDATE_DEADLINES = (50, 100, 150, 200, 300, 600, 900, 1200, 1800)
USEFUL_TURNS = 3
"""Tool turns an exploration needs to find something worth reporting (a search, a read, a check)."""


@dataclass(frozen=True)
class Advice:
    """Settings for a machine of this speed, from simulated explorations."""

    deadline_s: int
    max_turns: int
    max_output_chars: int
    at_default: Simulated
    at_advised: Simulated


def advise(speed: Speed, settings: Settings | None = None) -> Advice:
    """The shortest budget that gets a useful exploration done at this speed, and the turns and result cap that fit it."""
    s = settings or Settings()
    default = simulate(speed, s.agent.deadline_s, s)
    chosen = default
    if not (default.by_model and default.turns >= USEFUL_TURNS):
        for deadline in CANDIDATE_DEADLINES:
            chosen = simulate(speed, deadline, s)
            if chosen.by_model and chosen.turns >= USEFUL_TURNS:
                break
    turns = max(2, min(s.agent.max_turns, chosen.turns + 1))
    # A result should take at most half of one turn's share of the work time to read.
    share_s = chosen.budget_s * 0.7 / turns / 2
    per_token = speed.prefill_s(1000, 4096) / 1000
    chars = int(share_s / per_token * CHARS_PER_TOKEN) if per_token > 0 else s.tools.max_output_chars
    cap = max(2000, min(s.tools.max_output_chars, chars // 1000 * 1000))
    return Advice(int(chosen.budget_s), turns, cap, default, chosen)
