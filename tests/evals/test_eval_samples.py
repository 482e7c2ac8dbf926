"""Loading sample files: good ones load, bad ones fail naming the file, the line and what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mcp_loco.evals.samples import SampleError, load_questions, load_turn_samples
from mcp_loco.model.protocol import format_call

GREP = format_call("Grep", {"pattern": "load_config", "path": "{root}"})
READ = format_call("Read", {"file_path": "{root}/src/app/config.py"})


def write_lines(path: Path, *objs: object) -> Path:
    path.write_text("".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objs), encoding="utf-8")
    return path


def test_turn_samples_load_in_both_forms(tmp_path: Path) -> None:
    f = write_lines(
        tmp_path / "s.jsonl",
        {"id": "a", "question": "Where?", "reference": GREP},
        "",
        {"id": "b", "question": "Where?", "history": [GREP], "reference": "It is in {root}/x.py."},
        {
            "id": "c",
            "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
            "reference": READ,
            "note": "imported",
        },
    )
    a, b, c = load_turn_samples(f)
    assert a.first_turn and a.history == () and a.reference == GREP
    assert not b.first_turn and b.history == (GREP,)
    assert c.first_turn and [m.role for m in c.messages] == ["system", "user"] and c.note == "imported"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "line 2: not valid JSON"),
        ("[1, 2]", "line 2: expected a JSON object, got list"),
        ({"id": "b", "question": "q"}, 'line 2: "reference" must be a non-empty string'),
        ({"id": "a", "question": "q", "reference": GREP}, "line 2: duplicate id 'a'"),
        ({"id": "b", "question": "q", "reference": GREP, "histroy": []}, "line 2: unknown key(s) histroy"),
        ({"id": "b", "question": "q", "history": ["I will look."], "reference": GREP}, "must call at least one tool"),
        (
            {"id": "b", "question": "q", "history": ["<tool_call>\n{oops}\n</tool_call>"], "reference": GREP},
            "history turn 1: tool call 1 is malformed (not valid JSON",
        ),
        (
            {
                "id": "b",
                "question": "q",
                "history": [format_call("Task", {"description": "d", "prompt": "p"})],
                "reference": GREP,
            },
            "is a Task, which the harness cannot run",
        ),
        (
            {"id": "b", "question": "q", "reference": "<tool_call>\n{}"},
            '"reference": tool call 1 is malformed (no closing',
        ),
        ({"id": "b", "question": "q", "history": "x", "reference": GREP}, '"history" must be a list'),
        ({"id": "b", "question": "q", "messages": [], "reference": GREP}, 'either "messages" or "question"'),
        ({"id": "b", "messages": [{"role": "bot", "content": "x"}], "reference": GREP}, "message 1 must be"),
        ({"id": "b", "messages": [{"role": "assistant", "content": "x"}], "reference": GREP}, "the last message is"),
    ],
)
def test_bad_turn_samples_name_the_line_and_the_problem(tmp_path: Path, line: object, message: str) -> None:
    f = write_lines(tmp_path / "s.jsonl", {"id": "a", "question": "q", "reference": GREP}, line)
    with pytest.raises(SampleError) as e:
        load_turn_samples(f)
    assert str(e.value).startswith(str(f)) and message in str(e.value), str(e.value)


def test_questions_load_and_bad_ones_are_refused(tmp_path: Path) -> None:
    good = {"id": "q1", "question": "Where is load_config?", "expected": ["src/app/config.py"]}
    [q] = load_questions(write_lines(tmp_path / "q.jsonl", good))
    assert q.expected == ("src/app/config.py",)
    bad = [
        ({**good, "expected": []}, '"expected" must be a non-empty list'),
        ({**good, "expected": "config.py"}, '"expected" must be a non-empty list'),
        ({**good, "expected": ["/abs/config.py"]}, "must be relative to the root"),
        ({**good, "expected": ["../x.py"]}, "must be relative to the root"),
        ({**good, "question": ""}, '"question" must be a non-empty string'),
        ({**good, "answer": "x"}, "unknown key(s) answer"),
    ]
    for obj, message in bad:
        with pytest.raises(SampleError, match=", line 1: ") as e:
            load_questions(write_lines(tmp_path / "q.jsonl", obj))
        assert message in str(e.value), str(e.value)


def test_missing_and_empty_files_are_clear(tmp_path: Path) -> None:
    with pytest.raises(SampleError, match="cannot read it"):
        load_turn_samples(tmp_path / "none.jsonl")
    with pytest.raises(SampleError, match="no samples in it"):
        load_questions(write_lines(tmp_path / "empty.jsonl", "", "// only a comment"))
