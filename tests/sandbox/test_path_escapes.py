"""Every path class from the threat model, through every tool that takes a path: refused, clearly, with no leak."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from mcp_loco.config import ToolSettings
from mcp_loco.errors import RootError
from mcp_loco.sandbox import Toolbox

from .conftest import OUTSIDE, Hostile, assert_no_leak, assert_refused

OUT = "outside the explored root"
LINK_OUT = "leads outside the explored root"

# (id, path template, fragment the refusal must contain)
PATHS = [
    ("dotdot", "../outside/secret.txt", OUT),
    ("dotdot-deep", "src/util/../../../outside/secret.txt", OUT),
    ("dotdot-abs", "{root}/../outside/secret.txt", OUT),
    ("abs-outside", "{outside}/secret.txt", OUT),
    ("etc-passwd", "/etc/passwd", OUT),
    ("sibling-prefix", "{root}_evil/x.txt", OUT),
    ("sibling-prefix-dir", "{root}_evil", OUT),
    ("link-file", "links/to_outside_file", LINK_OUT),
    ("link-file-abs", "links/to_outside_abs", LINK_OUT),
    ("link-dir", "links/to_outside_dir", LINK_OUT),
    ("link-mid-path", "links/to_outside_dir/secret.txt", LINK_OUT),
    ("link-mid-path-deep", "{root}/links/to_outside_dir/dir/inner.txt", LINK_OUT),
    ("link-chain", "links/chain1", LINK_OUT),
    ("link-sneaky-dotdot", "links/sneaky", LINK_OUT),
    ("link-etc", "links/to_etc/passwd", LINK_OUT),
    ("link-evil-prefix", "links/to_root_evil_prefix", LINK_OUT),
    ("link-evil-dir", "links/to_evil/x.txt", LINK_OUT),
    ("link-dev-zero", "links/to_dev_zero", LINK_OUT),
    ("link-proc", "links/to_proc_environ", LINK_OUT),
    ("link-dangling", "links/dangling", "does not exist"),
    ("link-loop", "links/loop_a", "too many levels of symbolic links"),
    ("link-self-loop", "links/self_loop/x", "too many levels of symbolic links"),
    ("tilde", "~/.ssh/id_rsa", "~"),
    ("tilde-user", "~root/.bashrc", "~"),
    ("percent-escape", "%2e%2e/outside/secret.txt", "does not exist"),
    ("percent-slash", "..%2f..%2foutside%2fsecret.txt", "does not exist"),
    ("fullwidth-dots", "\uff0e\uff0e/outside/secret.txt", "does not exist"),
    ("secret", ".env", "secret"),
    ("secret-abs", "{root}/.env", "secret"),
    ("secret-casefold", ".ENV.production", "secret"),
    ("secret-fullwidth", "\uff0e\uff45\uff4e\uff56", "secret"),
    ("secret-nested-dir", "config/.aws/credentials", "secret"),
    ("secret-dir", "config/.aws", "secret"),
    ("secret-via-link", "links/to_secret", "secret"),
    ("secret-dir-via-link", "links/to_secret_dir/credentials", "secret"),
    ("secret-via-dotdot", "src/../keys/server.pem", "secret"),
]


def _tools(path: str) -> dict[str, tuple[str, dict[str, object]]]:
    q = shlex.quote(path)
    return {
        "Read": ("Read", {"file_path": path}),
        "Grep": ("Grep", {"pattern": "CANARY", "path": path, "output_mode": "content"}),
        "Glob": ("Glob", {"pattern": "**/*", "path": path}),
        "cat": ("Bash", {"command": f"cat {q}"}),
        "head": ("Bash", {"command": f"head -n 5 {q}"}),
        "ls": ("Bash", {"command": f"ls -la {q}"}),
        "find": ("Bash", {"command": f"find {q} -type f"}),
        "grep-r": ("Bash", {"command": f"grep -rn CANARY {q}"}),
        "wc": ("Bash", {"command": f"wc -l {q}"}),
        "stat": ("Bash", {"command": f"stat {q}"}),
        "tree": ("Bash", {"command": f"tree {q}"}),
    }


TOOL_IDS = list(_tools("x"))


@pytest.mark.parametrize("tool", TOOL_IDS)
@pytest.mark.parametrize(("template", "fragment"), [(t, f) for _, t, f in PATHS], ids=[i for i, _, _ in PATHS])
def test_bad_path_is_refused_by_every_tool(hostile: Hostile, tool: str, template: str, fragment: str) -> None:
    path = template.format(root=hostile.root, outside=hostile.outside)
    name, args = _tools(path)[tool]
    assert_refused(hostile.call(name, args), fragment)


@pytest.mark.parametrize(
    ("name", "args", "fragment"),
    [
        ("Read", {"file_path": "README.md\x00.txt"}, "NUL byte"),
        ("Read", {"file_path": "/etc/passwd\x00"}, "NUL byte"),
        ("Grep", {"pattern": "x", "path": "src\x00/../../outside"}, "NUL byte"),
        ("Glob", {"pattern": "*", "path": "src\x00"}, "NUL byte"),
        ("Glob", {"pattern": "src\x00/*"}, "NUL byte"),
        ("Bash", {"command": "cat README.md\x00/etc/passwd"}, "control characters"),
        ("Read", {"file_path": "a/" * 3000}, "too long"),
        ("Read", {"file_path": "x" * 300}, "longer than 255 bytes"),
        ("Grep", {"pattern": "x", "path": "d/" * 2100}, "too long"),
        ("Bash", {"command": "cat " + "x" * 300}, "longer than 255 bytes"),
        ("Read", {"file_path": "\ud800.txt"}, "not valid Unicode"),
        ("Read", {"file_path": ""}, "empty"),
        ("Read", {"file_path": "   "}, "empty"),
    ],
)
def test_malformed_paths_are_refused(hostile: Hostile, name: str, args: dict[str, object], fragment: str) -> None:
    assert_refused(hostile.call(name, args), fragment)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("links/inside_file", "# hostile"),
        ("links/inside_abs", "return 42"),
        ("links/inside_dir/app.py", "return 42"),
        ("links/chain_in1", "line two"),
        ("links/root_loop/README.md", "# hostile"),
        ("links/dir_loop/dir_loop/dir_loop/inside_file", "# hostile"),
        ("src/../README.md", "# hostile"),
        ("{root}/src/./util/../app.py", "return 42"),
        ("%2e%2e/literal.txt", "just a name"),
        (".env.example", "changeme"),
    ],
)
def test_links_and_names_that_stay_inside_are_read(hostile: Hostile, path: str, expected: str) -> None:
    result = hostile.call("Read", {"file_path": path.format(root=hostile.root)})
    assert result.ok, result.text
    assert expected in result.text
    assert all(p.startswith(str(hostile.root) + "/") for p in result.paths)


def test_read_through_an_inside_link_reports_the_resolved_absolute_path(hostile: Hostile) -> None:
    result = hostile.call("Read", {"file_path": "links/inside_dir/app.py"})
    assert result.paths == (f"{hostile.root}/src/app.py",)
    assert result.lines == {f"{hostile.root}/src/app.py": (1, 2)}


@pytest.mark.parametrize(
    "command",
    ["cat hard_out.txt", "head hard_out.txt", "tail hard_out.txt", "wc -c hard_out.txt", "grep -n CANARY hard_out.txt"],
)
def test_hard_linked_file_content_is_refused(hostile: Hostile, command: str) -> None:
    assert_refused(hostile.call("Bash", {"command": command}), "hard link")


def test_hard_linked_file_is_refused_by_read_and_grep(hostile: Hostile) -> None:
    assert_refused(hostile.call("Read", {"file_path": "hard_out.txt"}), "2 hard links", "outside the explored root")
    assert_refused(hostile.call("Grep", {"pattern": "CANARY", "path": "hard_out.txt"}), "hard link")
    grep_all = hostile.call("Grep", {"pattern": OUTSIDE[:10], "output_mode": "content"})
    assert grep_all.ok
    assert "hard_out" not in grep_all.text


def test_hard_links_can_be_allowed_by_setting(fresh: Hostile) -> None:
    tb = Toolbox(fresh.root, ToolSettings(allow_hard_links=True))
    assert OUTSIDE in tb.call("Read", {"file_path": "hard_out.txt"}).text


def test_glob_pattern_cannot_leave_the_root(hostile: Hostile) -> None:
    assert_refused(hostile.call("Glob", {"pattern": "../outside/*"}), "'..'")
    assert_refused(hostile.call("Glob", {"pattern": f"{hostile.outside}/*"}), OUT)
    assert_refused(hostile.call("Glob", {"pattern": "/etc/*"}), OUT)
    assert_refused(hostile.call("Glob", {"pattern": "~/*"}), "~")
    assert_refused(hostile.call("Glob", {"pattern": "links/to_outside_dir/*"}), LINK_OUT)


def test_glob_with_absolute_pattern_inside_the_root(hostile: Hostile) -> None:
    result = hostile.call("Glob", {"pattern": f"{hostile.root}/src/*.py"})
    assert result.text.splitlines() == [f"{hostile.root}/src/app.py"]


@pytest.mark.parametrize("command", ["cat ../*", "cat /etc/*", "ls ../outside/*", "head links/to_outside_dir/*"])
def test_bash_wildcards_are_expanded_inside_the_root_only(hostile: Hostile, command: str) -> None:
    assert_refused(hostile.call("Bash", {"command": command}), "outside the explored root")


@pytest.mark.parametrize(
    "root",
    ["/", "/proc", "/proc/self", "/sys", "/dev", "/dev/shm"],
)
def test_too_wide_or_pseudo_roots_are_refused(root: str) -> None:
    if not Path(root).is_dir():
        pytest.skip(f"{root} does not exist here")
    with pytest.raises(RootError):
        Toolbox(root)


def test_home_and_its_parents_are_refused_as_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home" / "user"
    home.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(RootError, match="home directory"):
        Toolbox(home)
    with pytest.raises(RootError, match="home directory"):
        Toolbox(tmp_path / "home")
    (home / "project").mkdir()
    assert Toolbox(home / "project").root == str(home / "project")


@pytest.mark.parametrize("root", ["", "does/not/exist", "README.md", "a\x00b"])
def test_bad_roots_are_refused(hostile: Hostile, root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(hostile.root)
    with pytest.raises(RootError):
        Toolbox(root)


def test_root_given_through_a_link_is_resolved(hostile: Hostile, tmp_path: Path) -> None:
    link = tmp_path / "root_link"
    link.symlink_to(hostile.root)
    tb = Toolbox(link)
    assert tb.root == str(hostile.root)
    # Paths spelled with the link are accepted and shown resolved.
    result = tb.call("Read", {"file_path": f"{link}/src/app.py"})
    assert result.ok
    assert result.paths == (f"{hostile.root}/src/app.py",)
    assert_no_leak(tb.call("Read", {"file_path": f"{link}/../outside/secret.txt"}))
