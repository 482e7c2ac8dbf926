"""Settings: defaults < `--config FILE` < environment (`MCP_LOCO_...`) < command-line flags.

Every key is documented in configs/default.toml; a test keeps the two in step.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic.config import JsonDict
from pydantic.fields import FieldInfo

from mcp_loco.deny_defaults import DEFAULT_ALLOW, DEFAULT_DENY
from mcp_loco.errors import ConfigError

ENV_PREFIX = "MCP_LOCO_"
Budget = Literal["turns", "context"]


SECRET: JsonDict = {"secret": True}
"""The marker of a secret setting (`Field(..., json_schema_extra=SECRET)`): shown as `***` when set, never its value."""


def is_secret(field: FieldInfo) -> bool:
    """True for a secret setting: a SecretStr, or a field carrying the SECRET marker."""
    extra = field.json_schema_extra
    return field.annotation is SecretStr or (isinstance(extra, dict) and extra.get("secret") is True)


class Section(BaseModel):
    """A settings section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True)


class ModelSettings(Section):
    """Which model answers, and how it samples."""

    backend: Literal["llama", "http", "replay"] = "llama"
    """llama: llama.cpp in-process; http: OpenAI-compatible servers; replay: a recorded run."""
    path: str = ""
    """GGUF file. Empty: look in models_dir, then the Hugging Face cache, then download."""
    repo: str = "SimplySara/LocoOperator-4B-i1-GGUF"
    """Hugging Face repository of GGUF files (these imatrix quants name the quant in each file name;
    the official LocoreMind/LocoOperator-4B-GGUF holds a single file)."""
    quant: str = "Q4_K_M"
    """Quantisation picked from the repository's files (Q8_0, Q6_K, Q5_K_M, Q4_K_M, IQ4_XS...)."""
    models_dir: str = ""
    """Folder searched for GGUF files. Empty: ./models, then the user data folder."""
    download: bool = True
    """Download the model on first use when no local file is found (needs network)."""
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    """Sampling temperature (the model card recommends 0.7)."""
    top_p: float = Field(0.8, gt=0.0, le=1.0)
    """Nucleus sampling."""
    top_k: int = Field(20, ge=0)
    """Top-k sampling (0 = off)."""
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    """Min-p sampling."""
    seed: int = -1
    """Sampling seed; -1 picks a random one."""
    max_tokens: int = Field(4096, ge=16)
    """Most tokens the model may write in one turn."""


class LlamaSettings(Section):
    """llama.cpp in-process backend."""

    n_ctx: int = Field(32768, ge=512)
    """Context window in tokens (the seed pipeline used 32768; the model card suggests up to 50K)."""
    n_threads: int = Field(0, ge=0)
    """Threads for generation; 0 = all cores."""
    n_threads_batch: int = Field(0, ge=0)
    """Threads for prompt evaluation; 0 = all cores."""
    n_batch: int = Field(512, ge=1)
    """Prompt tokens evaluated per batch."""
    n_gpu_layers: int = -1
    """Layers offloaded to the GPU in GPU builds; -1 = all, 0 = none. Ignored by CPU builds."""
    flash_attn: bool = False
    """Flash attention (needed for a quantised V cache). Off: on a CPU it decoded the 4B at 2.5 instead of 4.1 tok/s
    at 8K of context, though it shrinks the compute buffer at 32K from 2.1 to 0.3 GiB (docs/measured.md, LocoOperator-4B-shaped)."""
    cache_type_k: str = "f16"
    """KV cache type for K: f16, q8_0, q4_0... q8_0 (with flash_attn) halves the 4B's cache: 2.4 GiB at 32K, not 4.5."""
    cache_type_v: str = "f16"
    """KV cache type for V (quantised types need flash_attn)."""
    use_mlock: bool = False
    """Lock the model in RAM."""
    verbose: bool = False
    """Let llama.cpp print its own logs (to stderr)."""
    speculative: Literal["auto", "on", "off"] = "auto"
    """Speculative decoding by prompt lookup: guess the next tokens from the conversation (the report quotes what the tools showed) and verify them in one batch. auto = time a one-token decode and a batch of draft_max + 1 at load and draft only if the batch is at least 3x cheaper than its tokens one by one (a GPU; on 2 CPU cores a batch of 9 cost 6-8x one token at the 4B shape and 3-6x on SmolLM2, and drafting did not pay). Same tokens as without it, except where llama.cpp's batched kernels round a near-tie the other way."""
    draft_max: int = Field(8, ge=1, le=64)
    """Most tokens guessed per verification batch (a miss shortens the next guess)."""
    draft_ngram_min: int = Field(2, ge=1)
    """Shortest run of last tokens that must recur in the context before a guess is made."""
    draft_ngram_max: int = Field(4, ge=1)
    """Longest run of last tokens looked up (the longest that recurs wins)."""


