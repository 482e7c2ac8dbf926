"""Tool-call grammars: checked before llama.cpp sees them, and valid calls even from a weak model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mcp_loco.interfaces import GenerateOptions
from mcp_loco.model.grammar import GrammarError, generic_tool_call_grammar, tool_call_grammar, validate_grammar
from mcp_loco.model.protocol import Message, ToolCall, parse_turn, render

BAD_GRAMMARS = {
    "undefined rule": ('root ::= "a" missing', "undefined rule 'missing'"),
    "unterminated string": ('root ::= "a', "unterminated string"),
    "unknown escape": (r'root ::= "\q"', "unknown escape"),
    "unterminated class": ("root ::= [a-", "unterminated character class"),
    "no root": ('start ::= "a"', "no 'root' rule"),
    "left recursion": ('root ::= x\nx ::= x "a" | "b"', "left-recursive"),
    "bad repetition": ('root ::= "a"{3,1}', "less than minimum"),
    "underscore in a rule name": ('root ::= my_rule\nmy_rule ::= "a"', "unexpected character"),
    "missing ::=": ('root "a"', "expected '::='"),
}

COMPILE = """
import json, sys
from llama_cpp import Llama
import llama_cpp
llm = Llama(sys.argv[1], vocab_only=True, verbose=False)
out = []
for g in json.loads(sys.stdin.read()):
    s = llama_cpp.llama_sampler_init_grammar(llm._model.vocab, g.encode(), b"root")
    out.append(bool(s))
    if s:
        llama_cpp.llama_sampler_free(s)
