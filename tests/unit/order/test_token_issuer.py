"""The token issuer: lifetimes, one principal id per principal, rotation, revocation through
the outbox, and an audit row for every call."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from idc.events.v1 import token_pb2
from services.common import db
from services.common.auth import Principal, Role
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound, Unauthenticated
from services.common.events.tables import OutboxRow
from services.common.events.topics import TOKEN_REVOCATIONS
from services.common.tokens import SigningKey, TokenSettings, TokenVerifier
from services.order.app import MIGRATIONS
from services.order.token_issuer import TokenIssuer, principal_request
from services.order.token_tables import TokenAuditRow

ADMIN = Principal("root@ops", Role.ADMIN, id="pr-root")
BOB = Principal("bob@acme", Role.CUSTOMER, tenant="acme")


class Clock:
    now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Issuer:
    issuer: TokenIssuer
    verifier: TokenVerifier
    clock: Clock
    factory: sessionmaker[Session]

    def revocations(self) -> list[token_pb2.TokenRevoked]:
        with self.factory() as session:
            rows = session.scalars(select(OutboxRow).where(OutboxRow.topic == TOKEN_REVOCATIONS)
                                   .order_by(OutboxRow.id))
            return [token_pb2.TokenRevoked.FromString(row.payload) for row in rows]

    def feed(self) -> None:
        """What every service's revocation reader does with the topic."""
        for event in self.revocations():
            self.verifier.revoked.add(event.token_id, event.revoke_time.ToSeconds(),
                                      event.expire_time.ToSeconds())


@pytest.fixture
def it(tmp_path: Path) -> Issuer:
    url = f"sqlite:///{tmp_path / 'order.db'}"
    db.migrate(url, MIGRATIONS)
    factory = db.make_session_factory(db.make_engine(url))
    key, clock = SigningKey.generate("k1"), Clock()
    settings = TokenSettings(key.key_set(), key, default_ttl_s=3600, max_ttl_s=7200)
    return Issuer(TokenIssuer(factory, key, settings, clock),
                  TokenVerifier(key.key_set(), clock=clock), clock, factory)


def test_issue_uses_the_default_lifetime_and_refuses_one_above_the_maximum(it: Issuer) -> None:
    token, record = it.issuer.issue(ADMIN, BOB, None)
    assert (record.expires_at - record.issued_at).total_seconds() == 3600
    principal = it.verifier.principal_for(token)
    assert principal is not None and principal.tenant == "acme"
    assert principal.id == record.principal_id and record.issued_by == "pr-root"
    with pytest.raises(InvalidArgument) as refused:
        it.issuer.issue(ADMIN, BOB, 7201)
    assert [v.field for v in refused.value.violations] == ["ttl"]
    assert "IDC_TOKEN_MAX_TTL_S" in refused.value.violations[0].description


def test_one_principal_id_per_subject_role_and_tenant(it: Issuer) -> None:
    first = it.issuer.issue(ADMIN, BOB, None)[1]
    second = it.issuer.issue(ADMIN, BOB, None)[1]
    as_ops = it.issuer.issue(ADMIN, Principal("bob@acme", Role.OPS, telco="sg"), None)[1]
    assert first.principal_id == second.principal_id != as_ops.principal_id
    assert first.token_id != second.token_id


def test_rotation_keeps_the_principal_and_stops_the_old_token_after_its_grace(
    it: Issuer,
) -> None:
    old_token, old = it.issuer.issue(ADMIN, BOB, None)
    new_token, new, replaced = it.issuer.rotate(ADMIN, old.token_id, None, 60)
    assert new.principal_id == old.principal_id and new.token_id != old.token_id
    it.feed()
    assert it.verifier.principal_for(old_token) is not None  # within the grace
    it.clock.now += 60
    with pytest.raises(Unauthenticated, match="revoked"):
        it.verifier.principal_for(old_token)
    assert it.verifier.principal_for(new_token) is not None
    with pytest.raises(FailedPrecondition):
        it.issuer.rotate(ADMIN, old.token_id, None, None)
    with pytest.raises(InvalidArgument) as refused:
        it.issuer.rotate(ADMIN, new.token_id, None, 3601)
    assert refused.value.violations[0].field == "grace"
    assert replaced.revoked_at is not None


def test_revocation_goes_through_the_outbox_and_is_idempotent(it: Issuer) -> None:
    token, record = it.issuer.issue(ADMIN, BOB, None)
    revoked = it.issuer.revoke(ADMIN, record.token_id)
    assert revoked.revoked_at is not None
    it.issuer.revoke(ADMIN, record.token_id)
    events = it.revocations()
    assert [e.token_id for e in events] == [record.token_id]  # the second changed nothing
    assert events[0].principal_id == record.principal_id
    it.feed()
    with pytest.raises(Unauthenticated, match="revoked"):
        it.verifier.principal_for(token)
    with pytest.raises(NotFound):
        it.issuer.revoke(ADMIN, "no-such-token")
    listed, _ = it.issuer.list(ADMIN, include_inactive=False)
    assert record.token_id not in {r.token_id for r in listed}
    everything, _ = it.issuer.list(ADMIN, include_inactive=True)
    assert record.token_id in {r.token_id for r in everything}


def test_the_list_comes_in_pages(it: Issuer) -> None:
    ids = [it.issuer.issue(ADMIN, BOB, None)[1].token_id for _ in range(3)]
    first, following = it.issuer.list(ADMIN, False, page_size=2)
    assert len(first) == 2 and following
    rest, last = it.issuer.list(ADMIN, False, page_size=2, page_token=following)
    assert last == "" and {r.token_id for r in [*first, *rest]} == set(ids)


def test_every_call_is_audited_with_the_opaque_actor(it: Issuer) -> None:
    record = it.issuer.issue(ADMIN, BOB, None)[1]
    it.issuer.list(ADMIN, include_inactive=True)
    it.issuer.rotate(ADMIN, record.token_id, None, None)
    it.issuer.revoke(ADMIN, record.token_id)
    with it.factory() as session:
        audit = [(a.actor, a.action) for a in session.scalars(
            select(TokenAuditRow).order_by(TokenAuditRow.id))]
    assert audit == [("pr-root", "issue"), ("pr-root", "list"), ("pr-root", "rotate"),
                     ("pr-root", "revoke")]


def test_a_request_names_the_field_it_gets_wrong() -> None:
    for args, field in [(("", "customer", "acme", ""), "subject"),
                        (("x", "root", "", ""), "role"),
                        (("x", "ops", "acme", "sg"), "tenant_id"),
                        (("x", "ops", "", ""), "telco"),
                        (("x", "ops", "", "hk"), "telco"),
                        (("x", "customer", "", ""), "tenant_id")]:
        with pytest.raises(InvalidArgument) as refused:
            principal_request(*args)
        assert refused.value.violations[0].field == field, args
