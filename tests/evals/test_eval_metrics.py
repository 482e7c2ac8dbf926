"""The metric functions on hand-made turns: each metric can pass and each can fail."""

from __future__ import annotations

import json

from mcp_loco.evals.calls import check_arguments, judge_turn
from mcp_loco.evals.metrics import (
    INVALID,
    UNKNOWN,
    ExploreScore,
    Ratio,
    aggregate_explore,
    aggregate_turns,
    score_explore,
    score_turn,
)
from mcp_loco.evals.runner import EvalReport
from mcp_loco.evals.table import explore_table
from mcp_loco.explore.report import Citation, ExploreResult, Quote
from mcp_loco.interfaces import Usage
from mcp_loco.model.protocol import ToolCall, format_call, parse_turn

READ = format_call("Read", {"file_path": "/r/a.py"})
GREP = format_call("Grep", {"pattern": "def main", "path": "/r"})


def block(body: str) -> str:
    return f"<tool_call>\n{body}\n</tool_call>"


def test_a_well_formed_call_is_valid_json_with_valid_arguments() -> None:
    [call] = judge_turn("Let me read it.\n\n" + READ)
    assert call.json_valid and call.args_valid and call.name == "Read" and not call.problems


def test_a_trailing_comma_is_invalid_json_even_though_the_agent_repairs_it() -> None:
    text = block('{"name": "Read", "arguments": {"file_path": "/r/a.py",}}')
    [call] = judge_turn(text)
    assert not call.json_valid and not call.args_valid and "not valid JSON" in call.problems[0]
    # The agent's parser repairs the slip; the metric must not.
    assert isinstance(parse_turn(text).calls[0], ToolCall)


def test_broken_blocks_are_invalid_json() -> None:
    cases = {
        "<tool_call>\n" + json.dumps({"name": "Read", "arguments": {"file_path": "/a"}}): "no closing",
        block('["Read"]'): "not an object",
        block('{"arguments": {}}'): '"name"',
        block('{"name": "Read", "arguments": "{\\"file_path\\": \\"/a\\"}"}'): '"arguments"',
        block('```json\n{"name": "Read", "arguments": {"file_path": "/a"}}\n```'): "not valid JSON",
    }
    for text, problem in cases.items():
        [call] = judge_turn(text)
        assert not call.json_valid, text
        assert problem in call.problems[0], (text, call.problems)


def test_argument_syntax_catches_missing_required_wrong_types_unknown_tools_and_bad_enums() -> None:
    assert check_arguments("Read", {}) == ["Read: missing required argument 'file_path'"]
    assert "'offset' must be integer, got str" in check_arguments("Read", {"file_path": "/a", "offset": "10"})[0]
    assert "'limit' must be integer, got bool" in check_arguments("Read", {"file_path": "/a", "limit": True})[0]
    assert "'-i' must be boolean" in check_arguments("Grep", {"pattern": "x", "-i": "yes"})[0]
    assert "must be one of" in check_arguments("Grep", {"pattern": "x", "output_mode": "lines"})[0]
    assert check_arguments("Frobnicate", {"x": 1}) == ["unknown tool 'Frobnicate'"]
    # Extra keys are tolerated: the schemas drifted between versions of the traces.
    assert check_arguments("Glob", {"pattern": "**/*.py", "path": "/r", "old_key": 1}) == []


def test_write_edit_and_task_are_judged_by_claude_codes_schemas() -> None:
    assert check_arguments("Write", {"file_path": "/a", "content": "x"}) == []
    assert check_arguments("Edit", {"file_path": "/a", "old_string": "x"}) == [
        "Edit: missing required argument 'new_string'"
    ]
    assert check_arguments("Task", {"description": "d", "prompt": "p", "subagent_type": "Explore"}) == []
    assert check_arguments("Task", {"description": "d"}) == ["Task: missing required argument 'prompt'"]


def test_score_turn_matching_turn() -> None:
    s = score_turn("I'll search.\n" + GREP + "\n" + READ, "Searching.\n" + GREP)
    assert s.presence_match and s.first_tool_match is True
    assert s.model_tools == ["Grep", "Read"] and s.reference_tools == ["Grep"]
    assert (s.calls, s.json_valid, s.args_valid) == (2, 2, 2)


def test_score_turn_presence_mismatch_both_ways() -> None:
    answered = score_turn("The answer is in /r/a.py.", READ)
    assert not answered.presence_match and answered.first_tool_match is False and answered.calls == 0
    called = score_turn(READ, "The answer is in /r/a.py.")
    assert not called.presence_match and called.first_tool_match is None


def test_score_turn_first_tool_mismatch_and_invalid_first_call() -> None:
    assert score_turn(GREP, READ).first_tool_match is False
    bad = score_turn(block('{"name": "Read", "arguments": {"file_path": "/a",}}'), READ)
    assert bad.presence_match and bad.first_tool_match is False and bad.model_tools == [INVALID]
    wrong_type = score_turn(format_call("Read", {"file_path": "/a", "offset": "1"}), READ)
    assert (wrong_type.json_valid, wrong_type.args_valid) == (1, 0) and wrong_type.first_tool_match is True


