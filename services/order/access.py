"""Access rules both partner APIs (gRPC and REST) apply before a use case: whose rows a
principal reads, and the ids a call names."""

from __future__ import annotations

from services.common.auth import Principal, Role
from services.common.errors import InvalidArgument, PermissionDenied
from services.order.domain.validation import id_problem


def scope(principal: Principal) -> str | None:
    """The tenant a reader is confined to; None for staff, who read every tenant."""
    return principal.tenant if principal.role is Role.CUSTOMER else None


def require_id(value: str, field: str, what: str) -> None:
    problem = id_problem(value, what)
    if problem:
        raise InvalidArgument.for_field(field, problem)


def tenant_filter(principal: Principal, requested: str) -> str | None:
    confined_to = scope(principal)
    if confined_to is not None and requested and requested != confined_to:
        raise PermissionDenied("customers can only list their own tenant's orders and circuits")
    return confined_to if confined_to is not None else (requested or None)
