"""`mcp-loco install` keeps what it touches: mode, owner, symlinks, backups, other writers' entries, broken files."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from server_helpers import BIN

from mcp_loco.errors import ConfigError
from mcp_loco.serve import configfile, install
from mcp_loco.serve.configfile import read_config_text, replace_config

ORIGINAL = {
    "mcpServers": {"other": {"command": "/opt/other", "args": [], "env": {"OTHER_API_KEY": "sk-other-secret"}}},
    "env": {"ANTHROPIC_API_KEY": "sk-ant-secret"},
    "theme": "café",
}


@dataclass
class Target:
    """One install command and the file it writes."""

    args: list[str]
    config: Path
    cwd: Path
    home: Path

    def run(self, umask: int = 0o022) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_LOCO_")}
        env.update(HOME=str(self.home), XDG_CONFIG_HOME=str(self.home / ".config"))
        command = f'umask {umask:03o} && exec "$@"'
        return subprocess.run(
            ["sh", "-c", command, "sh", str(BIN), "install", *self.args],
            cwd=self.cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def installed(self) -> bool:
        """Whether the file holds this install's entry."""
        data = json.loads(self.config.read_text(encoding="utf-8"))
        if self.args[0] == "claude-desktop":
            return data["mcpServers"]["loco"]["command"] == str(BIN)
        return data["env"]["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:9091"


TARGETS = ["desktop-config-path", "desktop-default-path", "proxy-local", "proxy-project", "proxy-user"]


def make_target(kind: str, tmp_path: Path) -> Target:
    home, project = tmp_path / "home", tmp_path / "project"
    home.mkdir(exist_ok=True)
    project.mkdir(exist_ok=True)
    if kind == "desktop-config-path":
        config = tmp_path / "cfg/claude_desktop_config.json"
        return Target(["claude-desktop", "--config-path", str(config)], config, project, home)
    if kind == "desktop-default-path":
        return Target(["claude-desktop"], home / ".config/Claude/claude_desktop_config.json", project, home)
    scope = kind.removeprefix("proxy-")
    config = {"user": home, "project": project, "local": project}[scope] / ".claude"
    config /= "settings.local.json" if scope == "local" else "settings.json"
    return Target(["claude-code", "--proxy", "--scope", scope], config, project, home)


def write_original(path: Path, mode: int, content: bytes | None = None) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = json.dumps(ORIGINAL, ensure_ascii=False).encode() if content is None else content
    path.write_bytes(raw)
    path.chmod(mode)
    return raw


def assert_kept_the_rest(config: Path) -> None:
    data = json.loads(config.read_text(encoding="utf-8"))
    assert data["mcpServers"]["other"] == ORIGINAL["mcpServers"]["other"]  # type: ignore[index]
    assert data["env"]["ANTHROPIC_API_KEY"] == "sk-ant-secret"
    assert data["theme"] == "café"


def listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.mark.parametrize(("kind", "mode"), list(zip(TARGETS, [0o600, 0o640, 0o600, 0o660, 0o640], strict=True)))
def test_the_file_and_its_backup_keep_their_mode(tmp_path: Path, kind: str, mode: int) -> None:
    target = make_target(kind, tmp_path)
    raw = write_original(target.config, mode)
    done = target.run()
    assert done.returncode == 0, done.stderr
    assert target.installed()
    assert_kept_the_rest(target.config)
    assert stat.S_IMODE(target.config.stat().st_mode) == mode
    backups = [p for p in target.config.parent.iterdir() if p != target.config]
    assert [b.read_bytes() for b in backups] == [raw], "exactly one backup, holding the original, and no leftovers"
    assert stat.S_IMODE(backups[0].stat().st_mode) == mode
    assert f"backup: {backups[0]}" in done.stderr


@pytest.mark.parametrize("kind", TARGETS)
def test_a_new_file_is_private_from_the_start(tmp_path: Path, kind: str) -> None:
    target = make_target(kind, tmp_path)
    done = target.run(umask=0o000)  # even a user who lets everyone write their new files
    assert done.returncode == 0, done.stderr
    assert target.installed()
    assert stat.S_IMODE(target.config.stat().st_mode) == 0o600
    assert [p.name for p in target.config.parent.iterdir()] == [target.config.name]


@pytest.mark.parametrize(("kind", "mode"), list(zip(TARGETS, [0o400, 0o444, 0o040, 0o500, 0o400], strict=True)))
def test_a_read_only_file_is_refused_and_left_alone(tmp_path: Path, kind: str, mode: int) -> None:
    target = make_target(kind, tmp_path)
    write_original(target.config, mode)
    before = listing(target.config.parent)
    done = target.run()
    assert done.returncode == 2, done.stderr
    assert f"chmod u+w {target.config}" in done.stderr and "read-only" in done.stderr
    assert "Traceback" not in done.stderr
    assert listing(target.config.parent) == before
    assert stat.S_IMODE(target.config.stat().st_mode) == mode


@pytest.mark.parametrize("kind", TARGETS)
def test_a_symlink_chain_is_written_through_and_kept(tmp_path: Path, kind: str) -> None:
    target = make_target(kind, tmp_path)
    dotfiles = tmp_path / "dotfiles/claude"
    real = dotfiles / "config.json"
    raw = write_original(real, 0o600)
    hop = tmp_path / "links/hop.json"
    hop.parent.mkdir()
    hop.symlink_to(os.path.relpath(real, hop.parent))  # relative link ...
    target.config.parent.mkdir(parents=True, exist_ok=True)
    target.config.symlink_to(hop)  # ... behind an absolute one
    done = target.run()
    assert done.returncode == 0, done.stderr
    assert target.config.is_symlink() and hop.is_symlink()
    assert target.config.readlink() == hop and hop.readlink() == Path(os.path.relpath(real, hop.parent))
    assert target.installed()
    assert_kept_the_rest(real)
    assert stat.S_IMODE(real.stat().st_mode) == 0o600
    backups = [p for p in dotfiles.iterdir() if p != real]
    assert [b.read_bytes() for b in backups] == [raw]
    assert [p.name for p in hop.parent.iterdir()] == ["hop.json"]


@pytest.mark.parametrize("kind", ["desktop-default-path", "proxy-local"])
def test_a_link_to_a_missing_file_creates_it_where_the_link_points(tmp_path: Path, kind: str) -> None:
    target = make_target(kind, tmp_path)
    real = tmp_path / "dotfiles/config.json"
    real.parent.mkdir()
    target.config.parent.mkdir(parents=True, exist_ok=True)
    target.config.symlink_to(real)
    done = target.run()
    assert done.returncode == 0, done.stderr
    assert target.config.is_symlink() and real.is_file() and target.installed()
    assert stat.S_IMODE(real.stat().st_mode) == 0o600


LATIN1 = (b'{"theme": "caf\xe9"}', "is not UTF-8")
BROKEN = [
    (b"\xff\xfe{\x00}\x00", "is not UTF-8"),  # UTF-16
    (b'{"mcpServers": {"a": 1}', "is not valid JSON"),
    (b'{"a": 1} {"b": 2}', "is not valid JSON"),
    (b"[1, 2]", "does not hold a JSON object"),
]


@pytest.mark.parametrize(
    ("kind", "content", "needle"),
    [(kind, *LATIN1) for kind in TARGETS] + [(kind, *b) for kind, b in zip(TARGETS[1:], BROKEN, strict=True)],
)
def test_a_broken_file_is_refused_byte_for_byte(tmp_path: Path, kind: str, content: bytes, needle: str) -> None:
    target = make_target(kind, tmp_path)
    write_original(target.config, 0o600, content)
    before = listing(target.config.parent)
    done = target.run()
    assert done.returncode == 2, done.stderr
    assert needle in done.stderr and str(target.config) in done.stderr and "Traceback" not in done.stderr
    assert listing(target.config.parent) == before


@pytest.mark.skipif(os.getuid() != 0, reason="only root can hand a file to another user")
@pytest.mark.parametrize("kind", ["desktop-config-path", "proxy-local", "proxy-user"])
def test_the_owner_is_kept(tmp_path: Path, kind: str) -> None:
    target = make_target(kind, tmp_path)
    write_original(target.config, 0o640)
    os.chown(target.config, 65534, 65534)
    assert target.run().returncode == 0
    assert target.installed()
    for path in target.config.parent.iterdir():  # the file and its backup
        assert (path.stat().st_uid, path.stat().st_gid) == (65534, 65534), path


# Root without its capabilities: like any user, it may not give a file away nor write another's read-only file.
NO_CAPS = ["setpriv", "--bounding-set=-all", "--inh-caps=-all"]


@pytest.mark.skipif(os.getuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")
@pytest.mark.parametrize(
    ("kind", "mode", "needle"),
    [
        ("desktop-config-path", 0o666, "belongs to user 65534"),
        ("proxy-user", 0o664, "belongs to user 65534"),
        ("proxy-local", 0o444, "chmod u+w"),
    ],
)
def test_a_file_of_another_user_is_refused_and_left_alone(tmp_path: Path, kind: str, mode: int, needle: str) -> None:
    target = make_target(kind, tmp_path)
    write_original(target.config, mode)
    os.chown(target.config, 65534, 65534)
    before = listing(target.config.parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_LOCO_")}
    env.update(HOME=str(target.home), XDG_CONFIG_HOME=str(target.home / ".config"))
    done = subprocess.run(
        [*NO_CAPS, str(BIN), "install", *target.args],
        cwd=target.cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert needle in done.stderr and str(target.config) in done.stderr and "Traceback" not in done.stderr
    assert listing(target.config.parent) == before
    assert (target.config.stat().st_uid, stat.S_IMODE(target.config.stat().st_mode)) == (65534, mode)


def test_installs_in_the_same_second_keep_every_backup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "claude_desktop_config.json"
    write_original(cfg, 0o600)
    versions = [cfg.read_bytes()]
    now = time.time()
    squatters = {
        cfg.with_name(f"{cfg.name}.bak-{time.strftime('%Y%m%d-%H%M%S', time.localtime(now + s))}-1") for s in (0, 1)
    }
    for squatter in squatters:
        squatter.write_bytes(b"an earlier backup")
    # A link planted at a backup's name is not followed: the file it points to is not overwritten.
    victim = tmp_path / "elsewhere/victim"
    victim.parent.mkdir()
    victim.write_bytes(b"not yours")
    planted = cfg.with_name(f"{cfg.name}.bak-{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}-2")
    planted.symlink_to(victim)
    squatters.add(planted)
    for i in range(5):
        install.claude_desktop("loco", [str(tmp_path / f"root{i}")], cfg, [])
        versions.append(cfg.read_bytes())
    backups = [p for p in tmp_path.iterdir() if p.is_file() and p != cfg and p not in squatters]
    assert sorted(b.read_bytes() for b in backups) == sorted(versions[:-1])
    assert all(s.read_bytes() == b"an earlier backup" for s in squatters - {planted})
    assert victim.read_bytes() == b"not yours" and planted.is_symlink()
    assert all(stat.S_IMODE(b.stat().st_mode) == 0o600 for b in backups)
    # The same for Claude Code's settings.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for i in range(4):
        install.claude_code_proxy("local", f"http://127.0.0.1:{9000 + i}", print_only=False)
    settings = tmp_path / ".claude/settings.local.json"
    backups = [p for p in settings.parent.iterdir() if p != settings]
    assert sorted(json.loads(b.read_text())["env"]["ANTHROPIC_BASE_URL"] for b in backups) == [
        f"http://127.0.0.1:{9000 + i}" for i in range(3)
    ]


WORKER = """
import sys
from pathlib import Path
from mcp_loco.serve.install import claude_desktop
config, prefix, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
print("ready", flush=True)
sys.stdin.readline()
for i in range(count):
    claude_desktop(f"{prefix}{i}", ["/srv"], config, [])
"""


def test_two_processes_at_once_lose_no_entry_and_no_backup(tmp_path: Path) -> None:
    cfg = tmp_path / "claude_desktop_config.json"
    count = 40
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(cfg), prefix, str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for prefix in ("a", "b")
    ]
    try:
        for w in workers:
            assert w.stdout is not None and w.stdout.readline() == "ready\n"
        for w in workers:  # both start changing the file at the same moment
            assert w.stdin is not None
            w.stdin.write("go\n")
            w.stdin.flush()
        for w in workers:
            _, err = w.communicate(timeout=120)
            assert w.returncode == 0, err
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
    servers = json.loads(cfg.read_text())["mcpServers"]
    assert set(servers) == {f"{p}{i}" for p in "ab" for i in range(count)}
    backups = [p for p in tmp_path.iterdir() if p != cfg]
    assert len(backups) == 2 * count - 1  # one per change but the first, none overwritten, no leftovers
    sizes = sorted(len(json.loads(b.read_text())["mcpServers"]) for b in backups)
    assert sizes == list(range(1, 2 * count))


HOLDER = """
import sys
from pathlib import Path
from mcp_loco.serve.configfile import config_lock
with config_lock(Path(sys.argv[1])):
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_an_install_waits_for_another_and_says_so_when_it_does_not_finish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "claude_desktop_config.json"
    raw = write_original(cfg, 0o600)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(cfg)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        monkeypatch.setattr(configfile, "LOCK_WAIT_S", 0.3)
        with pytest.raises(ConfigError, match="another install has been changing it"):
            install.claude_desktop("loco", None, cfg, [])
        assert cfg.read_bytes() == raw
        holder.communicate("\n", timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert sorted(p.name for p in tmp_path.iterdir()) == [cfg.name]  # the holder took its lock file away
    # A lock file left by a killed install holds no lock: the next one goes ahead and removes it.
    (tmp_path / f".{cfg.name}.lock").write_text("")
    install.claude_desktop("loco", None, cfg, [])
    assert "loco" in json.loads(cfg.read_text())["mcpServers"]
    assert not (tmp_path / f".{cfg.name}.lock").exists()


# ---- the writer itself, as other client targets (TOML, JSON) use it ----------------------------------


def test_the_writer_reads_and_replaces_any_text(tmp_path: Path) -> None:
    toml = tmp_path / "config.toml"
    assert read_config_text(toml) is None
    assert replace_config(toml, '[mcp_servers.loco]\ncommand = "x"\n') is None
    assert stat.S_IMODE(toml.stat().st_mode) == 0o600
    assert read_config_text(toml) == '[mcp_servers.loco]\ncommand = "x"\n'
    toml.chmod(0o640)
    backup = replace_config(toml, "# é\n")
    assert backup is not None and backup.parent == tmp_path and backup.name.startswith("config.toml.bak-")
    assert backup.read_text() == '[mcp_servers.loco]\ncommand = "x"\n'
    assert stat.S_IMODE(backup.stat().st_mode) == 0o640 and stat.S_IMODE(toml.stat().st_mode) == 0o640
    assert toml.read_bytes() == "# é\n".encode()
    # The same text again changes nothing and leaves no new backup.
    assert replace_config(toml, "# é\n") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["config.toml", backup.name])


@pytest.mark.parametrize("content", [b"caf\xe9 = 1\n", b"\x80"])
def test_the_writer_refuses_what_it_cannot_read(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match="is not UTF-8"):
        read_config_text(path)
    loop = tmp_path / "loop.json"
    loop.symlink_to(tmp_path / "loop.json")
    with pytest.raises(ConfigError, match="cannot follow it"):
        read_config_text(loop)
    with pytest.raises(ConfigError, match="cannot follow it"):
        replace_config(loop, "{}")
    folder = tmp_path / "folder.json"
    folder.mkdir()
    with pytest.raises(ConfigError, match="cannot read it"):
        read_config_text(folder)
