"""The default deny-list covers the secret scanners' file rules, and its templates stay readable."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcp_loco.config import ToolSettings
from mcp_loco.sandbox import Toolbox
from mcp_loco.sandbox.denylist import DenyList

from .conftest import SECRET, assert_no_leak, assert_refused, write_tree

DENIED = [
    ".envrc",
    "app/.envrc",
    ".envrc.local",
    ".env_local",
    ".env-production",
    ".env~",
    "prod.env",
    ".envs/.production/.django",
    ".pgpass",
    "keys/putty.ppk",
    "keys/bundle.pkcs12",
    "AuthKey_ABC.p8",
    "svc.keytab",
    "vault.kdbx",
    "client.ovpn",
    "deploy/github_ed25519",
    "etc/ssh/ssh_host_rsa_key",
    ".config/gcloud/application_default_credentials.json",
    "application_default_credentials.json",
    ".config/gcloud/credentials.db",
    "client_secret_123.apps.googleusercontent.com.json",
    "service-account-prod.json",
    ".azure/accessTokens.json",
    ".git/modules/vendor/lib/config",
    ".git/modules/a/modules/b/config",
    ".gitconfig",
    "secrets/db_password.txt",
    "charts/app/secrets/values.yaml",
    ".secrets/token",
    ".my.cnf",
    ".s3cfg",
    ".vault-token",
    ".dockercfg",
    ".bash_history",
    ".zsh_history",
    ".gem/credentials",
    ".cargo/credentials.toml",
    ".m2/settings.xml",
    ".config/gh/hosts.yml",
    "infra/terraform.tfvars",
    "credentials.xml",
    "sftp-config.json",
]
ALLOWED = [
    ".env.example",
    ".env.sample",
    ".env.template",
    ".env.dist",
    ".env-example",
    ".env_sample",
    ".env.local.example",
    ".envrc.example",
    "envoy/.environment",
    "src/environment.py",
    "src/envs.py",
    "src/credentials.py",
    "docs/keys.md",
    ".git/HEAD",
    ".git/modules/vendor/lib/HEAD",
    "src/secret_sauce.py",
    "variables.tf",
]


@pytest.mark.parametrize("rel", DENIED)
def test_default_deny_list_covers_common_credential_files(rel: str) -> None:
    settings = ToolSettings()
    assert DenyList(settings.deny, settings.allow).denied(rel)


@pytest.mark.parametrize("rel", ALLOWED)
def test_default_deny_list_leaves_templates_and_code_alone(rel: str) -> None:
    settings = ToolSettings()
    assert not DenyList(settings.deny, settings.allow).denied(rel)


def test_new_defaults_hold_in_every_tool(tmp_path: Path) -> None:
    files = dict.fromkeys(DENIED, f"{SECRET}\n")
    files.update({rel: "template\n" for rel in ALLOWED if not rel.startswith(".git/")})
    root = write_tree(tmp_path / "root", files)
    tb = Toolbox(root)
    for rel in (".envrc", ".env_local", ".pgpass", "secrets/db_password.txt", ".git/modules/vendor/lib/config"):
        assert_refused(tb.call("Read", {"file_path": rel}), "secret file")
    for name, args in [
        ("Grep", {"pattern": SECRET, "output_mode": "content"}),
        ("Grep", {"pattern": SECRET, "output_mode": "count"}),
        ("Bash", {"command": f"grep -rn {SECRET} ."}),
        ("Bash", {"command": "find . -type f"}),
        ("Bash", {"command": "ls -laR"}),
        ("Glob", {"pattern": "**/*"}),
    ]:
        result = tb.call(name, args)
        assert_no_leak(result)
        assert ".envrc\n" not in result.text + "\n" and ".pgpass" not in result.text, result.text
    listed = tb.call("Glob", {"pattern": "**/.env*"}).text.splitlines()
    templates = [".env.dist", ".env.example", ".env.local.example", ".env.sample", ".env.template"]
    templates += [".env-example", ".env_sample", ".envrc.example", ".environment"]
    assert sorted(Path(p).name for p in listed) == sorted(templates)
    grep = tb.call("Grep", {"pattern": "template", "glob": ".env*"}).text
    assert grep.startswith("Found 9 files")
