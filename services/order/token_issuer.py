"""The token issuer: signs tokens, keeps their metadata, rotates and revokes them.

Runs in the order service (its TokenService, admin only). The order database holds what was
issued (table ``issued_tokens``: never the token itself) and every call (``token_audit``).
A revocation is written to the outbox in the transaction that records it, so it reaches the
topic ``idc.token.revocations`` even after a crash; every service reads that topic.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from idc.events.v1 import token_pb2
from services.common.auth import Principal, Role
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.events import outbox
from services.common.events.topics import TOKEN_REVOCATIONS
from services.common.paging import after, page_of, page_request
from services.common.timestamps import to_timestamp
from services.common.tokens import SigningKey, TokenSettings
from services.order.token_tables import IssuedTokenRow, TokenAuditRow

# How long a rotated token may keep working beside its successor.
MAX_GRACE_S = 3_600
DEFAULT_PAGE, MAX_PAGE = 100, 1_000
TELCOS = ("sg", "cq")


@dataclass(frozen=True)
class TokenRecord:
    token_id: str
    principal_id: str
    subject: str
    role: str
    tenant: str | None
    telco: str | None
    key_id: str
    issued_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    issued_by: str

    @classmethod
    def of(cls, row: IssuedTokenRow) -> TokenRecord:
        return cls(row.token_id, row.principal_id, row.subject, row.role, row.tenant,
                   row.telco, row.key_id, row.issued_at, row.expires_at, row.revoked_at,
                   row.issued_by)


def principal_request(subject: str, role: str, tenant: str, telco: str) -> Principal:
    """The principal a token is asked for; InvalidArgument naming the field otherwise."""
    subject = subject.strip()
    if not subject or len(subject) > 128:
        raise InvalidArgument.for_field("subject", "give who the token is for (1-128 characters)")
    try:
        parsed = Role(role)
    except ValueError:
        raise InvalidArgument.for_field(
            "role", f"one of {', '.join(r.value for r in Role)}") from None
    if parsed is Role.CUSTOMER and not tenant:
        raise InvalidArgument.for_field("tenant_id", "a customer token needs its tenant")
    if parsed is not Role.CUSTOMER and tenant:
        raise InvalidArgument.for_field("tenant_id", "only a customer token has a tenant")
    if parsed is not Role.OPS and telco:
        raise InvalidArgument.for_field("telco", "only an ops token has a telco")
    if telco and telco not in TELCOS:
        raise InvalidArgument.for_field("telco", f"one of {', '.join(TELCOS)}")
    if len(tenant) > 64:
        raise InvalidArgument.for_field("tenant_id", "at most 64 characters")
    return Principal(subject, parsed, tenant or None, telco or None)


class TokenIssuer:
    def __init__(self, factory: sessionmaker[Session], key: SigningKey,
                 settings: TokenSettings, clock: Callable[[], float] = time.time) -> None:
        self._factory = factory
        self._key = key
        self._settings = settings
        self._clock = clock

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def ttl(self, requested_s: float | None, field: str = "ttl") -> int:
        if requested_s is None:
            return self._settings.default_ttl_s
        if requested_s <= 0:
            raise InvalidArgument.for_field(field, "a token's lifetime must be positive")
        if requested_s > self._settings.max_ttl_s:
            raise InvalidArgument.for_field(
                field, f"at most {self._settings.max_ttl_s} s (IDC_TOKEN_MAX_TTL_S)")
        return int(requested_s)

    def issue(self, actor: Principal, principal: Principal, ttl_s: float | None
              ) -> tuple[str, TokenRecord]:
        ttl = self.ttl(ttl_s)
        with self._factory() as session, session.begin():
            token, row = self._sign(session, actor, principal, ttl, replaces=None)
            self._audit(session, actor, "issue", row.token_id, {"ttl_s": ttl})
            return token, TokenRecord.of(row)

    def list(self, actor: Principal, include_inactive: bool, page_size: int = 0,
             page_token: str = "") -> tuple[list[TokenRecord], str]:
        """A page of tokens, newest first, and the next page's token (empty: the last)."""
        if page_size < 0 or page_size > MAX_PAGE:
            raise InvalidArgument.for_field("page_size", f"0 to {MAX_PAGE}")
        page = page_request(page_size, page_token, default=DEFAULT_PAGE, maximum=MAX_PAGE)
        now = self._now()
        key = (IssuedTokenRow.issued_at, IssuedTokenRow.token_id)
        with self._factory() as session, session.begin():
            query = select(IssuedTokenRow).order_by(
                IssuedTokenRow.issued_at.desc(), IssuedTokenRow.token_id).limit(page.limit + 1)
            if page.after is not None:
                query = query.where(after(key, page.after, descending=(True, False)))
            if not include_inactive:
                query = query.where(
                    IssuedTokenRow.expires_at > now,
                    or_(IssuedTokenRow.revoked_at.is_(None), IssuedTokenRow.revoked_at > now))
            rows, next_page_token = page_of(list(session.scalars(query)), page,
                                            lambda row: (row.issued_at, row.token_id))
            self._audit(session, actor, "list", None, {"include_inactive": include_inactive,
                                                       "page_token": page_token,
                                                       "count": len(rows)})
            return [TokenRecord.of(row) for row in rows], next_page_token

    def rotate(self, actor: Principal, token_id: str, ttl_s: float | None,
               grace_s: float | None) -> tuple[str, TokenRecord, TokenRecord]:
        ttl = self.ttl(ttl_s)
        grace = 0.0 if grace_s is None else grace_s
        if not 0 <= grace <= MAX_GRACE_S:
            raise InvalidArgument.for_field("grace", f"0 to {MAX_GRACE_S} s")
        with self._factory() as session, session.begin():
            old = self._get(session, token_id)
            if old.revoked_at is not None:
                raise FailedPrecondition(f"token {token_id} is revoked; issue a new one")
            principal = Principal(old.subject, Role(old.role), old.tenant, old.telco,
                                  id=old.principal_id)
            token, new = self._sign(session, actor, principal, ttl, replaces=old.token_id)
            self._revoke(session, actor, old, self._now() + timedelta(seconds=grace))
            self._audit(session, actor, "rotate", old.token_id,
                        {"new_token_id": new.token_id, "ttl_s": ttl, "grace_s": grace})
            return token, TokenRecord.of(new), TokenRecord.of(old)

    def revoke(self, actor: Principal, token_id: str) -> TokenRecord:
        with self._factory() as session, session.begin():
            row = self._get(session, token_id)
            now = self._now()
            changed = row.revoked_at is None or row.revoked_at > now
            if changed:
                self._revoke(session, actor, row, now)
            self._audit(session, actor, "revoke", token_id, {"changed": changed})
            return TokenRecord.of(row)

    def _get(self, session: Session, token_id: str) -> IssuedTokenRow:
        row = session.get(IssuedTokenRow, token_id, with_for_update=True) if token_id else None
        if row is None:
            raise NotFound(f"no token {token_id!r}")
        return row

    def _sign(self, session: Session, actor: Principal, principal: Principal, ttl_s: int,
              replaces: str | None) -> tuple[str, IssuedTokenRow]:
        pid = principal.id or self._principal_id(session, principal)
        token, claims = self._key.mint(
            Principal(principal.subject, principal.role, principal.tenant, principal.telco,
                      id=pid), ttl_s, now=self._clock())
        row = IssuedTokenRow(
            token_id=claims.jti, principal_id=pid, subject=claims.sub, role=claims.role,
            tenant=claims.tenant, telco=claims.telco, key_id=claims.kid,
            issued_at=datetime.fromtimestamp(claims.iat, UTC),
            expires_at=datetime.fromtimestamp(claims.exp, UTC), revoked_at=None,
            issued_by=actor.ref, revoked_by=None, replaces=replaces)
        session.add(row)
        session.flush()
        return token, row

    @staticmethod
    def _principal_id(session: Session, principal: Principal) -> str:
        """One id per subject, role and tenant or telco: the id earlier tokens got."""
        known = session.scalars(
            select(IssuedTokenRow.principal_id).where(
                IssuedTokenRow.subject == principal.subject,
                IssuedTokenRow.role == principal.role.value,
                IssuedTokenRow.tenant.is_(None) if principal.tenant is None
                else IssuedTokenRow.tenant == principal.tenant,
                IssuedTokenRow.telco.is_(None) if principal.telco is None
                else IssuedTokenRow.telco == principal.telco,
            ).limit(1)
        ).first()
        return known or "pr-" + secrets.token_hex(8)

    def _revoke(self, session: Session, actor: Principal, row: IssuedTokenRow,
                at: datetime) -> None:
        row.revoked_at = at
        row.revoked_by = actor.ref
        outbox.add(session, TOKEN_REVOCATIONS, row.token_id, token_pb2.TokenRevoked(
            event_id=str(uuid.uuid4()), occurred_at=to_timestamp(self._now()),
            token_id=row.token_id, principal_id=row.principal_id,
            revoke_time=to_timestamp(at), expire_time=to_timestamp(row.expires_at)))

    def _audit(self, session: Session, actor: Principal, action: str, token_id: str | None,
               detail: dict[str, object]) -> None:
        session.add(TokenAuditRow(at=self._now(), actor=actor.ref, action=action,
                                  token_id=token_id, detail=json.dumps(detail, sort_keys=True)))
