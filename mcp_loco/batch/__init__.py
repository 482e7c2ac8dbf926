"""`mcp-loco batch`: many explorations at once, answers and an index written only inside `--out`."""

from __future__ import annotations

from mcp_loco.batch.queries import read_queries
from mcp_loco.batch.run import Summary, render_answer, run_batch
from mcp_loco.batch.summary import summarize

__all__ = ["Summary", "read_queries", "render_answer", "run_batch", "summarize"]
