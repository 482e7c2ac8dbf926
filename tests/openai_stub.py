"""A scripted model behind real HTTP on 127.0.0.1, for driving real MCP clients offline.

It speaks what the clients speak: OpenAI chat completions and the Responses API (streamed as SSE or not) and
Gemini's generateContent. Whatever the client sends, it answers the same way: while the conversation holds no
result of the target tool, it calls that tool (or, where the client defers MCP tools behind a tool search,
the search first); once the result is back, it answers with text. Every request is kept for the test to read.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FINAL_TEXT = "The stub model read the tool result. DONE."


@dataclass
class Seen:
    """One request as the stub received it, with the tools it offered and the tool results it carried."""

    path: str
    body: dict[str, Any]
    tools: list[str]
    results: dict[str, str]
    """Tool results in the conversation, by tool name, as the text the model reads."""


@dataclass
class Stub:
    """The script: the tool to call (matched by name suffix) and its arguments; the requests seen."""

    target: str
    arguments: dict[str, Any]
    search_query: str = "explore codebase"
    seen: list[Seen] = field(default_factory=list)
    url: str = ""

    max_requests: int = 12
    """Past this many requests the stub only answers with text, so a client that never gets on stops too."""

    def decide(self, tools: dict[str, dict[str, Any]], results: dict[str, str]) -> tuple[str, dict[str, Any]] | None:
        """The call to make next, or None to answer with text."""
        if any(n.endswith(self.target) for n in results) or len(self.seen) > self.max_requests:
            return None
        for name in tools:
            if name.endswith(self.target):
                return name, self.arguments
        for name, schema in tools.items():
            if "tool_search" in name.lower() and not any("tool_search" in n.lower() for n in results):
                return name, _search_args(schema, self.search_query)
        return None

    def result_text(self) -> str:
        """The target tool's result as the client sent it back to the model (the last one seen)."""
        for s in reversed(self.seen):
            for name, text in s.results.items():
                if name.endswith(self.target):
                    return text
        raise AssertionError(f"no {self.target} result reached the model; saw {[s.path for s in self.seen]}")


def _search_args(schema: dict[str, Any], query: str) -> dict[str, Any]:
    props = schema.get("properties") or {}
    strings = [k for k, v in props.items() if isinstance(v, dict) and v.get("type") == "string"]
    return {(strings[0] if strings else "query"): query}


