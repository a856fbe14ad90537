"""Approving: each telco's decision on an order (both must approve the current router
payloads; one rejection ends it), and the end of orders whose approval window passed."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from idc.events.v1 import order_pb2 as order_events
from idc.order.v1 import order_pb2
from services.common.auth import Principal
from services.order import approval_log, convert, store
from services.order.context import (
    SYSTEM_EXPIRY,
    SYSTEM_PROVISIONING,
    OrderContext,
    emit,
    slots,
)
from services.order.domain.catalogue import Side
from services.order.domain.lifecycle import (
    ApprovalState,
    Approver,
    CircuitState,
    OrderState,
    OrderType,
    Outcome,
    check_approver,
    circuit_state_after,
    decide_approval,
)
from services.order.domain.validation import require_reason
from services.order.tables import ApprovalRow, OrderRow


class Approving:
    def __init__(self, context: OrderContext) -> None:
        self.context = context

    def _decided_on(self, session: Session, principal: Principal, order_id: str
                    ) -> tuple[OrderRow, Approver, Side]:
        """The order ``principal`` decides on, locked, and the side their telco decides
        for; refused unless the order awaits that decision from them."""
        telco = principal.telco or ""
        approver = Approver(principal.subject, telco,
                            self.context.catalogue.side_of_telco(telco))
        order = store.get_order(session, order_id, None, for_update=True)
        side = check_approver(OrderState(order.state), order.id, order.requested_by,
                              approver)
        return order, approver, side

    def approve(self, principal: Principal, order_id: str, payload_sha256: str,
                comment: str) -> order_pb2.Order:
        context = self.context
        require_reason("comment", comment, required=False)
        with context.uow.write() as session:
            order, approver, side = self._decided_on(session, principal, order_id)
            plan = store.plans(session, order.id).get(side.value)
            complete = decide_approval(
                OrderState(order.state), order.id, order.requested_by, approver,
                slots(session, order.id), plan.sha256 if plan else None,
                order.plan_error, payload_sha256)
            row = session.get(ApprovalRow, (order.id, side.value))
            assert row is not None
            approval_log.decide(session, row, ApprovalState.APPROVED, context.clock(),
                                approver=principal.ref, payload_sha256=payload_sha256,
                                comment=comment)
            context.touch(order)
            if complete:
                self._approved(session, order)
            return convert.order(session, order)

    def _approved(self, session: Session, order: OrderRow) -> None:
        """Both telcos approved: the order goes to provisioning with the approved payloads'
        hashes, in OrderApproved."""
        context, catalogue = self.context, self.context.catalogue
        context.move(session, order, OrderState.APPROVED, SYSTEM_PROVISIONING,
                     "both telcos approved; handed to provisioning")
        order.approved_at = context.clock()
        circuit = store.get_circuit(session, order.circuit_id, None)
        previous = convert.circuit_parameters(catalogue, circuit, circuit.id,
                                              circuit.bandwidth_mbps, circuit.burst_mbps)
        circuit.state = circuit_state_after(OrderType(order.type), Outcome.APPROVED,
                                            CircuitState(circuit.state)).value
        circuit.updated_at = context.clock()
        message = order_events.OrderApproved(
            event_id=str(uuid.uuid4()), occurred_at=convert.timestamp(context.clock()),
            order_id=order.id, operation=convert.OPERATION[OrderType(order.type)],
            circuit=convert.circuit_parameters(catalogue, order, circuit.id,
                                               order.bandwidth_mbps, order.burst_mbps),
            price=convert.price_terms(order))
        if order.type == OrderType.CHANGE:
            message.previous_circuit.CopyFrom(previous)
        plans = store.plans(session, order.id)
        for approval in store.approvals(session, order.id):
            message.approvals.append(order_events.ApprovedPayload(
                side=convert.side_proto(approval.side), telco_id=approval.telco_id,
                router_name=catalogue.site_of(catalogue.ports[
                    order.a_port_id if approval.side == Side.SINGAPORE else order.z_port_id
                ]).router,
                payload_sha256=plans[approval.side].sha256, approver=approval.approver,
                approve_time=convert.timestamp(approval.decided_at)))
        emit(session, circuit.id, message)

    def reject(self, principal: Principal, order_id: str, reason: str) -> order_pb2.Order:
        context = self.context
        require_reason("reason", reason, required=True)
        with context.uow.write() as session:
            order, _, side = self._decided_on(session, principal, order_id)
            row = session.get(ApprovalRow, (order.id, side.value))
            assert row is not None
            approval_log.decide(session, row, ApprovalState.REJECTED, context.clock(),
                                approver=principal.ref, comment=reason)
            circuit = context.end(session, order, OrderState.REJECTED, Outcome.WITHDRAWN,
                                  principal.subject,
                                  f"rejected by telco {row.telco_id}: {reason}")
            emit(session, circuit.id, context.rejected(
                order, circuit, reason, rejected_by=principal.ref, side=side))
            return convert.order(session, order)

    def expire_due(self, limit: int = 100) -> int:
        """Reject orders whose approval window passed; returns how many."""
        context = self.context
        with context.uow.write() as session:
            due = store.approval_window_passed(session, context.clock(), limit)
            for order in due:
                context.withdraw_pending_approvals(session, order.id, ApprovalState.EXPIRED)
                circuit = context.end(
                    session, order, OrderState.REJECTED, Outcome.WITHDRAWN, SYSTEM_EXPIRY,
                    "the approval window passed without both telcos approving")
                emit(session, circuit.id, context.rejected(
                    order, circuit, "approval window expired", expired=True))
            return len(due)
