"""The lazy tool-call grammar for a request's own tools, degrading per tool when a schema cannot be expressed."""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import structlog

from mcp_loco.model.grammar import GrammarError, generic_tool_call_grammar, tool_call_grammar, validate_grammar
from mcp_loco.proxy.wire import ToolDef

log = structlog.get_logger("mcp_loco.proxy.grammars")

MAX_GRAMMAR_CHARS = 400_000
"""A bigger grammar (hundreds of tools, huge enums) is not worth compiling: any well-formed call then."""
_CACHE = 64
# What a schema the builder cannot follow may raise: too deep to recurse, or values it cannot encode.
_BUILD_ERRORS = (GrammarError, ValueError, TypeError, KeyError, RecursionError)


def _build(schemas: Mapping[str, Mapping[str, Any]]) -> str:
    grammar = tool_call_grammar(schemas)
    if len(grammar) > MAX_GRAMMAR_CHARS:
        raise ValueError(f"grammar of {len(grammar)} characters")
    validate_grammar(grammar)
    return grammar


def grammar_for(tools: Sequence[ToolDef]) -> tuple[str, list[str]]:
    """The grammar for these tools, and the names of the tools whose schema was replaced by 'any object'."""
    schemas = {t.name: t.input_schema or {} for t in tools}
    try:
        return _build(schemas), []
    except _BUILD_ERRORS:
        pass
    degraded = []
    for name, schema in schemas.items():
        try:
            _build({name: schema})
        except _BUILD_ERRORS:
            degraded.append(name)
    relaxed = {name: ({} if name in degraded else schema) for name, schema in schemas.items()}
    try:
        return _build(relaxed), degraded
    except _BUILD_ERRORS:
        return generic_tool_call_grammar(), list(schemas)


class Grammars:
    """Grammars by tool set: Claude Code sends the same tools with every request."""

    def __init__(self) -> None:
        self._cache: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, tools: Sequence[ToolDef]) -> str | None:
        """The grammar for a request's tools (None when it offers none)."""
        if not tools:
            return None
        key = hashlib.sha256(
            json.dumps([[t.name, t.input_schema] for t in tools], sort_keys=True, default=str).encode()
        ).hexdigest()
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        grammar, degraded = grammar_for(tools)
        if degraded:
            log.warning("proxy.grammar_degraded", tools=degraded, note="these tools' arguments are any JSON object")
        with self._lock:
            self._cache[key] = grammar
            while len(self._cache) > _CACHE:
                self._cache.popitem(last=False)
        return grammar