class HttpSettings(Section):
    """OpenAI-compatible backend (`/v1/completions`): llama-server, vLLM, LM Studio, llama_cpp.server."""

    endpoints: list[str] = Field(default_factory=list)
    """Base URLs such as http://127.0.0.1:8080/v1. A conversation sticks to one; new ones go to the least busy."""
    model: str = ""
    """Model name sent with each request (some servers require it)."""
    api_key: str = Field("", json_schema_extra=SECRET)
    """Bearer token, if the servers want one."""
    timeout_s: float = Field(300.0, gt=0)
    """Seconds one request may take."""
    connect_timeout_s: float = Field(10.0, gt=0)
    """Seconds to wait for a connection."""
    retries: int = Field(3, ge=0)
    """Retries for connection errors and 5xx answers, with exponential backoff."""
    backoff_s: float = Field(0.5, ge=0)
    """First retry delay; doubles each retry."""
    n_ctx: int = Field(32768, ge=512)
    """Context window of the servers in tokens (the conversation is budgeted against it)."""
    grammar_param: str = "grammar"
    """Request field carrying the tool-call GBNF: grammar (llama-server, llama_cpp.server), guided_grammar (vLLM), empty = none."""


class ReplaySettings(Section):
    """Replay backend: plays back recorded assistant turns."""

    file: str = ""
    """A JSON array of raw assistant turns, or a transcript (.jsonl) written by a run."""


class AgentSettings(Section):
    """The exploration loop."""

    max_turns: int = Field(10, ge=1, le=100)
    """Model turns before the report is asked for (the model was trained on 10)."""
    deadline_s: float = Field(100.0, gt=0)
    """Wall-clock budget of a call in seconds, the report included (30% is kept for it); under Claude Code's 120 s."""
    report_max_tokens: int = Field(8000, ge=256)
    """Cap on the returned report (Claude Code warns from ~10k tokens)."""
    report_max_chars: int = Field(10_000, ge=1000)
    """Cap on the report in characters, for every client: cut at a paragraph, the verified citations of the
    part cut off listed after it, and a note saying so (Codex cuts MCP output at ~12 KB for models it does
    not know; Qwen Code at 25,000 characters)."""
    grammar: bool = True
    """Constrain each tool call, once the model opens <tool_call>, to valid JSON for a known tool."""
    force_first_tool: bool = True
    """The first turn must begin with a tool call."""
    max_calls_per_turn: int = Field(8, ge=1)
    """Tool calls served from one turn; extra calls get an error."""
    tool_workers: int = Field(4, ge=1)
    """Tool calls of one turn run concurrently on this many threads."""
    task_depth: int = Field(1, ge=0, le=1)
    """Task calls run a sub-exploration this deep (0 = Task refused)."""
    system_prompt: str = ""
    """System prompt file ({root} is replaced). Empty: configs/system_prompt.md."""
    task_prompt: str = ""
    """First user turn template ({root}, {question}). Empty: configs/task_prompt.md."""
    transcript_dir: str = ""
    """Write one JSONL transcript per run here (replayable). Empty: off."""


