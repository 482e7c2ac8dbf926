"""Command line: serve | proxy | explore | tool | batch | eval | models | install | doctor | config."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mcp_loco import __version__, logs
from mcp_loco.errors import ConfigError, LocoError

if TYPE_CHECKING:
    from mcp_loco.config import Settings
    from mcp_loco.explore.agent import Progress
    from mcp_loco.serve.fast_start import FastStart

Overrides = dict[str, dict[str, Any]]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML settings file (see configs/default.toml)")
    p.add_argument(
        "--set",
        metavar="SECTION.KEY=VALUE",
        action="append",
        default=[],
        help="override any setting, e.g. --set agent.max_turns=5 (repeatable)",
    )
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="log level (stderr)")


def _model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="PATH", help="GGUF model file (llama backend)")
    p.add_argument("--replay", metavar="FILE", help="play back recorded turns instead of running a model")
    p.add_argument("--endpoint", metavar="URL", action="append", help="OpenAI-compatible server (http backend)")


def _overrides(args: argparse.Namespace) -> Overrides:
    """Map command-line flags onto settings keys (the highest-precedence layer)."""
    from mcp_loco.config import parse_assignment

    out: Overrides = {}

    def put(section: str, key: str, value: Any) -> None:
        if value is not None:
            out.setdefault(section, {})[key] = value

    for text in getattr(args, "set", []) or []:
        put(*parse_assignment(text))
    put("log", "level", getattr(args, "log_level", None))
    put("model", "path", getattr(args, "model", None))
    if getattr(args, "replay", None):
        put("model", "backend", "replay")
        put("replay", "file", args.replay)
    if getattr(args, "endpoint", None):
        put("model", "backend", "http")
        put("http", "endpoints", args.endpoint)
    for key in ("max_turns", "deadline_s"):
        put("agent", key, getattr(args, key, None))
    for key in ("transport", "host", "port", "parallel", "max_queue", "token_file"):
        put("server", key, getattr(args, key, None))
    if getattr(args, "allow_unauthenticated", False):
        put("server", "allow_unauthenticated", True)
    if getattr(args, "root", None) and args.command == "serve":
        put("server", "roots", [str(Path(r).expanduser()) for r in args.root])
    return out


def _settings(args: argparse.Namespace) -> Settings:
    from mcp_loco.config import load_settings  # not at the top: `serve` answers its client before this loads

    settings = load_settings(getattr(args, "config", None), _overrides(args))
    logs.configure(settings.log.level, settings.log.json_format)
    return settings


# ---- commands -------------------------------------------------------------------------------------


def cmd_tool(args: argparse.Namespace) -> int:
    """Run one tool as the model would and print exactly what it would see."""
    from mcp_loco.sandbox import Toolbox

    settings = _settings(args)
    try:
        arguments = json.loads(args.json_args)
    except json.JSONDecodeError as e:
        print(f"error: JSON_ARGS is not valid JSON: {e}", file=sys.stderr)
        return 2
    toolbox = Toolbox(args.root, settings.tools)
    result = toolbox.call(args.name, arguments)
    sys.stdout.write(result.text if result.text.endswith("\n") else result.text + "\n")
    return 0 if result.ok else 1


def cmd_models(args: argparse.Namespace) -> int:
    """Download or list model files."""
    from mcp_loco.model import modelfiles

    settings = _settings(args)
    if args.models_command == "pull":
        path = modelfiles.pull(
            repo=args.repo or settings.model.repo,
            quant=args.quant or settings.model.quant,
            dest=modelfiles.models_dir(settings.model),
            filename=args.file,
        )
        print(path)
        return 0
    print(modelfiles.format_listing(modelfiles.list_local(settings.model)))
    try:
        found = modelfiles.locate(settings.model.model_copy(update={"download": False}))
        print(f"in use: {found.path} (picked by {found.rule})")
    except LocoError as e:
        print(f"in use: none yet ({e})")
    return 0


def _progress_to_stderr(quiet: bool) -> Callable[[Progress], None] | None:
    if quiet:
        return None

    def show(p: Progress) -> None:
        print(f"[mcp-loco] {p.message}", file=sys.stderr, flush=True)

    return show


def cmd_explore(args: argparse.Namespace) -> int:
    """Explore a directory once and print the report (or the whole result as JSON)."""
    from mcp_loco.explore.agent import Explorer
    from mcp_loco.model.backends import load_backend

    settings = _settings(args)
    if args.transcript_dir:
        settings.agent.transcript_dir = args.transcript_dir
    model = load_backend(settings)
    explorer = Explorer(model, settings)
    try:
        result = explorer.explore(args.path, args.question, progress=_progress_to_stderr(args.quiet))
    finally:
        explorer.close()
        model.close()
    if args.json:
        print(result.model_dump_json(indent=2))
    else:
        print(result.report)
        unverified = sum(1 for c in result.citations if not c.verified)
        print(
            f"[mcp-loco] {result.turns} turns, stop: {result.stop_reason}, {len(result.citations)} citations "
            f"({unverified} unverified), {result.elapsed_s:.1f}s",
            file=sys.stderr,
        )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the MCP server (over stdio, the client is answered while the server imports: serve/fast_start.py)."""
    front = _fast_start(args)
    from mcp_loco.serve.server import serve

    serve(_settings(args), front=front)
    return 0


