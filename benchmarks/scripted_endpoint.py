"""A scripted OpenAI-compatible `/v1/completions` server on 127.0.0.1: every request answered after a fixed latency.

It stands in for a GPU server whose every request takes the same time, so a batch run's throughput
shows what the scheduling alone achieves. It counts the requests in flight (the most at once is what
shows several explorations running together) and the conversations it saw.

A request with a grammar (a tool call the agent forces or continues) gets a Glob call; one without
gets the report: it cites the first absolute path of the last tool result (verified) and a file that
does not exist (unverified), so the citation checks have both kinds to count. A prompt holding
`FAIL-ME` gets HTTP 400, so a query can be made to fail.

    python benchmarks/scripted_endpoint.py --latency 0.5 --port 8090    # serve until Ctrl-C
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_PATH = re.compile(r"(/[\w.\-/]+\.\w+)")
FAIL = "FAIL-ME"
CALL = '<tool_call>\n{"name": "Glob", "arguments": {"pattern": "**/*.py"}}\n</tool_call>'


def answer_for(prompt: str) -> str:
    """The report for a prompt whose tool results are in: one real path cited, one invented."""
    last = prompt.rsplit("<tool_response>", 1)[-1]
    found = _PATH.findall(last)
    cited = f"It is in {found[0]}." if found else "Nothing was found."
    return f"{cited} See also /nonexistent/invented.py for details."


class ScriptedEndpoint:
    """The server, on a free loopback port, in a background thread."""

    def __init__(self, latency: float, port: int = 0) -> None:
        self.latency = latency
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.requests = 0
        self.prompts: list[str] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                self._send(200, "application/json", json.dumps({"data": [{"id": "scripted"}]}).encode())

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                with endpoint.lock:
                    endpoint.in_flight += 1
                    endpoint.requests += 1
                    endpoint.max_in_flight = max(endpoint.max_in_flight, endpoint.in_flight)
                    endpoint.prompts.append(str(body.get("prompt", "")))
                try:
                    time.sleep(endpoint.latency)
                    prompt = str(body.get("prompt", ""))
                    if FAIL in prompt:  # a query that asks for it gets a client error (not retried)
                        self._send(400, "application/json", b'{"error": {"message": "scripted failure"}}')
                        return
                    text = CALL if body.get("grammar") else answer_for(prompt)
                    usage = {"prompt_tokens": max(1, len(prompt) // 4), "completion_tokens": max(1, len(text) // 4)}
                    chunk = {"choices": [{"text": text, "finish_reason": "stop"}], "usage": usage}
                    data = b"data: " + json.dumps(chunk).encode() + b"\n\ndata: [DONE]\n\n"
                    self._send(200, "text/event-stream", data)
                finally:
                    with endpoint.lock:
                        endpoint.in_flight -= 1

            def _send(self, code: int, kind: str, data: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, name="scripted-endpoint", daemon=True)

    def __enter__(self) -> ScriptedEndpoint:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def reset(self) -> None:
        """Forget the counts (between measurements)."""
        with self.lock:
            self.max_in_flight = self.in_flight
            self.requests = 0
            self.prompts = []


def main() -> None:
    """Serve until interrupted."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latency", type=float, default=0.5, help="seconds per request")
    ap.add_argument("--port", type=int, default=8090)
    args = ap.parse_args()
    with ScriptedEndpoint(args.latency, args.port) as ep:
        print(f"serving {ep.url} ({args.latency} s per request); Ctrl-C stops", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
