"""Answer a stdio client at once while the server still imports: `initialize` and the listings from a record.

Importing the MCP SDK alone takes about a second of CPU, more on a busy machine, and Codex CLI gives a
server that is not marked required one second before its first turn. So `mcp-loco serve` (stdio) takes the
wire first, with nothing but the standard library: it answers `initialize`, `tools/list`, the other
listings and `ping` from `handshake.json` (recorded from the real server, and tested to match it), and
keeps every other message. Once the server has imported, it gets a pipe in place of stdin and stdout: the
`initialize` it missed and the kept messages first (its answer to that `initialize` is dropped, the client
had it), then the client's messages as they come. Clients that start with `server/discover` (2026-07-28)
simply wait for the server, as before.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, BinaryIO

HANDSHAKE = Path(__file__).with_name("handshake.json")
"""The recorded answers, by protocol version (`python -m mcp_loco.serve.handshake` writes it)."""
END = b"\x00mcp-loco: the server has stopped\n"
"""Written after the server's last answer: the relay stops there (the SDK never closes its copy of fd 1)."""


def _dump(message: dict[str, Any]) -> bytes:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def _plain(params: object) -> bool:
    """True for parameters a recorded answer fits: none, or only `_meta` (no cursor, nothing else)."""
    return params is None or (isinstance(params, dict) and set(params) <= {"_meta"})


def _requested_version(params: object) -> str | None:
    """The version an `initialize` with the fields the server requires asks for; None leaves it to the server."""
    if not isinstance(params, dict):
        return None
    info, version = params.get("clientInfo"), params.get("protocolVersion")
    valid = (
        isinstance(params.get("capabilities"), dict)
        and isinstance(info, dict)
        and isinstance(info.get("name"), str)
        and isinstance(info.get("version"), str)
    )
    return version if valid and isinstance(version, str) else None


class FastStart:
    """Holds the client's stdin and stdout until the server takes over (see the module's docstring)."""

    def __init__(self, handshake: dict[str, Any], wire_in: BinaryIO, wire_out: BinaryIO) -> None:
        self._record = handshake
        self._in = wire_in
        self._out = wire_out
        self._write_lock = threading.Lock()
        self._lock = threading.Lock()  # the mode, the kept messages, the server's pipe
        self._kept: list[bytes] = []
        self._replay: list[bytes] = []
        self._version: str | None = None
        self._init_id: object = None
        self._server_in: BinaryIO | None = None
        self._eof = False
        self._threads: list[threading.Thread] = []

    @classmethod
    def begin(cls) -> FastStart | None:
        """Take stdin and stdout (stray output goes to stderr) and start answering; None without a record."""
        try:
            handshake = json.loads(HANDSHAKE.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        wire_in = os.fdopen(os.dup(0), "rb")
        wire_out = os.fdopen(os.dup(1), "wb")
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.dup2(2, 1)  # a stray print must never reach the wire
        front = cls(handshake, wire_in, wire_out)
        front._start(front._read, "loco-fast-start")
        return front

    def _start(self, target: Any, name: str, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _send(self, data: bytes) -> None:
        with self._write_lock:
            self._out.write(data)
            self._out.flush()

    # ---- before the server is there ---------------------------------------------------------------

    def _read(self) -> None:
        for line in iter(self._in.readline, b""):
            with self._lock:
                if self._server_in is not None:
                    self._forward(line)
                elif not self._answer(line):
                    self._kept.append(line)
        with self._lock:
            self._eof = True
            if self._server_in is not None:
                self._server_in.close()

    def _answer(self, line: bytes) -> bool:
        """Answer a message from the record; False when the server must see it (it is kept in order)."""
        try:
            msg = json.loads(line)
        except ValueError:
            return False
        if not isinstance(msg, dict) or msg.get("jsonrpc") != "2.0":
            return False
        method, params, ident = msg.get("method"), msg.get("params"), msg.get("id")
        if method == "initialize" and "id" in msg and self._version is None and not self._kept:
            requested = _requested_version(params)
            if requested is None:
                return False
            self._version = requested if requested in self._record["versions"] else self._record["latest"]
            self._init_id = ident
            self._replay.append(line)
            self._send(_dump({"jsonrpc": "2.0", "id": ident, **self._record["versions"][self._version]["initialize"]}))
            return True
        if self._version is None:
            return False
        if method == "notifications/initialized" and not self._kept and len(self._replay) == 1:
            self._replay.append(line)
            return True
        answers = self._record["versions"][self._version]["answers"]
        if "id" in msg and method in answers and _plain(params):
            self._send(_dump({"jsonrpc": "2.0", "id": ident, **answers[method]}))
            return True
        return False

    # ---- the server takes over --------------------------------------------------------------------

    def handover(self) -> None:
        """Give the server pipes as fds 0 and 1, fed with what it missed; relay its answers to the client."""
        to_server_r, to_server_w = os.pipe()
        from_server_r, from_server_w = os.pipe()
        os.dup2(to_server_r, 0)
        os.dup2(from_server_w, 1)
        os.close(to_server_r)
        os.close(from_server_w)
        self._start(self._relay, "loco-fast-start-relay", os.fdopen(from_server_r, "rb"))
        # Written from a thread: the server reads the pipe only once it runs, and it may hold more than a pipe.
        self._start(self._feed, "loco-fast-start-feed", os.fdopen(to_server_w, "wb"))

    def _feed(self, server_in: BinaryIO) -> None:
        with self._lock:  # the reader waits, so the order holds
            for line in self._replay + self._kept:
                server_in.write(line)
            server_in.flush()
            self._kept.clear()
            self._server_in = server_in
            if self._eof:
                server_in.close()

    def _forward(self, line: bytes) -> None:
        assert self._server_in is not None
        try:
            self._server_in.write(line)
            self._server_in.flush()
        except (OSError, ValueError):  # the server has stopped reading
            pass

    def _relay(self, server_out: BinaryIO) -> None:
        dropped = False
        for line in iter(server_out.readline, b""):
            if line == END:
                return
            try:
                msg = json.loads(line)
            except ValueError:  # a stray print in the moments fd 1 is this pipe: never onto the wire
                os.write(2, line)
                continue
            # The server's answer to the replayed initialize: the client has ours (the id is settled by now,
            # the server answers only what it was fed).
            answer = isinstance(msg, dict) and "method" not in msg
            if not dropped and answer and self._init_id is not None and msg.get("id") == self._init_id:
                dropped = True
                continue
            self._send(line)

    def finish(self, timeout: float = 5.0) -> None:
        """After the server stopped: relay its last answers to the client, then let go of the wire."""
        try:
            os.write(1, END)  # fd 1 is the pipe again once the server has let go of it
        except OSError:
            return
        for thread in self._threads:
            if thread.name == "loco-fast-start-relay":
                thread.join(timeout)
        os.dup2(2, 1)
