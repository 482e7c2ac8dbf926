"""`mcp-loco` with a slow scripted model: run as `python slow_serve.py serve --transport http ...`.

Every generation takes LOCO_TEST_TURN_S seconds, honours cancel like a real backend (checked every 5 ms),
and calls Glob again, so a call lasts until its turn budget. Each generation that starts or is stopped is
logged (`generation started` / `generation stopped`), so a test can tell when the model was let go.
"""

from __future__ import annotations

import os
import sys
import threading

import structlog

from mcp_loco import cli
from mcp_loco.config import Settings
from mcp_loco.interfaces import Completion, GenerateOptions, Prompt
from mcp_loco.model import pool
from mcp_loco.model.backends.replay import ReplayModel
from mcp_loco.model.protocol import format_call

log = structlog.get_logger("slow_serve")


class SlowModel(ReplayModel):
    """Calls Glob on every turn; each generation takes `delay` seconds unless cancelled (the package's delay)."""

    def __init__(self, delay: float) -> None:
        super().__init__([format_call("Glob", {"pattern": "**/*.py"})] * 10_000, delay=delay)

    def complete(self, prompt: Prompt, options: GenerateOptions, cancel: threading.Event | None = None) -> Completion:
        log.info("generation started")
        completion = super().complete(prompt, options, cancel)
        if completion.finish_reason == "cancelled":
            log.info("generation stopped")
        return completion


def _load(settings: Settings) -> SlowModel:
    return SlowModel(float(os.environ.get("LOCO_TEST_TURN_S", "0.2")))


pool.load_instance = _load  # every slot of the server's pool loads this model

if __name__ == "__main__":
    sys.exit(cli.main())
