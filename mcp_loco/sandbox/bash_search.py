"""Bash grep, egrep, fgrep and rg: translated into a Grep query, so they run under the same rules as Grep."""

from __future__ import annotations

from mcp_loco.sandbox.bash_env import Env
from mcp_loco.sandbox.bash_parse import Parsed, Spec, Word, parse_count, parse_options
from mcp_loco.sandbox.glob import list_files
from mcp_loco.sandbox.globbing import GlobMatcher
from mcp_loco.sandbox.grep import GrepQuery, run_grep
from mcp_loco.sandbox.limits import ToolFailure, show_name

GREP = Spec(
    short="rRnilcvwFEGohHsIq",
    short_value="ABCem",
    long=(
        "recursive",
        "dereference-recursive",
        "line-number",
        "ignore-case",
        "files-with-matches",
        "count",
        "invert-match",
        "word-regexp",
        "fixed-strings",
        "extended-regexp",
        "basic-regexp",
        "only-matching",
        "no-filename",
        "with-filename",
        "no-messages",
        "quiet",
        "silent",
    ),
    long_value=(
        "after-context",
        "before-context",
        "context",
        "regexp",
        "max-count",
        "include",
        "exclude",
        "exclude-dir",
    ),
    long_optional=("color", "colour"),
    aliases={
        "recursive": "r",
        "dereference-recursive": "r",
        "line-number": "n",
        "ignore-case": "i",
        "files-with-matches": "l",
        "count": "c",
        "invert-match": "v",
        "word-regexp": "w",
        "fixed-strings": "F",
        "extended-regexp": "E",
        "basic-regexp": "G",
        "only-matching": "o",
        "after-context": "A",
        "before-context": "B",
        "context": "C",
        "regexp": "e",
        "max-count": "m",
    },
    refused={
        "-P": "Perl regexes are not linear-time; use the default syntax (grep -E)",
        "--perl-regexp": "Perl regexes are not linear-time; use the default syntax (grep -E)",
        "-f": "it reads patterns from a file; put the pattern in the command",
        "--file": "it reads patterns from a file; put the pattern in the command",
        "-z": "it is not supported here",
        "--null-data": "it is not supported here",
        "-d": "it is not supported here; use -r to search directories",
        "-D": "it is not supported here",
        "--exclude-from": "it reads a file; use --exclude",
        "-L": "it is not supported here; use -l",
        "--files-without-match": "it is not supported here; use -l",
    },
)

RG_REFUSED = {
    opt: why
    for why, options in {
        "it runs programs": ("--pre", "--pre-glob", "-z", "--search-zip", "--hostname-bin"),
        "PCRE2 is not linear-time; use the default regex engine": ("-P", "--pcre2", "--engine", "--auto-hybrid-regex"),
        "it follows symbolic links": ("-L", "--follow"),
        "ignore rules always apply here (secrets and .git stay hidden)": (
            "-u",
            "--unrestricted",
            "--no-ignore",
            "--no-ignore-vcs",
            "--no-ignore-dot",
            "--no-ignore-parent",
            "--no-ignore-global",
            "--no-ignore-files",
            "--ignore-file",
        ),
        "it reads patterns from a file; put the pattern in the command": ("-f", "--file"),
        "it is not supported here": ("--type-add", "--type-clear", "--json", "-r", "--replace", "--sort", "--sortr"),
    }.items()
    for opt in options
}
RG = Spec(
    short="nNisSlcvwFoHUI",
    short_value="ABCemgtT",
    long=(
        "line-number",
        "no-line-number",
        "ignore-case",
        "case-sensitive",
        "smart-case",
        "files-with-matches",
        "count",
        "invert-match",
        "word-regexp",
        "fixed-strings",
        "only-matching",
        "with-filename",
        "no-heading",
        "heading",
        "multiline",
        "multiline-dotall",
        "hidden",
        "files",
        "no-messages",
        "no-filename",
    ),
    long_value=(
        "after-context",
        "before-context",
        "context",
        "regexp",
        "max-count",
        "glob",
        "iglob",
        "type",
        "type-not",
    ),
    long_optional=("color", "colour"),
    aliases={
        "line-number": "n",
        "no-line-number": "N",
        "ignore-case": "i",
        "case-sensitive": "s",
        "smart-case": "S",
        "files-with-matches": "l",
        "count": "c",
        "invert-match": "v",
        "word-regexp": "w",
        "fixed-strings": "F",
        "only-matching": "o",
        "multiline": "U",
        "after-context": "A",
        "before-context": "B",
        "context": "C",
        "regexp": "e",
        "max-count": "m",
        "glob": "g",
        "type": "t",
        "type-not": "T",
    },
    refused=RG_REFUSED,
)


