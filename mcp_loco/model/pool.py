"""The model instances a pool lends out: one llama.cpp instance per slot, or one HTTP client for every slot.

The server's pool and `mcp-loco batch` load their instances here. In-process instances each hold
their own weights and KV cache, so one conversation at a time runs on each. The HTTP backend is
different: its client keeps the conversation -> endpoint affinity and the requests in flight per
endpoint, so every slot shares one client and new conversations go to the least busy endpoint
across the whole pool (separate clients would each send their first conversation to the first
endpoint).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from mcp_loco.config import Settings
from mcp_loco.interfaces import ChatModel


def load_instance(settings: Settings) -> ChatModel:
    """One model instance as configured (model.backend)."""
    from mcp_loco.model.backends import load_backend

    return load_backend(settings)


class Instances:
    """Loads a pool's instances one `load()` at a time; `close_all()` frees each distinct model once."""

    def __init__(self, settings: Settings, factory: Callable[[], ChatModel] | None = None) -> None:
        self.settings = settings
        self._factory = factory
        self._lock = threading.Lock()
        self._loaded: list[ChatModel] = []
        self._shared: ChatModel | None = None

    @property
    def shares_one_client(self) -> bool:
        """True when every slot uses one HTTP client (the http backend, unless a factory was given)."""
        return self._factory is None and self.settings.model.backend == "http"

    def load(self) -> ChatModel:
        """The next slot's model: a new instance, or the shared HTTP client."""
        if self.shares_one_client:
            with self._lock:
                if self._shared is None:
                    self._shared = load_instance(self.settings)
                    self._loaded.append(self._shared)
                return self._shared
        model = self._factory() if self._factory is not None else load_instance(self.settings)
        with self._lock:
            self._loaded.append(model)
        return model

    def close_all(self) -> None:
        """Free every model loaded so far (a shared client once)."""
        with self._lock:
            models, self._loaded, self._shared = self._loaded, [], None
        for model in models:
            model.close()
