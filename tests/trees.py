"""The suite's one tree writer (imported by the conftests and the tests that build their own trees)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path


def write_tree(root: Path, files: Mapping[str, str | bytes]) -> Path:
    """Create files (parents included) under root; return root."""
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content, encoding="utf-8")
    return root


@contextmanager
def fixed_copy(tree: Path, name: str) -> Iterator[Path]:
    """`tree` copied to the same path every run (a real model's output depends on the root in its prompt)."""
    root = Path(tempfile.gettempdir()) / f"mcp-loco-{name}-{os.getuid()}" / "repo"
    shutil.rmtree(root.parent, ignore_errors=True)
    shutil.copytree(tree, root, symlinks=True)
    try:
        yield root
    finally:
        shutil.rmtree(root.parent, ignore_errors=True)
