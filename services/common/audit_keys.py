"""Each telco's Ed25519 key for signing its approval decisions (see audit_chain.py).

The order service, where approvals are given, signs each decision with the key of the telco
it is for: ``IDC_AUDIT_SIGNING_DIR`` holds ``<telco>.pem`` (PKCS#8 private keys, a
mounted secret per telco). ``idcctl audit verify`` checks with the public keys:
``IDC_AUDIT_PUBLIC_KEY_DIR`` holds ``<telco>.pub.pem``. With the explicit development mode
(``IDC_DEV_MODE=true``) both default to ``<IDC_VAR_DIR>/audit-keys``, where missing keys
are generated; without it an unset directory is a configuration error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from services.common.config import ConfigError

SIGNING_DIR = "IDC_AUDIT_SIGNING_DIR"
PUBLIC_DIR = "IDC_AUDIT_PUBLIC_KEY_DIR"
TELCOS = ("sg", "cq")


def dev_mode(env: Mapping[str, str]) -> bool:
    return env.get("IDC_DEV_MODE", "").strip().lower() == "true"


@dataclass(frozen=True)
class AuditKeySettings:
    directory: Path
    generate: bool  # development mode: create missing keys

    @classmethod
    def from_env(cls, variable: str, env: Mapping[str, str] | None = None) -> AuditKeySettings:
        env = os.environ if env is None else env
        value = env.get(variable, "").strip()
        if value:
            return cls(Path(value), False)
        if dev_mode(env):
            return cls(Path(env.get("IDC_VAR_DIR", "var") or "var") / "audit-keys", True)
        raise ConfigError(
            f"{variable} is not set: the directory of each telco's audit key "
            "(or IDC_DEV_MODE=true for generated development keys under var/)"
        )


def _generate(directory: Path, telco: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    private = directory / f"{telco}.pem"
    private.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    private.chmod(0o600)
    (directory / f"{telco}.pub.pem").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def signing_keys(settings: AuditKeySettings, telcos: Sequence[str] = TELCOS
                 ) -> dict[str, Ed25519PrivateKey]:
    """Each telco's private key; ConfigError naming the file when one is missing or not an
    Ed25519 key."""
    found = {}
    for telco in telcos:
        path = settings.directory / f"{telco}.pem"
        if not path.exists() and settings.generate:
            _generate(settings.directory, telco)
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{SIGNING_DIR}: cannot read {path}: {exc}") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"{SIGNING_DIR}: {path} is not an Ed25519 private key")
        found[telco] = key
    return found


def public_keys(settings: AuditKeySettings, telcos: Sequence[str] = TELCOS
                ) -> dict[str, Ed25519PublicKey]:
    """Each telco's public key (the ones a telco publishes for auditors)."""
    found = {}
    for telco in telcos:
        path = settings.directory / f"{telco}.pub.pem"
        try:
            key = serialization.load_pem_public_key(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{PUBLIC_DIR}: cannot read {path}: {exc}") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError(f"{PUBLIC_DIR}: {path} is not an Ed25519 public key")
        found[telco] = key
    return found
