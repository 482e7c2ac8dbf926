"""GBNF grammars that make tool calls valid by construction, and a checker that never crashes the process.

The grammar covers an assistant turn from its first `<tool_call>` to the end of the turn:
one or more `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>` blocks separated by a newline.
Every repetition is bounded (string length, digits, calls per turn), so a confused model cannot
loop forever inside a string.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from mcp_loco.errors import ConfigError

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
MAX_STRING = 2000
"""Default cap on characters in one JSON string of a tool call (paths, patterns, commands, prompts)."""
MAX_CALLS = 8
"""Default cap on tool-call blocks in one turn (agent.max_calls_per_turn)."""
_MAX_ITEMS = 32
_MAX_DEPTH = 3


class GrammarError(ConfigError):
    """A GBNF grammar is malformed; the message says where."""


# ---- building ------------------------------------------------------------------------------------


def gbnf_literal(text: str) -> str:
    """A GBNF string literal matching `text` exactly."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


class _Builder:
    """Collects named rules; identical bodies share one rule."""

    def __init__(self, max_string: int) -> None:
        self.rules: dict[str, str] = {}
        self._by_body: dict[str, str] = {}
        self.max_string = max_string

    def add(self, hint: str, body: str) -> str:
        if body in self._by_body:
            return self._by_body[body]
        base = re.sub(r"[^a-zA-Z0-9]+", "-", hint).strip("-").lower() or "r"
        name, n = base, 1
        while name in self.rules:
            n += 1
            name = f"{base}-{n}"
        self.rules[name] = body
        self._by_body[body] = name
        return name

    def string(self, max_len: int | None = None) -> str:
        limit = min(max_len if max_len is not None else self.max_string, self.max_string)
        char = self.add(
            "char",
            r'[^"\\\x00-\x1f] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] )',
        )
        return self.add(f"string-{limit}", f'"\\"" {char}{{0,{limit}}} "\\""')

    def integer(self, non_negative: bool) -> str:
        digits = '( "0" | [1-9] [0-9]{0,15} )'
        return self.add("uint" if non_negative else "int", digits if non_negative else f'"-"? {digits}')

    def number(self) -> str:
        return self.add("number", '"-"? ( "0" | [1-9] [0-9]{0,15} ) ( "." [0-9]{1,16} )? ( [eE] [-+]? [0-9]{1,3} )?')

    def value(self, schema: Any, hint: str, depth: int = 0) -> str:
        """The rule for a JSON value matching `schema` (unknown shapes fall back to any bounded JSON)."""
        if not isinstance(schema, Mapping):
            return self.any_value(depth)
        if "const" in schema:
            return self.add(f"{hint}-const", gbnf_literal(json.dumps(schema["const"], ensure_ascii=False)))
        if "enum" in schema and isinstance(schema["enum"], list) and schema["enum"]:
            alts = " | ".join(gbnf_literal(json.dumps(v, ensure_ascii=False)) for v in schema["enum"])
            return self.add(f"{hint}-enum", alts)
        for key in ("anyOf", "oneOf"):
            if isinstance(schema.get(key), list) and schema[key]:
                alts = " | ".join(self.value(s, f"{hint}-{i}", depth) for i, s in enumerate(schema[key]))
                return self.add(f"{hint}-alt", alts)
        kind = schema.get("type")
        if isinstance(kind, list):
            alts = " | ".join(self.value({**schema, "type": k}, f"{hint}-{k}", depth) for k in kind)
            return self.add(f"{hint}-alt", alts)
        if kind == "string":
            max_len = schema.get("maxLength")
            return self.string(max_len if isinstance(max_len, int) and max_len >= 0 else None)
        if kind == "integer":
            minimum = schema.get("minimum")
            return self.integer(isinstance(minimum, int | float) and minimum >= 0)
        if kind == "number":
            return self.number()
        if kind == "boolean":
            return self.add("boolean", '"true" | "false"')
        if kind == "null":
            return self.add("null", '"null"')
        if kind == "array":
            item = self.value(schema.get("items"), f"{hint}-item", depth + 1)
            limit = schema.get("maxItems")
            n = min(limit if isinstance(limit, int) and limit > 0 else _MAX_ITEMS, _MAX_ITEMS)
            return self.add(f"{hint}-array", f'"[" ( {item} ( "," " "? {item} ){{0,{n - 1}}} )? "]"')
        if kind == "object" or "properties" in schema:
            return self.object(schema, hint, depth)
        return self.any_value(depth)

    def object(self, schema: Mapping[str, Any], hint: str, depth: int) -> str:
        props = schema.get("properties")
        if not isinstance(props, Mapping) or not props:
            if schema.get("additionalProperties") is False:
                return self.add("empty-object", '"{" "}"')
            return self.any_object(depth)
        required = set(schema.get("required") or ())
        sep = self.add("sep", '"," " "?')
        colon = self.add("colon", '":" " "?')
        kvs: list[tuple[str, bool]] = []
        for key, sub in props.items():
            value = self.value(sub, f"{hint}-{key}", depth + 1)
            kv = self.add(f"{hint}-{key}-kv", f"{gbnf_literal(json.dumps(key, ensure_ascii=False))} {colon} {value}")
            kvs.append((kv, key in required))
        if not any(req for _, req in kvs):
            # No required key: any in-order subset, with commas only between the chosen ones.
            tails: list[str] = []
            for i in range(len(kvs)):
                rest = " ".join(f"( {sep} {kv} )?" for kv, _ in kvs[i + 1 :])
                tails.append(self.add(f"{hint}-from-{i}", f"{kvs[i][0]} {rest}".strip()))
            return self.add(f"{hint}-object", f'"{{" ( {" | ".join(tails)} )? "}}"')
        first_req = next(i for i, (_, req) in enumerate(kvs) if req)
        parts = [f"( {kv} {sep} )?" for kv, _ in kvs[:first_req]]
        parts.append(kvs[first_req][0])
        for kv, req in kvs[first_req + 1 :]:
            parts.append(f"{sep} {kv}" if req else f"( {sep} {kv} )?")
        return self.add(f"{hint}-object", f'"{{" {" ".join(parts)} "}}"')

    def any_value(self, depth: int) -> str:
        scalars = [self.string(), self.number(), self.add("boolean", '"true" | "false"'), self.add("null", '"null"')]
        if depth >= _MAX_DEPTH:
            return self.add(f"scalar-{depth}", " | ".join(scalars))
        inner = self.any_value(depth + 1)
        array = self.add(f"array-{depth}", f'"[" ( {inner} ( "," " "? {inner} ){{0,{_MAX_ITEMS - 1}}} )? "]"')
        return self.add(f"value-{depth}", " | ".join([*scalars, array, self.any_object(depth)]))

    def any_object(self, depth: int) -> str:
        if depth >= _MAX_DEPTH:
            return self.add("empty-object", '"{" "}"')
        inner = self.any_value(depth + 1)
        colon = self.add("colon", '":" " "?')
        kv = self.add(f"any-kv-{depth}", f"{self.string()} {colon} {inner}")
        sep = self.add("sep", '"," " "?')
        return self.add(f"object-{depth}", f'"{{" ( {kv} ( {sep} {kv} ){{0,{_MAX_ITEMS - 1}}} )? "}}"')

    def render(self, root: str) -> str:
        lines = [f"root ::= {root}"] + [f"{name} ::= {body}" for name, body in self.rules.items()]
        return "\n".join(lines) + "\n"


