"""Time spent like tokens: turns priced before they start, results fitted to the time left, the report prompt
trimmed, a machine too slow for the budget told so at once. A scripted model on a virtual clock whose prefill
and decode follow a speed profile, so every case is exact and fast."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mcp_loco.config import Settings
from mcp_loco.errors import BudgetError
from mcp_loco.explore.agent import Explorer
from mcp_loco.explore.turns import FINAL_NUDGE, Run, Turns
from mcp_loco.interfaces import Message, StopSignal
from mcp_loco.model.backends.function import FunctionModel, Request, VirtualClock
from mcp_loco.model.protocol import format_call
from mcp_loco.model.speed import Point, SpeedProfile
from mcp_loco.sandbox import Toolbox, path_oracle

NUDGE_MARK = "do not call any more tools"
REPORT = "The config is loaded by load_config in {root}/src/app/config.py, called from main. " * 12
FILES_ONLY = "The model did not write a report"


def slow(prefill: float = 200.0, decode: float = 20.0) -> SpeedProfile:
    """A machine this slow at 1K of context (and slower deeper, as CPUs are)."""
    return SpeedProfile([Point(1024, prefill, decode)], source="test", trusted=True)


def settings(**agent: Any) -> Settings:
    s = Settings()
    s.agent.grammar = False
    s.agent.task_depth = 0
    for k, v in agent.items():
        setattr(s.agent, k, v)
    return s


class Script:
    """Tool calls from a list (the last one repeated), the report when asked for it."""

    def __init__(self, root: Path, calls: list[str]) -> None:
        self.root, self.calls = root, calls
        self.tool_turns = 0

    def __call__(self, req: Request) -> str:
        last_user = req.prompt.rsplit("<|im_start|>user\n", 1)[-1]
        if NUDGE_MARK in last_user:
            return REPORT.format(root=self.root)
        self.tool_turns += 1
        return self.calls[min(self.tool_turns - 1, len(self.calls) - 1)]


def big_repo(sample_repo: Path, lines: int = 4000) -> Path:
    (sample_repo / "big.py").write_text("".join(f"value_{i} = load_config('{i}')  # line {i}\n" for i in range(lines)))
    return sample_repo


def explore(
    root: Path, calls: list[str], speed: SpeedProfile, budget: float, s: Settings | None = None, n_ctx: int = 32768
) -> tuple[Any, FunctionModel, VirtualClock]:
    clock = VirtualClock(1000.0)
    model = FunctionModel(Script(root, calls), n_ctx=n_ctx, speed=speed, clock=clock)
    explorer = Explorer(model, s or settings(), clock=clock)
    try:
        return explorer.explore(root, "Where is the config loaded?", deadline_s=budget), model, clock
    finally:
        explorer.close()


def reads(root: Path) -> list[str]:
    return [
        format_call("Read", {"file_path": str(root / "big.py")}),
        format_call("Grep", {"pattern": "load_config", "path": str(root), "output_mode": "content"}),
        format_call("Bash", {"command": f"cat {root}/big.py"}),
        format_call("Glob", {"pattern": "**/*.py", "path": str(root)}),
    ]


# ---- the mechanism on every tool and several speeds ---------------------------------------------


@pytest.mark.parametrize("budget", [8.0, 15.0, 30.0, 100.0])
@pytest.mark.parametrize(("prefill", "decode"), [(40.0, 8.0), (200.0, 20.0), (1000.0, 60.0)])
def test_every_call_ends_in_budget_with_the_models_report(
    sample_repo: Path, budget: float, prefill: float, decode: float
) -> None:
    root = big_repo(sample_repo)
    try:
        result, _model, _clock = explore(root, reads(root), slow(prefill, decode), budget)
    except BudgetError as e:  # refused at once: only where reading the question alone outlasts the budget
        assert float(str(e).split("takes about ")[1].split()[0]) > budget
        assert budget <= 30 and prefill <= 200.0
        return
    assert not result.report.startswith(FILES_ONLY), result.report
    assert "load_config" in result.report
    # The virtual clock is the model's time: the call ended inside its budget.
    assert result.elapsed_s <= budget + 1e-6
    # The report was never cut by the clock: it was sized to the time left.
    assert "cut where the time budget ended" not in result.report


@pytest.mark.parametrize("call", range(3), ids=["Read", "Grep", "Bash"])
def test_large_results_are_cut_to_what_the_time_left_can_read(sample_repo: Path, call: int) -> None:
    root = big_repo(sample_repo)
    result, model, _ = explore(root, [reads(root)[call]], slow(), 30.0, settings(max_turns=1))
    report_prompt = model.prompts[-1]
    assert NUDGE_MARK in report_prompt
    assert "cut to fit the time left" in report_prompt
    assert "offset/limit" in report_prompt and "narrower pattern" in report_prompt
    assert not result.report.startswith(FILES_ONLY)


def test_results_are_not_cut_for_time_on_a_fast_machine(sample_repo: Path) -> None:
    root = big_repo(sample_repo, lines=300)
    _, model, _ = explore(root, [reads(root)[0]], slow(5000.0, 200.0), 100.0, settings(max_turns=1))
    assert "cut to fit" not in model.prompts[-1]
    assert "line 299" in model.prompts[-1]


def test_a_turn_that_cannot_finish_by_the_work_deadline_is_not_started(sample_repo: Path) -> None:
    root = big_repo(sample_repo, lines=200)
    speed = slow(100.0, 10.0)
    result, model, _ = explore(root, [reads(root)[3]], speed, 40.0, settings(max_turns=10))
    # Each prompt sent was either a tool turn that fitted before the work deadline (70% of the budget) or the report.
    assert result.stop_reason == "deadline"
    assert NUDGE_MARK in model.prompts[-1]
    assert not any(o.max_tokens < 16 for o in model.options)
    # No tool turn was cut off by the clock: every generation before the report finished.
    assert result.turns == len(model.prompts) - 1
    assert not result.report.startswith(FILES_ONLY)


def test_prefix_stays_token_exact_when_results_are_cut(sample_repo: Path) -> None:
    root = big_repo(sample_repo)
    _result, model, _ = explore(root, reads(root), slow(), 30.0)
    assert any("cut to fit the time left" in p for p in model.prompts)
    # Every prompt extends the previous one: nothing the model already read was rewritten.
    for before, after in zip(model.prompts, model.prompts[1:], strict=False):
        head = before.rsplit("<|im_start|>assistant\n", 1)[0]
        assert after.startswith(head)


def test_budget_too_small_for_the_question_answers_at_once(sample_repo: Path) -> None:
    clock = VirtualClock()
    model = FunctionModel(Script(sample_repo, ["x"]), speed=slow(5.0, 1.0), clock=clock)
    explorer = Explorer(model, settings(), clock=clock)
    try:
        with pytest.raises(BudgetError) as e:
            explorer.explore(sample_repo, "Where is the config loaded?", deadline_s=30)
    finally:
        explorer.close()
    msg = str(e.value)
    assert model.prompts == [] and clock() == 0.0  # nothing was sent to the model
    assert "30 s" in msg and "tok/s" in msg and "deadline_s=" in msg and "GPU" in msg and "quant" in msg
    need = int(msg.split("deadline_s=")[1].split()[0].rstrip(";"))
    # The deadline it names is enough: the same call with it ends in the model's report.
    result, _, _ = explore(sample_repo, [format_call("Glob", {"pattern": "*"})], slow(5.0, 1.0), need)
    assert not result.report.startswith(FILES_ONLY)


def test_a_seed_alone_never_refuses_a_call(sample_repo: Path) -> None:
    # A probe right after load on a busy machine can be far too pessimistic: the call runs anyway (and its
    # timings correct the figures); only figures from recent real generations refuse.
    seed = SpeedProfile([Point(1024, 5.0, 1.0)], source="probed at load")
    assert not seed.trusted
    result, model, _clock = explore(sample_repo, [format_call("Glob", {"pattern": "*"})], seed, 30.0)
    assert model.prompts and result.elapsed_s <= 30.0 + 1e-6
    seed.observe_prefill(500, 100.0, 0)  # a real generation confirms it
    assert seed.trusted
    with pytest.raises(BudgetError):
        explore(sample_repo, [format_call("Glob", {"pattern": "*"})], seed, 30.0)


def test_without_a_speed_the_loop_budgets_as_before(sample_repo: Path) -> None:
    root = big_repo(sample_repo)
    model = FunctionModel(Script(root, reads(root)))
    explorer = Explorer(model, settings(max_turns=2))
    try:
        result = explorer.explore(root, "Where is the config loaded?")
    finally:
        explorer.close()
    assert result.turns == 2 and "cut to fit the time left" not in "".join(model.prompts)


# ---- the report prompt ----------------------------------------------------------------------------


def run_state(root: Path, model: FunctionModel, clock: VirtualClock, messages: list[Message], left: float) -> Run:
    tools = Toolbox(str(root))
    now = clock()
    r = Run(
        root=tools.root,
        question="q",
        tools=tools,
        oracle=path_oracle(tools),
        depth=0,
        max_turns=10,
        stop=StopSignal(None, now, clock),
        hard_deadline=now + left,
        progress=None,
        transcript=None,
        clock=clock,
    )
    r.messages = messages
    return r


def conversation(big: str) -> list[Message]:
    return [
        Message("system", "You explore code."),
        Message("user", "Where is the config loaded?"),
        Message("assistant", format_call("Read", {"file_path": "/r/a.py"})),
        Message("tool", big),
        Message("assistant", format_call("Read", {"file_path": "/r/b.py"}) + format_call("Read", {"file_path": "/c"})),
        Message("tool", big),
        Message("tool", big),
    ]


def test_report_prompt_cuts_unseen_results_first_and_keeps_the_prefix(tmp_path: Path) -> None:
    clock = VirtualClock()
    speed = slow()
    model = FunctionModel(lambda r: "", speed=speed, clock=clock)
    turns = Turns(model, settings())
    big = "".join(f"{i}\tline {i} of the file\n" for i in range(2000))
    messages = conversation(big)
    run = run_state(tmp_path, model, clock, messages, left=40.0)
    run.cached_messages = 5  # the model evaluated up to its second call: the last two results are unseen
    run.cached = turns.count_prompt(messages[:5])
    nudge = Message("user", FINAL_NUDGE.format(budget="turn budget"))
    out = turns.fit_report(run, nudge)
    assert out[:5] == messages[:5]  # what the model read stays token-exact
    assert all("cut to fit the time left" in m.content or "dropped" in m.content for m in out[5:7])
    assert out[-1] == nudge
    n = turns.count_prompt(out)
    assert turns.report_s(speed, n, run.cached) <= 40.0
    turns.close()


def test_report_prompt_cuts_the_oldest_results_when_the_cache_is_lost(tmp_path: Path) -> None:
    clock = VirtualClock()
    speed = slow()
    model = FunctionModel(lambda r: "", speed=speed, clock=clock)
    turns = Turns(model, settings())
    big = "".join(f"{i}\tline {i} of the file\n" for i in range(1200))
    messages = [*conversation(big)[:4], Message("assistant", "thinking")]
    run = run_state(tmp_path, model, clock, messages, left=20.0)
    run.cached_messages, run.cached = 5, 0  # a sub-exploration displaced it: nothing is cached
    out = turns.fit_report(run, Message("user", FINAL_NUDGE.format(budget="turn budget")))
    assert "cut to fit the time left" in out[3].content
    assert turns.report_s(speed, turns.count_prompt(out), 0) <= 20.0
    # With the cache intact, cutting an evaluated result would cost more than it saves: it stays.
    run.cached = turns.count_prompt(messages)
    kept = turns.fit_report(run, Message("user", FINAL_NUDGE.format(budget="turn budget")))
    assert kept[3] == messages[3]
    turns.close()


def test_report_length_follows_the_time_left(tmp_path: Path) -> None:
    clock = VirtualClock()
    model = FunctionModel(lambda r: "", speed=slow(200.0, 20.0), clock=clock)
    turns = Turns(model, settings())
    run = run_state(tmp_path, model, clock, conversation("x")[:2], left=10.0)
    n = turns.count_prompt(run.messages)
    short = turns.report_tokens(run, n, n)
    run.hard_deadline += 20.0
    longer = turns.report_tokens(run, n, n)
    assert short is not None and longer is not None
    assert 100 < short < 200 < longer  # ~20 tok/s for 90% of 10 s, then of 30 s
    turns.close()


class Slowing:
    """A machine that slows down once it writes: each token costs 4 times what the estimate said."""

    def __init__(self, inner: SpeedProfile) -> None:
        self.inner = inner
        self.trusted = True

    def prefill_s(self, tokens: int, depth: int) -> float:
        return self.inner.prefill_s(tokens, depth)

    def decode_s(self, tokens: int, depth: int) -> float:
        # The stand-in charges one token at a time; the loop prices many at once.
        return self.inner.decode_s(tokens, depth) * (4 if tokens == 1 else 1)

    def describe(self) -> str:
        return self.inner.describe()


def test_a_report_cut_by_the_clock_keeps_what_the_model_wrote(sample_repo: Path) -> None:
    clock = VirtualClock()
    model = FunctionModel(
        Script(sample_repo, [format_call("Glob", {"pattern": "*"})]), speed=Slowing(slow()), clock=clock
    )
    explorer = Explorer(model, settings(max_turns=1), clock=clock)
    try:
        result = explorer.explore(sample_repo, "Where is the config loaded?", deadline_s=30)
    finally:
        explorer.close()
    assert result.elapsed_s <= 30.0 + 0.5  # the token being written when the deadline struck
    assert not result.report.startswith(FILES_ONLY)
    assert result.report.startswith("The config is loaded by load_config")
    assert result.report.endswith("[the report was cut where the time budget ended]")


def test_a_sub_exploration_reports_by_the_parents_work_deadline(sample_repo: Path) -> None:
    root = big_repo(sample_repo, lines=300)
    task = format_call("Task", {"description": "find", "prompt": "Which function loads the TOML config?"})
    glob = format_call("Glob", {"pattern": "**/*.py", "path": str(root)})
    clock = VirtualClock()
    ended: dict[str, float] = {}

    def script(req: Request) -> str:
        last_user = req.prompt.rsplit("<|im_start|>user\n", 1)[-1]
        sub = "Where is the config loaded?" not in req.prompt  # the parent's question is in every parent prompt
        if NUDGE_MARK in last_user:
            ended["sub" if sub else "parent"] = clock()
            return REPORT.format(root=root)
        return glob if sub or req.index > 0 else task

    model = FunctionModel(script, speed=slow(400.0, 40.0), clock=clock)
    explorer = Explorer(model, settings(task_depth=1, max_turns=40), clock=clock)  # the sub gets 20 turns
    try:
        result = explorer.explore(root, "Where is the config loaded?", deadline_s=60)
    finally:
        explorer.close()
    assert "sub" in ended and "parent" in ended, ended
    # The sub-exploration was asked for its report before the parent's work deadline (70% of 60 s), so the
    # parent had its own time to report.
    assert ended["sub"] <= 60 * 0.7 and ended["parent"] <= 60 * 0.7 + 1.0
    assert not result.report.startswith(FILES_ONLY) and result.elapsed_s <= 60.5
    assert any(c.name.startswith("Task") for c in result.tool_calls)


def test_results_are_sized_when_served_to_what_the_time_left_can_read(tmp_path: Path) -> None:
    clock = VirtualClock()
    speed = slow(200.0, 20.0)
    model = FunctionModel(lambda r: "", speed=speed, clock=clock)
    turns = Turns(model, settings())
    messages = conversation("x")[:3]
    big = "".join(f"{i}\tline {i} of the file\n" for i in range(3000))
    for left, cut in ((20.0, True), (600.0, False)):
        run = run_state(tmp_path, model, clock, messages, left=left)
        run.cached = turns.count_prompt(messages)
        [served] = turns.tool_messages(messages, [big], run)
        assert ("cut to fit the time left" in served.content) == cut
        if cut:  # what was kept can still be read, and a 192-token report written, in the time left
            room = turns.result_room(run, turns.count_prompt(messages))
            assert room is not None and turns.count(served.content) <= room
            n = turns.count_prompt([*messages, served]) + turns.nudge_tokens()
            assert turns.report_s(speed, n, run.cached, 192) <= left
    # Without a run (the evals), only the context window sizes results.
    [plain] = turns.tool_messages(messages, [big])
    assert "the time left" not in plain.content
    turns.close()


def test_a_system_prompt_already_in_the_cache_is_not_priced_again(sample_repo: Path) -> None:
    clock = VirtualClock()
    # Reading is slow (the 500-token opening alone takes 10 s), writing fast.
    speed = SpeedProfile([Point(1024, 50.0, 200.0)], source="test", trusted=True)
    model = FunctionModel(Script(sample_repo, [format_call("Glob", {"pattern": "*"})]), speed=speed, clock=clock)
    explorer = Explorer(model, settings(max_turns=1), clock=clock)
    try:
        with pytest.raises(BudgetError):  # a cold model cannot read the question in 8 s
            explorer.explore(sample_repo, "Where is the config loaded?", deadline_s=8)
        explorer.explore(sample_repo, "Where is the config loaded?", deadline_s=60)  # warms the cache
        warm = explorer.explore(sample_repo, "Where is the config loaded?", deadline_s=8)
    finally:
        explorer.close()
    assert not warm.report.startswith(FILES_ONLY) and warm.elapsed_s <= 8.5
