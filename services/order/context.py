"""What the order service's use cases share: their collaborators, and the steps every one
of them takes on an order's rows (a state move with its audit entry and metrics, the end
of an order with its circuit, an event to the outbox)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from google.protobuf.message import Message
from sqlalchemy.orm import Session

from idc.events.v1 import order_pb2 as order_events
from services.common.events import outbox
from services.common.events.topics import ORDER_EVENTS
from services.order import approval_log, convert, store
from services.order.disclosure import ContactVault
from services.order.domain.catalogue import Catalogue, Side
from services.order.domain.lifecycle import (
    LIVE_CIRCUIT_STATES,
    ApprovalSlot,
    ApprovalState,
    CircuitState,
    OrderState,
    OrderType,
    Outcome,
    check_transition,
    circuit_state_after,
)
from services.order.domain.pricing import PriceBook
from services.order.metrics import OrderMetrics
from services.order.settings import OrderSettings
from services.order.tables import AuditRow, CircuitRow, OrderRow
from services.order.unit_of_work import UnitOfWork

# The actors of the moves no person makes.
SYSTEM_EXPIRY = "system:approval-expiry"
SYSTEM_PROVISIONING = "system:provisioning"
SYSTEM_SCHEDULER = "system:scheduler"


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class OrderContext:
    uow: UnitOfWork
    catalogue: Catalogue
    price_book: PriceBook
    settings: OrderSettings
    contacts: ContactVault
    clock: Callable[[], datetime] = now
    metrics: OrderMetrics = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "metrics", OrderMetrics(self.clock))

    def capacity(self, session: Session) -> store.CapacityFigures:
        return store.capacity(session, self.catalogue, self.settings.channel_capacity_mbps)

    # -- steps on an order's rows, inside the caller's transaction -------------------------

    def audit(self, session: Session, order: OrderRow, actor: str, reason: str,
              from_state: OrderState | None, to_state: OrderState) -> None:
        session.add(AuditRow(order_id=order.id, at=self.clock(), actor=actor, reason=reason,
                             from_state=from_state.value if from_state else None,
                             to_state=to_state.value))

    def touch(self, order: OrderRow) -> None:
        order.updated_at = self.clock()
        order.version += 1

    def move(self, session: Session, order: OrderRow, target: OrderState, actor: str,
             reason: str) -> None:
        current = OrderState(order.state)
        check_transition(current, target, order.id)
        self.metrics.left(session, order, current)
        order.state = target.value
        if target.terminal:
            order.completed_at = self.clock()
            order.reserved_mbps = 0  # the reservation ends with the order, whatever the outcome
        self.touch(order)
        self.audit(session, order, actor, reason, current, target)

    def end(self, session: Session, order: OrderRow, target: OrderState, outcome: Outcome,
            actor: str, reason: str) -> CircuitRow:
        """Move ``order`` to the terminal ``target``; its circuit follows the ``outcome``
        and, once it is gone, gives back its VLANs."""
        self.move(session, order, target, actor, reason)
        circuit = store.get_circuit(session, order.circuit_id, None)
        circuit.state = circuit_state_after(
            OrderType(order.type), outcome, CircuitState(circuit.state)).value
        if circuit.pending_order_id == order.id:
            circuit.pending_order_id = None
        if order.revert_order_id:
            if target is OrderState.COMPLETED:  # the boost is in force: its revert is next
                circuit.pending_order_id = order.revert_order_id
            else:
                self._drop_revert(session, order, target)
        if CircuitState(circuit.state) not in LIVE_CIRCUIT_STATES:
            store.release_vlans(session, circuit.id)
        circuit.updated_at = self.clock()
        return circuit

    def _drop_revert(self, session: Session, boost: OrderRow, outcome: OrderState) -> None:
        """A boost that ended without taking effect takes its revert with it."""
        assert boost.revert_order_id is not None
        revert = store.get_order(session, boost.revert_order_id, None, for_update=True)
        if OrderState(revert.state).terminal:
            return
        self.move(session, revert, OrderState.CANCELLED, SYSTEM_SCHEDULER,
                  f"boost {boost.id} ended {outcome} without taking effect; nothing to revert")
        self.withdraw_pending_approvals(session, revert.id, ApprovalState.PENDING)
        emit(session, revert.circuit_id, cancelled(self.clock(), revert, SYSTEM_SCHEDULER))

    def withdraw_pending_approvals(self, session: Session, order_id: str,
                                   to: ApprovalState) -> None:
        for approval in store.approvals(session, order_id):
            if ApprovalState(approval.state).awaiting_decision and approval.state != to.value:
                approval_log.decide(session, approval, to, self.clock(),
                                    approver=SYSTEM_EXPIRY if to is ApprovalState.EXPIRED
                                    else None)

    def rejected(self, order: OrderRow, circuit: CircuitRow, reason: str, *,
                 rejected_by: str = "", side: Side | None = None,
                 expired: bool = False) -> order_events.OrderRejected:
        """OrderRejected for ``order``: by a telco (its ``side``) or by the service."""
        message = order_events.OrderRejected(
            event_id=str(uuid.uuid4()), occurred_at=convert.timestamp(self.clock()),
            order_id=order.id, circuit_id=circuit.id,
            operation=convert.OPERATION[OrderType(order.type)], rejected_by=rejected_by,
            reason=reason, expired=expired)
        if side is not None:
            message.side = convert.side_proto(side.value)
        return message


def slots(session: Session, order_id: str) -> dict[Side, ApprovalSlot]:
    """The order's approvals as the lifecycle's decisions take them."""
    return {
        Side(a.side): ApprovalSlot(Side(a.side), ApprovalState(a.state), a.payload_sha256)
        for a in store.approvals(session, order_id)
    }


def cancelled(moment: datetime, order: OrderRow, by: str) -> order_events.OrderCancelled:
    return order_events.OrderCancelled(
        event_id=str(uuid.uuid4()), occurred_at=convert.timestamp(moment), order_id=order.id,
        circuit_id=order.circuit_id, operation=convert.OPERATION[OrderType(order.type)],
        cancelled_by=by)


def awaiting_approval(moment: datetime, order: OrderRow) -> order_events.OrderAwaitingApproval:
    return order_events.OrderAwaitingApproval(
        event_id=str(uuid.uuid4()), occurred_at=convert.timestamp(moment), order_id=order.id,
        circuit_id=order.circuit_id, operation=convert.OPERATION[OrderType(order.type)],
        boost_order_id=order.boost_order_id or "",
        approval_expire_time=convert.timestamp(order.approval_expire_at))


def emit(session: Session, circuit_id: str, message: Message) -> None:
    """An event of idc.order.events, keyed by its circuit, in ``session``'s transaction."""
    outbox.add(session, ORDER_EVENTS, circuit_id, message)
