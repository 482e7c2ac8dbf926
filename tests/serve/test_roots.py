"""Where exploration may start: deny decisions from the allowed root, and a root opened once at the check."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from mcp import Client
from mcp_types import CallToolResult
from trees import write_tree

from mcp_loco.config import Settings
from mcp_loco.errors import LocoError, RootError
from mcp_loco.explore.agent import Explorer
from mcp_loco.model.backends.replay import ReplayModel
from mcp_loco.model.protocol import format_call
from mcp_loco.sandbox import Toolbox
from mcp_loco.serve.server import ModelPool, build_server

SECRET = "CANARY-SECRET-3b1d"
OUTSIDE = "CANARY-OUTSIDE-9e42"

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return write_tree(
        tmp_path / "repo",
        {
            "src/app.py": "def main():\n    pass\n",
            ".aws/credentials": f"aws_secret_access_key={SECRET}\n",
            ".ssh/id_ed25519": f"{SECRET}\n",
            ".kube/config": f"token: {SECRET}\n",
            ".git/config": f'[remote "origin"]\n\turl = https://user:{SECRET}@example.com/r.git\n',
            ".git/HEAD": "ref: refs/heads/main\n",
            ".git/modules/lib/config": f"url = https://{SECRET}@example.com\n",
            ".docker/config.json": f'{{"auths": {{"x": {{"auth": "{SECRET}"}}}}}}\n',
        },
    )


def text(result: CallToolResult) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


def settings(root: Path) -> Settings:
    s = Settings()
    s.server.roots = [str(root)]
    s.agent.grammar = False
    return s


@pytest.mark.parametrize("secret_dir", [".aws", ".ssh", ".kube"])
def test_a_denied_directory_cannot_be_explored(repo: Path, secret_dir: str) -> None:
    with pytest.raises(RootError, match="secret directory"):
        Toolbox(repo / secret_dir, base=str(repo))
    with pytest.raises(RootError, match="secret directory"):
        Toolbox(repo / secret_dir)  # no allowed root: judged by its own name
    with pytest.raises(LocoError, match="secret directory"):
        Explorer(ReplayModel(["x"]), settings(repo)).explore(repo / secret_dir, "what is here?")


@pytest.mark.parametrize("base", [True, False])
def test_exploring_inside_git_still_hides_its_configs(repo: Path, base: bool) -> None:
    box = Toolbox(repo / ".git", base=str(repo) if base else None)
    git = repo / ".git"
    calls = [
        ("Read", {"file_path": str(git / "config")}),
        ("Read", {"file_path": str(git / "modules/lib/config")}),
        ("Grep", {"pattern": "CANARY", "output_mode": "content"}),
        ("Grep", {"pattern": "CANARY", "output_mode": "count"}),
        ("Glob", {"pattern": "**/*"}),
        ("Bash", {"command": f"cat {git}/config"}),
        ("Bash", {"command": "find . -name config"}),
    ]
    for name, args in calls:
        result = box.call(name, args)
        assert SECRET not in result.text, (name, args, result.text)
        assert str(git / "config") not in result.paths
    assert box.call("Read", {"file_path": str(git / "HEAD")}).ok
    box.close()


async def test_the_server_refuses_a_secret_directory_and_keeps_serving(repo: Path) -> None:
    s = settings(repo)
    pool = ModelPool(s, factory=lambda: ReplayModel(["fine"] * 10))
    async with Client(build_server(s, pool)) as client:
        with anyio.fail_after(30):
            bad = await client.call_tool("explore_codebase", {"path": str(repo / ".aws"), "question": "q"})
            good = await client.call_tool("explore_codebase", {"path": str(repo), "question": "q"})
    assert bad.is_error and "secret directory" in text(bad) and SECRET not in text(bad)
    assert not good.is_error and text(good) == "fine"


async def test_a_link_swapped_in_while_a_call_waits_does_not_redirect_it(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "root", {"sub/file.txt": "inside\n", "top.txt": "top\n"})
    outside = write_tree(tmp_path / "outside", {"file.txt": f"{OUTSIDE}\n"})
    sub = root / "sub"
    s = settings(root)
    read = format_call("Read", {"file_path": str(sub / "file.txt")})
    models: list[ReplayModel] = []

    def factory() -> ReplayModel:
        models.append(ReplayModel([read, "first done", read, "second done"], delay=0.4))
        return models[-1]

    queued = anyio.Event()

    async def on_progress(p: float, total: float | None, message: str | None) -> None:
        if message and "queued" in message:
            queued.set()

    results: dict[str, CallToolResult] = {}
    async with Client(build_server(s, ModelPool(s, factory=factory))) as client:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:

                async def first() -> None:
                    results["first"] = await client.call_tool("explore_codebase", {"path": str(root), "question": "a"})

                async def second() -> None:
                    results["second"] = await client.call_tool(
                        "explore_codebase", {"path": str(sub), "question": "b"}, progress_callback=on_progress
                    )

                tg.start_soon(first)
                while not models or not models[0].prompts:
                    await anyio.sleep(0.01)  # the first call holds the model
                tg.start_soon(second)
                await queued.wait()  # the second call passed its check and waits
                sub.rename(root / "sub.orig")
                sub.symlink_to(outside)
    assert not results["second"].is_error, text(results["second"])
    shown = models[0].prompts[3]  # the second call's prompt after its Read
    assert OUTSIDE not in shown and "inside" in shown


async def test_a_path_to_a_secret_folder_answers_the_same_whether_it_exists(tmp_path: Path) -> None:
    answers: dict[bool, list[str]] = {}
    for exists in (True, False):
        top = tmp_path / ("with" if exists else "without")
        files = {"src/app.py": "x = 1\n", **({".aws/credentials": f"{SECRET}\n"} if exists else {})}
        repo = write_tree(top / "repo", files)
        (repo / "link").symlink_to("../repo/.aws")
        (repo / "abs").symlink_to(repo / ".aws")
        (repo / "chain").symlink_to("link")
        s = settings(repo)
        async with Client(build_server(s, ModelPool(s, factory=lambda: ReplayModel(["fine"] * 10)))) as client:
            got = []
            for rel in (".aws", "link", "abs", "chain", ".aws/nothere", "link/credentials", "chain/nothere"):
                with anyio.fail_after(30):
                    r = await client.call_tool("explore_codebase", {"path": str(repo / rel), "question": "q"})
                assert r.is_error and SECRET not in text(r)
                got.append(text(r).replace(str(repo), "REPO"))
            answers[exists] = got
    assert answers[True] == answers[False]
    assert all("secret" in a for a in answers[True])