class ToolSettings(Section):
    """The sandboxed read-only tools."""

    deny: list[str] = Field(default_factory=lambda: list(DEFAULT_DENY))
    """Secret files no tool may read, list or search (gitignore-style globs, case-insensitive)."""
    allow: list[str] = Field(default_factory=lambda: list(DEFAULT_ALLOW))
    """Exceptions to `deny` (templates that hold no secret)."""
    read_max_lines: int = Field(2000, ge=1)
    """Lines Read returns when no limit is given."""
    max_line_chars: int = Field(2000, ge=80)
    """Longer lines are cut, with a marker."""
    max_output_chars: int = Field(40000, ge=1000)
    """Cap on any one tool result; the result says when it was cut."""
    glob_max_results: int = Field(200, ge=1)
    """Paths Glob lists at most."""
    grep_timeout_s: float = Field(20.0, gt=0)
    """Seconds one Grep (or Glob) may run; ripgrep is killed then."""
    read_timeout_s: float = Field(10.0, gt=0)
    """Seconds one Read may spend in a file (skipping to a far offset in a huge file)."""
    allow_hard_links: bool = False
    """Show the content of files with more than one hard link (another link may live outside the root)."""
    landlock: bool = True
    """Run ripgrep under Landlock (Linux 5.13+) so it cannot read outside the root, even through a link swapped in mid-search."""
    bash: bool = True
    """Offer the read-only Bash tool."""
    bash_timeout_s: float = Field(10.0, gt=0)
    """Default Bash deadline; the model may ask for up to bash_max_timeout_s."""
    bash_max_timeout_s: float = Field(60.0, gt=0)
    """Most seconds a Bash command may run."""
    rg_path: str = ""
    """ripgrep binary. Empty: the one installed with mcp-loco, then rg on PATH."""


class EscalationSettings(Section):
    """Optional fallback to a bigger OpenAI-compatible model when the local one runs out of turns or context."""

    endpoint: str = ""
    """Chat-completions base URL (e.g. https://openrouter.ai/api/v1). Empty: off."""
    model: str = ""
    """Model name at that endpoint."""
    api_key: str = Field("", json_schema_extra=SECRET)
    """Bearer token for the endpoint."""
    on: list[Budget] = Field(default_factory=lambda: list[Budget](["turns", "context"]))
    """Budgets whose exhaustion hands the conversation over."""
    max_turns: int = Field(10, ge=1)
    """Turns the fallback model may take."""
    timeout_s: float = Field(120.0, gt=0)
    """Seconds one fallback request may take."""


class ServerSettings(Section):
    """The MCP server."""

    transport: Literal["stdio", "sse", "http"] = "stdio"
    """stdio (default), sse (legacy, at /sse), http (streamable HTTP, at /mcp)."""
    host: str = "127.0.0.1"
    """Bind address for sse and http; loopback unless told otherwise."""
    port: int = Field(8765, ge=0, le=65535)
    """Port for sse and http."""
    roots: list[str] = Field(default_factory=list)
    """Directories explore_codebase may read. Empty: the directory the server was started in."""
    parallel: int = Field(1, ge=1)
    """Model instances; further calls queue."""
    max_queue: int = Field(8, ge=0)
    """Calls that may wait for a model; a call beyond them gets an immediate "server busy" error."""
    token: SecretStr = SecretStr("")
    """Bearer token clients of sse and http must send (Authorization: Bearer ...); prefer token_file or
    MCP_LOCO_SERVER_TOKEN to writing it here. Empty: no authentication, allowed on loopback only."""
    token_file: str = ""
    """File holding the bearer token (the first line; overrides token). `serve --token-file FILE`."""
    allow_unauthenticated: bool = False
    """Listen beyond loopback without a token (only behind a proxy that authenticates)."""
    max_body_bytes: int = Field(256 * 1024, ge=1024)
    """Largest HTTP request body accepted (sse and http); larger ones get 413."""
    max_sessions_per_client: int = Field(32, ge=1)
    """Open sessions (http) and SSE streams one client address may hold; more get 429."""
    fast_start: bool = True
    """stdio: answer `initialize` and the listings from the recorded handshake while the server imports, so
    clients that give a server one second (Codex CLI) see it from their first turn."""


