"""`mcp-loco eval` through the command line, with recorded turns (deterministic)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mcp_loco.cli import main
from mcp_loco.config import Settings
from mcp_loco.evals.runner import ABLATION, default_variant, explore_variants
from mcp_loco.model.protocol import format_call

GREP = format_call("Grep", {"pattern": "load_config", "path": "{root}"})
READ = format_call("Read", {"file_path": "{root}/src/app/config.py"})
QUESTION = "Where is load_config defined?"


def jsonl(path: Path, *objs: object) -> str:
    path.write_text("".join(json.dumps(o) + "\n" for o in objs), encoding="utf-8")
    return str(path)


@pytest.fixture
def files(tmp_path: Path, sample_repo: Path) -> dict[str, str]:
    return {
        "root": str(sample_repo),
        "samples": jsonl(
            tmp_path / "turns.jsonl",
            {"id": "s1", "question": QUESTION, "reference": "I'll search.\n" + GREP},
            {"id": "s2", "question": QUESTION, "history": [READ], "reference": "It is in {root}/src/app/config.py:4."},
        ),
        "questions": jsonl(tmp_path / "q.jsonl", {"id": "q1", "question": QUESTION, "expected": ["src/app/config.py"]}),
    }


def row(out: str, title: str) -> list[str]:
    """The cells of the table row starting with `title`."""
    line = next(line for line in out.splitlines() if line.startswith(title))
    return re.split(r"\s{2,}", line[len(title) :].strip())


def replay(tmp_path: Path, root: str, *turns: str) -> str:
    path = tmp_path / "replay.json"
    path.write_text(json.dumps([t.replace("{root}", root) for t in turns]), encoding="utf-8")
    return str(path)


def run(files: dict[str, str], replay_file: str, *extra: str) -> list[str]:
    return [
        "eval",
        "--root",
        files["root"],
        "--samples",
        files["samples"],
        "--questions",
        files["questions"],
        "--replay",
        replay_file,
        *extra,
    ]


def test_eval_prints_the_tables_and_writes_the_json(
    files: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad_json = '<tool_call>\n{"name": "Read", "arguments": {"file_path": "/x",}}\n</tool_call>'
    answer = "load_config is defined in {root}/src/app/config.py:4."
    turns = replay(tmp_path, files["root"], GREP, bad_json, READ, answer)
    out = tmp_path / "out.json"
    assert main(run(files, turns, "--out", str(out))) == 0
    captured = capsys.readouterr()
    assert row(captured.out, "tool call presence alignment") == ["50.0% (1/2)", "100% (65/65)"]
    assert row(captured.out, "first tool type match")[0] == "100.0% (1/1)"
    assert row(captured.out, "JSON validity")[0] == "50.0% (1/2)"
    assert row(captured.out, "argument syntax correctness")[0] == "50.0% (1/2)"
    assert row(captured.out, "expected files cited, verified") == ["100.0% (1/1)"]
    assert "turn sample 2/2 s2 [grammar+force]" in captured.err and "question 1/1 q1" in captured.err
    report = json.loads(out.read_text())
    m = report["turn_metrics"]["grammar+force"]
    assert m["presence"] == {"hits": 1, "total": 2, "value": 0.5}
    assert m["json_validity"]["hits"] == 1 and m["argument_syntax"]["hits"] == 1
    assert m["model_tools"] == {"Grep": 1, "(invalid)": 1} and m["reference_tools"] == {"Grep": 1}
    e = report["explore_metrics"]["grammar+force"]
    assert e["recall"]["hits"] == 1 and e["verified"] == {"hits": 1, "total": 1, "value": 1.0}
    [q] = report["explorations"]
    assert q["score"]["turns"] == 2 and q["score"]["stop_reason"] == "answered"


def test_ablation_runs_every_variant_side_by_side(
    files: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.json"
    turns = replay(tmp_path, files["root"], *[GREP] * 8)
    assert main(run(files, turns, "--turns-only", "--ablate", "--out", str(out), "-q")) == 0
    captured = capsys.readouterr()
    header = captured.out.split("Turn-level metrics")[1].splitlines()[1]
    assert header.split()[1:5] == ["grammar+force", "grammar", "force", "neither"]
    assert captured.err == ""
    report = json.loads(out.read_text())
    assert list(report["turn_metrics"]) == ["grammar+force", "grammar", "force", "neither"]
    assert report["explorations"] == [] and len(report["turns"]) == 8

    answer = "load_config is defined in {root}/src/app/config.py:4."
    turns = replay(tmp_path, files["root"], *[READ, answer] * 3)
    assert main(run(files, turns, "--explore-only", "--ablate", "--out", str(out), "-q")) == 0
    report = json.loads(out.read_text())
    # The agent forces the first call only under the grammar: "force" alone is not a configuration of it.
    assert report["explore_variants"] == ["grammar+force", "grammar", "neither"]
    assert all(m["recall"]["hits"] == 1 for m in report["explore_metrics"].values())
    assert "no `force` column" in capsys.readouterr().out


def test_bad_sample_files_fail_with_the_line(
    files: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "question": "q", "reference": "x"}\n{"id": "a"\n', encoding="utf-8")
    turns = replay(tmp_path, files["root"], GREP)
    assert main([*run(files, turns), "--samples", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"error: {bad}, line 2: not valid JSON" in err and "Traceback" not in err


def test_replay_running_out_is_an_error_per_sample_not_a_crash(
    files: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    turns = replay(tmp_path, files["root"], GREP)
    assert main(run(files, turns, "--turns-only")) == 0
    out = capsys.readouterr().out
    assert row(out, "samples (errors)") == ["1 (1)"]


def test_only_one_of_turns_only_and_explore_only(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["eval", "--turns-only", "--explore-only"])
    assert e.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_force_alone_explores_when_it_is_the_configured_variant() -> None:
    names = [v.name for v in explore_variants(ABLATION)]
    assert names == ["grammar+force", "grammar", "neither"]
    settings = Settings()
    settings.agent.grammar = False
    assert [v.name for v in explore_variants([default_variant(settings)])] == ["force"]
