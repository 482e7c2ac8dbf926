"""`mcp-loco doctor`: check each part a working install needs, and say what to fix."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from mcp_loco.config import Settings
from mcp_loco.errors import LocoError
from mcp_loco.interfaces import GenerateOptions, Segment

REBUILD = (
    'CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" '
    "pip install --force-reinstall --no-cache-dir llama-cpp-python"
)


def _check_ripgrep(settings: Settings) -> str:
    from mcp_loco.sandbox import find_rg

    rg = find_rg(settings.tools.rg_path)
    out = subprocess.run([rg, "--version"], capture_output=True, text=True, timeout=10, check=True)
    return f"{out.stdout.splitlines()[0]} ({rg})"


def _check_llama_import(settings: Settings) -> str:
    import llama_cpp

    info = llama_cpp.llama_print_system_info().decode(errors="replace").strip()
    return f"llama-cpp-python {llama_cpp.__version__}; {info[:160]}"


def _local_model(settings: Settings) -> Path:
    """The model file on this machine; doctor never downloads."""
    from mcp_loco import modelfiles

    return modelfiles.resolve(settings.model.model_copy(update={"download": False}))


def _check_model_file(settings: Settings) -> str:
    if settings.model.backend != "llama":
        return f"backend is {settings.model.backend}: no local model file needed"
    path = _local_model(settings)
    return f"{path} ({path.stat().st_size / 1e9:.2f} GB)"


def _check_decode(settings: Settings) -> str:
    """Load the model and decode one token: in a child process, so a crashing build cannot take us down."""
    if settings.model.backend == "replay":
        return "replay backend: nothing to decode"
    if settings.model.backend == "llama":
        try:  # the model file check says what is missing
            path = _local_model(settings)
        except LocoError:
            raise LocoError("skipped: no model file to load") from None
        settings = settings.model_copy(deep=True)
        settings.model.path = str(path)
    code = (
        "import sys\n"
        "from mcp_loco.config import Settings\n"
        "from mcp_loco.doctor import decode_one\n"
        "from mcp_loco.errors import LocoError\n"
        "try:\n"
        "    print(decode_one(Settings.model_validate_json(sys.stdin.read())))\n"
        "except LocoError as e:\n"
        "    sys.exit(str(e))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        input=settings.model_dump_json(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        # Exit code 1 is a LocoError whose message is the last line; anything else, show the end of the trace.
        tail = (done.stderr or done.stdout).strip().splitlines()[-1 if done.returncode == 1 else -3 :]
        crashed = done.returncode < 0
        hint = f" The build crashed (signal {-done.returncode}); rebuild it portably: {REBUILD}" if crashed else ""
        raise LocoError(" / ".join(tail) + hint)
    return done.stdout.strip()


def decode_one(settings: Settings) -> str:
    """Load the configured backend and generate one token."""
    from mcp_loco.backends import load_backend

    t0 = time.monotonic()
    model = load_backend(settings)
    loaded = time.monotonic() - t0
    try:
        prompt = [Segment("<|im_start|>", True), Segment("user\nSay OK."), Segment("<|im_end|>", True)]
        prompt += [Segment("\n"), Segment("<|im_start|>", True), Segment("assistant\n")]
        out = model.complete(prompt, GenerateOptions(max_tokens=1, temperature=0.0), threading.Event())
    finally:
        model.close()
    return f"loaded in {loaded:.1f}s, decoded {out.usage.completion_tokens} token ({out.text!r})"


CHECKS: list[tuple[str, Callable[[Settings], str]]] = [
    ("ripgrep", _check_ripgrep),
    ("llama.cpp library", _check_llama_import),
    ("model file", _check_model_file),
    ("load + decode one token", _check_decode),
]


def run_doctor(settings: Settings) -> int:
    """Run every check, print one line each; exit code 0 when all pass."""
    failed = 0
    print("settings: ok (precedence: flags > MCP_LOCO_* env > --config > defaults)")
    for name, check in CHECKS:
        try:
            detail = check(settings)
            print(f"{name}: ok - {detail}")
        except (LocoError, OSError, subprocess.SubprocessError, ImportError) as e:
            failed += 1
            print(f"{name}: FAILED - {e}")
    print("all checks passed" if not failed else f"{failed} check(s) failed: fix the lines marked FAILED")
    return 0 if failed == 0 else 1