def _text(content: Any) -> str:
    """A tool result's content as text: strings as they are, parts joined, anything else as JSON."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return json.dumps(content)


# ---- OpenAI chat completions -----------------------------------------------------------------------


def _chat_tools(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for t in body.get("tools") or []:
        fn = t.get("function") or t
        out[fn.get("name", "")] = fn.get("parameters") or {}
    return out


def _chat_results(body: dict[str, Any]) -> dict[str, str]:
    names = {}
    for m in body.get("messages") or []:
        for call in m.get("tool_calls") or []:
            names[call.get("id")] = call.get("function", {}).get("name", "")
    return {
        names.get(m.get("tool_call_id"), "?"): _text(m.get("content"))
        for m in body.get("messages") or []
        if m.get("role") == "tool"
    }


def _chat_reply(body: dict[str, Any], call: tuple[str, dict[str, Any]] | None) -> tuple[dict[str, Any], list[str]]:
    created, model = int(time.time()), body.get("model", "stub")
    if call:
        tc = {"index": 0, "id": f"call_{time.monotonic_ns()}", "type": "function"}
        tc["function"] = {"name": call[0], "arguments": json.dumps(call[1])}
        message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [tc]}
        finish = "tool_calls"
    else:
        message, finish = {"role": "assistant", "content": FINAL_TEXT}, "stop"
    usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    whole = {"id": "chatcmpl-stub", "object": "chat.completion", "created": created, "model": model}
    whole |= {"choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage}
    chunk = {"id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": created, "model": model}
    events = [
        chunk | {"choices": [{"index": 0, "delta": message, "finish_reason": None}]},
        chunk | {"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]},
        chunk | {"choices": [], "usage": usage},
    ]
    return whole, [json.dumps(e) for e in events] + ["[DONE]"]


# ---- OpenAI Responses API (Codex) ------------------------------------------------------------------

NS = "::"
"""Between a namespace (Codex groups each MCP server's tools under one) and a tool's name."""


def _responses_tools(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for t in body.get("tools") or []:
        if t.get("type") == "namespace":  # tools grouped under a server's namespace
            for inner in t.get("tools") or []:
                out[f"{t.get('name', '')}{NS}{inner.get('name', '')}"] = inner.get("parameters") or {}
        elif "name" in t:
            out[t["name"]] = t.get("parameters") or {}
    return out


def _responses_results(body: dict[str, Any]) -> dict[str, str]:
    items = body.get("input") or []
    names = {
        i.get("call_id"): (f"{i['namespace']}{NS}" if i.get("namespace") else "") + i.get("name", "")
        for i in items
        if "call_id" in i and "name" in i
    }
    return {
        names.get(i.get("call_id"), "?"): _text(i.get("output"))
        for i in items
        if i.get("type") in ("function_call_output", "custom_tool_call_output", "tool_search_output")
    }


def _responses_events(body: dict[str, Any], call: tuple[str, dict[str, Any]] | None) -> list[tuple[str, str]]:
    rid = f"resp_{time.monotonic_ns()}"
    if call:
        item: dict[str, Any] = {"type": "function_call", "id": f"fc_{rid}", "call_id": f"call_{rid}"}
        namespace, _, name = call[0].rpartition(NS)
        item |= {"name": name, "arguments": json.dumps(call[1]), "status": "completed"}
        if namespace:
            item["namespace"] = namespace
    else:
        item = {"type": "message", "id": f"msg_{rid}", "role": "assistant", "status": "completed"}
        item["content"] = [{"type": "output_text", "text": FINAL_TEXT, "annotations": []}]
    response = {"id": rid, "object": "response", "model": body.get("model", "stub"), "status": "in_progress"}
    usage = {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}
    usage |= {"input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}
    done = response | {"status": "completed", "output": [item], "usage": usage}
    events = [
        {"type": "response.created", "response": response},
        {"type": "response.output_item.added", "output_index": 0, "item": item},
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {"type": "response.completed", "response": done},
    ]
    return [(e["type"], json.dumps(e)) for e in events]


# ---- Gemini generateContent ------------------------------------------------------------------------


def _gemini_tools(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for t in body.get("tools") or []:
        for fn in t.get("functionDeclarations") or []:
            out[fn.get("name", "")] = fn.get("parametersJsonSchema") or fn.get("parameters") or {}
    return out


def _gemini_results(body: dict[str, Any]) -> dict[str, str]:
    out = {}
    for c in body.get("contents") or []:
        for p in c.get("parts") or []:
            if "functionResponse" in p:
                fr = p["functionResponse"]
                response = fr.get("response")
                # {"output": text} is how a result reaches the model as text; anything else it reads as JSON.
                if isinstance(response, dict) and set(response) == {"output"}:
                    out[fr.get("name", "")] = _text(response["output"])
                else:
                    out[fr.get("name", "")] = json.dumps(response)
    return out


def _from_schema(schema: dict[str, Any]) -> Any:
    """A value that fits a JSON schema (Gemini CLI asks its router and checkers for JSON)."""
    kind = str(schema.get("type", "object")).lower()
    if schema.get("enum"):
        return schema["enum"][0]
    if kind == "object":
        return {k: _from_schema(v) for k, v in (schema.get("properties") or {}).items()}
    return {"string": "stub", "integer": 1, "number": 1, "boolean": False, "array": []}.get(kind)


def _gemini_reply(body: dict[str, Any], call: tuple[str, dict[str, Any]] | None) -> dict[str, Any]:
    config = body.get("generationConfig") or {}
    schema = config.get("responseJsonSchema") or config.get("responseSchema")
    text = json.dumps(_from_schema(schema)) if schema and not call else FINAL_TEXT
    part = {"functionCall": {"name": call[0], "args": call[1]}} if call else {"text": text}
    candidate = {"content": {"role": "model", "parts": [part]}, "finishReason": "STOP", "index": 0}
    usage = {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15}
    return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": "stub"}


# ---- the HTTP server -------------------------------------------------------------------------------


def _handler(stub: Stub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _json(self, obj: Any, status: int = 200) -> None:
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _sse(self, events: list[tuple[str | None, str]]) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            for name, data in events:
                head = f"event: {name}\n" if name else ""
                self.wfile.write(f"{head}data: {data}\n\n".encode())
                self.wfile.flush()
            self.close_connection = True

        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith("/models"):
                self._json({"object": "list", "data": [{"id": "stub-model", "object": "model", "owned_by": "stub"}]})
            else:
                self._json({"error": {"message": f"no GET {self.path}"}}, 404)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except json.JSONDecodeError:
                self._json({"error": {"message": "body is not JSON"}}, 400)
                return
            path = self.path.split("?")[0]
            if path.endswith("/chat/completions"):
                tools, results = _chat_tools(body), _chat_results(body)
                stub.seen.append(Seen(path, body, list(tools), results))
                whole, chunks = _chat_reply(body, stub.decide(tools, results))
                if body.get("stream"):
                    self._sse([(None, c) for c in chunks])
                else:
                    self._json(whole)
            elif path.endswith("/responses"):
                tools, results = _responses_tools(body), _responses_results(body)
                stub.seen.append(Seen(path, body, list(tools), results))
                self._sse(list(_responses_events(body, stub.decide(tools, results))))
            elif ":streamGenerateContent" in path or ":generateContent" in path:
                tools, results = _gemini_tools(body), _gemini_results(body)
                stub.seen.append(Seen(path, body, list(tools), results))
                reply = _gemini_reply(body, stub.decide(tools, results))
                if ":stream" in path:
                    self._sse([(None, json.dumps(reply))])
                else:
                    self._json(reply)
            elif ":countTokens" in path:
                self._json({"totalTokens": 10})
            else:
                stub.seen.append(Seen(path, body, [], {}))
                self._json({"error": {"message": f"the stub does not serve POST {path}"}}, 404)

    return Handler


@contextmanager
def serving(stub: Stub) -> Iterator[Stub]:
    """Serve `stub` on a free loopback port (stub.url is its base, without /v1) until the block ends."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(stub))
    server.daemon_threads = True
    stub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
