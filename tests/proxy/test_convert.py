"""The conversion to the trained format and back, the append-only memory, the grammar's degradation."""

from __future__ import annotations

from typing import Any

import pytest

from mcp_loco.interfaces import Completion, Usage
from mcp_loco.model.grammar import validate_grammar
from mcp_loco.model.protocol import format_call, prompt_text
from mcp_loco.proxy.convert import TurnMemory, system_prompt, to_prompt, to_reply
from mcp_loco.proxy.grammars import Grammars, grammar_for
from mcp_loco.proxy.stream import TextPreview
from mcp_loco.proxy.wire import MessagesRequest, ToolDef

TRAINED_PROMPT = """You are a Claude agent, built on Anthropic's Claude Agent SDK.
You are an interactive agent that helps users with software engineering tasks. Use the instructions below and the tools available to you to assist the user.

# Using your tools
 - To read files use Read
 - To search for files use Glob
 - To search the content of files use Grep
 - To run shell commands use Bash
 - To write files use Write
 - To edit files use Edit

For each tool call, output a JSON object within <tool_call></tool_call> tags:
<tool_call>
{"name": <tool-name>, "arguments": <args-json-object>}
</tool_call>

Tool results will be provided in <tool_response></tool_response> tags."""

READ = {
    "name": "Read",
    "description": "Reads a file.",
    "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}}, "required": ["file_path"]},
}


def request(messages: list[dict[str, Any]], **extra: Any) -> MessagesRequest:
    return MessagesRequest.model_validate(
        {"model": "claude-haiku-4-5", "max_tokens": 100, "messages": messages, **extra}
    )


def done(text: str, finish: str = "stop") -> Completion:
    return Completion(text, Usage(prompt_tokens=10, prompt_tokens_evaluated=4, completion_tokens=5), finish)  # type: ignore[arg-type]


def test_system_prompt_is_the_trained_one_for_the_trained_tools() -> None:
    tools = [ToolDef(name=n) for n in ("Bash", "Edit", "Glob", "Grep", "Read", "Write")]
    assert system_prompt(tools, "You are Claude Code.") == TRAINED_PROMPT


def test_system_prompt_names_other_tools_and_the_working_directory() -> None:
    tools = [ToolDef(name="Read"), ToolDef(name="WebFetch", description="Fetches a URL. Then it summarises.")]
    text = system_prompt(tools, "Claude Code...\n<env>\nWorking directory: /home/u/proj\nIs git repo: true\n</env>")
    assert " - To read files use Read\n - WebFetch: Fetches a URL.\n" in text
    assert "To run shell commands" not in text
    assert text.endswith("\n\nENV: Working directory is /home/u/proj")
    assert "<tool_call>" not in system_prompt([], "")


def test_messages_render_as_chatml_with_tool_calls_and_responses() -> None:
    req = request(
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "<system-reminder>todo list</system-reminder>"},
                    {"type": "text", "text": "Find main"},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Looking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"file_path": "/a.py"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": [
                            {"type": "text", "text": "1\tdef main"},
                            {"type": "image", "source": {"media_type": "image/png"}},
                        ],
                    },
                ],
            },
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_2", "name": "Read", "input": {"file_path": "/b.py"}}],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": "no such file", "is_error": True},
                    {"type": "text", "text": "hurry"},
                ],
            },
        ],
        tools=[READ],
    )
    text = prompt_text(to_prompt(req, TurnMemory(8)).segments)
    assert "todo list" not in text
    assert "<|im_start|>user\nFind main<|im_end|>" in text
    assert f"<|im_start|>assistant\nLooking.\n{format_call('Read', {'file_path': '/a.py'})}<|im_end|>" in text
    assert "<tool_response>\n1\tdef main\n[image (image/png): not visible to this model]\n</tool_response>" in text
    assert "<tool_response>\nError: no such file\n</tool_response><|im_end|>\n<|im_start|>user\nhurry<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_the_models_own_turn_is_rendered_back_byte_exact_so_the_prompt_only_grows() -> None:
    memory = TurnMemory(8)
    first = request([{"role": "user", "content": "Find main"}], tools=[READ])
    p1 = to_prompt(first, memory)
    raw = 'Let me look.\n\n<tool_call>\n{"name":"Read",  "arguments": {"file_path":"/a.py"}}\n</tool_call>'
    reply = to_reply(done(raw), p1, memory)
    assert reply.stop_reason == "tool_use" and reply.text == "Let me look."
    (call,) = [b for b in reply.blocks if b["type"] == "tool_use"]
    assert call["id"].startswith("toolu_01") and call["input"] == {"file_path": "/a.py"}
    second = request(
        [
            {"role": "user", "content": "Find main"},
            {"role": "assistant", "content": reply.blocks},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["id"], "content": "x"}]},
        ],
        tools=[READ],
    )
    t1, t2 = prompt_text(p1.segments), prompt_text(to_prompt(second, memory).segments)
    assert t2.startswith(t1 + raw + "<|im_end|>\n")
    # Forgotten (another proxy, a restart): rendered in the trained format instead.
    t3 = prompt_text(to_prompt(second, TurnMemory(0)).segments)
    assert t3.startswith(t1 + "Let me look.\n" + format_call("Read", {"file_path": "/a.py"}))


