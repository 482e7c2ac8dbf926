"""Model backends behind the ChatModel seam: llama (in-process), http (OpenAI-compatible), replay."""

from __future__ import annotations

from mcp_loco.config import Settings
from mcp_loco.errors import ConfigError, ModelError
from mcp_loco.interfaces import ChatModel


def load_backend(settings: Settings) -> ChatModel:
    """The backend named by model.backend, ready to generate."""
    backend = settings.model.backend
    if backend == "replay":
        from mcp_loco.backends.replay import ReplayModel

        if not settings.replay.file:
            raise ConfigError("replay.file is empty: pass --replay FILE (a JSON array of turns or a transcript .jsonl)")
        return ReplayModel.from_file(settings.replay.file, n_ctx=settings.llama.n_ctx)
    if backend == "http":
        from mcp_loco.backends.openai_compat import OpenAICompatModel

        return OpenAICompatModel(settings.http)
    from mcp_loco import modelfiles

    path = modelfiles.resolve(settings.model)
    try:
        from mcp_loco.backends.llama_cpp import LlamaModel
    except (ImportError, OSError) as e:
        raise ModelError(
            f"llama-cpp-python could not be loaded ({e}); rebuild it for this CPU: "
            'CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install --force-reinstall --no-cache-dir --no-binary llama-cpp-python '
            "llama-cpp-python"
        ) from None
    return LlamaModel(path, settings.llama)
