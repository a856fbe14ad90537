"""Signed bearer tokens: Ed25519 signatures every service checks with a public key set.

A token is ``idc_`` + base64url(JSON claims) + ``.`` + base64url(signature over the claims
part). Only the issuer (the order service's TokenService) holds a signing key; every
service verifies with the public keys of ``IDC_TOKEN_KEYS`` (by ``kid``), so no service
keeps a token table and no database is shared across the border. Keys rotate: add the new
public key everywhere, sign with the new key, drop the old public key once the last token
it signed has expired (at most ``IDC_TOKEN_MAX_TTL_S`` later).

Revocations arrive from the topic ``idc.token.revocations`` (services/common/revocations.py)
into :class:`RevokedTokens`, which the verifier consults.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from services.common.auth import TOKEN_PREFIX, Principal, Role
from services.common.config import ConfigError, boolean
from services.common.errors import InvalidArgument, Unauthenticated

Clock = Callable[[], float]

KEYS_VAR = "IDC_TOKEN_KEYS"
SIGNING_KEY_VAR = "IDC_TOKEN_SIGNING_KEY"
DEV_MODE_VAR = "IDC_DEV_MODE"
DEFAULT_TTL_VAR = "IDC_TOKEN_DEFAULT_TTL_S"
MAX_TTL_VAR = "IDC_TOKEN_MAX_TTL_S"
STALE_VAR = "IDC_TOKEN_REVOCATION_STALE_S"

DAY_S = 86_400
# The break-glass token (``idcctl admin tokens bootstrap``) lives at most this long.
BOOTSTRAP_MAX_TTL_S = 3_600


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class TokenClaims:
    kid: str
    jti: str
    pid: str
    sub: str
    role: str
    tenant: str | None
    telco: str | None
    iat: int
    exp: int

    def principal(self) -> Principal:
        return Principal(self.sub, Role(self.role), self.tenant, self.telco, id=self.pid)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> TokenClaims:
        return cls(
            kid=str(raw["kid"]), jti=str(raw["jti"]), pid=str(raw["pid"]),
            sub=str(raw["sub"]), role=str(raw["role"]),
            tenant=raw.get("tenant") or None, telco=raw.get("telco") or None,
            iat=int(raw["iat"]), exp=int(raw["exp"]),
        )


@dataclass(frozen=True)
class SigningKey:
    """One Ed25519 private key and its id. ``dev`` marks a key made by the devstack or a
    test harness: the services refuse it unless ``IDC_DEV_MODE=true``."""

    kid: str
    private_key: Ed25519PrivateKey
    dev: bool = False

    @classmethod
    def generate(cls, kid: str, *, dev: bool = False) -> SigningKey:
        return cls(kid, Ed25519PrivateKey.generate(), dev)

    def public_bytes(self) -> bytes:
        return self.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def to_json(self) -> str:
        private = self.private_key.private_bytes_raw()
        return json.dumps({"kid": self.kid, "private_key": _b64encode(private), "dev": self.dev})

    @classmethod
    def from_json(cls, text: str) -> SigningKey:
        raw = json.loads(text)
        private = Ed25519PrivateKey.from_private_bytes(_b64decode(str(raw["private_key"])))
        return cls(str(raw["kid"]), private, bool(raw.get("dev", False)))

    def key_set(self) -> KeySet:
        return KeySet({self.kid: self.private_key.public_key()}, frozenset({self.kid}) if self.dev
                      else frozenset())

    def sign(self, claims: TokenClaims) -> str:
        body = _b64encode(json.dumps(
            {name: value for name, value in vars(claims).items() if value is not None},
            separators=(",", ":"), sort_keys=True).encode())
        signature = self.private_key.sign(body.encode())
        return f"{TOKEN_PREFIX}{body}.{_b64encode(signature)}"

    def mint(self, principal: Principal, ttl_s: int, *, jti: str | None = None,
             now: float | None = None) -> tuple[str, TokenClaims]:
        """A token for ``principal`` valid ``ttl_s`` seconds; ``principal.ref`` is its pid."""
        issued = int(time.time() if now is None else now)
        claims = TokenClaims(
            kid=self.kid, jti=jti or str(uuid.uuid4()), pid=principal.ref,
            sub=principal.subject, role=principal.role.value, tenant=principal.tenant,
            telco=principal.telco, iat=issued, exp=issued + ttl_s,
        )
        return self.sign(claims), claims


@dataclass(frozen=True)
class KeySet:
    """The public keys tokens are verified with, by key id; ``dev`` names the dev keys."""

    keys: Mapping[str, Ed25519PublicKey]
    dev: frozenset[str] = frozenset()

    def to_json(self) -> str:
        return json.dumps({"keys": [
            {"kid": kid, "public_key": _b64encode(key.public_bytes(Encoding.Raw, PublicFormat.Raw)),
             "dev": kid in self.dev}
            for kid, key in self.keys.items()
        ]})

    @classmethod
    def from_json(cls, text: str) -> KeySet:
        raw = json.loads(text)
        keys: dict[str, Ed25519PublicKey] = {}
        dev: set[str] = set()
        for entry in raw["keys"]:
            kid = str(entry["kid"])
            keys[kid] = Ed25519PublicKey.from_public_bytes(_b64decode(str(entry["public_key"])))
            if entry.get("dev", False):
                dev.add(kid)
        if not keys:
            raise ValueError("the key set has no keys")
        return cls(keys, frozenset(dev))

    def merged(self, other: KeySet) -> KeySet:
        return KeySet({**self.keys, **other.keys}, self.dev | other.dev)


@dataclass
class RevokedTokens:
    """Token ids refused from a time on, until they expire anyway (then forgotten)."""

    clock: Clock = time.time
    _until: dict[str, tuple[float, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, jti: str, revoke_at: float, expire_at: float) -> None:
        with self._lock:
            known = self._until.get(jti)
            if known is None or revoke_at < known[0]:
                self._until[jti] = (revoke_at, expire_at)
            now = self.clock()
            for gone in [j for j, (_, exp) in self._until.items() if exp < now]:
                del self._until[gone]

    def is_revoked(self, jti: str) -> bool:
        with self._lock:
            known = self._until.get(jti)
        return known is not None and known[0] <= self.clock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._until)


# Verified tokens a verifier remembers (all forgotten at once past it).
VERIFIED_TOKENS = 4096


class TokenVerifier:
    """The ``TokenStore`` of every service: checks signature, key id, expiry, revocation."""

    def __init__(self, keys: KeySet, revoked: RevokedTokens | None = None,
                 clock: Clock = time.time) -> None:
        self.keys = keys
        self.revoked = revoked if revoked is not None else RevokedTokens(clock)
        self._clock = clock
        # Tokens whose signature verified, with the key that verified it: a caller sends the
        # same token call after call, and the signature check is most of a call's auth.
        self._verified: dict[str, tuple[TokenClaims, Ed25519PublicKey]] = {}

    def verify(self, token: str) -> TokenClaims:
        """The token's claims; Unauthenticated saying why it is refused."""
        known = self._verified.get(token)
        if known is not None and self.keys.keys.get(known[0].kid) is known[1]:
            return self._current(known[0])
        claims, key = self._signed(token)
        if len(self._verified) >= VERIFIED_TOKENS:
            self._verified.clear()
        self._verified[token] = (claims, key)
        return self._current(claims)

    def _current(self, claims: TokenClaims) -> TokenClaims:
        if claims.exp <= self._clock():
            raise Unauthenticated("the bearer token has expired")
        if self.revoked.is_revoked(claims.jti):
            raise Unauthenticated("the bearer token has been revoked")
        return claims

    def _signed(self, token: str) -> tuple[TokenClaims, Ed25519PublicKey]:
        body, dot, signature = token.removeprefix(TOKEN_PREFIX).partition(".")
        if not token.startswith(TOKEN_PREFIX) or not dot:
            raise Unauthenticated("the bearer token is not an idc token")
        try:
            raw = json.loads(_b64decode(body))
            claims = TokenClaims.from_json(raw)
            signature_bytes = _b64decode(signature)
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise Unauthenticated("the bearer token is malformed") from exc
        key = self.keys.keys.get(claims.kid)
        if key is None:
            raise Unauthenticated("the bearer token is signed with an unknown key")
        try:
            key.verify(signature_bytes, body.encode())
        except InvalidSignature as exc:
            raise Unauthenticated("the bearer token's signature does not verify") from exc
        return claims, key

    def principal_for(self, token: str) -> Principal | None:
        try:
            return self.verify(token).principal()
        except InvalidArgument as exc:
            # Claims that make no principal (a customer without tenant): not a valid token.
            raise Unauthenticated("the bearer token's claims are incomplete") from exc


