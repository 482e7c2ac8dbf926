"""`mcp-loco batch --summary DIR`: the totals of an answers folder, read from its index."""

from __future__ import annotations

from pathlib import Path

from mcp_loco.batch.index import Totals, totals
from mcp_loco.batch.outdir import INDEX, OutDir
from mcp_loco.errors import ConfigError


def summarize(out: Path) -> Totals:
    """The totals of `out`'s index; an error when there is no answers folder or index there."""
    if not out.is_dir():
        raise ConfigError(f"--summary {out}: not a directory; give the --out folder of a batch run")
    with OutDir(out) as folder:
        text = folder.read_index()
    if not text.strip():
        raise ConfigError(f"--summary {out}: no {INDEX} there yet; run `mcp-loco batch ... --out {out}` first")
    return totals(text)
