"""What provisioning's outcome (CircuitActivated, CircuitModified, CircuitDisconnected or
ProvisioningFailed) does to an order, and how the audit trail says it."""

from __future__ import annotations

import enum
from collections.abc import Iterable

from services.order.domain.lifecycle import OrderState, OrderType


class OutcomeVerdict(enum.StrEnum):
    SUCCEED = "SUCCEED"
    FAIL = "FAIL"
    # The order already ended: the event is a repeat (delivery is at least once).
    IGNORE = "IGNORE"


COMPLETED_REASONS = {
    OrderType.NEW: "circuit activated on both routers",
    OrderType.CHANGE: "bandwidth changed on both routers",
    OrderType.DISCONNECT: "circuit removed from both routers",
}


def decide_outcome(order_id: str, order_state: OrderState, order_type: OrderType,
                   event_name: str, succeeded: OrderType | None) -> OutcomeVerdict:
    """``succeeded`` is the order type the success event completes, None for a failure.
    ValueError for an event that cannot be this order's: no retry will make it fit."""
    if order_state.terminal:
        return OutcomeVerdict.IGNORE
    if order_state not in (OrderState.APPROVED, OrderState.IN_PROGRESS):
        raise ValueError(f"{event_name} for order {order_id}, which is {order_state} and was "
                         "never handed to provisioning")
    if succeeded is None:
        return OutcomeVerdict.FAIL
    if succeeded is not order_type:
        raise ValueError(f"{event_name} does not fit {order_type} order {order_id}")
    return OutcomeVerdict.SUCCEED


def failure_reason(message: str, router_errors: Iterable[tuple[str, str]]) -> str:
    """The audit reason of a failed order; ``router_errors`` are (router, message) pairs,
    those without a message left out."""
    reasons = "; ".join(f"{router}: {text}" for router, text in router_errors if text)
    return f"provisioning failed: {message}" + (f" ({reasons})" if reasons else "")