def bre_to_rg(pattern: str) -> str:
    """A POSIX basic regex (grep's default) in ripgrep's syntax: \\| \\( \\) \\{ \\} \\+ \\? become operators."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            out.append(nxt if nxt in "|(){}+?" else c + nxt)
            i += 2
            continue
        out.append("\\" + c if c in "|(){}+?" else c)
        i += 1
    return "".join(out)


def _number(prog: str, opts: Parsed, key: str) -> int:
    value = opts.value(key)
    if value is None:
        return 0
    number = parse_count(prog, f"-{key}", value)
    if number < 0:
        raise ToolFailure(f"{prog}: -{key} needs a number of 0 or more, got {value!r}")
    return number


def _common(prog: str, opts: Parsed, query: GrepQuery) -> None:
    context = _number(prog, opts, "C")
    query.before = _number(prog, opts, "B") or context
    query.after = _number(prog, opts, "A") or context
    query.max_count = _number(prog, opts, "m") or None
    query.invert = opts.has("v")
    query.word = opts.has("w")
    query.fixed = opts.has("F")
    query.only_matching = opts.has("o")
    if opts.has("l"):
        query.mode = "files_with_matches"
    elif opts.has("c"):
        query.mode = "count"
    else:
        query.mode = "content"


def _run(env: Env, query: GrepQuery, targets: list[str]) -> None:
    choices: list[str | None] = list(targets) or [None]
    for target in choices:
        if env.stop():
            return
        query.path = target
        result = run_grep(env.ctx, query, env.deadline)
        if not result.ok:
            env.out.error(result.text)
            continue
        if result.text:
            env.out.line(result.text)
        for path in result.paths:
            env.out.saw(path)


def cmd_grep(env: Env, words: list[Word], prog: str = "grep") -> None:
    """grep [-rnilcvwFEo] [-A/-B/-C N] [-e PAT] [--include=GLOB] PATTERN [PATH...] (served by ripgrep)."""
    opts = parse_options(prog, words, GREP)
    operands = list(opts.operands)
    patterns = opts.options.get("e") or []
    if not patterns:
        if not operands:
            raise ToolFailure(f"{prog}: give a pattern, e.g. {prog} -rn 'def main' /abs/dir")
        patterns = [operands.pop(0).text]
    extended = opts.has("E") or prog == "egrep"
    fixed = opts.has("F") or prog == "fgrep"
    converted = [p if extended or fixed else bre_to_rg(p) for p in patterns]
    pattern = converted[0] if len(converted) == 1 else "|".join(f"(?:{p})" for p in converted)
    if fixed and len(patterns) > 1:
        raise ToolFailure(f"{prog}: -F takes one pattern here")
    query = GrepQuery(pattern=pattern, tool=prog, ignore_case=opts.has("i"), line_numbers=opts.has("n"), plain=True)
    _common(prog, opts, query)
    query.fixed = fixed
    query.include = list(opts.options.get("include", []))
    query.exclude = list(opts.options.get("exclude", [])) + [
        d.rstrip("/") + "/" for d in opts.options.get("exclude-dir", [])
    ]
    targets = env.paths(operands)
    if not opts.has("r", "R"):
        if not targets:
            raise ToolFailure(f"{prog} reads stdin here, which is empty: give a file, or -r and a directory")
        for target in targets:
            with env.open(target) as handle:
                if handle.is_dir:
                    raise ToolFailure(f"{prog}: {handle.path} is a directory; add -r to search it")
    _run(env, query, targets)


def cmd_egrep(env: Env, words: list[Word]) -> None:
    """egrep: grep -E."""
    cmd_grep(env, words, "egrep")


def cmd_fgrep(env: Env, words: list[Word]) -> None:
    """fgrep: grep -F."""
    cmd_grep(env, words, "fgrep")


def cmd_rg(env: Env, words: list[Word]) -> None:
    """rg [-nilcvwFoU] [-A/-B/-C N] [-g GLOB] [-t TYPE] PATTERN [PATH...]; rg --files [PATH...]."""
    opts = parse_options("rg", words, RG)
    operands = list(opts.operands)
    globs = [*opts.options.get("g", []), *opts.options.get("iglob", [])]
    if opts.has("files"):
        _rg_files(env, [*env.paths(operands)] or ["."], globs)
        return
    patterns = opts.options.get("e") or []
    if not patterns:
        if not operands:
            raise ToolFailure("rg: give a pattern, e.g. rg -n 'def main' /abs/dir")
        patterns = [operands.pop(0).text]
    pattern = patterns[0] if len(patterns) == 1 else "|".join(f"(?:{p})" for p in patterns)
    smart = opts.has("S") and not any(c.isupper() for c in pattern)
    query = GrepQuery(
        pattern=pattern, tool="rg", ignore_case=opts.has("i") or smart, line_numbers=not opts.has("N"), plain=True
    )
    _common("rg", opts, query)
    query.multiline = opts.has("U")
    query.include = [g for g in globs if not g.startswith("!")]
    query.exclude = [g[1:] for g in globs if g.startswith("!")]
    query.types = list(opts.options.get("t", []))
    query.types_not = list(opts.options.get("T", []))
    _run(env, query, env.paths(operands))


def _rg_files(env: Env, paths: list[str], globs: list[str]) -> None:
    include = [g for g in globs if not g.startswith("!")]
    exclude = [GlobMatcher(g[1:]) for g in globs if g.startswith("!")]
    matcher = (
        GlobMatcher("{" + ",".join(include) + "}" if len(include) > 1 else include[0]) if include else GlobMatcher("**")
    )
    for path in paths:
        listing = list_files(env.ctx, path, matcher, env.deadline)
        for rel in sorted(listing.rels):
            if any(m.match(rel) for m in exclude):
                continue
            shown = env.ctx.root.abs(rel)
            if not env.out.line(show_name(shown)):
                return
            env.out.saw(shown)
        env.out.notes += listing.notes
