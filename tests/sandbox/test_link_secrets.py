"""A link to a secret tells nothing: refused by the target's name, the same whether the secret exists or not.

Each test builds one tree of links, asks every tool and program about every link with the secrets
absent, then adds the secrets (the directories' times put back) and asks again: the answers must be
byte-identical, refusals, and no listing may name what lies inside a denied folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from trees import write_tree

from mcp_loco.config import ToolSettings
from mcp_loco.explore.quotes import check_quotes
from mcp_loco.explore.report import check_report
from mcp_loco.sandbox import Toolbox, path_oracle

CANARY = "CANARY_LINKED_SECRET_7c0d"
INNER = "sso_cache_token"
"""A name inside the denied folder: no answer may ever contain it."""

PLAIN = {"README.md": "# readme\nx marks\n", "src/app.py": "x = 1\n", "sub/keep.txt": "x\n", "outside_note": "x\n"}
SECRETS = {
    ".env.local": f"KEY={CANARY}\n",
    ".env.prod": f"KEY={CANARY}\n",
    f".aws/{INNER}": f"{CANARY}\n",
    ".aws/credentials": f"x {CANARY}\n",
    f"config/.aws/{INNER}": f"{CANARY}\n",
    "secrets/token.txt": f"x {CANARY}\n",
    ".gem/credentials": f"x {CANARY}\n",
}
LINKS = {
    "links/env": "../.env.local",
    "links/env_prod": "../.env.prod",
    "links/env_abs": "{root}/.env.local",
    "links/cred": "../.aws/credentials",
    "links/aws": "../.aws",
    "links/aws_abs": "{root}/.aws",
    "links/deep_aws": "../config/.aws",
    "links/chain1": "chain2",
    "links/chain2": "chain3",
    "links/chain3": "../.env.local",
    "links/dir_chain": "aws",  # a link to a link to the denied folder
    "links/via_link": "aws/credentials",  # a link in the middle of the target
    "links/through": "../.aws/../README.md",  # passes through the denied folder on the way
    "links/loop": "../.aws/../links/loop",  # a loop, through the denied folder
    "links/secrets_dir": "../secrets",
    "links/token": "../secrets/token.txt",
    "links/gem": "../.gem",
    "sub/up": "..",  # a link in mid-path: sub/up/links/env
    # Links that lead nowhere a secret is: out of the root, dangling, looping.
    "links/out": "../../outside/.env",
    "links/out_abs": "{outside}/notes",
    "links/dangling": "nothere.txt",
    "links/self": "self",
}
OUTSIDE = {".env": f"{CANARY}\n", "notes": f"{CANARY}\n"}
"""Written next to the root with the secrets: a link out of the root must not tell that they exist either."""
PROBES = [
    "links/env",
    "links/env_prod",
    "links/env_abs",
    "links/cred",
    "links/aws",
    "links/aws/",
    "links/aws/credentials",
    "links/aws/nothere",
    f"links/aws/{INNER}",
    "links/aws_abs/credentials",
    "links/aws_abs/nothere",
    "links/deep_aws",
    f"links/deep_aws/{INNER}",
    "links/deep_aws/nothere",
    "links/chain1",
    "links/dir_chain",
    "links/dir_chain/credentials",
    "links/dir_chain/nothere",
    "links/via_link",
    "links/through",
    "links/loop",
    "links/aws/../README.md",
    "links/secrets_dir",
    "links/secrets_dir/token.txt",
    "links/secrets_dir/nothere.txt",
    "links/token",
    "links/gem/credentials",
    "sub/up/links/env",
    "sub/up/links/aws/credentials",
    "sub/up/links/aws/nothere",
    "links/out",
    "links/out_abs",
    "links/out/x",
    "links/dangling",
    "links/self",
]
PROGRAMS = [
    "cat",
    "head -n 1",
    "tail -n 1",
    "wc -l",
    "ls",
    "ls -la",
    "ls -R",
    "tree -a",
    "find",
    "find -name '*'",
    "stat",
    "file",
    "sed -n 1p",
    "grep -r x",
    "egrep -r x",
    "fgrep -r x",
    "rg x",
    "find links -newer",
]


def calls(path: str) -> list[tuple[str, dict[str, object]]]:
    """Every tool and program asked about `path` (absolute), and about the names below it."""
    out: list[tuple[str, dict[str, object]]] = [
        ("Read", {"file_path": path}),
        ("Grep", {"pattern": "x", "path": path}),
        ("Grep", {"pattern": "x", "path": path, "output_mode": "content"}),
        ("Grep", {"pattern": "x", "path": path, "output_mode": "count"}),
        ("Glob", {"pattern": "*", "path": path}),
        ("Glob", {"pattern": "**/*", "path": path}),
        ("LS", {"path": path}),
    ]
    out += [("Bash", {"command": f"{program} {path}"}) for program in PROGRAMS]
    out += [("Bash", {"command": f"{program} {path}/*"}) for program in ("ls", "cat", "head -n 1", "wc -l")]
    out += [("Bash", {"command": f"ls {path}/c* {path}/.*"})]
    return out


def build(base: Path) -> Path:
    """The plain files and the links (no secret yet): the root."""
    root = write_tree(base / "root", PLAIN)
    for rel, target in LINKS.items():
        link = root / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target.format(root=root, outside=base / "outside"))
    return root


@contextmanager
def kept_times(root: Path) -> Iterator[None]:
    """Put back every directory's times after the block (adding a secret must not show in `ls -l`)."""
    dirs = [d for d in [root, *root.rglob("*")] if d.is_dir() and not d.is_symlink()]
    times = {d: (d.stat().st_atime_ns, d.stat().st_mtime_ns) for d in dirs}
    yield
    for d, ns in times.items():
        os.utime(d, ns=ns, follow_symlinks=False)