class ProxySettings(Section):
    """The Anthropic Messages proxy (`mcp-loco proxy`): Claude Code's subagents on the local model."""

    host: str = "127.0.0.1"
    """Bind address; loopback unless told otherwise."""
    port: int = Field(9091, ge=0, le=65535)
    """Port (the seed's proxy used 9091)."""
    local: list[str] = Field(default_factory=lambda: ["claude-haiku*"])
    """Model-name globs answered by the local model (`*` = every model); the rest go upstream."""
    upstream: str = "https://api.anthropic.com"
    """Where other models, and conversations past the local limits, are forwarded. Empty: nowhere (a clear error)."""
    fallback_turns: int = Field(10, ge=1)
    """A local conversation with this many assistant turns goes upstream (the model was trained on 10)."""
    min_room: int = Field(256, ge=16)
    """Fewer free context tokens than this after the prompt: the request goes upstream (context overflow)."""
    parallel: int = Field(1, ge=1)
    """Model instances; a conversation sticks to one so its prefix cache is reused."""
    max_body_mb: float = Field(32.0, gt=0)
    """Largest request body accepted, in MiB."""
    drop_reminders: bool = True
    """Leave out Claude Code's `<system-reminder>` text blocks, which the model was not trained on."""
    remember_turns: int = Field(4096, ge=0)
    """The model's own turns kept byte-exact for prefix reuse (least recently used are forgotten)."""


class LogSettings(Section):
    """Logs (always on stderr)."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    """Lowest level written."""
    json_format: bool = False
    """One JSON object per line instead of readable text."""


class Settings(Section):
    """All settings."""

    model: ModelSettings = Field(default_factory=ModelSettings)
    llama: LlamaSettings = Field(default_factory=LlamaSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    replay: ReplaySettings = Field(default_factory=ReplaySettings)
    agent: AgentSettings = Field(default_factory=AgentSettings)
    tools: ToolSettings = Field(default_factory=ToolSettings)
    escalation: EscalationSettings = Field(default_factory=EscalationSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    proxy: ProxySettings = Field(default_factory=ProxySettings)
    log: LogSettings = Field(default_factory=LogSettings)


def _section_types() -> dict[str, type[Section]]:
    out: dict[str, type[Section]] = {}
    for name, field in Settings.model_fields.items():
        ann = field.annotation
        assert isinstance(ann, type) and issubclass(ann, Section)
        out[name] = ann
    return out


SECTIONS = _section_types()


def _is_list_field(section: str, key: str) -> bool:
    ann = SECTIONS[section].model_fields[key].annotation
    return getattr(ann, "__origin__", None) is list


def _env_value(section: str, key: str, raw: str) -> Any:
    if _is_list_field(section, key):
        if raw.strip().startswith("["):
            try:
                return json.loads(raw)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{section}.{key}: not a JSON list ({e})") from None
        return [part.strip() for part in raw.split(",") if part.strip()]
    return raw


def env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Read `MCP_LOCO_<SECTION>_<KEY>` variables (and `MCP_LOCO_MODEL` for model.path)."""
    out: dict[str, dict[str, Any]] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        if rest == "model":
            out.setdefault("model", {})["path"] = raw
            continue
        for section, cls in SECTIONS.items():
            if rest.startswith(section + "_") and rest[len(section) + 1 :] in cls.model_fields:
                key = rest[len(section) + 1 :]
                out.setdefault(section, {})[key] = _env_value(section, key, raw)
                break
        else:
            raise ConfigError(
                f"unknown setting in environment variable {name}: use MCP_LOCO_<SECTION>_<KEY>, "
                f"e.g. MCP_LOCO_AGENT_MAX_TURNS (sections: {', '.join(SECTIONS)})"
            )
    return out