def _fast_start(args: argparse.Namespace) -> FastStart | None:
    """Start answering a stdio client from the recorded handshake, before settings or the SDK load.

    The transport and `server.fast_start` are read here as load_settings would (flags, then the
    environment, then --config), without importing it; anything unclear means no fast start.
    """
    import os
    import tomllib

    def setting(key: str, flag: object) -> str | None:
        if flag is not None:
            return str(flag)
        for text in reversed(getattr(args, "set", None) or []):
            name, _, value = str(text).partition("=")
            if name.strip() == f"server.{key}":
                return value.strip()
        env = os.environ.get(f"MCP_LOCO_SERVER_{key.upper()}")
        if env is not None:
            return env
        if getattr(args, "config", None):
            try:
                with open(args.config, "rb") as f:
                    value = tomllib.load(f).get("server", {}).get(key)
            except (OSError, tomllib.TOMLDecodeError, AttributeError):
                return "?"
            return None if value is None else str(value)
        return None

    transport = setting("transport", getattr(args, "transport", None)) or "stdio"
    fast = (setting("fast_start", None) or "true").strip().lower()
    if transport != "stdio" or fast in ("0", "false", "f", "no", "n", "off", "?"):
        return None
    from mcp_loco.serve.fast_start import FastStart

    return FastStart.begin()


def cmd_batch(args: argparse.Namespace) -> int:
    """Answer a file of queries (`id<TAB>query` per line) several at once, or sum up an answers folder."""
    from mcp_loco.batch import run_batch, summarize

    if args.summary:
        _settings(args)  # the log set-up
        print(summarize(Path(args.summary)).text())
        return 0
    missing = [
        flag for flag, value in (("--root", args.root), ("--queries", args.queries), ("--out", args.out)) if not value
    ]
    if missing:
        print(f"error: batch needs {', '.join(missing)} (or --summary DIR to sum up a finished run)", file=sys.stderr)
        return 2
    settings = _settings(args)
    summary = run_batch(
        settings,
        Path(args.root),
        Path(args.queries),
        Path(args.out),
        parallel=args.batch_parallel,
        show_progress=not args.quiet,
    )
    print(summary.line(), file=sys.stderr)
    if summary.interrupted:
        return 130
    return 0 if summary.failed == 0 else 1


def cmd_eval(args: argparse.Namespace) -> int:
    """Measure a model: the model card's turn-level metrics and exploration recall, optionally ablated."""
    from mcp_loco.evals.command import run_command

    return run_command(args, _settings(args))


def cmd_install(args: argparse.Namespace) -> int:
    """Register the server with an MCP client: Claude Code, Claude Desktop, or another client's config file."""
    from mcp_loco.serve import client_configs, install

    if args.client in client_configs.CLIENTS:
        if args.url or args.token_file or args.proxy or args.scope:
            print(
                f"error: {args.client} starts the server itself (stdio) from its config file; "
                "--url, --token-file, --proxy and --scope are for claude-code",
                file=sys.stderr,
            )
            return 2
        return client_configs.install(
            args.client,
            args.name,
            args.root,
            args.print_only,
            args.server_args,
            _serve_budget_s(args.server_args),
            Path(args.config_path) if args.config_path else None,
        )
    if args.client == "claude-code" and args.proxy:  # --proxy: the haiku tier through `mcp-loco proxy`
        return install.claude_code_proxy(args.scope or "local", args.proxy_url, args.print_only)
    if args.client == "claude-code":
        return install.claude_code(
            args.name, args.scope or "user", args.root, args.print_only, args.server_args, args.url, args.token_file
        )
    if args.url or args.token_file:
        print(
            "error: Claude Desktop starts its servers itself (stdio); --url and --token-file are for claude-code",
            file=sys.stderr,
        )
        return 2
    return install.claude_desktop(
        args.name, args.root, Path(args.config_path) if args.config_path else None, args.server_args
    )


def _serve_budget_s(server_args: Sequence[str]) -> float:
    """The call budget (agent.deadline_s) of `serve SERVER_ARGS` as installed: its --config and --set, this environment."""
    from mcp_loco.config import load_settings

    serve, unknown = build_parser().parse_known_args(["serve", *server_args])
    if unknown:
        raise ConfigError(
            f"`mcp-loco serve` does not take {' '.join(unknown)} (the arguments after --); see `mcp-loco serve --help`"
        )
    return load_settings(getattr(serve, "config", None), _overrides(serve)).agent.deadline_s


