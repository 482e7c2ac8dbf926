"""Bash: a read-only command line with no shell and no external program.

Why built in: a check-then-run design (validate the operands, then let /bin/cat open them by name) can be
beaten by a symbolic link swapped in between the check and the program's open. Here every command (ls,
cat, head, tail, wc, find, tree, file, stat, sed -n, grep, rg, pwd) is implemented in Python on top of
the confined walk in paths.py: each operand is opened once, beneath the root, without following links,
and the command reads only that descriptor. grep and rg become a Grep query (ripgrep with fixed flags).
So there is no environment to sanitise, no process to escape and nothing a flag could make execute;
the deadline and the cancel event are checked while reading, and the output is capped.

What a shell would do beyond running one program is refused (see bash_parse.py), every option is
checked against the program's allowlist, and a command that is not here says what to use instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mcp_loco.interfaces import ToolResult
from mcp_loco.sandbox import arguments as A
from mcp_loco.sandbox.bash_env import Env, Output
from mcp_loco.sandbox.bash_files import cmd_cat, cmd_file, cmd_head, cmd_sed, cmd_stat, cmd_tail, cmd_wc
from mcp_loco.sandbox.bash_filters import split_filters
from mcp_loco.sandbox.bash_find import cmd_find
from mcp_loco.sandbox.bash_parse import Word, tokenize
from mcp_loco.sandbox.bash_search import cmd_egrep, cmd_fgrep, cmd_grep, cmd_rg
from mcp_loco.sandbox.bash_tree import cmd_ls, cmd_tree
from mcp_loco.sandbox.context import ToolContext
from mcp_loco.sandbox.limits import Deadline, ToolFailure

EXAMPLE = '{"command": "ls -la /abs/dir", "description": "List the directory"}'
MIN_TIMEOUT_S = 1.0
Command = Callable[[Env, list[Word]], None]


def cmd_pwd(env: Env, words: list[Word]) -> None:
    """pwd: the explored root."""
    if words:
        raise ToolFailure("pwd takes no arguments here")
    env.out.line(env.ctx.root.path)


PROGRAMS: dict[str, Command] = {
    "ls": cmd_ls,
    "cat": cmd_cat,
    "head": cmd_head,
    "tail": cmd_tail,
    "wc": cmd_wc,
    "find": cmd_find,
    "tree": cmd_tree,
    "file": cmd_file,
    "stat": cmd_stat,
    "grep": cmd_grep,
    "egrep": cmd_egrep,
    "fgrep": cmd_fgrep,
    "rg": cmd_rg,
    "sed": cmd_sed,
    "pwd": cmd_pwd,
}
_SYSTEM_DIRS = ("/bin/", "/usr/bin/", "/usr/local/bin/", "/sbin/", "/usr/sbin/")
_SPECIAL = {
    "git": "git is not available in this read-only explorer; use Grep/Read (history and diffs are not served)",
    "cd": "there is no working directory to change: every command takes absolute paths inside the explored root",
    "sudo": "sudo is not available: this explorer is read-only",
}


def _program(words: list[Word]) -> str:
    name = words[0].text
    if words[0].pattern is not None:
        raise ToolFailure(f"the program name {name!r} contains a wildcard; name the program")
    if name.startswith(_SYSTEM_DIRS):
        name = name.rsplit("/", 1)[-1]
    if name in _SPECIAL:
        raise ToolFailure(_SPECIAL[name])
    if name not in PROGRAMS:
        where = " from the repository" if "/" in name else ""
        raise ToolFailure(
            f"'{name}' cannot run here{where}: this Bash is read-only and runs only "
            f"{', '.join(p for p in PROGRAMS if p not in ('egrep', 'fgrep'))}; "
            "use Read to read files, Grep to search them and Glob to find them by name"
        )
    return name


def _survived(path: str, kept: str, dropped: str) -> bool:
    """Whether a path the command showed is still shown after a head/tail cut (by full path or by name)."""
    name = path.rsplit("/", 1)[-1]
    if path in kept or name in kept:
        return True
    return path not in dropped and name not in dropped  # content commands show no path at all


def run_bash(ctx: ToolContext, arguments: Any, deadline: Deadline) -> ToolResult:
    """Serve one Bash call (the model's `timeout` replaces the default deadline, within bash_max_timeout_s)."""
    args = A.as_object(arguments, EXAMPLE)
    command = A.text(args, ("command", "cmd"), required=True, example=EXAMPLE)
    assert command is not None
    timeout_ms = A.integer(args, ("timeout", "timeout_ms"), minimum=0)
    settings = ctx.settings
    seconds = settings.bash_timeout_s if not timeout_ms else timeout_ms / 1000
    seconds = min(max(seconds, MIN_TIMEOUT_S), settings.bash_max_timeout_s)
    command, line_filter = split_filters(command)
    words = tokenize(command)
    name = _program(words)
    env = Env(ctx, Deadline(seconds, deadline.cancel), Output(settings.max_output_chars))
    try:
        PROGRAMS[name](env, words[1:])
    except ToolFailure as e:
        if not env.out.parts:
            return ToolResult(str(e), ok=False)
        env.out.error(str(e))
    if env.deadline.cancelled():
        return ToolResult(f"Bash: {name} was cancelled", ok=False)
    if env.timed_out or env.deadline.expired():
        env.out.notes.append(f"({name} stopped after {seconds:g} s; the output above is partial: narrow the command)")
        env.out.errors += 1
    text, paths = env.out.text(), tuple(env.out.paths)
    if line_filter is not None:
        kept, dropped, count = line_filter.apply(text)
        if count:
            paths = tuple(p for p in paths if _survived(p, kept, dropped))
            kept += f"\n({count} more lines cut by `{line_filter.program} -n {line_filter.count}`)"
        text = kept
    return ToolResult(text, ok=env.out.errors == 0, paths=paths)