def _source(env: Mapping[str, str], name: str) -> str | None:
    """A setting that is inline JSON or the path of a JSON file; None when unset."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return None
    if raw.startswith("{"):
        return raw
    try:
        return Path(raw).read_text()
    except OSError as exc:
        raise ConfigError(f"{name}={raw!r}: cannot read the file ({exc})") from exc


def _seconds(env: Mapping[str, str], name: str, default: int) -> int:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} is not valid: expected whole seconds") from exc
    if value <= 0:
        raise ConfigError(f"{name}={raw!r} is not valid: must be greater than zero")
    return value


@dataclass(frozen=True)
class TokenSettings:
    """Token settings of every service; the signing key only matters to the issuer."""

    keys: KeySet
    signing_key: SigningKey | None = None
    default_ttl_s: int = 7 * DAY_S
    max_ttl_s: int = 90 * DAY_S
    revocation_stale_s: int = 30
    dev_mode: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TokenSettings:
        env = os.environ if env is None else env
        dev_mode = boolean(env, DEV_MODE_VAR, False)
        keys_text = _source(env, KEYS_VAR)
        if keys_text is None:
            raise ConfigError(
                f"{KEYS_VAR} is not set: the public key set tokens are verified with (a JSON "
                "file or inline JSON); `make run` passes development keys with "
                f"{DEV_MODE_VAR}=true")
        try:
            keys = KeySet.from_json(keys_text)
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{KEYS_VAR} is not a valid key set: {exc}") from exc
        signing_text = _source(env, SIGNING_KEY_VAR)
        signing_key = None
        if signing_text is not None:
            try:
                signing_key = SigningKey.from_json(signing_text)
            except (ValueError, KeyError, TypeError) as exc:
                raise ConfigError(f"{SIGNING_KEY_VAR} is not a valid signing key: {exc}") \
                    from exc
            if signing_key.kid not in keys.keys:
                raise ConfigError(
                    f"{SIGNING_KEY_VAR} has key id {signing_key.kid!r}, which {KEYS_VAR} "
                    "lacks: its tokens would be refused")
        if not dev_mode:
            if keys.dev:
                raise ConfigError(
                    f"{KEYS_VAR} holds development keys ({', '.join(sorted(keys.dev))}); "
                    f"set {DEV_MODE_VAR}=true to use them")
            if signing_key is not None and signing_key.dev:
                raise ConfigError(
                    f"{SIGNING_KEY_VAR} is a development key; set {DEV_MODE_VAR}=true to use it")
        settings = cls(
            keys=keys, signing_key=signing_key,
            default_ttl_s=_seconds(env, DEFAULT_TTL_VAR, cls.default_ttl_s),
            max_ttl_s=_seconds(env, MAX_TTL_VAR, cls.max_ttl_s),
            revocation_stale_s=_seconds(env, STALE_VAR, cls.revocation_stale_s),
            dev_mode=dev_mode,
        )
        if settings.default_ttl_s > settings.max_ttl_s:
            raise ConfigError(
                f"{DEFAULT_TTL_VAR} ({settings.default_ttl_s}) is above {MAX_TTL_VAR} "
                f"({settings.max_ttl_s})")
        return settings

    def issuer_key(self) -> SigningKey:
        """The signing key; a ConfigError naming the variable where it is missing."""
        if self.signing_key is None:
            raise ConfigError(
                f"{SIGNING_KEY_VAR} is not set: the order service issues the tokens "
                "and needs the Ed25519 signing key (a JSON file or inline JSON)")
        return self.signing_key


@dataclass(frozen=True)
class HarnessKeys:
    """A development signing key with its key set, for the devstack and test harnesses:
    ``mint`` makes a token, ``env`` the settings of the services that verify it."""

    signing_key: SigningKey

    @classmethod
    def generate(cls, kid: str = "dev") -> HarnessKeys:
        return cls(SigningKey.generate(kid, dev=True))

    def mint(self, principal: Principal, ttl_s: int = DAY_S) -> str:
        return self.signing_key.mint(principal, ttl_s)[0]

    def settings(self) -> TokenSettings:
        return TokenSettings(self.signing_key.key_set(), self.signing_key, dev_mode=True)

    def verifier(self) -> TokenVerifier:
        return TokenVerifier(self.signing_key.key_set())

    def env(self) -> dict[str, str]:
        return {KEYS_VAR: self.signing_key.key_set().to_json(),
                SIGNING_KEY_VAR: self.signing_key.to_json(), DEV_MODE_VAR: "true"}