print(json.dumps(out))
"""


def compiles_in_llama_cpp(model: Path, grammars: list[str], timeout: float = 60) -> list[bool]:
    """Ask llama.cpp itself, in a child process so that a crash or a hang cannot take the tests down."""
    done = subprocess.run(
        [sys.executable, "-c", COMPILE, str(model)],
        input=json.dumps(grammars),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    result: list[bool] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def check_arguments(schema: dict[str, Any], args: dict[str, Any]) -> None:
    props = schema["properties"]
    assert set(schema.get("required", ())) <= set(args), args
    assert set(args) <= set(props), args
    for key, value in args.items():
        p = props[key]
        if "enum" in p:
            assert value in p["enum"]
        else:
            kind = {"string": str, "integer": int, "boolean": bool}[p["type"]]
            assert isinstance(value, kind), (key, value)


@pytest.mark.parametrize("what", list(BAD_GRAMMARS))
def test_bad_grammars_are_refused_with_a_clear_message(what: str) -> None:
    gbnf, message = BAD_GRAMMARS[what]
    with pytest.raises(GrammarError) as info:
        validate_grammar(gbnf)
    assert message in str(info.value)


@pytest.mark.model
def test_llama_cpp_agrees_with_the_checker(small_model_path: Path, tool_schemas: dict[str, Any]) -> None:
    good = [tool_call_grammar(tool_schemas), generic_tool_call_grammar(), 'root ::= [^"\\\\]{0,5} "x"']
    bad = [gbnf for what, (gbnf, _) in BAD_GRAMMARS.items() if what != "bad repetition"]
    assert compiles_in_llama_cpp(small_model_path, good + bad) == [True] * len(good) + [False] * len(bad)
    # A reversed repetition range sends llama.cpp's parser into an endless loop: only our check stands between.
    with pytest.raises(subprocess.TimeoutExpired):
        compiles_in_llama_cpp(small_model_path, [BAD_GRAMMARS["bad repetition"][0]], timeout=4)


def test_every_repetition_is_bounded(tool_schemas: dict[str, Any]) -> None:
    gbnf = tool_call_grammar(tool_schemas, max_string=300, max_calls=4)
    validate_grammar(gbnf)
    assert "*" not in gbnf.replace('"*"', "") and "+" not in gbnf.replace("[-+]", "")
    assert "{0,300}" in gbnf and '( "\\n" call ){0,3}' in gbnf
    assert "{0,2000}" not in gbnf


def test_schema_features_become_rules() -> None:
    gbnf = tool_call_grammar(
        {
            "T": {
                "type": "object",
                "properties": {
                    "s": {"type": "string", "maxLength": 7},
                    "n": {"type": ["integer", "null"]},
                    "a": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
                    "o": {"type": "object", "properties": {"x": {"type": "boolean"}}},
                    "c": {"const": "k"},
                    "f": {"type": "number"},
                },
            }
        }
    )
    validate_grammar(gbnf)
    assert "{0,7}" in gbnf and '"\\"k\\""' in gbnf and '"null"' in gbnf and '"["' in gbnf


@pytest.mark.model
def test_forced_call_from_smollm2_is_valid(llama_model: Any, tool_schemas: dict[str, Any]) -> None:
    grammar = tool_call_grammar(tool_schemas, max_string=200, max_calls=1)
    prompt = render(
        [
            Message("system", "You explore code with the tools Read, Grep, Glob and Bash."),
            Message("user", "Where is load_config defined in /repo?"),
        ]
    )
    out = llama_model.complete(
        prompt, GenerateOptions(max_tokens=200, temperature=0.0, grammar=grammar, force_tool_call=True)
    )
    assert out.finish_reason == "stop", out.text
    (call,) = parse_turn(out.text).calls
    assert isinstance(call, ToolCall) and call.name in tool_schemas
    check_arguments(tool_schemas[call.name], call.arguments)
    assert out.text.startswith("<tool_call>\n{") and out.text.endswith("}\n</tool_call>")


@pytest.mark.model
def test_forced_sampling_stays_valid(llama_model: Any, tool_schemas: dict[str, Any]) -> None:
    grammar = tool_call_grammar(tool_schemas, max_string=60, max_calls=2)
    prompt = render([Message("user", "Find the tests of the parser in /repo and read them.")])
    for seed in range(3):
        options = GenerateOptions(
            max_tokens=200, temperature=1.2, top_k=0, top_p=1.0, seed=seed, grammar=grammar, force_tool_call=True
        )
        out = llama_model.complete(prompt, options)
        calls = parse_turn(out.text).calls
        assert calls and all(isinstance(c, ToolCall) and c.name in tool_schemas for c in calls), out.text
        for c in calls:
            assert isinstance(c, ToolCall)
            check_arguments(tool_schemas[c.name], c.arguments)
            assert all(len(v) <= 60 for v in c.arguments.values() if isinstance(v, str))


@pytest.mark.model
def test_lazy_grammar_leaves_free_text_alone_and_constrains_the_call(
    llama_model: Any,
    few_shot_messages: list[Message],
    tool_schemas: dict[str, Any],
    captured_logs: list[dict[str, Any]],
) -> None:
    prompt = render(few_shot_messages)
    free = llama_model.complete(prompt, GenerateOptions(max_tokens=80, temperature=0.0))
    assert free.text.startswith("Reading it.\n<tool_call>") and '"Read"' in free.text  # what SmolLM2 does unconstrained
    offered = {k: v for k, v in tool_schemas.items() if k != "Read"}  # Read is not on offer
    captured_logs.clear()
    lazy = llama_model.complete(
        prompt, GenerateOptions(max_tokens=80, temperature=0.0, grammar=tool_call_grammar(offered))
    )
    assert lazy.text.startswith("Reading it.\n<tool_call>\n")  # the text before the call is untouched
    (call,) = parse_turn(lazy.text).calls
    assert isinstance(call, ToolCall) and call.name in offered
    check_arguments(offered[call.name], call.arguments)
    armed = [e for e in captured_logs if e["event"] == "llama_cpp.grammar_armed"]
    assert len(armed) == 1 and armed[0]["at_byte"] == len(b"Reading it.\n")
