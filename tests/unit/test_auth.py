"""Token store: hashed tokens, the principal cache and how revocation reaches it."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from services.common import db
from services.common.auth import (
    PRINCIPAL_CACHE_TTL_S,
    ApiToken,
    Principal,
    Role,
    SqlTokenStore,
)

ALICE = Principal("alice@acme", Role.CUSTOMER, tenant="acme")


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'tokens.db'}"
    db.migrate(url, Path("services/order/migrations"))
    return url


def _store(url: str, cache_ttl_s: float = PRINCIPAL_CACHE_TTL_S, cache_size: int = 100
           ) -> SqlTokenStore:
    return SqlTokenStore(db.make_session_factory(db.make_engine(url)), "pepper",
                         cache_ttl_s=cache_ttl_s, cache_size=cache_size)


def test_only_the_hash_is_stored_and_unknown_tokens_resolve_to_nothing(url: str) -> None:
    store = _store(url)
    token = store.issue(ALICE)
    with db.make_session_factory(db.make_engine(url))() as session:
        hashes = list(session.scalars(select(ApiToken.token_hash)))
    assert token not in hashes and len(hashes) == 1
    assert store.principal_for(token) == ALICE
    assert store.principal_for(token + "x") is None


def test_revocation_through_the_same_store_is_immediate(url: str) -> None:
    store = _store(url, cache_ttl_s=3600)
    token = store.issue(ALICE)
    assert store.principal_for(token) == ALICE  # now cached
    assert store.revoke(token)
    assert store.principal_for(token) is None


def test_revocation_elsewhere_is_seen_once_the_cached_principal_expires(url: str) -> None:
    caching, other_process = _store(url, cache_ttl_s=3600), _store(url)
    token = caching.issue(ALICE)
    assert caching.principal_for(token) == ALICE
    assert other_process.revoke(token)
    # Within the TTL the cached principal is still answered (the documented window) ...
    assert caching.principal_for(token) == ALICE
    # ... and a store without a cache window sees the revocation at once.
    assert _store(url, cache_ttl_s=0).principal_for(token) is None


def test_the_cache_keeps_at_most_its_size(url: str) -> None:
    store = _store(url, cache_ttl_s=3600, cache_size=2)
    tokens = [store.issue(Principal(f"u{i}@acme", Role.CUSTOMER, tenant="acme"))
              for i in range(3)]
    for token in tokens:
        store.principal_for(token)
    _store(url).revoke(tokens[0])  # evicted from the cache: the database answers
    assert store.principal_for(tokens[0]) is None
    _store(url).revoke(tokens[2])  # still cached
    assert store.principal_for(tokens[2]) is not None
