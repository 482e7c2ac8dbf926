"""Check-then-open races: a thread swaps links in and out while the tools read; the outside canary never shows."""

from __future__ import annotations

import ctypes
import random
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from mcp_loco.config import ToolSettings
from mcp_loco.interfaces import ToolResult
from mcp_loco.sandbox import Toolbox, grep_passes
from mcp_loco.sandbox import context as context_module
from mcp_loco.sandbox.landlock import ConfinedSpawner, abi_version, confined_spawner
from mcp_loco.sandbox.ripgrep import RgRun, find_rg, run_rg

from .conftest import OUTSIDE, write_tree

RENAME_EXCHANGE = 2
AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> None:
    """Atomically swap two directory entries (renameat2 RENAME_EXCHANGE): the swap an attacker would use."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(AT_FDCWD, bytes(a), AT_FDCWD, bytes(b), RENAME_EXCHANGE) != 0:
        raise OSError(ctypes.get_errno(), "renameat2")


@pytest.fixture
def race_tree(tmp_path: Path) -> Path:
    """root/race/{target (file), dir/ (real dir)} and, beside them, links of the same shape leading outside."""
    write_tree(tmp_path / "outside", {"f": f"{OUTSIDE} line\n", f"{OUTSIDE}_name.txt": "x\n"})
    root = write_tree(
        tmp_path / "root", {"race/target": "SAFE line\n", "race/dir/f": "SAFE line\n", "README.md": "hi\n"}
    )
    (root / "race" / "evil_file").symlink_to(tmp_path / "outside" / "f")
    (root / "race" / "evil_dir").symlink_to("../../outside")
    try:
        _exchange(root / "race" / "target", root / "race" / "evil_file")
        _exchange(root / "race" / "target", root / "race" / "evil_file")
    except (OSError, AttributeError):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available here")
    return root


@contextmanager
def swapping(root: Path) -> Iterator[list[int]]:
    """Swap race/target with a link to an outside file, and race/dir with a link to an outside dir, nonstop."""
    stop = threading.Event()
    swaps = [0]

    def run() -> None:
        race = root / "race"
        pause = random.Random(7)
        while not stop.is_set():
            _exchange(race / "target", race / "evil_file")
            _exchange(race / "dir", race / "evil_dir")
            swaps[0] += 1
            # Mostly back to back; now and then a short rest, so both states also last long enough to be seen.
            if swaps[0] % 4 == 0:
                time.sleep(pause.uniform(0, 0.002))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield swaps
    finally:
        stop.set()
        thread.join()


def _hammer(call: Callable[[], ToolResult], times: int, marker: str = "SAFE line") -> int:
    """Call repeatedly during the swaps; how many results showed the in-root `marker`. Fails on any leak."""
    shown = 0
    for _ in range(times):
        result = call()
        assert OUTSIDE not in result.text, result.text
        shown += marker in result.text
    return shown


@pytest.mark.parametrize(
    ("name", "args", "times", "marker"),
    [
        ("Read", {"file_path": "race/target"}, 1500, "SAFE line"),
        ("Read", {"file_path": "race/dir/f"}, 1500, "SAFE line"),
        ("Bash", {"command": "cat race/target race/dir/f"}, 600, "SAFE line"),
        ("Bash", {"command": "head -n 1 race/target"}, 600, "SAFE line"),
        ("Bash", {"command": "tail -n 1 race/dir/f"}, 600, "SAFE line"),
        ("Bash", {"command": "sed -n 1p race/dir/f"}, 600, "SAFE line"),
        ("Bash", {"command": "ls -la race race/dir"}, 300, "race/dir:"),
        ("Bash", {"command": "find race"}, 300, "race/dir/f"),
        ("Bash", {"command": "tree race"}, 300, "── f"),
        ("Grep", {"pattern": "line", "path": "race/target", "output_mode": "content"}, 100, "SAFE line"),
        ("Grep", {"pattern": "line", "path": "race/dir", "output_mode": "content"}, 100, "SAFE line"),
    ],
)
def test_swapped_links_never_leak(race_tree: Path, name: str, args: dict[str, object], times: int, marker: str) -> None:
    tb = Toolbox(race_tree)
    with swapping(race_tree) as swaps:
        shown = _hammer(lambda: tb.call(name, args), times, marker)
    assert swaps[0] > 0
    assert shown > 0, "the race never let the in-root entry through: the test did not exercise it"


@pytest.mark.parametrize("landlock", [True, False])
@pytest.mark.parametrize("mode", ["content", "files_with_matches", "count"])
def test_ripgrep_walk_race_never_leaks(
    race_tree: Path, landlock: bool, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # rg walks by name, so it may enter race/dir just as it becomes a link; pass 2 (descriptors) and, where
    # available, Landlock make sure nothing it read there is shown.
    tb = Toolbox(race_tree, ToolSettings(landlock=landlock))
    args = {"pattern": f"SAFE|{OUTSIDE}", "path": "race", "output_mode": mode}
    exposed = [0]

    def spy(*a: Any, **k: Any) -> RgRun:
        run = run_rg(*a, **k)
        exposed[0] += OUTSIDE.encode() in run.stdout
        return run

    monkeypatch.setattr(grep_passes, "run_rg", spy)
    monkeypatch.setattr(context_module, "run_rg", spy)  # pass 1 lists files through ToolContext.rg_paths
    with swapping(race_tree):
        for _ in range(40):
            result = tb.call("Grep", args)
            assert OUTSIDE not in result.text
            if mode == "files_with_matches":
                assert all(p.startswith(str(race_tree)) for p in result.paths)
    spawn = tb.context.spawn
    if landlock and isinstance(spawn, ConfinedSpawner) and spawn.works():
        assert exposed[0] == 0, "under Landlock, rg itself must never read outside the root"


def test_glob_race_never_lists_outside_names(race_tree: Path) -> None:
    tb = Toolbox(race_tree)
    with swapping(race_tree):
        _hammer(lambda: tb.call("Glob", {"pattern": "**/*", "path": "race"}), 60)
        _hammer(lambda: tb.call("Bash", {"command": "rg --files race"}), 40)


@pytest.mark.skipif(abi_version() < 1, reason="Landlock is not available on this kernel")
def test_landlock_keeps_ripgrep_inside_the_root(race_tree: Path) -> None:
    rg = find_rg("")
    spawner = confined_spawner(str(race_tree), rg)
    assert spawner is not None and spawner.works()
    outside = race_tree.parent / "outside" / "f"

    def start(args: list[str]) -> Callable[[], subprocess.Popen[bytes]]:
        return lambda: subprocess.Popen(
            [rg, "--no-config", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=race_tree,
        )

    leak = spawner(start(["-e", "CANARY", str(outside)]))
    out, err = leak.communicate(timeout=10)
    assert OUTSIDE.encode() not in out
    assert b"Permission denied" in err
    inside = spawner(start(["-e", "SAFE", "race/dir/f"]))
    assert b"SAFE line" in inside.communicate(timeout=10)[0]
    # The thread that started rg was confined, the caller's thread is not.
    assert OUTSIDE in outside.read_text()
