"""End to end: `mcp-loco tool NAME JSON --root DIR` prints exactly what the model would see."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .conftest import OUTSIDE, Hostile

MCP_LOCO = Path(sys.executable).parent / "mcp-loco"


def _tool(root: Path, name: str, arguments: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MCP_LOCO), "tool", name, json.dumps(arguments), "--root", str(root)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_read_prints_numbered_lines_and_exits_0(hostile: Hostile) -> None:
    done = _tool(hostile.root, "Read", {"file_path": "notes.txt", "limit": 2})
    assert done.returncode == 0, done.stderr
    assert done.stdout == "     1\tline one\n     2\tline two\n... 1 more lines; use offset=3 to read on\n"


def test_escape_prints_the_refusal_and_exits_1(hostile: Hostile) -> None:
    done = _tool(hostile.root, "Read", {"file_path": "links/to_outside_file"})
    assert done.returncode == 1
    assert "leads outside the explored root" in done.stdout
    assert OUTSIDE not in done.stdout + done.stderr


def test_grep_and_bash_end_to_end(hostile: Hostile) -> None:
    grep = _tool(hostile.root, "Grep", {"pattern": "def main", "output_mode": "content"})
    assert grep.returncode == 0
    assert grep.stdout == f"{hostile.root}/src/app.py:1:def main():\n"
    bash = _tool(hostile.root, "Bash", {"command": "cat README.md | sort"})
    assert bash.returncode == 1
    assert "pipes (|) are not supported" in bash.stdout
    write = _tool(hostile.root, "Write", {"file_path": "x", "content": "y"})
    assert write.returncode == 1 and "read-only explorer" in write.stdout
