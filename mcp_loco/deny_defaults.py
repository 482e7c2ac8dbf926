"""The default secret deny-list and its exceptions (`tools.deny`, `tools.allow`), gitignore-style."""

from __future__ import annotations


def _patterns(text: str) -> tuple[str, ...]:
    """Whitespace-separated patterns, one group a line; lines starting with '#' are comments."""
    return tuple(p for line in text.splitlines() if not line.lstrip().startswith("#") for p in line.split())


# The secret scanners' file rules (gitleaks' path rules, the file signatures scanners share) and common
# tools' credential files, narrowed to names that rarely hold source code. No pattern holds a space.
DEFAULT_DENY = _patterns(
    """
    # dotenv and direnv files
    .env .env.* .env_* .env-* .env~ *.env .envs/** .envrc .envrc.*
    # private keys, certificates, keystores and password vaults
    *.pem *.key *.p12 *.pfx *.pkcs12 *.p8 *.ppk *.keystore *.jks *.keytab *.kdbx *.psafe3 *.ovpn
    id_rsa* id_dsa* id_ecdsa* id_ed25519* *_rsa *_dsa *_ecdsa *_ed25519 ssh_host_*
    .ssh/** .gnupg/** secring.* .password-store/**
    # package registries', git's and other tools' credentials
    .npmrc .pypirc .netrc _netrc .git-credentials .gitconfig .git/config .git/**/config
    .git/**/config.worktree .gem/credentials .cargo/credentials .cargo/credentials.toml
    .composer/auth.json .m2/settings.xml .m2/settings-security.xml .gradle/gradle.properties
    .config/gh/hosts.yml .vault-token .htpasswd .pgpass .my.cnf .mylogin.cnf .s3cfg .boto
    .dockercfg .docker/config.json .tugboat .ftpconfig sftp-config.json .remote-sync.json
    .vscode/sftp.json proftpdpasswd .*_history
    # cloud and cluster credentials
    .aws/** .azure/** .config/gcloud/** application_default_credentials.json credentials.json
    credentials.xml credentials.yml credentials.yaml .credentials client_secret*.json
    service-account*.json .oci/** .databrickscfg kubeconfig *.kubeconfig .kube/**
    .terraformrc terraform.rc .terraform.d/credentials.tfrc.json *.tfstate *.tfstate.* terraform.tfvars *.auto.tfvars
    # application secrets and secrets folders
    secrets.* secrets/** .secrets/**
    """
)
# Templates that hold no secret.
DEFAULT_ALLOW = _patterns(
    """
    .env.example .env.sample .env.template .env.dist .env-example .env-sample .env_example .env_sample
    .env.*.example .env.*.sample .env.*.template .envrc.example
    """
)
