"""A real `python -m llama_cpp.server` child process serving a model on a free loopback port (tests, benchmarks)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from server_helpers import free_port


class LlamaServer:
    """One `llama_cpp.server` process; `wait_ready()` before use, `stop()` always."""

    def __init__(self, model: Path, threads: int = 1, n_ctx: int = 4096) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
                "--port", str(self.port), "--n_ctx", str(n_ctx), "--n_threads", str(threads),
                "--n_threads_batch", str(threads), "--verbose", "False",
                # Its default cuts a running stream short whenever another request arrives.
                "--interrupt_requests", "False",
            ],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Until /v1/models answers (or the process dies)."""
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"llama_cpp.server exited with {self.proc.returncode}")
                try:
                    if client.get(self.url + "/models").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
        raise RuntimeError(f"llama_cpp.server on port {self.port} not ready after {timeout} s")

    def stop(self) -> None:
        """Terminate it (kill after 10 s)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@contextmanager
def llama_servers(model: Path, count: int = 2, threads: int = 1, n_ctx: int = 4096) -> Iterator[list[LlamaServer]]:
    """`count` servers, ready; each stopped on the way out, whatever happened."""
    servers = [LlamaServer(model, threads, n_ctx) for _ in range(count)]
    try:
        for s in servers:
            s.wait_ready()
        yield servers
    finally:
        for s in servers:
            s.stop()
