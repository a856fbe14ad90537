"""Approving: each telco's decision on an order (both must approve the current router
payloads; one rejection ends it; a boost's approval binds its revert's payload too), the
end of orders whose approval window passed, and the start of scheduled orders when due."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from sqlalchemy.orm import Session

from idc.events.v1 import common_pb2
from idc.events.v1 import order_pb2 as order_events
from idc.order.v1 import order_pb2
from services.common.auth import Principal
from services.common.errors import FailedPrecondition, InvalidArgument
from services.order import approval_log, convert, store
from services.order.context import (
    SYSTEM_EXPIRY,
    SYSTEM_PROVISIONING,
    SYSTEM_SCHEDULER,
    OrderContext,
    awaiting_approval,
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
    after_approval,
    check_approver,
    circuit_state_after,
    decide_approval,
)
from services.order.domain.validation import require_reason
from services.order.tables import ApprovalRow, OrderRow

log = logging.getLogger(__name__)


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
                comment: str, revert_payload_sha256: str = "") -> order_pb2.Order:
        context = self.context
        require_reason("comment", comment, required=False)
        with context.uow.write() as session:
            order, approver, side = self._decided_on(session, principal, order_id)
            revert = self._revert_to_approve(session, order, revert_payload_sha256)
            complete = self._decide(session, order, approver, side, payload_sha256, comment,
                                    principal.ref)
            if revert is not None:
                self._decide(session, revert, approver, side, revert_payload_sha256, comment,
                             principal.ref)
                row = session.get(ApprovalRow, (order.id, side.value))
                assert row is not None
                row.revert_payload_sha256 = revert_payload_sha256
            context.touch(order)
            if complete:
                self._after_approval(session, order)
                if revert is not None:
                    context.touch(revert)
                    self._after_approval(session, revert)
            return convert.order(session, order)

    def _revert_to_approve(self, session: Session, order: OrderRow, revert_sha256: str
                           ) -> OrderRow | None:
        """The revert approved with ``order`` (a boost whose revert awaits approval), or
        None; refused when the hash of the revert is missing or not wanted."""
        if order.boost_order_id:
            boost = store.get_order(session, order.boost_order_id, None)
            if OrderState(boost.state) is OrderState.PENDING_APPROVAL:
                raise FailedPrecondition(
                    f"order {order.id} reverts boost {boost.id}: approve the boost, giving "
                    "this order's payload hash as revert_payload_sha256")
        revert = (store.get_order(session, order.revert_order_id, None, for_update=True)
                  if order.revert_order_id else None)
        if revert is not None and OrderState(revert.state).terminal:
            raise FailedPrecondition(
                f"boost {order.id} has lost its revert {revert.id} ({revert.state}); it "
                "cannot take effect, reject it with a reason")
        if revert is None or OrderState(revert.state) is not OrderState.PENDING_APPROVAL:
            if revert_sha256:
                raise InvalidArgument.for_field(
                    "revert_payload_sha256", f"order {order.id} is not a boost awaiting "
                    "approval with its revert; leave it empty")
            return None
        if not revert_sha256:
            raise InvalidArgument.for_field(
                "revert_payload_sha256", f"order {order.id} is a boost: give the sha256 of "
                f"the payload of its revert {revert.id} too (ListPendingApprovals shows it); "
                "both are approved once, together")
        return revert

    @staticmethod
    def _check_not_a_booked_revert(session: Session, order: OrderRow) -> None:
        """A revert is decided on with its boost while that awaits approval: rejecting it
        alone would leave a boost that never reverts."""
        if order.boost_order_id and OrderState(store.get_order(
                session, order.boost_order_id, None).state) is OrderState.PENDING_APPROVAL:
            raise FailedPrecondition(
                f"order {order.id} reverts boost {order.boost_order_id}, which awaits "
                "approval: reject the boost (its revert goes with it)")

    def _decide(self, session: Session, order: OrderRow, approver: Approver, side: Side,
                payload_sha256: str, comment: str, ref: str) -> bool:
        """Record ``approver``'s approval of ``order``'s payload for ``side``; whether it
        completes the order's approvals."""
        context = self.context
        plan = store.plans(session, order.id).get(side.value)
        complete = decide_approval(
            OrderState(order.state), order.id, order.requested_by, approver,
            slots(session, order.id), plan.sha256 if plan else None,
            order.plan_error, payload_sha256)
        row = session.get(ApprovalRow, (order.id, side.value))
        assert row is not None
        approval_log.decide(session, row, ApprovalState.APPROVED, context.clock(),
                            approver=ref, payload_sha256=payload_sha256, comment=comment)
        return complete

    def _after_approval(self, session: Session, order: OrderRow) -> None:
        """Both telcos approved: to provisioning now, or SCHEDULED until its start."""
        context = self.context
        if after_approval(order.start_at, context.clock()) is OrderState.SCHEDULED:
            assert order.start_at is not None
            context.move(session, order, OrderState.SCHEDULED, SYSTEM_SCHEDULER,
                         f"both telcos approved; starts at {order.start_at.isoformat()} "
                         "without a person")
        elif not order.boost_order_id:
            self._approved(session, order)
        else:  # a revert waits for its boost to be in force, however late
            context.move(session, order, OrderState.SCHEDULED, SYSTEM_SCHEDULER,
                         "both telcos approved; starts once its boost is in force")

    def start_due(self, limit: int = 100) -> int:
        """Hand the SCHEDULED orders whose start came to provisioning; fail those whose
        start cannot happen. Returns how many were started or failed."""
        context = self.context
        acted = 0
        with context.uow.write() as session:
            for order in store.scheduled_due(session, context.clock(), limit):
                # Not locked: the circuit is locked after its orders elsewhere (a boost's
                # outcome locks its revert after the circuit).
                circuit = store.get_circuit(session, order.circuit_id, None)
                if circuit.pending_order_id != order.id and order.boost_order_id:
                    continue  # its boost is still with provisioning; the revert follows it
                if (circuit.pending_order_id == order.id
                        and CircuitState(circuit.state) is CircuitState.ACTIVE):
                    self._approved(session, order)
                else:
                    self._cannot_start(session, order, circuit.state)
                acted += 1
        return acted

    def _cannot_start(self, session: Session, order: OrderRow, circuit_state: str) -> None:
        reason = (f"the scheduled start of order {order.id} could not happen: circuit "
                  f"{order.circuit_id} is {circuit_state}, not ACTIVE with this order on it; "
                  "nothing was changed on the routers")
        log.warning("%s", reason)
        self.context.metrics.schedule_missed(session, "start-impossible")
        order.failure = order_pb2.OrderFailure(message=reason, rolled_back=True) \
            .SerializeToString()
        self.context.end(session, order, OrderState.FAILED, Outcome.WITHDRAWN,
                         SYSTEM_SCHEDULER, reason)
        emit(session, order.circuit_id, order_events.OrderCompleted(  # the customer's webhook
            event_id=str(uuid.uuid4()), occurred_at=convert.timestamp(self.context.clock()),
            order_id=order.id, circuit_id=order.circuit_id,
            operation=convert.OPERATION[OrderType(order.type)], success=False))

    def _approved(self, session: Session, order: OrderRow) -> None:
        """Both telcos approved: the order goes to provisioning with the approved payloads'
        hashes, in OrderApproved."""
        context, catalogue = self.context, self.context.catalogue
        context.move(session, order, OrderState.APPROVED, SYSTEM_PROVISIONING,
                     "both telcos approved; handed to provisioning" if order.start_at is None
                     else f"scheduled start {order.start_at.isoformat()}; handed to "
                     "provisioning")
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
        boost = self._boost_of(session, order)
        if boost is not None:
            message.boost.CopyFrom(boost)
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

    @staticmethod
    def _boost_of(session: Session, order: OrderRow) -> common_pb2.Boost | None:
        """The Boost an order raises (a boost) or reverts (its revert), else None."""
        boost = order if order.revert_order_id else (
            store.get_order(session, order.boost_order_id, None)
            if order.boost_order_id else None)
        if boost is None:
            return None
        assert boost.start_at is not None and boost.end_at is not None
        return convert.boost(boost.id, boost.previous_bandwidth_mbps, boost.bandwidth_mbps,
                             boost.start_at, boost.end_at, revert=boost is not order)

    def reject(self, principal: Principal, order_id: str, reason: str) -> order_pb2.Order:
        context = self.context
        require_reason("reason", reason, required=True)
        with context.uow.write() as session:
            order, _, side = self._decided_on(session, principal, order_id)
            self._check_not_a_booked_revert(session, order)
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
        """Reject orders whose approval window passed; returns how many. The revert of a
        boost in force never expires (that would leave the circuit boosted for good): it is
        reminded of instead."""
        context = self.context
        with context.uow.write() as session:
            due = store.approval_window_passed(session, context.clock(), limit)
            for order in due:
                if self._boost_in_force(session, order):
                    self._remind(session, order)
                    continue
                context.withdraw_pending_approvals(session, order.id, ApprovalState.EXPIRED)
                circuit = context.end(
                    session, order, OrderState.REJECTED, Outcome.WITHDRAWN, SYSTEM_EXPIRY,
                    "the approval window passed without both telcos approving")
                emit(session, circuit.id, context.rejected(
                    order, circuit, "approval window expired", expired=True))
            return len(due)

    @staticmethod
    def _boost_in_force(session: Session, order: OrderRow) -> bool:
        if order.boost_order_id is None:
            return False
        boost = store.get_order(session, order.boost_order_id, None)
        return OrderState(boost.state) is OrderState.COMPLETED

    def _remind(self, session: Session, revert: OrderRow) -> None:
        """A revert still awaiting approval again after a window: it stays pending with a new
        window, and operators and the customer are told again."""
        context = self.context
        log.error("revert %s of boost %s still awaits both telcos' approval; circuit %s stays "
                  "boosted", revert.id, revert.boost_order_id, revert.circuit_id)
        context.metrics.schedule_missed(session, "revert-approval-overdue")
        revert.approval_expire_at = context.clock() + timedelta(
            seconds=context.settings.approval_window_s)
        context.audit(session, revert, SYSTEM_EXPIRY,
                      "the approval window passed; a revert does not expire: it awaits both "
                      "telcos' approval again until "
                      f"{revert.approval_expire_at.isoformat(timespec='seconds')}",
                      OrderState.PENDING_APPROVAL, OrderState.PENDING_APPROVAL)
        emit(session, revert.circuit_id, awaiting_approval(context.clock(), revert))
