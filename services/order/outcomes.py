"""Provisioning's reports on an order, from idc.circuit.events: its plan (or replan), its
progress and its outcome; and the orders overdue with provisioning.

The event consumer (services/order/workers.py) runs each report in its own transaction,
passed in as ``session``; watchers are told once it commits.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, timedelta

from google.protobuf.message import Message
from sqlalchemy.orm import Session

from idc.events.v1 import circuit_pb2 as circuit_events
from idc.events.v1 import order_pb2 as order_events
from idc.events.v1 import provisioning_pb2
from idc.order.v1 import order_pb2
from services.order import approval_log, convert, store
from services.order.context import (
    SYSTEM_PROVISIONING,
    OrderContext,
    awaiting_approval,
    emit,
    slots,
)
from services.order.domain.catalogue import Side
from services.order.domain.lifecycle import (
    ApprovalState,
    CircuitState,
    OrderState,
    OrderType,
    Outcome,
    PlanContent,
    PlanVerdict,
    ProgressVerdict,
    circuit_state_after,
    decide_plan,
    decide_progress,
)
from services.order.domain.outcomes import (
    COMPLETED_REASONS,
    OutcomeVerdict,
    decide_outcome,
    failure_reason,
)
from services.order.domain.overdue import overdue_report, overdue_since
from services.order.tables import ApprovalRow, OrderRow, PlanRow

log = logging.getLogger(__name__)

# The order type each success event completes (ProvisioningFailed completes none).
SUCCEEDS: dict[type[Message], OrderType] = {
    circuit_events.CircuitActivated: OrderType.NEW,
    circuit_events.CircuitModified: OrderType.CHANGE,
    circuit_events.CircuitDisconnected: OrderType.DISCONNECT,
}


class ProvisioningOutcomes:
    def __init__(self, context: OrderContext) -> None:
        self.context = context

    def record_plan(self, session: Session, plan: provisioning_pb2.ProvisioningPlanned) -> None:
        """A plan (at submission) or replan (at prepare time) from provisioning."""
        order = session.get(OrderRow, plan.order_id, with_for_update=True)
        if order is None:
            log.warning("plan for unknown order %s ignored", plan.order_id)
            return
        if plan.circuit_id != order.circuit_id:
            raise ValueError(f"plan for order {order.id} names circuit {plan.circuit_id}, "
                             f"the order's circuit is {order.circuit_id}")
        new = self._plan_content(order.id, plan)
        current = PlanContent(
            {Side(side): row.sha256 for side, row in store.plans(session, order.id).items()},
            order.plan_error)
        decision = decide_plan(OrderState(order.state), slots(session, order.id),
                               current, new, replan=plan.replan)
        if decision.verdict is PlanVerdict.IGNORE:
            log.info("plan for order %s ignored: %s", order.id, decision.why_ignored)
            return
        if decision.verdict is PlanVerdict.BACK_TO_APPROVAL or decision.via_approval:
            self._back_to_approval(session, order, plan.reason or
                                   "a router payload changed since it was approved")
        self._replace_plan(session, order, plan, new, decision.superseded)
        if decision.verdict is PlanVerdict.REJECT:
            assert new.error is not None
            self._rejected_unplannable(session, order, new.error)
        self.context.touch(order)
        self.context.uow.notify_on_commit(session)

    @staticmethod
    def _plan_content(order_id: str, plan: provisioning_pb2.ProvisioningPlanned) -> PlanContent:
        if plan.error:
            return PlanContent({}, plan.error[:2000])  # as stored in orders.plan_error
        hashes: dict[Side, str] = {}
        for payload in plan.payloads:
            side = convert.side_from_proto(payload.side)
            if side is None:
                raise ValueError(f"plan for order {order_id} has a payload without a side")
            hashes[side] = payload.sha256
        return PlanContent(hashes, None)

    def _replace_plan(self, session: Session, order: OrderRow,
                      plan: provisioning_pb2.ProvisioningPlanned, new: PlanContent,
                      superseded: tuple[Side, ...]) -> None:
        for old_plan in store.plans(session, order.id).values():
            session.delete(old_plan)
        session.flush()
        order.plan_error = new.error
        for payload in plan.payloads if new.error is None else ():
            side = convert.side_from_proto(payload.side)
            assert side is not None  # checked by _plan_content
            session.add(PlanRow(order_id=order.id, side=side.value, sha256=payload.sha256,
                                payload=payload.SerializeToString(),
                                received_at=self.context.clock()))
        for side in superseded:
            approval = session.get(ApprovalRow, (order.id, side.value))
            assert approval is not None
            approval_log.decide(session, approval, ApprovalState.SUPERSEDED, self.context.clock(),
                                approver=SYSTEM_PROVISIONING,
                                comment="the router payload changed since it was approved")

    def _back_to_approval(self, session: Session, order: OrderRow, reason: str) -> None:
        """Provisioning refused the approved payloads and left both routers unchanged: the
        order waits for approval again, keeping its capacity and VLANs, with a new window."""
        self.context.move(session, order, OrderState.PENDING_APPROVAL, SYSTEM_PROVISIONING, reason)
        if order.boost_order_id:
            # The revert is due and cannot run as approved: the boosted bandwidth stays until
            # both telcos approve again, which needs a person.
            log.error("revert %s of boost %s went back to approval (%s); circuit %s stays "
                      "boosted until both telcos approve it again", order.id,
                      order.boost_order_id, reason, order.circuit_id)
            self.context.metrics.schedule_missed(session, "revert-needs-approval")
        order.approval_expire_at = self.context.clock() + timedelta(
            seconds=self.context.settings.approval_window_s)
        emit(session, order.circuit_id, awaiting_approval(self.context.clock(), order))
        # The refused saga's steps are over; the next approval starts a new one.
        order.approved_at = order.provisioning_step = order.provisioning_step_at = None
        circuit = store.get_circuit(session, order.circuit_id, None)
        circuit.state = circuit_state_after(OrderType(order.type), Outcome.REPLANNED,
                                            CircuitState(circuit.state)).value
        circuit.updated_at = self.context.clock()

    def _rejected_unplannable(self, session: Session, order: OrderRow, error: str) -> None:
        """No router payload can be rendered, so no telco can ever approve: the order ends
        now, with its capacity and VLANs, instead of waiting out its approval window."""
        reason = f"provisioning cannot render the router payloads: {error}"
        circuit = self.context.end(session, order, OrderState.REJECTED, Outcome.WITHDRAWN,
                                   SYSTEM_PROVISIONING, reason)
        emit(session, circuit.id, self.context.rejected(
            order, circuit, reason, rejected_by=SYSTEM_PROVISIONING))

    def record_progress(self, session: Session,
                        progress: provisioning_pb2.ProvisioningProgress) -> None:
        """A saga started or entered another step: the order is IN_PROGRESS from the first
        report on, and shows the last step."""
        if not progress.order_id:
            log.debug("progress of a redeploy (no order) ignored")
            return
        order = session.get(OrderRow, progress.order_id, with_for_update=True)
        if order is None:
            log.warning("progress for unknown order %s ignored", progress.order_id)
            return
        if progress.circuit_id != order.circuit_id or not progress.step:
            raise ValueError(f"progress for order {order.id} names circuit "
                             f"{progress.circuit_id!r} and step {progress.step!r}; the "
                             f"order's circuit is {order.circuit_id} and a step is required")
        step = progress.step[:64]  # as stored in orders.provisioning_step
        decision = decide_progress(OrderState(order.state))
        if decision.verdict is ProgressVerdict.IGNORE:
            log.info("progress %r of order %s ignored: %s", step, order.id,
                     decision.why_ignored)
            return
        if decision.verdict is ProgressVerdict.START:
            self.context.move(session, order, OrderState.IN_PROGRESS, SYSTEM_PROVISIONING,
                              f"provisioning started on the routers (step {step!r})")
        else:
            self.context.touch(order)
        order.provisioning_step = step
        order.provisioning_step_at = (progress.occurred_at.ToDatetime(tzinfo=UTC)
                                      if progress.occurred_at.seconds else self.context.clock())
        self.context.uow.notify_on_commit(session)

    def overdue(self, limit: int = 20) -> list[str]:
        """The overdue-provisioning alarm's texts (see services.order.domain.overdue)."""
        moment = self.context.clock()
        bound_s = self.context.settings.provisioning_alarm_s
        with self.context.uow.read_one_statement() as session:
            orders, more = store.approved_before(session, overdue_since(moment, bound_s),
                                                 limit)
        return overdue_report(orders, moment, bound_s, more)

    def record_outcome(self, session: Session, message: Message) -> None:
        """CircuitActivated / CircuitModified / CircuitDisconnected / ProvisioningFailed."""
        order_id: str = getattr(message, "order_id")  # noqa: B009 - one field, four types
        if not order_id:
            log.info("%s without an order (a redeploy) ignored", type(message).__name__)
            return
        order = session.get(OrderRow, order_id, with_for_update=True)
        if order is None:
            log.warning("%s for unknown order %s ignored", type(message).__name__, order_id)
            return
        verdict = decide_outcome(order.id, OrderState(order.state), OrderType(order.type),
                                 type(message).__name__, SUCCEEDS.get(type(message)))
        if verdict is OutcomeVerdict.IGNORE:
            log.info("%s for order %s ignored: already %s", type(message).__name__, order.id,
                     order.state)
            return
        if isinstance(message, circuit_events.ProvisioningFailed):
            self._failed(session, order, message)
        else:
            self._succeeded(session, order, message)
        self.context.uow.notify_on_commit(session)

    def _succeeded(self, session: Session, order: OrderRow, message: Message) -> None:
        effective = getattr(message, "effective_time")  # noqa: B009
        moment = effective.ToDatetime(tzinfo=UTC) if effective.seconds else self.context.clock()
        circuit = self.context.end(session, order, OrderState.COMPLETED, Outcome.SUCCEEDED,
                                   SYSTEM_PROVISIONING, COMPLETED_REASONS[OrderType(order.type)])
        if order.type == OrderType.NEW:
            circuit.activated_at = moment
        elif order.type == OrderType.CHANGE:
            circuit.bandwidth_mbps, circuit.burst_mbps = order.bandwidth_mbps, order.burst_mbps
            circuit.mrc, circuit.nrc = order.mrc, order.nrc
            circuit.burst_price = order.burst_price
            circuit.price_book_version = order.price_book_version
        else:
            circuit.disconnected_at = moment
        self._completed_event(session, order, success=True)

    def _failed(self, session: Session, order: OrderRow,
                message: circuit_events.ProvisioningFailed) -> None:
        failure = order_pb2.OrderFailure(
            message=message.message or "provisioning failed",
            router_errors=[f.error for f in message.failures],
            rolled_back=message.rolled_back)
        order.failure = failure.SerializeToString()
        self.context.end(session, order, OrderState.FAILED, Outcome.FAILED, SYSTEM_PROVISIONING,
                         failure_reason(failure.message, ((f.error.router_name, f.error.message)
                                                          for f in message.failures)))
        self._completed_event(session, order, success=False)

    def _completed_event(self, session: Session, order: OrderRow, *, success: bool) -> None:
        emit(session, order.circuit_id, order_events.OrderCompleted(
            event_id=str(uuid.uuid4()), occurred_at=convert.timestamp(self.context.clock()),
            order_id=order.id, circuit_id=order.circuit_id,
            operation=convert.OPERATION[OrderType(order.type)], success=success))

