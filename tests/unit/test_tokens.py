"""Signed tokens: signature, key ids and rotation, expiry, revocation, and the settings that
refuse development keys outside dev mode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.common.auth import Principal, Role
from services.common.config import ConfigError
from services.common.errors import Unauthenticated
from services.common.tokens import (
    KeySet,
    RevokedTokens,
    SigningKey,
    TokenSettings,
    TokenVerifier,
)

ALICE = Principal("alice@acme", Role.CUSTOMER, tenant="acme", id="pr-alice")
NOW = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def _verifier(keys: KeySet, clock: Clock) -> TokenVerifier:
    return TokenVerifier(keys, RevokedTokens(clock), clock)


def test_a_signed_token_verifies_to_its_principal_and_carries_no_secret() -> None:
    key, clock = SigningKey.generate("k1"), Clock()
    token, claims = key.mint(ALICE, 3600, now=clock.now)
    assert token.startswith("idc_")
    assert _verifier(key.key_set(), clock).principal_for(token) == ALICE
    assert claims.pid == "pr-alice" and claims.exp == claims.iat + 3600
    body = token.removeprefix("idc_").split(".")[0]
    assert "private" not in body and key.to_json() not in token


def test_a_wrong_signature_or_a_changed_claim_is_refused() -> None:
    key, clock = SigningKey.generate("k1"), Clock()
    token, _ = key.mint(ALICE, 3600, now=clock.now)
    verifier = _verifier(key.key_set(), clock)
    other, _ = SigningKey.generate("k1").mint(ALICE, 3600, now=clock.now)  # same kid, other key
    with pytest.raises(Unauthenticated, match="signature"):
        verifier.principal_for(other)
    signature = token.removeprefix("idc_").split(".")[1]
    forged = key.sign(key.mint(Principal("root@ops", Role.ADMIN), 3600, now=clock.now)[1])
    forged_body = forged.removeprefix("idc_").split(".")[0]
    with pytest.raises(Unauthenticated, match="signature"):
        verifier.principal_for(f"idc_{forged_body}.{signature}")
    with pytest.raises(Unauthenticated, match="malformed"):
        verifier.principal_for("idc_bm90LWpzb24.c2ln")
    with pytest.raises(Unauthenticated, match="not an idc token"):
        verifier.principal_for("Bearer-ish")


def test_an_unknown_key_id_is_refused() -> None:
    clock = Clock()
    token, _ = SigningKey.generate("k2").mint(ALICE, 3600, now=clock.now)
    with pytest.raises(Unauthenticated, match="unknown key"):
        _verifier(SigningKey.generate("k1").key_set(), clock).principal_for(token)


def test_an_expired_token_is_refused_as_expired() -> None:
    key, clock = SigningKey.generate("k1"), Clock()
    token, _ = key.mint(ALICE, 60, now=clock.now)
    verifier = _verifier(key.key_set(), clock)
    clock.now += 59
    assert verifier.principal_for(token) == ALICE
    clock.now += 1
    with pytest.raises(Unauthenticated, match="expired"):
        verifier.principal_for(token)


def test_key_rotation_old_tokens_verify_while_their_key_is_in_the_set() -> None:
    old, new, clock = SigningKey.generate("2026-01"), SigningKey.generate("2026-02"), Clock()
    old_token, _ = old.mint(ALICE, 3600, now=clock.now)
    new_token, _ = new.mint(ALICE, 3600, now=clock.now)
    both = KeySet.from_json(old.key_set().merged(new.key_set()).to_json())
    verifier = _verifier(both, clock)
    assert verifier.principal_for(old_token) == ALICE
    assert verifier.principal_for(new_token) == ALICE
    after_removal = _verifier(new.key_set(), clock)
    assert after_removal.principal_for(new_token) == ALICE
    with pytest.raises(Unauthenticated, match="unknown key"):
        after_removal.principal_for(old_token)


def test_a_revoked_token_is_refused_from_its_revoke_time_and_forgotten_after_expiry() -> None:
    key, clock = SigningKey.generate("k1"), Clock()
    token, claims = key.mint(ALICE, 3600, now=clock.now)
    verifier = _verifier(key.key_set(), clock)
    # A rotation's grace: refused only from 30 s on.
    verifier.revoked.add(claims.jti, clock.now + 30, claims.exp)
    assert verifier.principal_for(token) == ALICE
    clock.now += 30
    with pytest.raises(Unauthenticated, match="revoked"):
        verifier.principal_for(token)
    # An earlier revoke time wins over a later one; a later one does not postpone it.
    verifier.revoked.add(claims.jti, clock.now + 600, claims.exp)
    with pytest.raises(Unauthenticated, match="revoked"):
        verifier.principal_for(token)
    clock.now = claims.exp + 1
    verifier.revoked.add("other", clock.now, clock.now + 10)
    assert len(verifier.revoked) == 1  # the expired token's entry is gone


def _env(key: SigningKey, **extra: str) -> dict[str, str]:
    return {"IDC_TOKEN_KEYS": key.key_set().to_json(), "IDC_TOKEN_SIGNING_KEY": key.to_json(),
            **extra}


def test_settings_need_a_key_set_and_refuse_development_keys_outside_dev_mode(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match="IDC_TOKEN_KEYS is not set"):
        TokenSettings.from_env({})
    dev = SigningKey.generate("dev", dev=True)
    with pytest.raises(ConfigError, match="IDC_TOKEN_KEYS holds development keys"):
        TokenSettings.from_env(_env(dev))
    assert TokenSettings.from_env(_env(dev, IDC_DEV_MODE="true")).dev_mode
    production = SigningKey.generate("prod-1")
    keys_file, key_file = tmp_path / "keys.json", tmp_path / "key.json"
    keys_file.write_text(production.key_set().to_json())
    key_file.write_text(production.to_json())
    settings = TokenSettings.from_env({"IDC_TOKEN_KEYS": str(keys_file),
                                       "IDC_TOKEN_SIGNING_KEY": str(key_file)})
    assert settings.issuer_key().kid == "prod-1" and not settings.dev_mode
    with pytest.raises(ConfigError, match="IDC_TOKEN_SIGNING_KEY is not set"):
        TokenSettings.from_env({"IDC_TOKEN_KEYS": str(keys_file)}).issuer_key()
    with pytest.raises(ConfigError, match="IDC_TOKEN_SIGNING_KEY has key id 'prod-1'"):
        TokenSettings.from_env({"IDC_TOKEN_KEYS": SigningKey.generate("x").key_set().to_json(),
                                "IDC_TOKEN_SIGNING_KEY": str(key_file)})
    with pytest.raises(ConfigError, match="IDC_TOKEN_KEYS is not a valid key set"):
        TokenSettings.from_env({"IDC_TOKEN_KEYS": json.dumps({"keys": []})})
    with pytest.raises(ConfigError, match=r"IDC_TOKEN_DEFAULT_TTL_S .* is above"):
        TokenSettings.from_env(_env(production, IDC_TOKEN_DEFAULT_TTL_S="100",
                                    IDC_TOKEN_MAX_TTL_S="50"))
    with pytest.raises(ConfigError, match="IDC_TOKEN_MAX_TTL_S"):
        TokenSettings.from_env(_env(production, IDC_TOKEN_MAX_TTL_S="soon"))


def test_a_token_verified_once_is_still_refused_once_expired_revoked_or_its_key_is_gone() -> None:
    key, clock = SigningKey.generate("k1"), Clock()
    token, claims = key.mint(ALICE, 3600, now=clock.now)
    verifier = _verifier(key.key_set(), clock)
    assert verifier.principal_for(token) == ALICE
    assert verifier.principal_for(token) == ALICE  # the remembered signature
    verifier.keys = SigningKey.generate("k1").key_set()  # rotated: same kid, another key
    with pytest.raises(Unauthenticated, match="signature"):
        verifier.principal_for(token)
    verifier.keys = key.key_set()
    assert verifier.principal_for(token) == ALICE
    verifier.revoked.add(claims.jti, clock.now, claims.exp)
    with pytest.raises(Unauthenticated, match="revoked"):
        verifier.principal_for(token)
    fresh, _ = key.mint(ALICE, 60, now=clock.now)
    assert verifier.principal_for(fresh) == ALICE
    clock.now += 61
    with pytest.raises(Unauthenticated, match="expired"):
        verifier.principal_for(fresh)
