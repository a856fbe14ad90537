"""The two ends of a circuit and which one is billed (no I/O).

Each circuit is metered at both ends: the Singapore telco's router (A-end) and the
Chongqing telco's router (Z-end). The end billed is the one on the router of the telco
that bills the customer, i.e. the customer's billing entity's telco; the other end is
reconciled against it (domain/reconciliation.py).
"""

from __future__ import annotations

from enum import IntEnum

from services.billing.domain.entities import BillingEntity
from services.common.errors import InvalidArgument


class Side(IntEnum):
    """idc.type.v1.Side numbers."""

    SINGAPORE = 1
    CHONGQING = 2

    @property
    def other(self) -> Side:
        return Side.CHONGQING if self is Side.SINGAPORE else Side.SINGAPORE


# Telco ids of the order catalogue -> the side of their routers.
TELCO_SIDES = {"sg": Side.SINGAPORE, "cq": Side.CHONGQING}


def billed_side(entity: BillingEntity) -> Side:
    """The end billed for the entity's customers: its telco's; an entity without a telco
    bills the Singapore end (the A-end, the one metered before both ends were)."""
    if not entity.telco:
        return Side.SINGAPORE
    try:
        return TELCO_SIDES[entity.telco]
    except KeyError:
        raise InvalidArgument(
            f"billing entity {entity.id}: telco {entity.telco!r} has no routers the meter "
            f"reads (known: {', '.join(sorted(TELCO_SIDES))})"
        ) from None


def side_of(value: int) -> Side:
    """A stored or received side; 0 (unspecified) is the Singapore end (see usage.proto)."""
    if value == 0:
        return Side.SINGAPORE
    try:
        return Side(value)
    except ValueError:
        raise InvalidArgument.for_field("side", f"{value} is not a side") from None
