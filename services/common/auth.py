"""Bearer-token authentication: tokens are stored only as peppered hashes.

A token resolves to a ``Principal`` with one role: a customer of one tenant, the ops of
one telco, or a billing admin. The current principal of a request lives in a context
variable set by the gRPC auth interceptor.
"""

from __future__ import annotations

import contextvars
import enum
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import DateTime, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from services.common.db import Base
from services.common.errors import InvalidArgument, PermissionDenied, Unauthenticated

TOKEN_PREFIX = "idc_"


class Role(enum.StrEnum):
    CUSTOMER = "customer"
    OPS = "ops"
    BILLING_ADMIN = "billing_admin"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    subject: str
    role: Role
    tenant: str | None = None
    telco: str | None = None

    def __post_init__(self) -> None:
        if self.role is Role.CUSTOMER and not self.tenant:
            raise InvalidArgument.for_field("tenant", "a customer token needs its tenant")
        if self.role is Role.OPS and not self.telco:
            raise InvalidArgument.for_field("telco", "an ops token needs its telco")


class ApiToken(Base):
    __tablename__ = "api_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    subject: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(32))
    tenant: Mapped[str | None] = mapped_column(String(64))
    telco: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


def hash_token(token: str, pepper: str) -> str:
    return hmac.new(pepper.encode(), token.encode(), hashlib.sha256).hexdigest()


class TokenStore(Protocol):
    def principal_for(self, token: str) -> Principal | None: ...


class SqlTokenStore:
    """Tokens in the service's own database (table ``api_tokens``)."""

    def __init__(self, factory: sessionmaker[Session], pepper: str) -> None:
        self._factory = factory
        self._pepper = pepper

    def issue(self, principal: Principal, token: str | None = None) -> str:
        """Store a token for ``principal`` and return it; only its hash is kept."""
        token = token or TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._factory() as session, session.begin():
            existing = session.get(ApiToken, hash_token(token, self._pepper))
            if existing is None:
                session.add(
                    ApiToken(
                        token_hash=hash_token(token, self._pepper),
                        subject=principal.subject,
                        role=principal.role.value,
                        tenant=principal.tenant,
                        telco=principal.telco,
                        created_at=datetime.now(UTC),
                        revoked_at=None,
                    )
                )
        return token

    def revoke(self, token: str) -> bool:
        with self._factory() as session, session.begin():
            row = session.get(ApiToken, hash_token(token, self._pepper))
            if row is None or row.revoked_at is not None:
                return False
            row.revoked_at = datetime.now(UTC)
            return True

    def principal_for(self, token: str) -> Principal | None:
        with self._factory() as session:
            row = session.scalars(
                select(ApiToken).where(
                    ApiToken.token_hash == hash_token(token, self._pepper),
                    ApiToken.revoked_at.is_(None),
                )
            ).first()
        if row is None:
            return None
        return Principal(row.subject, Role(row.role), row.tenant, row.telco)


_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "idc_principal", default=None
)


def bind_principal(principal: Principal | None) -> contextvars.Token[Principal | None]:
    return _current.set(principal)


def reset_principal(token: contextvars.Token[Principal | None]) -> None:
    _current.reset(token)


def current_principal() -> Principal:
    principal = _current.get()
    if principal is None:
        raise Unauthenticated("this call needs an 'authorization: Bearer <token>' header")
    return principal


def require_role(*roles: Role) -> Principal:
    principal = current_principal()
    if principal.role not in roles:
        allowed = ", ".join(role.value for role in roles)
        raise PermissionDenied(f"this call is for {allowed}; your token is {principal.role}")
    return principal


def parse_bearer(header: str | None) -> str:
    if not header:
        raise Unauthenticated("missing 'authorization: Bearer <token>' metadata")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the authorization metadata must be 'Bearer <token>'")
    return token.strip()
