"""Property-based tests of the path layer: random paths of .., /, names and links never escape, never crash."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcp_loco.config import ToolSettings
from mcp_loco.sandbox.bash_parse import tokenize
from mcp_loco.sandbox.denylist import DenyList
from mcp_loco.sandbox.globbing import GlobMatcher
from mcp_loco.sandbox.limits import ToolFailure
from mcp_loco.sandbox.paths import PathError

from .conftest import CANARIES, Hostile, assert_no_leak

NAMES = [
    "..",
    ".",
    "",
    "src",
    "util",
    "app.py",
    "links",
    "to_outside_dir",
    "to_outside_file",
    "to_outside_abs",
    "inside_dir",
    "inside_file",
    "dir_loop",
    "root_loop",
    "loop_a",
    "chain1",
    "sneaky",
    "to_etc",
    "to_secret",
    "passwd",
    "README.md",
    "secret.txt",
    "outside",
    "root_evil",
    "root",
    "\uff0e\uff0e",
    "%2e%2e",
    "~",
    ".env",
]
PROFILE = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def hostile_paths(draw: st.DrawFn, root: Path) -> str:
    parts = draw(st.lists(st.sampled_from(NAMES), max_size=12))
    prefix = draw(st.sampled_from(["", "/", f"{root}/", f"{root.parent}/", f"{root}_evil/", "./"]))
    return prefix + "/".join(parts)


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root + "/")


@PROFILE
@given(data=st.data())
def test_open_never_escapes_and_never_crashes(hostile: Hostile, data: st.DataObject) -> None:
    root = hostile.tb.context.root
    path = data.draw(hostile_paths(hostile.root))
    try:
        handle = hostile.tb.context.open(path)
    except PathError:
        return
    with handle:
        assert _within(handle.path, root.path)
        if handle.fd >= 0:
            real = os.path.realpath(f"/proc/self/fd/{handle.fd}")
            assert _within(real, root.path), (path, real)
        if handle.is_file:
            content = os.pread(handle.fd, 1 << 16, 0).decode("utf-8", "replace")
            assert not any(c in content for c in CANARIES), path


@PROFILE
@given(data=st.data())
def test_tools_never_raise_or_leak_on_random_paths(hostile: Hostile, data: st.DataObject) -> None:
    path = data.draw(hostile_paths(hostile.root))
    quoted = "'" + path.replace("'", "'\\''") + "'"
    tool = data.draw(st.sampled_from(["Read", "cat", "ls", "head", "wc", "stat", "find"]))
    if tool == "Read":
        result = hostile.tb.call("Read", {"file_path": path})
    else:
        command = {"cat": "cat", "ls": "ls -la", "head": "head -n 3", "wc": "wc", "stat": "stat", "find": "find"}[tool]
        result = hostile.tb.call("Bash", {"command": f"{command} {quoted}"})
    assert_no_leak(result)
    assert all(_within(p, str(hostile.root)) for p in result.paths)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_search_tools_never_leak_on_random_paths(hostile: Hostile, data: st.DataObject) -> None:
    path = data.draw(hostile_paths(hostile.root))
    tool = data.draw(st.sampled_from(["Grep", "Glob"]))
    if tool == "Grep":
        result = hostile.tb.call("Grep", {"pattern": "CANARY|root", "path": path, "output_mode": "content"})
    else:
        result = hostile.tb.call("Glob", {"pattern": "**/*", "path": path})
    assert_no_leak(result)
    assert all(_within(p, str(hostile.root)) for p in result.paths)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=200))
def test_tokenizer_only_raises_tool_errors(command: str) -> None:
    try:
        words = tokenize(command)
    except ToolFailure:
        return
    assert words


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab*?/[]!{},.", max_size=40), st.text(alphabet="ab/.", max_size=60))
def test_glob_matching_is_total_and_quick(pattern: str, path: str) -> None:
    try:
        matcher = GlobMatcher(pattern)
    except ToolFailure:
        return
    matcher.match(path.strip("/") or "a")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_deny_list_is_total(rel: str) -> None:
    settings_ = ToolSettings()
    DenyList(settings_.deny, settings_.allow).denied(rel)
