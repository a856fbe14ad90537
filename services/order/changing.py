"""Changing: orders on an existing circuit (a bandwidth change, now or scheduled, a boost
with its revert, a disconnect), and the customer cancelling an order before both telcos
approved it or before its scheduled start."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from idc.order.v1 import order_pb2, order_service_pb2
from services.common.auth import Principal
from services.common.errors import FailedPrecondition, InvalidArgument
from services.order import convert, store
from services.order.context import OrderContext, cancelled, emit
from services.order.domain.changes import (
    ActiveCircuit,
    CircuitChange,
    bandwidth_change,
    disconnection,
)
from services.order.domain.lifecycle import (
    ApprovalState,
    CircuitState,
    OrderState,
    OrderType,
    Outcome,
    check_cancellable,
    check_circuit_open_for_order,
)
from services.order.domain.preview import ChangePreview, PricedCircuit, preview_change
from services.order.domain.schedule import NO_WINDOW, Window, check_window
from services.order.domain.validation import request_id_problem, require_reason
from services.order.new_order import NewOrder, circuit_shape, order_created, order_records
from services.order.requests import fingerprint, new_id, replay
from services.order.tables import ApprovalRow, AuditRow, CircuitRow, OrderRow


def _money_after(circuit: CircuitRow, change: CircuitChange) -> dict[str, Any]:
    """The price columns once the order completes: the contract's term and termination
    terms stay; a bandwidth change is priced anew."""
    money: dict[str, Any] = {
        "currency": circuit.currency, "mrc": circuit.mrc, "nrc": circuit.nrc,
        "burst_price": circuit.burst_price, "term_months": circuit.term_months,
        "price_book_version": circuit.price_book_version,
        "termination_share": circuit.termination_share}
    if change.terms is not None:
        money.update(mrc=str(change.terms.mrc), nrc=str(change.terms.nrc),
                     burst_price=str(change.terms.burst_price_per_mbps),
                     price_book_version=change.terms.price_book_version)
    return money


@dataclass(frozen=True)
class Placed:
    """The order a request placed, or the one it replays."""

    row: OrderRow
    replayed: bool


@dataclass(frozen=True)
class Preview:
    """A change's figures, with the circuit as it is and its price columns after it."""

    circuit: CircuitRow
    money_after: dict[str, Any]
    figures: ChangePreview