def _calls_root(b: _Builder, call_body: str, max_calls: int) -> str:
    call = b.add(
        "call",
        f"{gbnf_literal(TOOL_CALL_OPEN + chr(10) + '{')} {call_body} {gbnf_literal('}' + chr(10) + TOOL_CALL_CLOSE)}",
    )
    more = f' ( "\\n" {call} ){{0,{max_calls - 1}}}' if max_calls > 1 else ""
    return f"{call}{more}"


def tool_call_grammar(
    schemas: Mapping[str, Mapping[str, Any]], *, max_string: int = MAX_STRING, max_calls: int = MAX_CALLS
) -> str:
    """GBNF forcing `<tool_call>` blocks that call one of `schemas` (tool name -> argument JSON schema)."""
    if not schemas:
        return generic_tool_call_grammar(max_string=max_string, max_calls=max_calls)
    b = _Builder(max_string)
    colon = b.add("colon", '":" " "?')
    sep = b.add("sep", '"," " "?')
    alts = []
    for name, schema in schemas.items():
        args = b.value({"type": "object", **schema}, f"{name}-args")
        head = gbnf_literal(json.dumps(name, ensure_ascii=False))
        alts.append(b.add(f"{name}-call", f'{head} {sep} "\\"arguments\\"" {colon} {args}'))
    body = b.add("tool", " | ".join(alts))
    grammar = b.render(_calls_root(b, f'"\\"name\\"" {colon} {body}', max_calls))
    validate_grammar(grammar)
    return grammar