# ---- proxy (begin) -------------------------------------------------------------------------------


def cmd_proxy(args: argparse.Namespace) -> int:
    """Serve the Anthropic Messages API: --local models on the local backend, the rest upstream."""
    from mcp_loco.proxy import serve

    flags = {
        "host": args.proxy_host,
        "port": args.proxy_port,
        "local": args.local,
        "upstream": "" if (args.upstream or "").strip().lower() == "none" else args.upstream,
        "fallback_turns": args.fallback_turns,
        "parallel": args.proxy_parallel,
    }
    from mcp_loco.config import load_settings

    overrides = _overrides(args)
    overrides.setdefault("proxy", {}).update({k: v for k, v in flags.items() if v is not None})
    settings = load_settings(getattr(args, "config", None), overrides)
    logs.configure(settings.log.level, settings.log.json_format)
    serve(settings)
    return 0


# ---- proxy (end) ---------------------------------------------------------------------------------


def cmd_doctor(args: argparse.Namespace) -> int:
    """Check the model file, the llama.cpp build, ripgrep and the settings; say what to fix."""
    from mcp_loco.doctor import run_bench, run_doctor

    settings = _settings(args)
    code = run_doctor(settings)
    return run_bench(settings) if args.bench and code == 0 else code


def cmd_config(args: argparse.Namespace) -> int:
    """Print the effective settings (or the defaults) as TOML."""
    from mcp_loco.config import render_toml

    print(render_toml(None if args.defaults else _settings(args)), end="")
    return 0