def test_a_call_that_does_not_parse_comes_back_as_text() -> None:
    memory = TurnMemory(8)
    p = to_prompt(request([{"role": "user", "content": "q"}]), memory)
    reply = to_reply(done("Hmm <tool_call>\nnot json at all\n</tool_call>", "length"), p, memory)
    assert reply.stop_reason == "max_tokens"
    assert reply.blocks == [{"type": "text", "text": "Hmm\n\n<tool_call>\nnot json at all\n</tool_call>"}]


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"a": {"$ref": "#/$defs/x"}}, "$defs": {"x": {"type": "string"}}},
        {
            "type": "object",
            "properties": {
                "a": {"allOf": [{"type": "string"}, {"minLength": 1}]},
                "b": {"type": "string", "pattern": "^x"},
            },
        },
        {
            "type": "object",
            "patternProperties": {"^x": {"type": "integer"}},
            "additionalProperties": {"type": "string"},
        },
        {
            "type": "object",
            "properties": {'we"ird\\key\n': {"type": ["string", "null"]}, "e": {"enum": [{"a": 1}, [1], None]}},
        },
        {
            "type": "object",
            "properties": {"n": {"type": "integer", "minimum": 0, "maxLength": -5, "maxItems": 0}},
            "required": "n",
        },
        {"type": "object", "properties": {"": {"not": {}}}, "required": ["missing"]},
        {"type": "array"},
        {},
    ],
)
def test_grammar_accepts_any_schema_it_is_given(schema: dict[str, Any]) -> None:
    grammar, _ = grammar_for(
        [ToolDef(name="mcp__srv__tööl-1", input_schema=schema), ToolDef(name="Read", input_schema=READ["input_schema"])]
    )
    validate_grammar(grammar)
    assert '"\\"Read\\""' in grammar


def test_a_schema_too_deep_to_build_degrades_to_any_object_for_that_tool_only() -> None:
    deep: dict[str, Any] = {"type": "string"}
    for _ in range(3000):
        deep = {"type": "object", "properties": {"x": deep}}
    grammar, degraded = grammar_for(
        [ToolDef(name="Deep", input_schema=deep), ToolDef(name="Read", input_schema=READ["input_schema"])]
    )
    assert degraded == ["Deep"]
    validate_grammar(grammar)
    assert '"\\"file_path\\""' in grammar
    assert Grammars().get([]) is None


def test_text_preview_never_shows_a_piece_of_a_tool_call_or_edge_whitespace() -> None:
    p = TextPreview()
    shown = [p.feed(x) for x in ["\n Sure", ", reading", " it.\n\n<to", "ol_", "call>\n{", '"name"']]
    assert shown == ["Sure", ", reading", " it.", "", "", ""]
    q = TextPreview()
    assert [q.feed(x) for x in ["a <", "b"]] == ["a", " <b"]
