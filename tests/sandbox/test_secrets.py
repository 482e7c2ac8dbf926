"""The secret deny-list holds in every tool: no secret content anywhere, no secret name in any listing."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcp_loco.config import ToolSettings
from mcp_loco.sandbox import Toolbox
from mcp_loco.sandbox.denylist import DenyList

from .conftest import SECRET, Hostile, assert_no_leak, assert_refused

SECRET_NAMES = (
    ".env\n",
    ".ENV.production",
    "credentials",
    "server.pem",
    "id_rsa",
    "prod.tfstate",
    ".npmrc",
    "\uff45\uff4e\uff56",
)

SEARCHES = [
    ("Grep", {"pattern": SECRET}),
    ("Grep", {"pattern": SECRET, "output_mode": "content"}),
    ("Grep", {"pattern": SECRET, "output_mode": "count"}),
    ("Grep", {"pattern": SECRET, "output_mode": "content", "-i": True, "multiline": True}),
    ("Grep", {"pattern": "API_KEY", "output_mode": "content", "glob": ".env*"}),
    ("Grep", {"pattern": SECRET, "glob": "**/.aws/*"}),
    ("Grep", {"pattern": SECRET, "path": "config"}),
    ("Grep", {"pattern": SECRET, "path": "keys"}),
    ("Grep", {"pattern": "BEGIN PRIVATE KEY", "output_mode": "content", "-A": 3}),
    ("Bash", {"command": f"grep -rn {SECRET} ."}),
    ("Bash", {"command": f"grep -rl {SECRET} ."}),
    ("Bash", {"command": f"rg -n {SECRET}"}),
    ("Bash", {"command": f"rg -c {SECRET} --hidden"}),
    ("Bash", {"command": "rg --files"}),
    ("Bash", {"command": "find . -type f"}),
    ("Bash", {"command": "find . -name '.env*'"}),
    ("Bash", {"command": "ls -laR"}),
    ("Bash", {"command": "ls -la config keys deploy infra"}),
    ("Bash", {"command": "tree -a"}),
    ("Bash", {"command": "cat .e*"}),
    ("Bash", {"command": "head -n 5 .*"}),
    ("Glob", {"pattern": "**/*"}),
    ("Glob", {"pattern": "**/.env*"}),
    ("Glob", {"pattern": "**/*.pem"}),
    ("Glob", {"pattern": "**/credentials"}),
    ("Glob", {"pattern": ".*"}),
]


@pytest.mark.parametrize(("name", "args"), SEARCHES, ids=[f"{n}-{a}" for n, a in SEARCHES])
def test_searches_and_listings_never_show_a_secret(hostile: Hostile, name: str, args: dict[str, object]) -> None:
    result = hostile.call(name, args)
    assert_no_leak(result)
    for secret_name in SECRET_NAMES:
        assert secret_name not in result.text + "\n", f"{secret_name!r} listed in {result.text[:300]}"
    assert not any(Path(p).name in {".env", "server.pem", "id_rsa", "credentials"} for p in result.paths)


READS = [
    ".env",
    ".ENV.production",
    ".npmrc",
    "config/.aws/credentials",
    "keys/server.pem",
    "deploy/id_rsa",
    "infra/prod.tfstate",
    "\uff0e\uff45\uff4e\uff56",
    "links/to_secret",
    "links/to_secret_dir/credentials",
    "./src/../.env",
]


@pytest.mark.parametrize("path", READS)
@pytest.mark.parametrize("how", ["Read", "cat", "head", "tail", "wc", "stat", "file", "grep", "sed"])
def test_secret_files_are_refused_by_name(hostile: Hostile, path: str, how: str) -> None:
    if how == "Read":
        result = hostile.call("Read", {"file_path": path})
    else:
        command = {
            "cat": "cat",
            "head": "head -n 3",
            "tail": "tail -n 3",
            "wc": "wc -c",
            "stat": "stat",
            "file": "file",
            "grep": "grep -n .",
            "sed": "sed -n 1p",
        }[how]
        result = hostile.call("Bash", {"command": f"{command} '{path}'"})
    assert_refused(result, "secret file")


def test_listings_leave_secrets_out_without_a_trace(hostile: Hostile) -> None:
    # A count of hidden entries would say that a secret exists (and probe its name): there is none.
    glob = hostile.call("Glob", {"pattern": "**/*.pem"})
    assert glob.text == "No files found"
    ls = hostile.call("Bash", {"command": "ls keys"})
    assert ls.text == f"{hostile.root}/keys:"


def test_allowed_example_file_is_readable_and_listed(hostile: Hostile) -> None:
    assert "changeme" in hostile.call("Read", {"file_path": ".env.example"}).text
    assert f"{hostile.root}/.env.example" in hostile.call("Glob", {"pattern": "**/.env*"}).text
    grep = hostile.call("Grep", {"pattern": "changeme", "output_mode": "content"})
    assert grep.text == f"{hostile.root}/.env.example:1:API_KEY=changeme"


def test_deny_list_is_configurable(fresh: Hostile) -> None:
    open_box = Toolbox(fresh.root, ToolSettings(deny=[], allow=[]))
    assert SECRET in open_box.call("Read", {"file_path": ".env"}).text
    strict = Toolbox(fresh.root, ToolSettings(deny=["*.md", "/src/util/**"], allow=[]))
    assert_refused(strict.call("Read", {"file_path": "README.md"}), "secret file", "*.md")
    assert_refused(strict.call("Read", {"file_path": "src/util/helpers.py"}), "secret file")
    assert strict.call("Read", {"file_path": "src/app.py"}).ok
    assert "README" not in strict.call("Glob", {"pattern": "**/*"}).text


@pytest.mark.parametrize(
    ("rel", "denied"),
    [
        (".env", True),
        ("a/b/.env", True),
        (".ENV", True),
        (".env.local", True),
        (".env.example", False),
        ("sub/.env.example", False),
        ("config/.aws/credentials", True),
        ("config/.aws", True),
        (".awsome/x", False),
        ("x/.ssh/known_hosts", True),
        ("id_rsa.pub", True),
        ("keys/a.PEM", True),
        ("a.pem.txt", False),
        ("secrets.d/x.yml", True),
        (".docker/config.json", True),
        (".docker/other.json", False),
        ("deep/.docker/config.json", True),
        ("prod.tfstate.backup", True),
        ("\uff0e\uff45\uff4e\uff56", True),
        ("src/app.py", False),
        ("envoy/.environment", False),
        ("", False),
    ],
)
def test_default_deny_list(rel: str, denied: bool) -> None:
    settings = ToolSettings()
    assert DenyList(settings.deny, settings.allow).denied(rel) is denied


def test_anchored_and_rg_patterns() -> None:
    deny = DenyList(["/top.txt", "*.key", ".env.*"], [".env.example"])
    assert deny.denied("top.txt") and not deny.denied("sub/top.txt")
    assert deny.rg_excludes() == ["!/top.txt", "!*.key"]  # .env.* overlaps an allow: filtered afterwards only
    assert deny.reason("a/b.key") == "*.key"


def test_a_secret_swapped_in_for_an_allowed_name_is_still_refused(fresh: Hostile) -> None:
    allowed = fresh.root / "notes.txt"
    allowed.unlink()
    allowed.symlink_to(".env")
    assert_refused(fresh.call("Read", {"file_path": "notes.txt"}), "secret file")
    assert_no_leak(fresh.call("Grep", {"pattern": SECRET, "path": "notes.txt", "output_mode": "content"}))
    assert_no_leak(fresh.call("Bash", {"command": "cat notes.txt"}))
