"""Finding, downloading and listing GGUF model files.

Models never come from the working directory or an explored tree (the server starts in the user's
project, which could ship a `models/*.gguf` of its own choosing). Order of search (`locate`): the explicit
path (`--model`, `model.path`, `MCP_LOCO_MODEL`), then `model.models_dir` when set, else this checkout's
`models/` (found next to the installed package, never from the working directory) and the user data
folder, then the Hugging Face cache, then a download on first use. Downloads go into the models folder
(not the HF cache): one visible file the user can move or delete, resumed from its `.partial` file over
HTTP Range when interrupted (download.py).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import structlog

from mcp_loco.config import ModelSettings
from mcp_loco.errors import ModelError, ModelNotFoundError
from mcp_loco.model import download

log = structlog.get_logger("mcp_loco.model.modelfiles")

APP = "mcp-loco"
HOW_TO_GET = (
    "get one with `mcp-loco models pull` (on a machine with internet access), pass --model PATH, "
    "or set MCP_LOCO_MODEL=/path/to/LocoOperator-4B-Q4_K_M.gguf"
)


@dataclass(frozen=True)
class Quality:
    """Seed 002's measurements of a quant against BF16."""

    size_gb: float
    top_p_match: float
    """Share of tokens whose top choice matches BF16's, in percent."""


# Seed 002 (SimplySara/LocoOperator-4B-i1-GGUF, README table): size in GB and top-p match vs BF16.
QUALITY: dict[str, Quality] = {
    "BF16": Quality(7.498, 100.0),
    "Q8_0": Quality(3.986, 97.518),
    "i1-Q8_0": Quality(3.986, 97.518),
    "MXFP4_MOE": Quality(3.986, 97.518),
    "i1-MXFP4_MOE": Quality(3.986, 97.518),
    "Q6_K": Quality(3.079, 95.526),
    "i1-Q6_K": Quality(3.079, 95.857),
    "Q5_1": Quality(2.841, 93.161),
    "i1-Q5_1": Quality(2.841, 94.135),
    "Q5_K_M": Quality(2.691, 93.635),
    "i1-Q5_K_M": Quality(2.691, 94.257),
    "Q5_0": Quality(2.63, 92.839),
    "i1-Q5_0": Quality(2.636, 93.208),
    "Q5_K_S": Quality(2.63, 92.800),
    "i1-Q5_K_S": Quality(2.63, 93.702),
    "Q4_1": Quality(2.418, 87.757),
    "i1-Q4_1": Quality(2.418, 90.574),
    "Q4_K_M": Quality(2.326, 90.300),
    "i1-Q4_K_M": Quality(2.326, 91.233),
    "IQ4_NL": Quality(2.229, 89.708),
    "i1-IQ4_NL": Quality(2.218, 90.573),
    "Q4_K_S": Quality(2.22, 88.513),
    "i1-Q4_K_S": Quality(2.22, 90.557),
    "Q4_0": Quality(2.207, 87.758),
    "i1-Q4_0": Quality(2.213, 88.737),
    "IQ4_XS": Quality(2.129, 89.705),
    "i1-IQ4_XS": Quality(2.115, 90.402),
    "Q3_K_L": Quality(2.086, 84.146),
    "i1-Q3_K_L": Quality(2.086, 86.154),
    "Q3_K_M": Quality(1.933, 82.662),
    "i1-Q3_K_M": Quality(1.933, 85.354),
    "IQ3_M": Quality(1.828, 67.631),
    "i1-IQ3_M": Quality(1.828, 83.180),
    "IQ3_S": Quality(1.769, 65.931),
    "i1-IQ3_S": Quality(1.769, 83.139),
    "Q3_K_S": Quality(1.757, 79.412),
    "i1-Q3_K_S": Quality(1.757, 82.133),
    "i1-IQ3_XS": Quality(1.69, 81.928),
    "Q2_K": Quality(1.555, 64.880),
    "i1-Q2_K": Quality(1.555, 75.570),
    "i1-IQ3_XXS": Quality(1.555, 77.569),
    "i1-Q2_K_S": Quality(1.456, 71.231),
    "i1-IQ2_M": Quality(1.409, 67.933),
    "i1-IQ2_S": Quality(1.32, 65.722),
    "i1-IQ2_XS": Quality(1.261, 63.162),
    "i1-IQ2_XXS": Quality(1.161, 52.522),
    "i1-IQ1_M": Quality(1.05, 44.067),
    "i1-IQ1_S": Quality(0.983, 28.387),
}
_QUALITY_KEYS = {k.lower(): k for k in QUALITY}
_QUANT = re.compile(r"(?:^|[-_.])((?:i1[-_.])?(?:I?Q\d[A-Za-z0-9_]*|BF16|F16|F32|MXFP4_MOE))$", re.IGNORECASE)


class Hub(Protocol):
    """The huggingface_hub function this module calls to read the local cache (the module satisfies it)."""

    def scan_cache_dir(self) -> Any: ...