def add_secrets(root: Path, secrets: dict[str, str]) -> None:
    """Write the secrets into the tree (and next to it), leaving the times of the directories that were there."""
    with kept_times(root):
        write_tree(root, secrets)
        write_tree(root.parent / "outside", OUTSIDE)


def ask(root: Path, path: str) -> list[tuple[str, bool, str]]:
    """(call, ok, text) of every call about `path`, through a fresh Toolbox."""
    tb = Toolbox(root, ToolSettings())
    try:
        out = []
        for name, args in calls(f"{root}/{path}"):
            result = tb.call(name, args)
            out.append((f"{name} {args}", result.ok, result.text))
        return out
    finally:
        tb.close()


@pytest.mark.parametrize("path", PROBES)
def test_a_link_answers_the_same_whether_the_secret_exists(tmp_path: Path, path: str) -> None:
    root = build(tmp_path)
    absent = ask(root, path)
    add_secrets(root, SECRETS)
    present = ask(root, path)
    for (call, ok, text), (_, ok_before, text_before) in zip(present, absent, strict=True):
        assert CANARY not in text and INNER not in text.replace(path, ""), f"{call} leaked: {text[:400]}"
        assert (ok, text) == (ok_before, text_before), f"{call} tells that the secret exists:\n{text_before}\n{text}"
        assert not ok, f"{call} was answered through a link to a secret: {text[:300]}"


@pytest.mark.parametrize("path", PROBES)
def test_a_link_answers_the_same_whether_the_denied_folder_exists(tmp_path: Path, path: str) -> None:
    # The folder is there but holds nothing yet: against a tree with no folder at all.
    root = build(tmp_path)
    absent = ask(root, path)
    with kept_times(root):
        for folder in (".aws", "config/.aws", "secrets", ".gem"):
            (root / folder).mkdir(parents=True, exist_ok=True)
    assert ask(root, path) == absent


@pytest.mark.parametrize(
    ("existing", "missing"),
    [
        ("links/aws/credentials", "links/aws/nothere"),
        (f"links/aws/{INNER}", "links/aws/nothere"),
        ("links/aws_abs/credentials", "links/aws_abs/nothere"),
        (f"links/deep_aws/{INNER}", "links/deep_aws/nothere"),
        ("links/dir_chain/credentials", "links/dir_chain/nothere"),
        ("sub/up/links/aws/credentials", "sub/up/links/aws/nothere"),
        ("links/secrets_dir/token.txt", "links/secrets_dir/nothere.txt"),
    ],
)
def test_names_inside_a_linked_denied_folder_cannot_be_told_apart(tmp_path: Path, existing: str, missing: str) -> None:
    root = build(tmp_path)
    add_secrets(root, SECRETS)
    # The answers name the path asked about, so each is read with that name taken out.
    there = [(c.replace(existing, "P"), ok, t.replace(existing, "P")) for c, ok, t in ask(root, existing)]
    not_there = [(c.replace(missing, "P"), ok, t.replace(missing, "P")) for c, ok, t in ask(root, missing)]
    assert there == not_there


