"""The local model instances: loaded once, each conversation sticky to one, generation on a worker thread."""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import structlog

from mcp_loco.interfaces import ChatModel, Completion, GenerateOptions, Prompt
from mcp_loco.model.backends.openai_compat import conversation_key

log = structlog.get_logger("mcp_loco.proxy.local")

POLL_S = 0.02
"""How often the event loop collects generated text (and checks for a client that went away)."""
_STICKY = 4096


@dataclass
class _Instance:
    model: ChatModel
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    queued: int = 0


class LocalModels:
    """`parallel` model instances; a conversation keeps its instance, whose prefix cache then serves every turn."""

    def __init__(self, factory: Callable[[], ChatModel], parallel: int = 1) -> None:
        self._factory = factory
        self._parallel = parallel
        self._instances: list[_Instance] = []
        self._sticky: OrderedDict[str, int] = OrderedDict()

    @property
    def loaded(self) -> bool:
        """Whether the instances are loaded."""
        return bool(self._instances)

    def load(self) -> None:
        """Load every instance (blocking: a 2.5 GB model takes a while)."""
        while len(self._instances) < self._parallel:
            self._instances.append(_Instance(self._factory()))
        log.info("proxy.models_loaded", instances=len(self._instances), n_ctx=self.n_ctx)

    def close(self) -> None:
        """Free every instance."""
        instances, self._instances = self._instances, []
        for inst in instances:
            inst.model.close()

    @property
    def n_ctx(self) -> int:
        """Context window of the instances."""
        return self._instances[0].model.n_ctx

    def count_tokens(self, prompt: Prompt) -> int:
        """Tokens the prompt takes on these models."""
        return self._instances[0].model.count_tokens(prompt)

    def _pick(self, key: str) -> int:
        index = self._sticky.get(key)
        if index is None:
            owned = [0] * len(self._instances)
            for i in self._sticky.values():
                owned[i] += 1
            index = min(range(len(self._instances)), key=lambda i: (self._instances[i].queued, owned[i], i))
        self._sticky[key] = index
        self._sticky.move_to_end(key)
        while len(self._sticky) > _STICKY:
            self._sticky.popitem(last=False)
        return index

    @asynccontextmanager
    async def lease(self, prompt: Prompt) -> AsyncIterator[ChatModel]:
        """This conversation's instance, once it is free."""
        key = conversation_key(prompt)
        index = self._pick(key)
        inst = self._instances[index]
        inst.queued += 1
        try:
            async with inst.lock:
                log.debug("proxy.lease", conversation=key, instance=index)
                yield inst.model
        finally:
            inst.queued -= 1


class Generation:
    """One completion on a worker thread, its text previewed as it is generated; stops when told."""

    def __init__(self, model: ChatModel, prompt: Prompt, options: GenerateOptions) -> None:
        self.cancel = threading.Event()
        self.completion: Completion | None = None
        self.error: BaseException | None = None
        self._pieces: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._done = threading.Event()
        options = dataclasses.replace(options, on_text=self._pieces.put)
        self._thread = threading.Thread(
            target=self._work, args=(model, prompt, options), name="loco-proxy-generate", daemon=True
        )
        self._thread.start()

    def _work(self, model: ChatModel, prompt: Prompt, options: GenerateOptions) -> None:
        try:
            self.completion = model.complete(prompt, options, self.cancel)
        except BaseException as e:  # handed to the event loop, which answers the client with it
            self.error = e
        finally:
            self._done.set()

    def _drain(self) -> str:
        out = []
        while True:
            try:
                out.append(self._pieces.get_nowait())
            except queue.Empty:
                return "".join(out)

    async def pieces(self, gone: Callable[[], Awaitable[bool]] | None = None) -> AsyncIterator[str]:
        """Text as it arrives ('' now and then while nothing does); ends when the completion is done."""
        while True:
            done = self._done.is_set()
            yield self._drain()
            if done:
                return
            if gone is not None and await gone():
                log.info("proxy.client_gone", note="stopping local generation")
                await self.stop()
                return
            await anyio.sleep(POLL_S)

    def result(self) -> Completion:
        """The finished completion, or the error it raised."""
        if self.error is not None:
            raise self.error
        assert self.completion is not None, "result() before the generation ended"
        return self.completion

    async def stop(self) -> None:
        """Stop generating and wait until the model is let go (even if this task is being cancelled)."""
        self.cancel.set()
        with anyio.CancelScope(shield=True):
            while not self._done.is_set():
                await anyio.sleep(POLL_S)