def parse_assignment(text: str) -> tuple[str, str, Any]:
    """Parse `section.key=value` (value read as JSON when it parses, else as a string)."""
    dotted, sep, raw = text.partition("=")
    section, dot, key = dotted.strip().partition(".")
    if not sep or not dot or section not in SECTIONS or key not in SECTIONS[section].model_fields:
        raise ConfigError(f"--set {text!r}: expected SECTION.KEY=VALUE with a known key, e.g. agent.max_turns=5")
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = _env_value(section, key, raw)
    return section, key, value


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


def _secret_key(loc: tuple[int | str, ...]) -> bool:
    """True when an error's location is a secret setting (its value is never repeated in the message)."""
    section = SECTIONS.get(str(loc[0])) if loc else None
    field = section.model_fields.get(str(loc[1])) if section and len(loc) > 1 else None
    return field is not None and is_secret(field)


def _format_validation(e: ValidationError, where: str) -> str:
    lines = []
    for err in e.errors():
        key = ".".join(str(p) for p in err["loc"])
        got = "***" if _secret_key(err["loc"]) else repr(err.get("input"))
        lines.append(f"{key}: {err['msg']} (got {got}, from {where})")
    return "invalid settings:\n  " + "\n  ".join(lines)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML settings file."""
    p = Path(path).expanduser()
    try:
        with p.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {p} is not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {p}: {e.strerror}") from None


def load_settings(
    config_file: str | Path | None = None,
    cli: Mapping[str, Mapping[str, Any]] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build the settings from every layer, validating each so errors name their source."""
    layers: list[tuple[str, Mapping[str, Any]]] = []
    if config_file:
        layers.append((f"config file {config_file}", read_config_file(config_file)))
    layers.append(("environment", env_overrides(os.environ if environ is None else environ)))
    layers.append(("command line", cli or {}))
    data: dict[str, Any] = {}
    for where, layer in layers:
        data = _merge(data, layer)
        try:
            Settings.model_validate(data)
        except ValidationError as e:
            raise ConfigError(_format_validation(e, where)) from None
    return Settings.model_validate(data)


def _toml_value(value: Any, secret: bool = False) -> str:
    if secret or isinstance(value, SecretStr):  # shown as set or not, never its value
        shown = value.get_secret_value() if isinstance(value, SecretStr) else value
        return json.dumps("***" if shown else "")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        if not value:
            return "[]"
        return "[\n" + "".join(f"    {_toml_value(v)},\n" for v in value) + "]"
    return repr(value)


def render_toml(settings: Settings | None = None) -> str:
    """Every key with its description and value, as TOML (configs/default.toml is this for the defaults)."""
    settings = settings or Settings()
    out = [
        "# mcp-loco settings. Every key, its meaning and its default.",
        "# Precedence: command-line flags > environment (MCP_LOCO_<SECTION>_<KEY>, e.g.",
        "# MCP_LOCO_AGENT_MAX_TURNS=5; MCP_LOCO_MODEL=/path/model.gguf) > --config FILE > these defaults.",
        "# Regenerate with: mcp-loco config --defaults > configs/default.toml",
    ]
    for name, cls in SECTIONS.items():
        out += ["", f"[{name}]", f"# {cls.__doc__}"]
        section = getattr(settings, name)
        for key, field in cls.model_fields.items():
            for line in (field.description or "").splitlines():
                out.append(f"# {line.strip()}")
            out.append(f"{key} = {_toml_value(getattr(section, key), is_secret(field))}")
    return "\n".join(out) + "\n"


def configs_dir() -> Path:
    """The folder holding default.toml and the prompt files: configs/ in a checkout, mcp_loco/configs in a wheel."""
    here = Path(__file__).resolve().parent
    packaged = here / "configs"
    return packaged if packaged.is_dir() else here.parent / "configs"
