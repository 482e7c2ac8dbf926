"""The tools on a real tree: this interpreter's standard library."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import pytest

from mcp_loco.sandbox import Toolbox

STDLIB = Path(sysconfig.get_paths()["stdlib"]).resolve()


@pytest.fixture(scope="module")
def stdlib() -> Toolbox:
    """A Toolbox on the standard library directory."""
    return Toolbox(STDLIB)


def test_grep_finds_the_dataclass_decorator(stdlib: Toolbox) -> None:
    found = stdlib.call("Grep", {"pattern": "^def dataclass\\(", "glob": "*.py"})
    assert found.ok
    assert str(STDLIB / "dataclasses.py") in found.text.splitlines()
    content = stdlib.call("Grep", {"pattern": "^def dataclass\\(", "path": "dataclasses.py", "output_mode": "content"})
    line = content.text.splitlines()[0]
    assert line.startswith(f"{STDLIB}/dataclasses.py:") and ":def dataclass(" in line


def test_glob_lists_the_json_package(stdlib: Toolbox) -> None:
    result = stdlib.call("Glob", {"pattern": "**/json/*.py"})
    shown = result.text.splitlines()
    for name in ("__init__.py", "decoder.py", "encoder.py", "scanner.py"):
        assert str(STDLIB / "json" / name) in shown
    assert all(Path(p).is_absolute() for p in result.paths)


def test_read_a_real_file_with_offset(stdlib: Toolbox) -> None:
    expected = (STDLIB / "json" / "__init__.py").read_text().splitlines()
    result = stdlib.call("Read", {"file_path": str(STDLIB / "json" / "__init__.py"), "offset": 100, "limit": 5})
    lines = result.text.splitlines()
    assert lines[:5] == [f"{n:>6}\t{expected[n - 1]}" for n in range(100, 105)]
    assert lines[5] == f"... {len(expected) - 104} more lines; use offset=105 to read on"
    assert result.lines == {str(STDLIB / "json" / "__init__.py"): (100, 104)}


def test_bash_on_the_standard_library(stdlib: Toolbox) -> None:
    wc = stdlib.call("Bash", {"command": "wc -l json/__init__.py"})
    count = len((STDLIB / "json" / "__init__.py").read_text().splitlines())
    assert wc.text == f"{count} {STDLIB}/json/__init__.py"
    find = stdlib.call("Bash", {"command": "find json -maxdepth 1 -name '*.py'"})
    assert f"{STDLIB}/json/decoder.py" in find.text.splitlines()
    grep = stdlib.call("Bash", {"command": "grep -rn 'def loads' json --include=*.py"})
    assert grep.text.startswith(f"{STDLIB}/json/__init__.py:")
