"""Placing: quotes and NEW orders.

Everything about a NEW order that needs no lock is decided in the caller's thread; what
remains (capacity, VLANs, the rows) is admitted in a batch under the channel lock
(services/order/admission.py), one order after the other, each seeing what the previous
ones took.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from idc.order.v1 import circuit_pb2, order_pb2, order_service_pb2
from services.common.audit_chain import AuditChain
from services.common.auth import Principal
from services.common.errors import (
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from services.common.events import encode_event
from services.common.events.envelope import capture_trace_headers
from services.common.events.tables import OutboxRow
from services.common.events.topics import ORDER_EVENTS
from services.order import convert, store
from services.order.admission import GroupCommit, Pending
from services.order.contacts import SealedContacts
from services.order.context import OrderContext
from services.order.domain import capacity as cap
from services.order.domain.catalogue import Catalogue
from services.order.domain.idempotency import replayed_order
from services.order.domain.lifecycle import CircuitState, OrderType
from services.order.domain.pricing import PriceTerms
from services.order.domain.schedule import NO_WINDOW, Calendar, Reservation
from services.order.domain.validation import (
    CircuitRequest,
    check_quote_unexpired,
    request_id_problem,
    validate_circuit_request,
    validate_contacts,
)
from services.order.new_order import (
    NewOrder,
    OrderRecords,
    circuit_shape,
    order_created,
    order_records,
    price_columns,
)
from services.order.requests import fingerprint, new_id, replay
from services.order.tables import (
    ApprovalRow,
    AuditRow,
    CircuitRow,
    OrderRow,
    PortVlanRow,
    QuoteRow,
)

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Placement:
    """A NEW order with everything decided that needs no lock: what remains is admission
    (capacity, VLANs) and the rows, in an admission batch."""

    tenant: str
    subject: str
    request_id: str
    fingerprint: str
    spec: CircuitRequest
    terms: PriceTerms
    quote_id: str | None
    contacts: SealedContacts
    moment: datetime
    order_id: str
    circuit_id: str
    trace_headers: dict[str, str]


# A placement queued for admission, and then its outcome.
Admission = Pending[Placement, order_pb2.Order]


class Placing:
    def __init__(self, context: OrderContext) -> None:
        self.context = context
        self.admissions: GroupCommit[Placement, order_pb2.Order] = GroupCommit(self.admit)

    def quote(self, principal: Principal, spec: circuit_pb2.CircuitSpec
              ) -> tuple[QuoteRow, list[str], store.CapacityFigures]:
        context = self.context
        tenant = principal.tenant or ""
        request = convert.circuit_request(spec)
        validate_circuit_request(request, context.catalogue, context.price_book, tenant)
        terms = context.price_book.price(request.bandwidth_mbps, request.term_months,
                                         request.currency)
        moment = context.clock()
        row = QuoteRow(
            id=new_id("qte"), tenant_id=tenant, spec=spec.SerializeToString(deterministic=True),
            **price_columns(terms), created_at=moment,
            expire_at=moment + timedelta(seconds=context.settings.quote_ttl_s))
        with context.uow.write() as session:
            figures = context.capacity(session)
            reasons = cap.shortfalls(request.bandwidth_mbps, [
                figures.channels.of(context.catalogue.is_sandbox_port(request.a_end_port_id)),
                figures.ports[request.a_end_port_id],
                figures.ports[request.z_end_port_id]])
            reasons += cap.vlan_shortfalls(
                cap.VlanAsk(port_id, wanted,
                            wanted is not None and wanted in store.used_vlans(session, port_id),
                            figures.used_vlans.get(port_id, 0),
                            context.catalogue.ports[port_id].vlan_count)
                for port_id, wanted in ((request.a_end_port_id, request.a_end_vlan_id),
                                        (request.z_end_port_id, request.z_end_vlan_id)))
            session.add(row)
        return row, reasons, figures

    def create_order(self, principal: Principal,
                     request: order_service_pb2.CreateOrderRequest) -> order_pb2.Order:
        context = self.context
        tenant = principal.tenant or ""
        problem = request_id_problem(request.request_id)
        if problem:
            raise InvalidArgument.for_field("request_id", problem)
        validate_contacts(convert.contacts(list(request.contacts)))
        source = request.WhichOneof("source")
        if source is None:
            raise InvalidArgument.for_field("source", "give either quote_id or spec")
        if source == "spec":
            validate_circuit_request(convert.circuit_request(request.spec), context.catalogue,
                                     context.price_book, tenant)
        content = fingerprint("create", request)
        try:
            spec, terms, quote_id = self._resolve_source(tenant, request)
        except (NotFound, FailedPrecondition):
            # A quote gone or expired since does not stop the replay of an order placed
            # with it.
            with context.uow.read() as session:
                existing = replay(session, tenant, request.request_id, content)
                if existing is None:
                    raise
                return convert.order(session, existing)
        order_id = new_id("ord")
        placement = Placement(
            tenant=tenant, subject=principal.subject, request_id=request.request_id,
            fingerprint=content, spec=spec, terms=terms, quote_id=quote_id,
            contacts=context.contacts.seal(order_id, request.contacts),
            moment=context.clock(), order_id=order_id, circuit_id=new_id("cct"),
            trace_headers=capture_trace_headers())
        if request.validate_only:
            return self._rehearse(placement)
        return self.admissions.submit(placement)

    def _rehearse(self, placement: Placement) -> order_pb2.Order:
        """A validate-only order: admitted alone, exactly as in a batch, in a transaction
        that is rolled back; the ids of the order and circuit it would create are left out
        (a replayed order keeps its own)."""
        pending = Admission(placement)
        self._admit_together([pending], rehearsal=True)
        order = pending.outcome()
        if order.id == placement.order_id:
            order.id, order.circuit_id = "", ""
        return order

    def admit(self, batch: Sequence[Admission]) -> None:
        """One admission batch (see services.order.admission); should its transaction fail
        as a whole (a twin request committed by another process, say), each order is tried
        again alone."""
        try:
            self._admit_together(batch)
        except Exception:
            if len(batch) == 1:
                raise
            log.warning("admission batch of %d failed; admitting one by one", len(batch),
                        exc_info=True)
            for pending in batch:
                try:
                    self._admit_together([pending])
                except Exception as error:
                    pending.error = error

    def _admit_together(self, batch: Sequence[Admission], *, rehearsal: bool = False) -> None:
        """``rehearsal``: decide and write everything, then roll it all back (validate-only)."""
        context = self.context
        for pending in batch:  # an outcome from a failed attempt does not stand
            pending.result, pending.error = None, None
        placed: dict[tuple[str, str], Placement] = {}
        replays: list[tuple[Admission, str]] = []
        rows: dict[type[Any], list[dict[str, Any]]] = {
            table: [] for table in (CircuitRow, OrderRow, PortVlanRow, ApprovalRow, AuditRow)}
        # Outbox rows go through the session (not plain INSERTs) so that the relay sees
        # them flushed and is woken by the commit.
        events: list[OutboxRow] = []
        views: list[tuple[Admission, OrderRecords]] = []
        with context.uow.rehearse() if rehearsal else context.uow.write() as session:
            store.lock_channel(session)
            existing = store.existing_orders(
                session, [(p.item.tenant, p.item.request_id) for p in batch])
            room = _Room.read(session, context, [
                port for p in batch for port in (p.item.spec.a_end_port_id,
                                                 p.item.spec.z_end_port_id)])
            for pending in batch:
                order = pending.item
                key = (order.tenant, order.request_id)
                twin = placed.get(key)
                earlier = (twin.order_id, twin.fingerprint) if twin else existing.get(key)
                try:
                    replayed = replayed_order(order.request_id, order.fingerprint, earlier)
                except AlreadyExists as error:
                    pending.error = error
                    continue
                if replayed is not None:
                    replays.append((pending, replayed))
                    continue
                try:
                    a_vlan, z_vlan = room.take(order.spec)
                except DomainError as error:
                    pending.error = error
                    continue
                placed[key] = order
                views.append((pending, self._new_order_rows(order, a_vlan, z_vlan, rows,
                                                            events)))
            store.insert_rows(session, rows)
            # Plain INSERTs pass no flush: their audit entries are chained at commit.
            AuditChain.touch(session, [row["id"] for row in rows[CircuitRow]])
            session.add_all(events)
            context.metrics.placed(session, OrderType.NEW, len(views))
        for pending, records in views:
            pending.result = convert.order_message(records.order, records.approvals,
                                                   records.audit)
        if replays:
            with context.uow.read() as session:
                for pending, order_id in replays:
                    pending.result = convert.order_by_id(session, order_id, None)

    def _new_order_rows(self, order: Placement, a_vlan: int, z_vlan: int,
                        rows: dict[type[Any], list[dict[str, Any]]], events: list[OutboxRow]
                        ) -> OrderRecords:
        """The rows of an admitted NEW order, its circuit's included, added to ``rows``, and
        its OrderCreated event to ``events``."""
        context = self.context
        spec, moment = order.spec, order.moment
        shape = circuit_shape(order.tenant, spec.a_end_port_id, spec.z_end_port_id, a_vlan,
                              z_vlan, spec.bandwidth_mbps, spec.burst_mbps,
                              spec.customer_reference, spec.purchase_order, spec.description)
        money = price_columns(order.terms)
        rows[CircuitRow].append({
            "id": order.circuit_id, "state": CircuitState.RESERVED.value,
            "created_by_order_id": order.order_id, "pending_order_id": None,
            "created_at": moment, "updated_at": moment, "activated_at": None,
            "disconnected_at": None, **shape, **money})
        rows[PortVlanRow].extend(
            {"port_id": port_id, "vlan_id": vlan, "circuit_id": order.circuit_id}
            for port_id, vlan in ((spec.a_end_port_id, a_vlan), (spec.z_end_port_id, z_vlan)))
        records = order_records(NewOrder(
            order_id=order.order_id, order_type=OrderType.NEW, circuit_id=order.circuit_id,
            requested_by=order.subject, request_id=order.request_id,
            fingerprint=order.fingerprint, quote_id=order.quote_id, shape=shape, money=money,
            previous_bandwidth_mbps=0, reserved_mbps=spec.bandwidth_mbps,
            contacts=order.contacts, moment=moment,
            approval_expire_at=moment + timedelta(seconds=context.settings.approval_window_s),
        ), context.catalogue)
        rows[OrderRow].append(records.order)
        rows[ApprovalRow].extend(records.approvals)
        rows[AuditRow].extend(records.audit)
        # A transient row for the event converters.
        created = order_created(context.catalogue, OrderRow(**records.order))
        encoded = encode_event(created, order.circuit_id, trace_headers=order.trace_headers)
        events.append(OutboxRow(
            event_id=encoded.event_id, topic=ORDER_EVENTS, key=encoded.key,
            event_type=encoded.event_type, schema_version=encoded.schema_version,
            payload=encoded.payload, headers=order.trace_headers))
        return records

    def _resolve_source(self, tenant: str, request: order_service_pb2.CreateOrderRequest
                        ) -> tuple[CircuitRequest, PriceTerms, str | None]:
        context = self.context
        if request.WhichOneof("source") == "spec":
            spec = convert.circuit_request(request.spec)
            return spec, context.price_book.price(spec.bandwidth_mbps, spec.term_months,
                                                  spec.currency), None
        with context.uow.read() as session:
            quote = session.get(QuoteRow, request.quote_id)
        if quote is None or quote.tenant_id != tenant:
            raise NotFound(f"quote {request.quote_id!r} not found")
        check_quote_unexpired(quote.id, quote.expire_at, context.clock())
        quoted = circuit_pb2.CircuitSpec()
        quoted.ParseFromString(quote.spec)
        spec = convert.circuit_request(quoted)
        # The catalogue may have changed since the quote: check the spec again.
        validate_circuit_request(spec, context.catalogue, context.price_book, tenant,
                                 "quote.spec")
        terms = PriceTerms(quote.currency, Decimal(quote.mrc), Decimal(quote.nrc),
                           Decimal(quote.burst_price), quote.term_months,
                           quote.price_book_version, Decimal(quote.termination_share))
        return spec, terms, quote.id


@dataclass
class _Room:
    """What an admission batch admits its orders on, under the channel lock. A new circuit
    holds from now on, for good: it is checked at the peak of the calendar from now on
    (not the sum of every reservation however far apart), and each one admitted adds to
    every later moment for the next."""

    catalogue: Catalogue
    channels: cap.Channels
    ports: dict[str, cap.Headroom]
    calendars: dict[bool, Calendar]  # by sandbox
    vlans: dict[str, cap.VlanPool]

    @classmethod
    def read(cls, session: Session, context: OrderContext, port_ids: list[str]) -> _Room:
        channels, ports = store.bandwidth(session, context.catalogue,
                                          context.settings.channel_capacity_mbps)
        moment = context.clock()
        return cls(context.catalogue, channels, ports,
                   {sandbox: Calendar(moment, store.reservations(session, context.catalogue,
                                                                 moment, sandbox))
                    for sandbox in (False, True)},
                   store.vlan_pools(session, context.catalogue, port_ids))

    def take(self, spec: CircuitRequest) -> tuple[int, int]:
        """Admit ``spec``: its A and Z VLANs, or the DomainError that refuses it."""
        sandbox = self.catalogue.is_sandbox_port(spec.a_end_port_id)
        ends = (spec.a_end_port_id, spec.z_end_port_id)
        calendar = self.calendars[sandbox]
        cap.admit(spec.bandwidth_mbps, store.peak_headroom(
            self.channels.of(sandbox), self.ports, calendar, ends, None))
        a_pool, z_pool = self.vlans[spec.a_end_port_id], self.vlans[spec.z_end_port_id]
        a_vlan, z_vlan = a_pool.choose(spec.a_end_vlan_id), z_pool.choose(spec.z_end_vlan_id)
        a_pool.take(a_vlan)
        z_pool.take(z_vlan)
        calendar.add(*ends, Reservation(spec.bandwidth_mbps, NO_WINDOW))
        return a_vlan, z_vlan
