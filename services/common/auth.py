"""Bearer-token authentication: who is calling, and the role checks.

A token resolves to a ``Principal`` with one role: a customer of one tenant, the ops of
one telco, a billing admin or an admin. Tokens are signed by the issuer and verified
offline (services/common/tokens.py). The current principal of a request lives in a context
variable set by the gRPC auth interceptor.
"""

from __future__ import annotations

import contextvars
import enum
import hashlib
from dataclasses import dataclass
from typing import Protocol

from services.common.errors import InvalidArgument, PermissionDenied, Unauthenticated

TOKEN_PREFIX = "idc_"


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


class TokenStore(Protocol):
    """What the gRPC interceptor asks: the principal of a bearer token, None when unknown
    (it may raise Unauthenticated to say why a token is refused: expired, revoked)."""

    def principal_for(self, token: str) -> Principal | None: ...


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