def test_aggregate_turns_sums_the_cards_ratios() -> None:
    scores = [
        score_turn(GREP, GREP),
        score_turn(block("{oops"), READ),
        score_turn("done", "done"),
        score_turn(format_call("Read", {}), READ),
        score_turn(format_call("explorer", {"q": 1}), GREP),
    ]
    m = aggregate_turns(scores, [1.0, 3.0, 2.0, 5.0, 4.0], errors=1)
    assert (m.samples, m.errors) == (5, 1)
    assert (m.presence.hits, m.presence.total) == (5, 5)
    assert (m.first_tool.hits, m.first_tool.total) == (2, 4)
    assert (m.json_validity.hits, m.json_validity.total) == (3, 4)
    assert (m.argument_syntax.hits, m.argument_syntax.total) == (1, 4)
    # Invented tool names are counted together; the per-turn scores keep them.
    assert m.model_tools == {"Grep": 1, INVALID: 1, "Read": 1, UNKNOWN: 1}
    assert scores[-1].model_tools == ["explorer"]
    assert m.reference_tools == {"Read": 2, "Grep": 2}
    assert m.seconds_median == 3.0
    assert m.first_tool.show() == "50.0% (2/4)" and Ratio().show() == "-"


def test_explore_recall_counts_only_verified_citations() -> None:
    result = ExploreResult(
        report="r",
        root="/r",
        citations=[
            Citation(text="/r/a.py", path="/r/a.py", verified=True),
            Citation(text="/r/b.py", path="/r/b.py", verified=False, reason="not seen by any tool call"),
            Citation(text="/r/x.py:3", path="/r/x.py", line_start=3, line_end=3, verified=True),
        ],
        files_examined=["/r/a.py", "/r/c.py", "/r/x.py"],
        turns=3,
        stop_reason="turns",
        usage=Usage(prompt_tokens=900, prompt_tokens_evaluated=300, completion_tokens=50),
        elapsed_s=4.0,
    )
    s = score_explore(result, ["a.py", "b.py", "c.py"])
    assert s.cited_expected == ["a.py"] and s.examined_expected == ["a.py", "c.py"]
    assert (s.citations, s.verified) == (3, 2) and abs(s.recall - 1 / 3) < 1e-9
    m = aggregate_explore([s, score_explore(result, ["x.py"])])
    assert (m.recall.hits, m.recall.total) == (2, 4)
    assert (m.examined.hits, m.examined.total) == (3, 4)
    assert (m.verified.hits, m.verified.total) == (4, 6)
    assert (m.answered.hits, m.answered.total) == (0, 2)
    assert m.prompt_tokens_mean == 900 and m.prompt_tokens_evaluated_mean == 300 and m.turns_mean == 3


def test_the_share_of_quotes_verified_is_reported_per_variant() -> None:
    def explored(*quotes: Quote) -> ExploreResult:
        return ExploreResult(report="r", root="/r", quotes=list(quotes))

    right = Quote(path="/r/a.py", line_start=4, line_end=7, verified=True, found_at=(4, 7))
    moved = Quote(path="/r/a.py", line_start=1, line_end=3, verified=True, found_at=(4, 7), reason="at lines 4-7")
    invented = Quote(path="/r/a.py", verified=False, reason="not in the file")
    s = score_explore(explored(right, moved, invented), [])
    assert (s.quotes, s.quotes_verified, s.quotes_moved) == (3, 2, 1)
    metrics = {
        "plain": aggregate_explore([s, score_explore(explored(right), [])]),
        "grammar": aggregate_explore([score_explore(explored(), [])]),
    }
    assert (metrics["plain"].quotes_verified.hits, metrics["plain"].quotes_verified.total) == (3, 4)
    assert (metrics["plain"].quotes_in_place.hits, metrics["plain"].quotes_in_place.total) == (2, 4)
    report = EvalReport(model="m", root="/r", explore_variants=["plain", "grammar"], explore_metrics=metrics)
    rows = {line.split("  ")[0]: line.split() for line in explore_table(report).splitlines()}
    assert rows["quotes verified (in the file)"][-3:] == ["75.0%", "(3/4)", "-"]
    assert rows["quotes at the cited lines"][-3:] == ["50.0%", "(2/4)", "-"]


def test_scores_stored_before_quotes_were_checked_still_load() -> None:
    stored = score_explore(ExploreResult(report="r", root="/r"), ["a.py"]).model_dump()
    for key in ("quotes", "quotes_verified", "quotes_moved"):
        del stored[key]
    old = ExploreScore.model_validate(stored)
    assert (old.quotes, old.quotes_verified) == (0, 0)
    assert aggregate_explore([old]).quotes_verified.show() == "-"
