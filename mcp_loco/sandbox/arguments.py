"""Reading tool arguments as the model sends them: aliases, numeric strings, unknown keys ignored."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from mcp_loco.sandbox.limits import ToolFailure

# Longest string argument accepted; longer ones are model misbehaviour, not a real path or pattern.
MAX_ARG_CHARS = 20_000

Args = Mapping[str, Any]

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", ""}


def as_object(arguments: Any, example: str) -> dict[str, Any]:
    """The arguments as a dict; a JSON object sent as a string is decoded once."""
    if isinstance(arguments, str):
        with contextlib.suppress(json.JSONDecodeError):
            arguments = json.loads(arguments)
    if arguments is None:
        return {}
    if not isinstance(arguments, Mapping):
        raise ToolFailure(f"arguments must be a JSON object, e.g. {example}; got {type(arguments).__name__}")
    return {str(k): v for k, v in arguments.items()}


def _pick(args: Args, names: Sequence[str]) -> tuple[str, Any]:
    for name in names:
        value = args.get(name)
        if value is not None:
            return name, value
    return names[0], None


def text(args: Args, names: Sequence[str], *, required: bool = False, example: str = "") -> str | None:
    """A string argument, looked up under each of `names` in turn."""
    name, value = _pick(args, names)
    if value is None:
        if required:
            raise ToolFailure(f"missing required argument '{names[0]}'{f', e.g. {example}' if example else ''}")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ToolFailure(f"argument '{name}' must be a string, got {type(value).__name__}")
    value = str(value)
    if len(value) > MAX_ARG_CHARS:
        raise ToolFailure(f"argument '{name}' is too long ({len(value)} characters; at most {MAX_ARG_CHARS})")
    if required and not value:
        raise ToolFailure(f"argument '{name}' is empty{f'; give e.g. {example}' if example else ''}")
    return value


def integer(args: Args, names: Sequence[str], *, minimum: int = 0) -> int | None:
    """An integer argument; numeric strings ("20") and integral floats (20.0) are accepted."""
    name, value = _pick(args, names)
    if value is None or value == "":
        return None
    number: int | None = None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            try:
                as_float = float(value.strip())
            except ValueError:
                as_float = float("nan")
            if as_float.is_integer():
                number = int(as_float)
    if number is None:
        raise ToolFailure(f"argument '{name}' must be an integer, got {value!r}")
    if number < minimum:
        raise ToolFailure(f"argument '{name}' must be at least {minimum}, got {number}")
    return number


def flag(args: Args, names: Sequence[str]) -> bool | None:
    """A boolean argument; "true"/"false"/1/0 are accepted."""
    name, value = _pick(args, names)
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ToolFailure(f"argument '{name}' must be true or false, got {value!r}")


def choice(args: Args, names: Sequence[str], options: Sequence[str], default: str) -> str:
    """A string argument that must be one of `options`."""
    value = text(args, names)
    if value is None or value == "":
        return default
    if value not in options:
        raise ToolFailure(f"argument '{names[0]}' must be one of {', '.join(options)}; got {value!r}")
    return value
