"""Reading a Bash command line without a shell: words, quotes, and refusals of everything a shell would do.

The command is split into words as a POSIX shell would (single and double quotes, backslashes) and
anything that would make a shell do more than run one program is refused with a message: separators,
pipes, redirections, substitutions, variable expansion, brace expansion, comments, `~`, line breaks and
`VAR=value` prefixes. Options are then checked against a per-program allowlist (exact long names only,
no abbreviations; a short option that takes a value ends its bundle, as getopt reads it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from mcp_loco.sandbox.limits import ToolFailure

MAX_COMMAND_CHARS = 8000

_OPERATORS = {
    ";": "';' separates commands, and each Bash call runs exactly one command (no shell runs here); make one call per command",
    "&": "'&' chains or backgrounds commands, and each Bash call runs exactly one command (no shell runs here); make one call per command",
    "|": (
        "pipes (|) are not supported: no shell runs here. Run the command alone; only a final "
        "`| head -n N` or `| tail -n N` is accepted, or use the Grep tool's head_limit"
    ),
    "<": "redirections (<, >) are not supported: no shell runs here; drop the redirection (only 2>/dev/null and 2>&1 are accepted)",
    ">": "redirections (<, >) are not supported: no shell runs here; drop the redirection (only 2>/dev/null and 2>&1 are accepted)",
    "(": "subshells and process substitution are not supported: no shell runs here; run one plain command",
    ")": "subshells and process substitution are not supported: no shell runs here; run one plain command",
    "`": "command substitution (`...`) is not supported: no shell runs here; write the value itself",
    "$": "variable expansion and command substitution ($...) are not supported: no shell runs here; write the value itself",
}
_GLOB_ESCAPES = {"*": "[*]", "?": "[?]", "[": "[[]"}


@dataclass(frozen=True)
class Word:
    """One word after quote removal; `pattern` is set when it holds an unquoted wildcard to expand."""

    text: str
    pattern: str | None = None


def tokenize(command: str) -> list[Word]:
    """Split a command line into words, refusing any shell syntax beyond quoting."""
    if len(command) > MAX_COMMAND_CHARS:
        raise ToolFailure(f"the command is too long ({len(command)} characters; at most {MAX_COMMAND_CHARS})")
    if "\n" in command or "\r" in command:
        raise ToolFailure("the command contains a line break; give one command per Bash call, on one line")
    if any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in command):
        raise ToolFailure("the command contains control characters; write it as plain text")
    words: list[Word] = []
    text: list[str] = []
    pattern: list[str] = []
    has_glob = False
    in_word = False
    quote = ""
    i = 0
    n = len(command)

    def finish() -> None:
        nonlocal text, pattern, has_glob, in_word
        if in_word:
            joined = "".join(text)
            words.append(Word(joined, "".join(pattern) if has_glob else None))
        text, pattern, has_glob, in_word = [], [], False, False

    while i < n:
        c = command[i]
        if quote == "'":
            if c == "'":
                quote = ""
            else:
                text.append(c)
                pattern.append(_GLOB_ESCAPES.get(c, c))
            i += 1
            continue
        if quote == '"':
            if c == '"':
                quote = ""
            elif c == "`" or (c == "$" and _expands(command, i, quoted=True)):
                raise ToolFailure(_OPERATORS[c])
            elif c == "\\" and i + 1 < n and command[i + 1] in '"\\$`':
                text.append(command[i + 1])
                pattern.append(_GLOB_ESCAPES.get(command[i + 1], command[i + 1]))
                i += 1
            else:
                text.append(c)
                pattern.append(_GLOB_ESCAPES.get(c, c))
            i += 1
            continue
        if c in " \t":
            finish()
            i += 1
            continue
        if c in _OPERATORS and (c != "$" or _expands(command, i, quoted=False)):
            raise ToolFailure(_OPERATORS[c])
        if c == "#" and not in_word:
            raise ToolFailure("comments (#) are not supported; drop them")
        if c == "~" and not in_word:
            raise ToolFailure(
                "'~' (the home directory) is not expanded here: use absolute paths inside the explored root"
            )
        in_word = True
        if c in "'\"":
            quote = c
        elif c == "\\":
            if i + 1 >= n:
                raise ToolFailure("the command ends with a lone backslash")
            text.append(command[i + 1])
            pattern.append(_GLOB_ESCAPES.get(command[i + 1], command[i + 1]))
            i += 1
        else:
            if c in "*?[":
                has_glob = True
            if c == "{" and _brace_expansion(command, i):
                raise ToolFailure("brace expansion ({a,b}) is not supported: no shell runs here; list each path")
            text.append(c)
            pattern.append(c)
        i += 1
    if quote:
        raise ToolFailure(f"unterminated {quote} quote in the command")
    finish()
    if not words:
        raise ToolFailure("the command is empty; give a command such as ls -la /abs/dir")
    first = words[0].text
    name, eq, _ = first.partition("=")
    if eq and name and (name[0].isalpha() or name[0] == "_") and name.replace("_", "a").isalnum():
        raise ToolFailure(f"environment assignments ({name}=...) are not supported: run the program alone")
    return words


def _expands(command: str, i: int, quoted: bool) -> bool:
    """True when the '$' at `i` starts an expansion (a '$' before a space or at the end is literal)."""
    following = command[i + 1 : i + 2]
    if not following:
        return False
    return following.isalnum() or following in ("_{(@*#?$!-" if quoted else "_{(@*#?$!-'\"")


def _brace_expansion(command: str, start: int) -> bool:
    """True when an unquoted '{' opens a {a,b} or {1..3} expansion a shell would perform."""
    depth = 0
    for j in range(start, len(command)):
        c = command[j]
        if c in " \t'\"":
            return False
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                body = command[start + 1 : j]
                return "," in body or ".." in body
    return False


@dataclass(frozen=True)
class Spec:
    """The options one program accepts."""

    short: str = ""
    """Short options without a value."""
    short_value: str = ""
    """Short options that take a value."""
    long: Sequence[str] = ()
    """Long options without a value (names without --)."""
    long_value: Sequence[str] = ()
    """Long options that take a value."""
    long_optional: Sequence[str] = ()
    """Long options with an optional =value (e.g. --color)."""
    aliases: dict[str, str] = field(default_factory=dict)
    """Long name -> the key it is stored under (usually its short letter)."""
    refused: dict[str, str] = field(default_factory=dict)
    """Options refused with a reason, e.g. {"-f": "tail -f never ends"}."""
    numeric: bool = False
    """Accept -NUM (head -20)."""

    def describe(self) -> str:
        """The supported options, for error messages."""
        shorts = [f"-{c}" for c in self.short + self.short_value]
        longs = [f"--{n}" for n in (*self.long, *self.long_value, *self.long_optional)]
        return " ".join(shorts + longs) or "none"


@dataclass
class Parsed:
    """Options and operands of one command."""

    options: dict[str, list[str]] = field(default_factory=dict)
    operands: list[Word] = field(default_factory=list)

    def has(self, *keys: str) -> bool:
        """True when any of the options was given."""
        return any(k in self.options for k in keys)

    def value(self, key: str) -> str | None:
        """The last value given for an option."""
        values = self.options.get(key)
        return values[-1] if values else None


def parse_options(prog: str, words: Sequence[Word], spec: Spec) -> Parsed:
    """Check and collect options (GNU style: options may follow operands until `--`)."""
    out = Parsed()
    i = 0
    only_operands = False
    while i < len(words):
        word = words[i]
        arg = word.text
        i += 1
        if only_operands or arg == "-" or not arg.startswith("-"):
            out.operands.append(word)
            continue
        if arg == "--":
            only_operands = True
            continue
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            _refuse(prog, f"--{name}", spec)
            if name in spec.long_value:
                if not eq:
                    if i >= len(words):
                        raise ToolFailure(f"{prog}: option --{name} needs a value")
                    value = words[i].text
                    i += 1
            elif name in spec.long:
                if eq:
                    raise ToolFailure(f"{prog}: option --{name} takes no value")
            elif name not in spec.long_optional:
                _unknown_long(prog, name, spec)
            out.options.setdefault(spec.aliases.get(name, name), []).append(value)
            continue
        cluster = arg[1:]
        if spec.numeric and cluster.isdigit():
            out.options.setdefault("NUM", []).append(cluster)
            continue
        for j, c in enumerate(cluster):
            _refuse(prog, f"-{c}", spec)
            if c in spec.short:
                out.options.setdefault(c, []).append("")
            elif c in spec.short_value:
                value = cluster[j + 1 :]
                if not value:
                    if i >= len(words):
                        raise ToolFailure(f"{prog}: option -{c} needs a value")
                    value = words[i].text
                    i += 1
                out.options.setdefault(c, []).append(value)
                break
            else:
                raise ToolFailure(f"{prog}: option -{c} is not supported here (supported: {spec.describe()})")
    return out


def _refuse(prog: str, option: str, spec: Spec) -> None:
    why = spec.refused.get(option)
    if why:
        raise ToolFailure(f"{prog}: option {option} is not allowed: {why}")


def _unknown_long(prog: str, name: str, spec: Spec) -> None:
    known = [*spec.long, *spec.long_value, *spec.long_optional, *(r[2:] for r in spec.refused if r.startswith("--"))]
    fuller = [k for k in known if k.startswith(name)] if name else []
    if fuller:
        raise ToolFailure(
            f"{prog}: write the option in full (--{fuller[0]}, not --{name}); abbreviations are not accepted"
        )
    raise ToolFailure(f"{prog}: option --{name} is not supported here (supported: {spec.describe()})")


def parse_count(prog: str, option: str, value: str) -> int:
    """A count given to an option: an integer, optionally signed, with an optional K/M/G suffix."""
    raw = value.strip()
    factor = 1
    for suffix, mult in (("K", 1024), ("M", 1 << 20), ("G", 1 << 30), ("k", 1024), ("b", 512)):
        if raw.endswith(suffix) and raw[:-1].lstrip("+-").isdigit():
            factor, raw = mult, raw[:-1]
            break
    try:
        return int(raw) * factor
    except ValueError:
        raise ToolFailure(f"{prog}: {option} needs a number, got {value!r}") from None