class Changing:
    def __init__(self, context: OrderContext) -> None:
        self.context = context

    def modify_bandwidth(self, principal: Principal,
                         request: order_service_pb2.ModifyBandwidthRequest) -> order_pb2.Order:
        return self._order_on_circuit(
            principal, request.request_id, request.circuit_id,
            fingerprint("modify", request), OrderType.CHANGE, request.bandwidth_mbps,
            request.burst_mbps if request.HasField("burst_mbps") else None, request.reason,
            request.validate_only,
            Window(request.start_time.ToDatetime(tzinfo=UTC)
                   if request.HasField("start_time") else None,
                   request.end_time.ToDatetime(tzinfo=UTC)
                   if request.HasField("end_time") else None))

    def disconnect(self, principal: Principal,
                   request: order_service_pb2.DisconnectCircuitRequest) -> order_pb2.Order:
        return self._order_on_circuit(
            principal, request.request_id, request.circuit_id,
            fingerprint("disconnect", request), OrderType.DISCONNECT, None, None,
            request.reason, request.validate_only)

    def preview(self, principal: Principal, circuit_id: str, bandwidth_mbps: int | None,
                burst_mbps: int | None, zone: ZoneInfo) -> Preview:
        """What a bandwidth change (or, without ``bandwidth_mbps``, a disconnect) would cost
        if it took effect today in ``zone``, after the checks of the real order."""
        context = self.context
        with context.uow.read() as session:
            circuit = store.get_circuit(session, circuit_id, principal.tenant or "")
            check_circuit_open_for_order(CircuitState(circuit.state), circuit.pending_order_id,
                                         circuit.id)
            order_type = OrderType.DISCONNECT if bandwidth_mbps is None else OrderType.CHANGE
            change = self._change_of(session, circuit, order_type, bandwidth_mbps, burst_mbps,
                                     NO_WINDOW)
        assert circuit.activated_at is not None  # an ACTIVE circuit was activated
        figures = preview_change(
            PricedCircuit(circuit.activated_at.astimezone(zone).date(), circuit.term_months,
                          circuit.currency, Decimal(circuit.mrc),
                          Decimal(circuit.termination_share)),
            context.clock().astimezone(zone).date(),
            None if change.terms is None else change.terms.mrc)
        return Preview(circuit, _money_after(circuit, change), figures)

    def cancel(self, principal: Principal, order_id: str, reason: str) -> order_pb2.Order:
        context = self.context
        require_reason("reason", reason, required=False)
        with context.uow.write() as session:
            order = store.get_order(session, order_id, principal.tenant, for_update=True)
            check_cancellable(OrderState(order.state), order.id, starts_at=order.start_at,
                              moment=context.clock(), boost_order_id=order.boost_order_id)
            circuit = context.end(session, order, OrderState.CANCELLED, Outcome.WITHDRAWN,
                                  principal.subject, reason or "cancelled by the customer")
            context.withdraw_pending_approvals(session, order.id, ApprovalState.PENDING)
            emit(session, circuit.id, cancelled(context.clock(), order, principal.ref))
            return convert.order(session, order)

    def _order_on_circuit(self, principal: Principal, request_id: str, circuit_id: str,
                          content: str, order_type: OrderType, bandwidth_mbps: int | None,
                          burst_mbps: int | None, reason: str, validate_only: bool,
                          window: Window = NO_WINDOW) -> order_pb2.Order:
        tenant = principal.tenant or ""
        problem = request_id_problem(request_id)
        if problem:
            raise InvalidArgument.for_field("request_id", problem)
        require_reason("reason", reason, required=False)

        def place(session: Session) -> Placed:
            store.lock_channel(session)
            existing = replay(session, tenant, request_id, content)
            if existing is not None:
                return Placed(existing, replayed=True)
            circuit = store.get_circuit(session, circuit_id, tenant, for_update=True)
            check_circuit_open_for_order(CircuitState(circuit.state), circuit.pending_order_id,
                                         circuit.id)
            asked = window
            if order_type is OrderType.CHANGE and (window.start or window.end):
                assert bandwidth_mbps is not None
                asked = check_window(window.start, window.end, self.context.clock(),
                                     circuit.bandwidth_mbps, bandwidth_mbps)
            order = self._place_on(session, circuit, principal, order_type, request_id,
                                   content, bandwidth_mbps, burst_mbps, asked)
            if reason:
                self.context.audit(session, order, principal.subject,
                                   f"customer's reason: {reason}",
                                   OrderState.PENDING_APPROVAL, OrderState.PENDING_APPROVAL)
            return Placed(order, replayed=False)

        if validate_only:
            return self._rehearse(place)
        return self._idempotent(tenant, request_id, content, place)

    def _rehearse(self, place: Callable[[Session], Placed]) -> order_pb2.Order:
        """A validate-only order: placed in a transaction that is rolled back; the id of the
        order it would create is left out (a replayed order keeps its own)."""
        with self.context.uow.rehearse() as session:
            placed = place(session)
            order = convert.order(session, placed.row)
        if not placed.replayed:
            order.id = order.revert_order_id = ""
        return order

    def _place_on(self, session: Session, circuit: CircuitRow, principal: Principal,
                  order_type: OrderType, request_id: str, content: str,
                  bandwidth_mbps: int | None, burst_mbps: int | None, window: Window
                  ) -> OrderRow:
        """The order's rows (a boost's revert's too), its circuit marked as having it, its
        OrderCreated event."""
        context = self.context
        change = self._change_of(session, circuit, order_type, bandwidth_mbps, burst_mbps,
                                 window)
        boost_price = None
        if window.end is not None:
            # A boost keeps the contract's price; its hours are billed on their own line.
            change = CircuitChange(change.bandwidth_mbps, change.burst_mbps,
                                   change.reserved_mbps, None)
            boost_price = context.price_book.currencies[circuit.currency] \
                .boost_price_per_mbps_hour
            if boost_price is None:
                raise FailedPrecondition(f"boosts are not sold in {circuit.currency}; leave "
                                         "end_time out for a lasting change")
        order_id = new_id("ord")
        moment = context.clock()
        expire_at = moment + timedelta(seconds=context.settings.approval_window_s)
        if window.start is not None:  # both telcos approve before the start
            expire_at = min(expire_at, window.start)
        order = self._add_order(session, NewOrder(
            order_id=order_id, order_type=order_type, circuit_id=circuit.id,
            requested_by=principal.subject, request_id=request_id, fingerprint=content,
            quote_id=None, shape=self._shape(principal, circuit, change.bandwidth_mbps,
                                             change.burst_mbps),
            money=_money_after(circuit, change), previous_bandwidth_mbps=circuit.bandwidth_mbps,
            reserved_mbps=change.reserved_mbps, contacts=context.contacts.seal(order_id, ()),
            moment=moment, approval_expire_at=expire_at))
        order.start_at, order.end_at = window.start, window.end
        if window.end is not None:
            assert boost_price is not None
            order.boost_price = str(boost_price)
            self._add_revert(session, circuit, principal, order, window.end)
        circuit.pending_order_id = order_id
        circuit.updated_at = context.clock()
        emit(session, circuit.id, order_created(context.catalogue, order))
        return order

    def _add_revert(self, session: Session, circuit: CircuitRow, principal: Principal,
                    boost: OrderRow, end: datetime) -> None:
        """The CHANGE order back to the circuit as it is, due at the boost's end: booked,
        planned and approved with the boost, started by the service."""
        context = self.context
        revert_id = new_id("ord")
        revert = self._add_order(session, NewOrder(
            order_id=revert_id, order_type=OrderType.CHANGE, circuit_id=circuit.id,
            requested_by=principal.subject, request_id=f"revert:{boost.id}",
            fingerprint=boost.request_hash, quote_id=None,
            shape=self._shape(principal, circuit, circuit.bandwidth_mbps, circuit.burst_mbps),
            money=_money_after(circuit, disconnection(ActiveCircuit(
                circuit.bandwidth_mbps, circuit.burst_mbps, circuit.term_months,
                circuit.currency))),
            previous_bandwidth_mbps=boost.bandwidth_mbps, reserved_mbps=0,
            contacts=context.contacts.seal(revert_id, ()), moment=boost.created_at,
            approval_expire_at=boost.approval_expire_at))
        revert.start_at, revert.boost_order_id = end, boost.id
        revert.boost_price, boost.revert_order_id = boost.boost_price, revert_id
        context.audit(session, revert, principal.subject,
                      f"reverts boost {boost.id} at {end.isoformat()}; approved with it",
                      OrderState.PENDING_APPROVAL, OrderState.PENDING_APPROVAL)
        emit(session, circuit.id, order_created(context.catalogue, revert))

    def _add_order(self, session: Session, new: NewOrder) -> OrderRow:
        records = order_records(new, self.context.catalogue)
        order = OrderRow(**records.order)
        session.add(order)
        session.add_all(ApprovalRow(**values) for values in records.approvals)
        session.add_all(AuditRow(**values) for values in records.audit)
        self.context.metrics.placed(session, new.order_type)
        session.flush()
        return order

    @staticmethod
    def _shape(principal: Principal, circuit: CircuitRow, bandwidth_mbps: int,
               burst_mbps: int) -> dict[str, Any]:
        return circuit_shape(
            principal.tenant or "", circuit.a_port_id, circuit.z_port_id, circuit.a_vlan,
            circuit.z_vlan, bandwidth_mbps, burst_mbps, circuit.customer_reference,
            circuit.purchase_order, circuit.description)

    def _change_of(self, session: Session, circuit: CircuitRow, order_type: OrderType,
                   bandwidth_mbps: int | None, burst_mbps: int | None, window: Window
                   ) -> CircuitChange:
        """The order's effect on ``circuit``, a bandwidth change checked and admitted on the
        capacity ``session`` sees: at the peak of the calendar over ``window`` (an immediate
        one's is from now on, for good)."""
        context = self.context
        active = ActiveCircuit(circuit.bandwidth_mbps, circuit.burst_mbps,
                               circuit.term_months, circuit.currency)
        if order_type is not OrderType.CHANGE:
            return disconnection(active)
        assert bandwidth_mbps is not None
        ports = (circuit.a_port_id, circuit.z_port_id)
        moment = context.clock()
        headroom = store.headroom_over(session, context.catalogue,
                                       context.settings.channel_capacity_mbps, ports,
                                       window.start or moment, window.end, moment)
        return bandwidth_change(
            active, bandwidth_mbps, burst_mbps,
            [context.catalogue.ports[p].speed_mbps for p in ports], headroom,
            context.price_book)

    def _idempotent(self, tenant: str, request_id: str, content: str,
                    place: Callable[[Session], Placed]) -> order_pb2.Order:
        uow = self.context.uow
        try:
            with uow.write() as session:
                return convert.order(session, place(session).row)
        except IntegrityError:
            # A concurrent twin committed first (the channel lock normally prevents this).
            with uow.read() as session:
                row_or_none = replay(session, tenant, request_id, content)
                if row_or_none is None:
                    raise
                return convert.order(session, row_or_none)