def generic_tool_call_grammar(*, max_string: int = MAX_STRING, max_calls: int = MAX_CALLS) -> str:
    """GBNF forcing well-formed `<tool_call>` blocks with any tool name and any JSON object as arguments."""
    b = _Builder(max_string)
    colon = b.add("colon", '":" " "?')
    sep = b.add("sep", '"," " "?')
    name = b.add("tool-name", '"\\"" [A-Za-z0-9_.-]{1,64} "\\""')
    args = b.any_object(0)
    grammar = b.render(_calls_root(b, f'"\\"name\\"" {colon} {name} {sep} "\\"arguments\\"" {colon} {args}', max_calls))
    validate_grammar(grammar)
    return grammar


# ---- checking ------------------------------------------------------------------------------------

_NAME = re.compile(r"[a-zA-Z0-9-]+")  # llama.cpp rule names: letters, digits and '-' (no '_')
_ESCAPES = {"n", "r", "t", "\\", '"', "[", "]"}


class _Parser:
    """A recursive-descent reader of llama.cpp's GBNF dialect that records rule references."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.defined: dict[str, int] = {}
        self.refs: list[tuple[str, int]] = []
        # rule -> [(first elements of each alternative, as (kind, value, nullable))]
        self.first: dict[str, list[list[tuple[str, str, bool]]]] = {}

    def fail(self, msg: str, pos: int | None = None) -> GrammarError:
        p = self.pos if pos is None else pos
        line = self.text.count("\n", 0, p) + 1
        col = p - (self.text.rfind("\n", 0, p) + 1) + 1
        snippet = self.text[p : p + 30].split("\n")[0]
        return GrammarError(f"grammar error at line {line}, column {col}: {msg} (near {snippet!r})")

    def space(self, newline_ok: bool) -> None:
        t = self.text
        while self.pos < len(t):
            c = t[self.pos]
            if c in " \t" or (newline_ok and c in "\r\n"):
                self.pos += 1
            elif c == "#":
                while self.pos < len(t) and t[self.pos] not in "\r\n":
                    self.pos += 1
            else:
                break

    def name(self) -> str:
        m = _NAME.match(self.text, self.pos)
        if not m:
            raise self.fail("expected a rule name")
        self.pos = m.end()
        return m.group()

    def char(self, end: str) -> None:
        t = self.text
        if self.pos >= len(t):
            raise self.fail(f"unterminated {'string' if end == chr(34) else 'character class'}")
        c = t[self.pos]
        if c == "\\":
            if self.pos + 1 >= len(t):
                raise self.fail("escape at end of grammar")
            e = t[self.pos + 1]
            widths = {"x": 2, "u": 4, "U": 8}
            if e in widths:
                digits = t[self.pos + 2 : self.pos + 2 + widths[e]]
                if len(digits) != widths[e] or not all(d in "0123456789abcdefABCDEF" for d in digits):
                    raise self.fail(f"bad \\{e} escape: expected {widths[e]} hex digits")
                self.pos += 2 + widths[e]
            elif e in _ESCAPES:
                self.pos += 2
            else:
                raise self.fail(f"unknown escape \\{e}")
        elif c in "\r\n" and end == '"':
            raise self.fail("newline inside a string literal (write \\n)")
        else:
            self.pos += 1

    def sequence(self, rule: str, nested: bool) -> list[tuple[str, str, bool]]:
        """Parse one alternative; return its elements as (kind, value, may-be-empty)."""
        t = self.text
        items: list[tuple[str, str, bool]] = []
        while self.pos < len(t):
            c = t[self.pos]
            start = self.pos
            if c == '"':
                self.pos += 1
                while self.pos < len(t) and t[self.pos] != '"':
                    self.char('"')
                if self.pos >= len(t):
                    raise self.fail("unterminated string literal", start)
                self.pos += 1
                items.append(("lit", t[start : self.pos], self.pos - start == 2))
            elif c == "[":
                self.pos += 1
                if self.pos < len(t) and t[self.pos] == "^":
                    self.pos += 1
                n = 0
                while self.pos < len(t) and t[self.pos] != "]":
                    self.char("]")
                    n += 1
                if self.pos >= len(t):
                    raise self.fail("unterminated character class", start)
                if n == 0:
                    raise self.fail("empty character class", start)
                self.pos += 1
                items.append(("class", t[start : self.pos], False))
            elif c == ".":
                self.pos += 1
                items.append(("any", ".", False))
            elif c == "<" or (c == "!" and t.startswith("<", self.pos + 1)):
                end = t.find(">", self.pos)
                if end < 0:
                    raise self.fail("unterminated token reference", start)
                self.pos = end + 1
                items.append(("token", t[start : self.pos], False))
            elif _NAME.match(t, self.pos):
                ref = self.name()
                self.refs.append((ref, start))
                items.append(("ref", ref, False))
            elif c == "(":
                self.pos += 1
                self.space(True)
                alts = self.alternatives(rule, nested=True)
                if self.pos >= len(t) or t[self.pos] != ")":
                    raise self.fail("expected ')'", start)
                self.pos += 1
                group = f"{rule}/group@{start}"
                self.first[group] = alts
                items.append(("ref", group, False))
            elif c in "*?":
                self._repeat(items, nullable=True)
            elif c == "+":
                self._repeat(items, nullable=False)
            elif c == "{":
                m = re.match(r"\{\s*(\d+)\s*(,\s*(\d*)\s*)?\}", t[self.pos :])
                if not m:
                    raise self.fail("bad repetition: expected {m}, {m,} or {m,n}")
                lo = int(m.group(1))
                hi = int(m.group(3)) if m.group(3) else (None if m.group(2) else lo)
                if hi is not None and hi < lo:
                    raise self.fail(f"bad repetition: maximum {hi} is less than minimum {lo}")
                self._repeat(items, nullable=lo == 0, width=m.end())
            else:
                break
            self.space(nested)
        return items

    def _repeat(self, items: list[tuple[str, str, bool]], nullable: bool, width: int = 1) -> None:
        if not items:
            raise self.fail("repetition operator with nothing before it")
        kind, value, was_nullable = items[-1]
        items[-1] = (kind, value, was_nullable or nullable)
        self.pos += width

    def alternatives(self, rule: str, nested: bool) -> list[list[tuple[str, str, bool]]]:
        alts = [self.sequence(rule, nested)]
        while self.pos < len(self.text) and self.text[self.pos] == "|":
            self.pos += 1
            self.space(True)
            alts.append(self.sequence(rule, nested))
        return alts

    def parse(self) -> None:
        self.space(True)
        while self.pos < len(self.text):
            start = self.pos
            name = self.name()
            self.space(False)
            if not self.text.startswith("::=", self.pos):
                raise self.fail(f"expected '::=' after rule name {name!r}")
            self.pos += 3
            self.space(True)
            self.first[name] = self.alternatives(name, nested=False)
            self.defined.setdefault(name, start)
            if self.pos < len(self.text) and self.text[self.pos] not in "\r\n":
                raise self.fail("unexpected character")
            self.space(True)


def _nullable_rules(first: Mapping[str, list[list[tuple[str, str, bool]]]]) -> set[str]:
    nullable: set[str] = set()
    changed = True
    while changed:
        changed = False
        for rule, alts in first.items():
            if rule in nullable:
                continue
            for alt in alts:
                if all(may_empty or (kind == "ref" and value in nullable) for kind, value, may_empty in alt):
                    nullable.add(rule)
                    changed = True
                    break
    return nullable


def _left_recursive(first: Mapping[str, list[list[tuple[str, str, bool]]]]) -> str | None:
    nullable = _nullable_rules(first)
    edges: dict[str, set[str]] = {}
    for rule, alts in first.items():
        out = edges.setdefault(rule, set())
        for alt in alts:
            for kind, value, may_empty in alt:
                if kind == "ref":
                    out.add(value)
                if not (may_empty or (kind == "ref" and value in nullable)):
                    break
    for start in edges:
        seen: set[str] = set()
        stack = list(edges[start])
        while stack:
            r = stack.pop()
            if r == start:
                return start
            if r not in seen:
                seen.add(r)
                stack.extend(edges.get(r, ()))
    return None


def validate_grammar(gbnf: str) -> None:
    """Raise GrammarError for syntax errors, undefined rules, a missing root or left recursion (llama.cpp would crash or refuse)."""
    if not isinstance(gbnf, str) or not gbnf.strip():
        raise GrammarError("grammar is empty")
    if "\x00" in gbnf:
        raise GrammarError("grammar contains a NUL character")
    p = _Parser(gbnf)
    p.parse()
    if "root" not in p.defined:
        raise GrammarError("grammar has no 'root' rule (the start symbol)")
    for ref, pos in p.refs:
        if ref not in p.defined:
            raise p.fail(f"undefined rule {ref!r}", pos)
    rule = _left_recursive(p.first)
    if rule is not None:
        name = rule.split("/group@")[0]
        raise GrammarError(f"grammar is left-recursive through rule {name!r} (llama.cpp rejects it)")