def _default_hub() -> Hub:
    try:
        import huggingface_hub
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise ModelError(f"huggingface_hub is not installed ({e}): pip install huggingface-hub") from None
    hub: Hub = huggingface_hub
    return hub


# ---- names and folders -----------------------------------------------------------------------------


def quant_label(filename: str) -> str | None:
    """The quant named in a GGUF file name, e.g. `i1-Q4_K_M` for LocoOperator-4B-i1-Q4_K_M.gguf."""
    name = Path(filename).name
    if not name.lower().endswith(".gguf"):
        return None
    stem = re.sub(r"-\d{5}-of-\d{5}$", "", name[: -len(".gguf")])  # split models: name-00001-of-00003.gguf
    m = _QUANT.search(stem)
    if not m:
        return None
    label = m.group(1)
    canonical = _QUALITY_KEYS.get(re.sub(r"^i1[_.]", "i1-", label, flags=re.IGNORECASE).lower())
    return canonical or label


def quality(filename: str) -> Quality | None:
    """Seed 002's figures for the file's quant, if measured."""
    label = quant_label(filename)
    return QUALITY.get(label) if label else None


def _user_data_dir() -> Path:
    home = Path.home()
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local") / APP / "models"
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / APP / "models"
    return Path(os.environ.get("XDG_DATA_HOME") or home / ".local" / "share") / APP / "models"


def checkout_models_dir() -> Path | None:
    """This checkout's models/ folder (next to pyproject.toml above the package), or None for an installed wheel."""
    top = Path(__file__).resolve().parents[2]
    models = top / "models"
    return models if (top / "pyproject.toml").is_file() and models.is_dir() else None


def models_dir(model: ModelSettings) -> Path:
    """Where `models pull` writes: model.models_dir, else this checkout's models/, else the user data folder."""
    if model.models_dir:
        return Path(model.models_dir).expanduser()
    return checkout_models_dir() or _user_data_dir()


def _search_dirs(model: ModelSettings) -> list[tuple[Path, str]]:
    """The folders searched, each with the rule that names it (never the working directory)."""
    if model.models_dir:
        dirs = [(Path(model.models_dir).expanduser(), "model.models_dir")]
    else:
        checkout = checkout_models_dir()
        dirs = [(checkout, "this checkout's models/ folder")] if checkout else []
        dirs.append((_user_data_dir(), "the user data folder"))
    return [(d, rule) for d, rule in dirs if d.is_dir()]


def pick(files: Iterable[str], quant: str, where: str) -> str:
    """The one .gguf file for `quant` (exact label first, then ignoring an `i1-` prefix); clear errors otherwise."""
    ggufs = sorted({f for f in files if f.lower().endswith(".gguf")})
    if not ggufs:
        raise ModelNotFoundError(f"no .gguf files in {where}")
    want = quant.lower()
    labelled = [(f, (quant_label(f) or "").lower()) for f in ggufs]
    exact = [f for f, label in labelled if label == want]
    loose = [f for f, label in labelled if re.sub(r"^i1-", "", label) == re.sub(r"^i1-", "", want)]
    for matches in (exact, loose):
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            shards = [m for m in matches if re.search(r"-0*1-of-\d+\.gguf$", m)]
            if len(shards) == 1:
                return shards[0]  # the first shard of a split model; llama.cpp finds the rest
            raise ModelNotFoundError(
                f"quant {quant!r} matches several files in {where}: {', '.join(matches)}; "
                "pass the exact name with --file, or a more specific --quant (e.g. i1-Q4_K_M)"
            )
    if len(ggufs) == 1 and quant_label(ggufs[0]) is None:
        log.warning("modelfiles.quant_not_in_name", quant=quant, file=ggufs[0], where=where)
        return ggufs[0]  # a single GGUF whose name names no quant (e.g. LocoOperator-4B.gguf)
    raise ModelNotFoundError(
        f"no file for quant {quant!r} in {where}; files there: {', '.join(ggufs)}. "
        "Pick one with --quant (e.g. --quant Q8_0) or --file NAME"
    )


# ---- finding ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Located:
    """The model file to load and the rule that picked it."""

    path: Path
    rule: str


def _in_dirs(model: ModelSettings) -> Located | None:
    for d, rule in _search_dirs(model):
        files = [p for p in d.rglob("*.gguf") if p.is_file()]
        if not files:
            continue
        try:
            name = pick([str(p.relative_to(d)) for p in files], model.quant, str(d))
        except ModelNotFoundError:
            continue
        return Located(d / name, f"{rule} {d}, quant {model.quant}")
    return None


def _cached_files(repo: str, hub: Hub) -> list[Path]:
    try:
        info = hub.scan_cache_dir()
    except Exception as e:  # no cache yet, or one we cannot read: nothing cached
        log.debug("modelfiles.no_hf_cache", error=str(e))
        return []
    out: list[Path] = []
    for cached in getattr(info, "repos", ()):
        if cached.repo_id != repo:
            continue
        for rev in cached.revisions:
            out += [Path(f.file_path) for f in rev.files if str(f.file_name).lower().endswith(".gguf")]
    return out


