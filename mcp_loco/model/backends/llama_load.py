"""Loading a GGUF with llama-cpp-python, and routing llama.cpp's own log lines through `logging`."""

from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import os
import time
from pathlib import Path
from typing import Any

import llama_cpp as _llama_cpp
import structlog

from mcp_loco.config import LlamaSettings
from mcp_loco.errors import ConfigError, ModelError

LIB: Any = _llama_cpp  # loosely typed: the ctypes bindings' annotations do not match how they are called
log = structlog.get_logger("mcp_loco.model.backends.llama_cpp")
native_log = logging.getLogger("mcp_loco.llama_cpp.native")

REBUILD_HINT = (
    'rebuild it for this CPU: CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install --force-reinstall '
    "--no-cache-dir --no-binary llama-cpp-python llama-cpp-python"
)
_CACHE_TYPES = {
    "f32": 0,
    "f16": 1,
    "q4_0": 2,
    "q4_1": 3,
    "q5_0": 6,
    "q5_1": 7,
    "q8_0": 8,
    "iq4_nl": 20,
    "bf16": 30,
}
# What llama.cpp says when our abort callback stops a decode (status 1 / ret 2 = aborted): expected, not errors.
_ABORT_LINES = (
    b"graph_compute: ggml_backend_sched_graph_compute_async failed with error 1\n",
    b"process_ubatch: failed to compute graph, compute status: 1\n",
)
_ABORT_PREFIXES = (b"decode: removing memory module entries", b"llama_decode: failed to decode, ret = 2")
# ggml_log_level: NONE=0, DEBUG=1, INFO=2, WARN=3, ERROR=4, CONT=5 (continues the previous line).
_NATIVE_LEVELS = {0: logging.DEBUG, 1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}


@LIB.llama_log_callback  # type: ignore[untyped-decorator]
def _native_log_callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    """Route llama.cpp's own log lines through a logging gate (quiet unless llama.verbose)."""
    py_level = _NATIVE_LEVELS.get(level, logging.DEBUG)
    if text in _ABORT_LINES or text.startswith(_ABORT_PREFIXES):
        py_level = logging.DEBUG
    if native_log.isEnabledFor(py_level):
        native_log.log(py_level, text.decode("utf-8", "replace").rstrip())


# Installed once at import: the C side keeps this pointer for the life of the process.
LIB.llama_log_set(_native_log_callback, ctypes.c_void_p(0))


def _threads(n: int) -> int:
    return n if n > 0 else (os.cpu_count() or 1)


def load_llama(lib: Any, path: Path, s: LlamaSettings) -> Any:
    """A llama_cpp.Llama for the file and settings, or a ModelError that says what to check."""
    native_log.setLevel(logging.INFO if s.verbose else logging.ERROR)
    kv_types = {}
    for key, value in (("type_k", s.cache_type_k), ("type_v", s.cache_type_v)):
        if value.lower() not in _CACHE_TYPES:
            raise ConfigError(
                f"llama.cache_{key[-1]}: unknown KV cache type {value!r}; use one of {', '.join(_CACHE_TYPES)}"
            )
        kv_types[key] = _CACHE_TYPES[value.lower()]
    started = time.monotonic()
    # verbose=True keeps llama-cpp-python from pointing file descriptor 1 at /dev/null while it
    # loads (stdout is the MCP channel and other threads may be writing to it); its Python-side
    # chatter on sys.stderr is collected and logged at debug level instead.
    chatter = io.StringIO()
    try:
        with contextlib.redirect_stderr(chatter):
            llm = lib.Llama(
                model_path=str(path),
                n_ctx=s.n_ctx,
                n_batch=s.n_batch,
                n_ubatch=min(512, s.n_batch),
                n_threads=_threads(s.n_threads),
                n_threads_batch=_threads(s.n_threads_batch),
                n_gpu_layers=s.n_gpu_layers,
                flash_attn=s.flash_attn,
                use_mlock=s.use_mlock,
                verbose=True,
                **kv_types,
            )
    except (ValueError, RuntimeError, OSError) as e:
        raise ModelError(
            f"could not load {path}: {e}. Check that it is a complete GGUF file (re-run `mcp-loco models pull` "
            f"to finish a partial download), that llama.n_ctx={s.n_ctx} fits in memory (lower it), and that "
            f"cache_type_v={s.cache_type_v} is f16 unless flash_attn is on; if llama.cpp itself fails, {REBUILD_HINT}"
        ) from None
    finally:
        if s.verbose and chatter.getvalue():
            log.debug("llama_cpp.load_output", text=chatter.getvalue())
    llm.verbose = s.verbose
    log.info(
        "llama_cpp.loaded",
        path=str(path),
        n_ctx=llm.n_ctx(),
        n_ctx_train=llm._model.n_ctx_train(),
        seconds=round(time.monotonic() - started, 2),
    )
    return llm
