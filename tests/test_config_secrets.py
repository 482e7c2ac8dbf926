"""Secret settings are never printed: `mcp-loco config` from every layer, and a rule that catches new secret fields."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from server_helpers import BIN

from mcp_loco import config
from mcp_loco.config import SECTIONS, Settings, render_toml

SECRETS = {
    "http.api_key": "sk-http-SECRET-1f2e",
    "escalation.api_key": "sk-cloud-SECRET-9a8b",
    "server.token": "tok-SECRET-77c1d0e2f3a4b5c6d7e8f9a0",
}
SECRETISH = re.compile(r"key|token|secret|password|passwd|credential", re.IGNORECASE)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_LOCO_")}
    return {**env, **extra}


def config_out(*args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(BIN), "config", *args], capture_output=True, text=True, env=env or clean_env(), timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def _assert_masked(out: str) -> None:
    for dotted, value in SECRETS.items():
        assert value not in out, f"{dotted} printed in clear"
        section, key = dotted.split(".")
        block = out.split(f"[{section}]", 1)[1].split("\n[", 1)[0]
        assert f'{key} = "***"' in block, f"{dotted} not shown as set"


def test_config_masks_secrets_given_on_the_command_line() -> None:
    sets = [a for dotted, v in SECRETS.items() for a in ("--set", f"{dotted}={v}")]
    _assert_masked(config_out(*sets))


def test_config_masks_secrets_given_in_the_environment() -> None:
    env = clean_env(**{f"MCP_LOCO_{d.replace('.', '_').upper()}": v for d, v in SECRETS.items()})
    _assert_masked(config_out(env=env))


def test_config_masks_secrets_given_in_a_config_file(tmp_path: Path) -> None:
    toml = tmp_path / "mine.toml"
    toml.write_text("".join(f'[{d.split(".")[0]}]\n{d.split(".")[1]} = "{v}"\n' for d, v in SECRETS.items()))
    _assert_masked(config_out("--config", str(toml)))


def test_unset_secrets_show_as_empty_and_the_defaults_file_holds_none() -> None:
    out = render_toml(Settings())
    assert 'api_key = ""' in out and 'token = ""' in out and "***" not in out


@pytest.mark.parametrize("section", list(SECTIONS))
def test_every_secret_looking_setting_is_marked_secret(section: str) -> None:
    """A new `*_key`, `*token*`, `*password*` setting must carry the SECRET marker (or be a SecretStr)."""
    for key, field in SECTIONS[section].model_fields.items():
        if SECRETISH.search(key) and not key.endswith(("_file", "_param", "_tokens")):
            assert config.is_secret(field), f"{section}.{key} looks secret but would be printed in clear"


@pytest.mark.parametrize("dotted", list(SECRETS))
@pytest.mark.parametrize("bad", ['["sk-in-a-list-SECRET-4d4d"]', '{"k": "sk-in-a-table-SECRET-5e5e"}'])
def test_an_invalid_secret_is_not_repeated_in_the_error(dotted: str, bad: str) -> None:
    section, key = dotted.split(".")
    done = subprocess.run(
        [str(BIN), "config", "--set", f"{dotted}={bad}"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and f"{section}.{key}" in done.stderr, done.stderr
    assert "SECRET" not in done.stdout + done.stderr and "Traceback" not in done.stderr