def _in_hf_cache(model: ModelSettings, hub: Hub) -> Path | None:
    files = {p.name: p for p in _cached_files(model.repo, hub) if p.is_file()}
    if not files:
        return None
    try:
        return files[pick(files, model.quant, f"the Hugging Face cache of {model.repo}")]
    except ModelNotFoundError:
        return None


def resolve(model: ModelSettings, hub: Hub | None = None) -> Path:
    """The GGUF file to load: explicit path, models folder, Hugging Face cache, or a download."""
    return locate(model, hub).path


def locate(model: ModelSettings, hub: Hub | None = None) -> Located:
    """The GGUF file to load and the rule that picked it (see the module's docstring for the order)."""
    if model.path:
        p = Path(model.path).expanduser()
        if p.is_file():
            return Located(p, "model.path (--model, model.path or MCP_LOCO_MODEL)")
        if p.is_dir():
            found = locate(model.model_copy(update={"path": "", "models_dir": str(p)}), hub)
            return Located(found.path, found.rule.replace("model.models_dir", "model.path, a folder", 1))
        raise ModelNotFoundError(
            f"model file {p} does not exist (from --model, model.path or MCP_LOCO_MODEL): fix the path, or {HOW_TO_GET}"
        )
    in_dirs = _in_dirs(model)
    if in_dirs:
        return in_dirs
    hub = hub or _default_hub()
    cached = _in_hf_cache(model, hub)
    if cached:
        return Located(cached, f"the Hugging Face cache of {model.repo}, quant {model.quant}")
    searched = ", ".join(str(d) for d, _ in _search_dirs(model)) or str(models_dir(model))
    if not model.download:
        raise ModelNotFoundError(
            f"no {model.quant} GGUF of {model.repo} in {searched} or the Hugging Face cache, and model.download is off: {HOW_TO_GET}"
        )
    log.info("modelfiles.downloading", repo=model.repo, quant=model.quant, dest=str(models_dir(model)))
    return Located(pull(model.repo, model.quant, models_dir(model)), f"downloaded from {model.repo} on first use")


# ---- downloading -----------------------------------------------------------------------------------


def pull(repo: str, quant: str, dest: Path, filename: str | None = None, *, http: httpx.Client | None = None) -> Path:
    """Download the GGUF for `quant` (or `filename`) from `repo` into `dest`; resumes an interrupted download."""
    if filename and (dest / filename).is_file():
        log.info("modelfiles.present", path=str(dest / filename))
        return dest / filename  # present: nothing to ask the Hub
    own = http is None
    http = http or download.client()
    try:
        files = {f.name: f for f in download.list_files(repo, http, HOW_TO_GET)}
        name = filename or pick(files, quant, repo)
        if name not in files:
            raise ModelNotFoundError(f"{repo} has no file {name!r}; list its files with --quant or check --file")
        target = dest / name
        if target.is_file():
            log.info("modelfiles.present", path=str(target))
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        path = download.fetch(files[name], target, http, HOW_TO_GET)
    finally:
        if own:
            http.close()
    log.info("modelfiles.downloaded", path=str(path), gb=round(path.stat().st_size / 1e9, 2))
    return path


# ---- listing ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalModel:
    """A GGUF file on this machine."""

    path: Path
    size: int
    quant: str | None
    source: str
    """Where it was found: a folder, or `hf-cache`."""
    quality: Quality | None


def list_local(model: ModelSettings, hub: Hub | None = None) -> list[LocalModel]:
    """GGUF files in the models folders, the explicit path and the Hugging Face cache of model.repo."""
    seen: set[Path] = set()
    out: list[LocalModel] = []

    def add(p: Path, source: str) -> None:
        real = p.resolve()
        if real in seen or not p.is_file():
            return
        seen.add(real)
        out.append(LocalModel(p, p.stat().st_size, quant_label(p.name), source, quality(p.name)))

    if model.path and Path(model.path).expanduser().is_file():
        add(Path(model.path).expanduser(), "model.path")
    for d, _ in _search_dirs(model):
        for p in sorted(d.rglob("*.gguf")):
            add(p, str(d))
    try:
        cached = _cached_files(model.repo, hub or _default_hub())
    except ModelError:
        cached = []
    for p in cached:
        add(p, "hf-cache")
    return out


def format_listing(models: list[LocalModel]) -> str:
    """A table of local models with seed 002's quality figures (top-p match vs BF16)."""
    if not models:
        return f"no GGUF files found; {HOW_TO_GET}"
    rows = [("QUANT", "SIZE", "TOP-P vs BF16", "PATH")]
    for m in models:
        match = f"{m.quality.top_p_match:.1f}%" if m.quality else "-"
        rows.append((m.quant or "?", f"{m.size / 1e9:.2f} GB", match, str(m.path)))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3] for r in rows]
    lines.append(
        "top-p match: share of tokens whose top choice equals BF16's (seed 002); below ~3.5 bpw quality collapses"
    )
    return "\n".join(lines)
