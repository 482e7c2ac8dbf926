"""The shipped eval sets stay valid as the code moves: they load, their calls run, their files exist."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mcp_loco.config import configs_dir
from mcp_loco.evals.calls import judge_turn
from mcp_loco.evals.runner import default_root
from mcp_loco.evals.samples import QUESTIONS_FILE, TURNS_FILE, load_questions, load_turn_samples
from mcp_loco.explore.report import find_citations
from mcp_loco.model.protocol import ToolCall, parse_turn
from mcp_loco.sandbox import Toolbox

ROOT = str(default_root())


@pytest.fixture(scope="module")
def toolbox() -> Toolbox:
    return Toolbox(ROOT)


def test_the_sets_ship_inside_the_package() -> None:
    # pyproject's package-data globs for mcp_loco.configs are top-level *.jsonl files.
    for name in (TURNS_FILE, QUESTIONS_FILE):
        path = configs_dir() / name
        assert path.is_file() and path.parent == configs_dir() and name.endswith(".jsonl")


def test_the_turn_set_is_varied() -> None:
    samples = load_turn_samples()
    assert 20 <= len(samples) <= 40
    first = [s for s in samples if s.first_turn]
    answers = [s for s in samples if not judge_turn(s.reference)]
    assert len(first) >= 5 and len(answers) >= 3
    tools = {c.name for s in samples for c in judge_turn(s.reference)}
    assert {"Read", "Grep", "Glob", "Bash"} <= tools


def test_every_history_call_runs_on_the_tree(toolbox: Toolbox) -> None:
    for s in load_turn_samples():
        for i, turn in enumerate(s.history, 1):
            for call in parse_turn(turn.replace("{root}", ROOT)).calls:
                assert isinstance(call, ToolCall)
                result = toolbox.call(call.name, call.arguments)
                assert result.ok and result.text.strip(), (s.id, i, call, result.text[:300])
                assert not result.text.startswith("No matches"), (s.id, i, call)


def test_every_reference_is_well_formed_and_names_real_files() -> None:
    for s in load_turn_samples():
        reference = s.reference.replace("{root}", ROOT)
        calls = judge_turn(reference)
        for c in calls:
            assert c.args_valid, (s.id, c.problems)
            assert c.arguments is not None
            for key in ("file_path", "path"):
                if key in c.arguments:
                    assert os.path.exists(c.arguments[key]), (s.id, c.arguments[key])
        if not calls:  # a final answer: every path it cites exists
            cited = find_citations(reference, ROOT)
            assert cited, s.id
            for f in cited:
                assert os.path.exists(f.path), (s.id, f.path)


def test_every_question_names_files_in_the_tree() -> None:
    questions = load_questions()
    assert 8 <= len(questions) <= 15
    for q in questions:
        for rel in q.expected:
            assert (Path(ROOT) / rel).is_file(), (q.id, rel)
