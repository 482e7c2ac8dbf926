"""One JSONL file per exploration: prompt deltas, raw outputs, tool calls and results, timings."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from mcp_loco.interfaces import Segment
from mcp_loco.model.protocol import prompt_text


class Transcript:
    """Appends events to a JSONL file; the replay backend plays its `completion` events back."""

    def __init__(self, path: Path, stream: IO[str]) -> None:
        self.path = path
        self._stream = stream
        self._sent = ""
        self._lock = threading.Lock()

    @classmethod
    def open(cls, directory: str, root: str, question: str) -> Transcript:
        """Create a new transcript file in `directory`."""
        folder = Path(directory).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        slug = re.sub(r"[^A-Za-z0-9]+", "-", question)[:40].strip("-").lower() or "run"
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = folder / f"{stamp}-{time.monotonic_ns() % 10**6:06d}-{slug}.jsonl"
        return cls(path, path.open("w", encoding="utf-8"))

    def event(self, kind: str, **fields: Any) -> None:
        """Write one event."""
        record = {"event": kind, "time": round(time.time(), 3), **fields}
        with self._lock:
            self._stream.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
            self._stream.flush()

    def prompt(self, prompt: Sequence[Segment]) -> None:
        """Write what the prompt adds since the last one (the whole text when it is not an extension)."""
        text = prompt_text(prompt)
        delta, reset = (text[len(self._sent) :], False) if text.startswith(self._sent) else (text, True)
        self._sent = text
        self.event("prompt", text=delta, reset=reset)

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._stream.close()