# ---- parser ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="mcp-loco",
        description="A local code explorer for MCP clients, run by LocoOperator-4B on llama.cpp.",
    )
    parser.add_argument("--version", action="version", version=f"mcp-loco {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the MCP server (stdio by default)")
    p.add_argument("--transport", choices=["stdio", "sse", "http"], help="stdio (default), sse (/sse), http (/mcp)")
    p.add_argument("--host", help="bind address for sse/http (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port for sse/http (default 8765)")
    p.add_argument("--root", action="append", metavar="DIR", help="directory clients may explore (repeatable)")
    p.add_argument("--parallel", type=int, help="model instances serving calls at once (default 1)")
    p.add_argument("--max-queue", dest="max_queue", type=int, metavar="N", help="calls that may wait (default 8)")
    p.add_argument("--token-file", dest="token_file", metavar="FILE", help="bearer token clients must send (sse/http)")
    p.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="listen beyond loopback without a token (only behind an authenticating proxy)",
    )
    _model_flags(p)
    _common(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("explore", help="explore a directory once and print the report")
    p.add_argument("path", help="directory to explore")
    p.add_argument("question", help="what to find out")
    p.add_argument("--json", action="store_true", help="print the whole result as JSON")
    p.add_argument("--max-turns", dest="max_turns", type=int, help="model turns (default 10)")
    p.add_argument("--deadline-s", dest="deadline_s", type=float, help="wall-clock budget in seconds")
    p.add_argument("--transcript-dir", help="write a replayable JSONL transcript here")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    _model_flags(p)
    _common(p)
    p.set_defaults(func=cmd_explore)

    p = sub.add_parser("batch", help="answer a file of queries, one markdown file per answer")
    p.add_argument("--root", help="directory to explore")
    p.add_argument("--queries", help="tab-separated file: id<TAB>query per line (UTF-8)")
    p.add_argument("--out", help="folder for the answers and index.jsonl (existing answers are skipped)")
    p.add_argument(
        "--parallel",
        dest="batch_parallel",
        type=int,
        metavar="N",
        help="explorations at once (default: the pool's size, server.parallel)",
    )
    p.add_argument("--summary", metavar="DIR", help="print the totals of a batch --out folder and exit")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar on stderr")
    p.add_argument("--max-turns", dest="max_turns", type=int, help="model turns per query")
    p.add_argument("--deadline-s", dest="deadline_s", type=float, help="wall-clock budget per query")
    _model_flags(p)
    _common(p)
    p.set_defaults(func=cmd_batch)

    p = sub.add_parser("eval", help="measure a model: turn-level metrics, exploration recall, ablations")
    only = p.add_mutually_exclusive_group()
    only.add_argument("--turns-only", action="store_true", help="only the turn-level samples")
    only.add_argument("--explore-only", action="store_true", help="only the exploration questions")
    p.add_argument("--ablate", action="store_true", help="grammar on/off x forced first call on/off, side by side")
    p.add_argument("--limit", type=int, metavar="N", help="first N samples and first N questions")
    p.add_argument("--root", metavar="DIR", help="tree the samples are about (default: the mcp_loco package)")
    p.add_argument("--samples", metavar="FILE", help="turn-level samples, JSONL (default: the shipped set)")
    p.add_argument("--questions", metavar="FILE", help="exploration questions, JSONL (default: the shipped set)")
    p.add_argument("--out", metavar="FILE", help="write every result as JSON here")
    p.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (default 0: reproducible)")
    p.add_argument("--max-turns", dest="max_turns", type=int, help="model turns per exploration (default 10)")
    p.add_argument("--deadline-s", dest="deadline_s", type=float, help="wall-clock budget per exploration")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    _model_flags(p)
    _common(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "install",
        help="register the server with an MCP client (Claude Code, Codex, Gemini CLI, VS Code...)",
        epilog="Arguments after -- go to `mcp-loco serve`, e.g. -- --model /abs/model.gguf",
    )
    p.add_argument(
        "client",
        choices=["claude-code", "claude-desktop", "codex", "gemini", "qwen", "opencode", "copilot", "cursor", "vscode"],
    )
    p.add_argument("--name", default="loco", help="server name in the client (default loco)")
    p.add_argument(
        "--scope", choices=["local", "user", "project"], help="claude-code scope (default user; local with --proxy)"
    )
    p.add_argument("--root", action="append", metavar="DIR", help="directories the server may explore")
    p.add_argument(
        "--print", dest="print_only", action="store_true", help="print the command or config entry; change nothing"
    )
    p.add_argument(
        "--proxy", action="store_true", help="claude-code: send the haiku tier through `mcp-loco proxy` instead"
    )
    p.add_argument("--proxy-url", default="http://127.0.0.1:9091", help="where the proxy listens (with --proxy)")
    p.add_argument(
        "--config-path", help="the client's config file to edit (default: its own, e.g. ~/.codex/config.toml)"
    )
    p.add_argument("--url", help="register a server already listening here (sse or http) instead of stdio")
    p.add_argument("--token-file", dest="token_file", metavar="FILE", help="the bearer token of the --url server")
    p.set_defaults(func=cmd_install)

    # ---- proxy (begin) ----
    p = sub.add_parser(
        "proxy", help="Anthropic Messages endpoint: Claude Code's haiku-tier subagents on the local model"
    )
    p.add_argument("--host", dest="proxy_host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", dest="proxy_port", type=int, help="port (default 9091)")
    p.add_argument(
        "--local",
        action="append",
        metavar="GLOB",
        help="model names answered by the local model (default claude-haiku*; '*' = every model; repeatable)",
    )
    p.add_argument(
        "--upstream",
        metavar="URL",
        help="where other models and fallbacks go (default https://api.anthropic.com; none = nowhere)",
    )
    p.add_argument(
        "--fallback-turns",
        dest="fallback_turns",
        type=int,
        help="assistant turns before a conversation goes upstream (default 10)",
    )
    p.add_argument("--parallel", dest="proxy_parallel", type=int, help="model instances (default 1)")
    _model_flags(p)
    _common(p)
    p.set_defaults(func=cmd_proxy)
    # ---- proxy (end) ----

    p = sub.add_parser("doctor", help="check the model, the llama.cpp build, ripgrep and the settings")
    p.add_argument("--bench", action="store_true", help="also time prefill/decode (~30 s) and estimate an exploration")
    _model_flags(p)
    _common(p)
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("tool", help="run one sandboxed tool by hand and print what the model would see")
    p.add_argument("name", help="Read, Grep, Glob or Bash")
    p.add_argument("json_args", metavar="JSON_ARGS", help='arguments as JSON, e.g. \'{"file_path": "README.md"}\'')
    p.add_argument("--root", required=True, help="the directory the tools are confined to")
    _common(p)
    p.set_defaults(func=cmd_tool)

    p = sub.add_parser("models", help="download or list GGUF model files")
    msub = p.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    pull = msub.add_parser("pull", help="download a GGUF from Hugging Face (resumes)")
    pull.add_argument("--quant", help="quantisation to pick, e.g. Q4_K_M (default: model.quant)")
    pull.add_argument("--repo", help="Hugging Face repository (default: model.repo)")
    pull.add_argument("--file", help="exact file name in the repository (overrides --quant)")
    _common(pull)
    lst = msub.add_parser("list", help="local model files with size, quant and quality figures")
    _common(lst)
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("config", help="print the effective settings as TOML")
    p.add_argument("--defaults", action="store_true", help="print the defaults (configs/default.toml)")
    _common(p)
    p.set_defaults(func=cmd_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # `install ... -- SERVE_ARGS`: what follows -- is for the registered `serve` command.
    extra: list[str] = []
    if argv[:1] == ["install"] and "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1 :]
    args = build_parser().parse_args(argv)
    args.server_args = extra
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except LocoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
