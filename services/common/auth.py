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
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import DateTime, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from services.common.db import Base
from services.common.errors import InvalidArgument, PermissionDenied, Unauthenticated

TOKEN_PREFIX = "idc_"
# How long a resolved principal is reused without asking the database again: a busy
# client's calls then cost one token lookup per this window instead of one each. A token
# revoked through another process (``idcctl admin tokens revoke``) stops working within
# this time; one revoked through the same store stops at once. Kept well below the time
# an operator (or a script) takes between revoking a token and trying it.
PRINCIPAL_CACHE_TTL_S = 0.1
# Principals kept at most; the least recently resolved go first.
PRINCIPAL_CACHE_SIZE = 4096


class Role(enum.StrEnum):
    CUSTOMER = "customer"
    OPS = "ops"
    BILLING_ADMIN = "billing_admin"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    """Who is calling. ``subject`` is the person's name (e-mail-shaped, personal data: it
    stays in the service that was called); ``ref`` is the opaque id that goes on events,
    across the border and onto routers."""

    subject: str
    role: Role
    tenant: str | None = None
    telco: str | None = None
    # The issuer's id for this principal; empty for principals built in code (tests).
    id: str = ""

    @property
    def ref(self) -> str:
        """The opaque id of this principal: the issuer's, else one derived from the subject."""
        if self.id:
            return self.id
        return "pr-" + hashlib.sha256(self.subject.encode()).hexdigest()[:16]

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
    """Tokens in the service's own database (table ``api_tokens``).

    A known token's principal is cached for ``cache_ttl_s`` (every call would otherwise
    cost a database round trip); unknown and revoked tokens are never cached.
    """

    def __init__(self, factory: sessionmaker[Session], pepper: str, *,
                 cache_ttl_s: float = PRINCIPAL_CACHE_TTL_S,
                 cache_size: int = PRINCIPAL_CACHE_SIZE) -> None:
        self._factory = factory
        self._pepper = pepper
        self._ttl_s = cache_ttl_s
        self._size = cache_size
        self._lock = threading.Lock()
        # token hash -> (monotonic expiry, principal)
        self._cache: OrderedDict[str, tuple[float, Principal]] = OrderedDict()

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
        token_hash = hash_token(token, self._pepper)
        with self._lock:
            self._cache.pop(token_hash, None)
        with self._factory() as session, session.begin():
            row = session.get(ApiToken, token_hash)
            if row is None or row.revoked_at is not None:
                return False
            row.revoked_at = datetime.now(UTC)
            return True

    def principal_for(self, token: str) -> Principal | None:
        token_hash = hash_token(token, self._pepper)
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(token_hash)
            if cached is not None and cached[0] > now:
                return cached[1]
        with self._factory() as session:
            row = session.execute(
                select(ApiToken.subject, ApiToken.role, ApiToken.tenant, ApiToken.telco).where(
                    ApiToken.token_hash == token_hash,
                    ApiToken.revoked_at.is_(None),
                )
            ).first()
        if row is None:
            with self._lock:
                self._cache.pop(token_hash, None)
            return None
        principal = Principal(row.subject, Role(row.role), row.tenant, row.telco)
        if self._ttl_s > 0:
            with self._lock:
                self._cache[token_hash] = (now + self._ttl_s, principal)
                self._cache.move_to_end(token_hash)
                while len(self._cache) > self._size:
                    self._cache.popitem(last=False)
        return principal


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
