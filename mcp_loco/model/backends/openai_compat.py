"""OpenAI-compatible backend: `/v1/completions` with the rendered prompt (llama-server, vLLM, LM Studio, llama_cpp.server).

- Special-token safety: servers tokenize the prompt string with special tokens parsed, so text
  outside the template's markers is neutralised first: a ZERO WIDTH SPACE (U+200B) goes after
  every `<|`, which turns `<|im_end|>` in a file into harmless text.
- Affinity: a conversation is keyed by a hash of its prompt up to the end of the first user turn
  (unique per exploration) and sticks to one endpoint, whose prefix cache then serves every turn;
  new conversations go to the endpoint with the fewest requests in flight.
- Lazy grammar: free text is streamed until `<tool_call>` appears; the stream is then closed and
  the turn continues from prompt + text with the grammar (the server's prefix cache makes the
  continuation cheap), so servers without lazy grammars still get valid calls.
- Cancellation: the request streams on a worker thread; the caller returns within ~0.1 s of
  `cancel`, and the worker closes the stream (the server stops on disconnect).

Start llama_cpp.server with `--interrupt_requests False` when conversations share it: by default it
cuts a running stream short as soon as another request arrives.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import structlog

from mcp_loco.config import HttpSettings
from mcp_loco.errors import BackendError, Cancelled, ConfigError
from mcp_loco.interfaces import Completion, FinishReason, GenerateOptions, Prompt, Segment, Usage
from mcp_loco.model.grammar import TOOL_CALL_OPEN, generic_tool_call_grammar, validate_grammar

log = structlog.get_logger("mcp_loco.model.backends.openai_compat")

ZWSP = "\u200b"
_AFFINITY_SIZE = 4096
_POLL_S = 0.05
_DEFAULT_CHARS_PER_TOKEN = 3.0  # conservative for code until a server reports real counts


def neutralise(text: str) -> str:
    """Make `<|...|>` markers inert for servers that parse special tokens in the prompt string."""
    return text.replace("<|", "<|" + ZWSP)


def wire_text(prompt: Prompt) -> str:
    """The prompt as sent over HTTP: template markers verbatim, everything else neutralised."""
    return "".join(seg.text if seg.special else neutralise(seg.text) for seg in prompt)


def conversation_key(prompt: Sequence[Segment]) -> str:
    """Hash of the prompt up to the end of its first user turn: the same for every turn of one conversation."""
    h = hashlib.sha256()
    role = ""
    for i, seg in enumerate(prompt):
        h.update(b"\x01" if seg.special else b"\x00")
        h.update(seg.text.encode("utf-8", "surrogatepass"))
        if seg.special and seg.text == "<|im_start|>" and i + 1 < len(prompt):
            role = prompt[i + 1].text.split("\n", 1)[0]
        elif seg.special and seg.text == "<|im_end|>" and role == "user":
            break
    return h.hexdigest()[:32]


def base_url(endpoint: str) -> str:
    """`http://host:port` or `.../v1` (trailing slash or not) as the `.../v1` base."""
    url = endpoint.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"http.endpoints: {endpoint!r} is not an http(s) URL, e.g. http://127.0.0.1:8080/v1")
    return url if url.endswith("/v1") else url + "/v1"


@dataclass
class _Endpoint:
    url: str
    in_flight: int = 0
    chars_per_token: float = _DEFAULT_CHARS_PER_TOKEN


class _Retryable(Exception):
    """A failure worth another try: no connection, a timeout, a 5xx answer."""


@dataclass
class _Stream:
    """What one streaming request has produced so far (written by its worker thread)."""

    text: str = ""
    chunks: int = 0
    finish: FinishReason = "stop"
    usage: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, Any] = field(default_factory=dict)
    triggered: bool = False
    error: BaseException | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    on_text: Callable[[str], None] | None = None


class OpenAICompatModel:
    """Completions from one or more OpenAI-compatible servers, with conversation affinity."""

    def __init__(self, settings: HttpSettings, *, transport: httpx.BaseTransport | None = None) -> None:
        if not settings.endpoints:
            raise ConfigError(
                "http.endpoints is empty: give at least one server URL, e.g. --endpoint http://127.0.0.1:8080/v1"
            )
        self.settings = settings
        self._endpoints = [_Endpoint(base_url(e)) for e in settings.endpoints]
        self._affinity: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()
        self._workers: set[threading.Thread] = set()
        self._grammars_checked: set[str] = set()
        self._thread = threading.local()  # the endpoint each calling thread last used
        headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        timeout = httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s)
        self._client = httpx.Client(headers=headers, timeout=timeout, transport=transport)
        self._closed = False

    # ---- ChatModel ---------------------------------------------------------------------------------

    @property
    def n_ctx(self) -> int:
        """Context window of the servers (http.n_ctx)."""
        return self.settings.n_ctx

    def count_tokens(self, prompt: Prompt) -> int:
        """An estimate from the characters per token the servers have reported (conservative before that)."""
        with self._lock:
            ratio = min(ep.chars_per_token for ep in self._endpoints)
        return math.ceil(len(wire_text(prompt)) / ratio)

    def complete(self, prompt: Prompt, options: GenerateOptions, cancel: threading.Event | None = None) -> Completion:
        """Generate the next turn on this conversation's endpoint."""
        if cancel is not None and cancel.is_set():
            raise Cancelled("cancelled before generation")
        if self._closed:
            raise BackendError("the HTTP backend was closed")
        text = wire_text(prompt)
        key = conversation_key(prompt)
        grammar = self._grammar_for(options)
        if grammar is None or options.force_tool_call:
            s = self._request(key, text, options, options.max_tokens, grammar, watch=False, cancel=cancel)
            return Completion(s.text, self._usage(key, text, s), s.finish)
        first = self._request(key, text, options, options.max_tokens, None, watch=True, cancel=cancel)
        usage = self._usage(key, text, first)
        if not first.triggered:
            return Completion(first.text, usage, first.finish)
        # The model opened a tool call: continue from exactly that point under the grammar.
        rest_prompt = text + neutralise(first.text)
        budget = max(16, options.max_tokens - usage.completion_tokens)
        second = self._request(key, rest_prompt, options, budget, grammar, watch=False, cancel=cancel)
        usage = usage + self._usage(key, rest_prompt, second)
        return Completion(first.text + second.text, usage, second.finish)

    def last_endpoint(self) -> str | None:
        """The endpoint this thread's last request went to (a conversation runs on one thread)."""
        url: str | None = getattr(self._thread, "endpoint", None)
        return url

    def loads(self) -> dict[str, int]:
        """Requests in flight per endpoint."""
        with self._lock:
            return {ep.url: ep.in_flight for ep in self._endpoints}

    def close(self) -> None:
        """Stop the streams still running and close the connections."""
        self._closed = True
        with self._lock:
            workers = list(self._workers)
        for w in workers:
            w.join(timeout=2.0)
        self._client.close()

    # ---- internals ---------------------------------------------------------------------------------

    def _grammar_for(self, options: GenerateOptions) -> str | None:
        grammar = options.grammar
        if grammar is None and options.force_tool_call:
            grammar = generic_tool_call_grammar()
        if grammar is None or not self.settings.grammar_param:
            return None
        if grammar not in self._grammars_checked:
            validate_grammar(grammar)  # a bad grammar can crash a llama.cpp server: check it here first
            self._grammars_checked.add(grammar)
        return grammar

    def _pick(self, key: str, avoid: set[int]) -> int:
        """The conversation's endpoint, or the least busy one for a new conversation (or after a failure)."""
        with self._lock:
            sticky = self._affinity.get(key)
            if sticky is not None and sticky not in avoid:
                self._affinity.move_to_end(key)
                chosen = sticky
            else:
                candidates = [i for i in range(len(self._endpoints)) if i not in avoid] or list(
                    range(len(self._endpoints))
                )
                owned = [0] * len(self._endpoints)
                for i in self._affinity.values():
                    owned[i] += 1
                chosen = min(candidates, key=lambda i: (self._endpoints[i].in_flight, owned[i], i))
                self._affinity[key] = chosen
                self._affinity.move_to_end(key)
                while len(self._affinity) > _AFFINITY_SIZE:
                    self._affinity.popitem(last=False)
            self._endpoints[chosen].in_flight += 1
            return chosen

    def _body(self, prompt: str, options: GenerateOptions, max_tokens: int, grammar: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": options.temperature,
            "top_p": options.top_p,
            "top_k": options.top_k,
            "min_p": options.min_p,
            "stop": ["<|im_end|>", *options.stop],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self.settings.model:
            body["model"] = self.settings.model
        if options.seed >= 0:
            body["seed"] = options.seed
        if grammar is not None:
            body[self.settings.grammar_param] = grammar
        return body

    def _request(
        self,
        key: str,
        prompt: str,
        options: GenerateOptions,
        max_tokens: int,
        grammar: str | None,
        *,
        watch: bool,
        cancel: threading.Event | None,
    ) -> _Stream:
        body = self._body(prompt, options, max_tokens, grammar)
        failed: set[int] = set()
        for attempt in range(self.settings.retries + 1):
            index = self._pick(key, failed)
            ep = self._endpoints[index]
            log.debug(
                "http.request", endpoint=ep.url, conversation=key, attempt=attempt + 1, grammar=grammar is not None
            )
            self._thread.endpoint = ep.url
            stream = self._run(ep, body, watch, cancel, options.on_text)
            if stream.error is None:
                log.info(
                    "http.completion",
                    endpoint=ep.url,
                    conversation=key,
                    finish=stream.finish,
                    chunks=stream.chunks,
                    triggered=stream.triggered,
                )
                return stream
            if not isinstance(stream.error, _Retryable):
                raise stream.error
            failed.add(index)
            if attempt == self.settings.retries:
                raise BackendError(f"{ep.url}: {stream.error} (gave up after {attempt + 1} attempts)")
            delay = self.settings.backoff_s * 2**attempt
            log.warning("http.retry", endpoint=ep.url, error=str(stream.error), delay_s=delay)
            if cancel is not None:
                if cancel.wait(delay):
                    raise Cancelled("cancelled while waiting to retry")
            else:
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _run(
        self,
        ep: _Endpoint,
        body: dict[str, Any],
        watch: bool,
        cancel: threading.Event | None,
        on_text: Callable[[str], None] | None = None,
    ) -> _Stream:
        """Stream on a worker thread; return when it ends, or at once (finish 'cancelled') when cancelled."""
        stream = _Stream(on_text=on_text)
        worker = threading.Thread(target=self._worker, args=(ep, body, watch, stream), daemon=True, name="loco-http")
        with self._lock:
            self._workers.add(worker)
        worker.start()
        while not stream.done.wait(_POLL_S):
            if (cancel is not None and cancel.is_set()) or self._closed:
                stream.stop.set()
                # A snapshot: the worker may still append to `stream` until it notices.
                return _Stream(text=stream.text, chunks=stream.chunks, finish="cancelled", usage=stream.usage)
        return stream

    def _worker(self, ep: _Endpoint, body: dict[str, Any], watch: bool, stream: _Stream) -> None:
        url = ep.url + "/completions"
        deadline = time.monotonic() + self.settings.timeout_s
        try:
            with self._client.stream("POST", url, json=body) as resp:
                if resp.status_code >= 400:
                    detail = resp.read().decode("utf-8", "replace")[:300]
                    msg = f"HTTP {resp.status_code} from {url}: {detail}"
                    stream.error = _Retryable(msg) if resp.status_code >= 500 else BackendError(msg)
                    return
                if resp.headers.get("content-type", "").startswith("application/json"):
                    # A server that ignored `stream`: one whole completion object.
                    self._consume("data: " + resp.read().decode("utf-8", "replace"), stream, watch)
                    return
                for line in resp.iter_lines():
                    if stream.stop.is_set():
                        return  # leaving the block closes the connection: the server stops generating
                    if time.monotonic() > deadline:
                        stream.error = _Retryable(
                            f"no complete answer within {self.settings.timeout_s:g} s (http.timeout_s)"
                        )
                        return
                    if self._consume(line, stream, watch):
                        return
        except httpx.TransportError as e:
            stream.error = _Retryable(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)
        except Exception as e:
            stream.error = BackendError(f"{url}: unexpected answer ({type(e).__name__}: {e})")
        finally:
            with self._lock:
                ep.in_flight -= 1
                self._workers.discard(threading.current_thread())
            stream.done.set()

    def _consume(self, line: str, stream: _Stream, watch: bool) -> bool:
        """Apply one SSE line to the stream; True when the stream should end."""
        if not line.startswith("data:"):
            return False
        payload = line[5:].strip()
        if payload == "[DONE]":
            return True
        chunk = json.loads(payload)
        if not isinstance(chunk, dict):
            return False
        if "error" in chunk:
            stream.error = BackendError(f"server error: {json.dumps(chunk['error'])[:300]}")
            return True
        if isinstance(chunk.get("usage"), dict):
            stream.usage = chunk["usage"]
        if isinstance(chunk.get("timings"), dict):
            stream.timings = chunk["timings"]
        for choice in chunk.get("choices") or ():
            piece = choice.get("text") or ""
            if piece:
                stream.chunks += 1
                stream.text += piece
                if stream.on_text is not None:
                    stream.on_text(piece)
            reason = choice.get("finish_reason")
            if reason:
                stream.finish = "length" if reason == "length" else "stop"
        if watch and TOOL_CALL_OPEN in stream.text:
            stream.text = stream.text[: stream.text.index(TOOL_CALL_OPEN)]
            stream.triggered = True
            return True
        return False

    def _usage(self, key: str, prompt: str, stream: _Stream) -> Usage:
        """Token counts from the server where it reports them, estimates otherwise."""
        with self._lock:
            index = self._affinity.get(key, 0)
            ep = self._endpoints[index]
            reported = stream.usage.get("prompt_tokens")
            if isinstance(reported, int) and reported > 0:
                ep.chars_per_token = max(1.0, len(prompt) / reported)
                prompt_tokens = reported
            else:
                prompt_tokens = math.ceil(len(prompt) / ep.chars_per_token)
        evaluated = prompt_tokens
        if isinstance(stream.timings.get("prompt_n"), int):
            evaluated = stream.timings["prompt_n"]
        else:
            details = stream.usage.get("prompt_tokens_details")
            if isinstance(details, dict) and isinstance(details.get("cached_tokens"), int):
                evaluated = max(0, prompt_tokens - details["cached_tokens"])
        completion = stream.usage.get("completion_tokens")
        return Usage(
            prompt_tokens=prompt_tokens,
            prompt_tokens_evaluated=evaluated,
            completion_tokens=completion if isinstance(completion, int) else stream.chunks,
        )