@pytest.mark.parametrize(
    ("link", "direct"),
    [
        ("links/env", ".env.local"),
        ("links/env_prod", ".env.prod"),
        ("links/env_abs", ".env.local"),
        ("links/chain1", ".env.local"),
        ("links/cred", ".aws/credentials"),
        ("links/aws", ".aws"),
        ("links/aws/credentials", ".aws/credentials"),
        ("links/aws/nothere", ".aws/nothere"),
        ("links/via_link", ".aws/credentials"),
        ("links/gem/credentials", ".gem/credentials"),
        ("links/token", "secrets/token.txt"),
        ("sub/up/links/env", ".env.local"),
    ],
)
@pytest.mark.parametrize("exists", [True, False], ids=["secret-there", "secret-missing"])
def test_a_link_is_refused_with_the_words_of_the_name_spelled_directly(
    tmp_path: Path, link: str, direct: str, exists: bool
) -> None:
    root = build(tmp_path)
    if exists:
        add_secrets(root, SECRETS)
    through_link = [(ok, t.replace(f"{root}/{link}", "P")) for _, ok, t in ask(root, link)]
    spelled = [(ok, t.replace(f"{root}/{direct}", "P")) for _, ok, t in ask(root, direct)]
    assert through_link == spelled


def test_listings_never_name_what_a_linked_denied_folder_holds(tmp_path: Path) -> None:
    root = build(tmp_path)
    add_secrets(root, SECRETS)
    tb = Toolbox(root, ToolSettings())
    listings: list[tuple[str, dict[str, object]]] = [
        ("Bash", {"command": f"ls -laR {root}"}),
        ("Bash", {"command": f"ls -la {root}/links"}),
        ("Bash", {"command": f"tree -a {root}"}),
        ("Bash", {"command": f"find {root}"}),
        ("Bash", {"command": f"find {root}/links {root}/sub -name '*'"}),
        ("Bash", {"command": f"ls {root}/links/*/*"}),
        ("Bash", {"command": f"ls {root}/*/*/*"}),
        ("Bash", {"command": f"grep -rn x {root}"}),
        ("Bash", {"command": f"rg -n --hidden x {root}"}),
        ("Bash", {"command": "rg --files --hidden"}),
        ("Glob", {"pattern": "**/*"}),
        ("Glob", {"pattern": "links/**/*"}),
        ("Glob", {"pattern": f"**/{INNER}"}),
        ("Glob", {"pattern": "**/credentials"}),
        ("Grep", {"pattern": "x", "path": str(root)}),
        ("Grep", {"pattern": "x", "glob": "links/**", "output_mode": "content"}),
        ("Grep", {"pattern": CANARY, "output_mode": "count"}),
    ]
    for name, args in listings:
        text = tb.call(name, args).text
        assert CANARY not in text and INNER not in text and "credentials" not in text, f"{name} {args}: {text}"
        assert ".aws/" not in text.replace("[hidden", ""), f"{name} {args} shows a link's secret target: {text}"


def test_link_targets_in_listings_are_judged_at_every_step(tmp_path: Path) -> None:
    root = build(tmp_path)
    text = Toolbox(root, ToolSettings()).call("Bash", {"command": f"ls -l {root}/links"}).text
    # `through` and `loop` name the denied folder on their way: their targets are hidden too.
    for name in ("env", "cred", "aws", "through", "loop", "token", "secrets_dir", "via_link", "dir_chain", "chain3"):
        [line] = [ln for ln in text.splitlines() if ln.endswith(f" {name} -> [hidden: secret deny-list]")]
        assert line
    # The name of a link in a chain is no secret, but where the chain ends is: hidden at every hop.
    assert " chain1 -> [hidden: secret deny-list]" in text
    assert " gem -> ../.gem" in text  # a harmless target is still shown


def test_the_citation_and_quote_checks_tell_nothing_through_a_link(tmp_path: Path) -> None:
    root = build(tmp_path)
    report = "\n".join(f"See {root}/{p} and {root}/{p}:1.\n```\nx\n```\n" for p in PROBES)
    shown = [f"{root}/{p}" for p in PROBES]

    def check() -> tuple[str, list[object], list[object]]:
        tb = Toolbox(root, ToolSettings())
        oracle = path_oracle(tb)
        quoted, quotes = check_quotes(report, str(root), shown, oracle.text)
        marked, cites = check_report(quoted, str(root), oracle, shown)
        infos = [oracle.inspect(f"{root}/{p}") for p in PROBES]
        assert all(i.kind in ("denied", "error", "outside", "missing") for i in infos), infos
        return marked, [*cites, *quotes], list(infos)

    absent = check()
    add_secrets(root, SECRETS)
    present = check()
    assert present == absent
    assert "[unverified: secret file (denied to the tools)]" in present[0]
