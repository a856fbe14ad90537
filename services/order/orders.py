"""The order service's use cases: each one transaction around the domain decisions.

What happens when an order is placed, approved, rejected, cancelled, expires or completes
is decided by services.order.domain; this module loads rows, calls the domain, writes the
rows, the audit entry and the outbox event in the same transaction, and tells watchers.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from google.protobuf.message import Message
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from idc.events.v1 import circuit_pb2 as circuit_events
from idc.events.v1 import order_pb2 as order_events
from idc.events.v1 import provisioning_pb2
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
from services.common.events import encode_event, outbox
from services.common.events.envelope import capture_trace_headers
from services.common.events.tables import OutboxRow
from services.common.events.topics import ORDER_EVENTS
from services.order import approval_log, convert, store
from services.order.admission import GroupCommit, Pending
from services.order.contacts import SealedContacts
from services.order.disclosure import ContactVault
from services.order.domain import capacity as cap
from services.order.domain.catalogue import Catalogue, Side
from services.order.domain.changes import ActiveCircuit, bandwidth_change, disconnection
from services.order.domain.idempotency import replayed_order
from services.order.domain.lifecycle import (
    ApprovalSlot,
    ApprovalState,
    Approver,
    CircuitState,
    OrderState,
    OrderType,
    Outcome,
    PlanContent,
    PlanVerdict,
    ProgressVerdict,
    check_approver,
    check_cancellable,
    check_circuit_open_for_order,
    check_transition,
    circuit_state_after,
    decide_approval,
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
from services.order.domain.pricing import PriceBook, PriceTerms
from services.order.domain.validation import (
    CircuitRequest,
    check_quote_unexpired,
    request_id_problem,
    require_reason,
    validate_circuit_request,
    validate_contacts,
)
from services.order.metrics import OrderMetrics
from services.order.settings import OrderSettings
from services.order.tables import (
    ApprovalRow,
    AuditRow,
    CircuitRow,
    OrderRow,
    PlanRow,
    PortVlanRow,
    QuoteRow,
)
from services.order.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)

SYSTEM_EXPIRY = "system:approval-expiry"
SYSTEM_PROVISIONING = "system:provisioning"

# The order type each success event completes (ProvisioningFailed completes none).
SUCCEEDS: dict[type[Message], OrderType] = {
    circuit_events.CircuitActivated: OrderType.NEW,
    circuit_events.CircuitModified: OrderType.CHANGE,
    circuit_events.CircuitDisconnected: OrderType.DISCONNECT,
}


def now() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def content_hash(kind: str, message: Message) -> str:
    """Fingerprint of a request's content (without its request id), for idempotency."""
    digest = hashlib.sha256(kind.encode() + b"\0")
    digest.update(message.SerializeToString(deterministic=True))
    return digest.hexdigest()


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


class OrderApp:
    def __init__(self, uow: UnitOfWork, catalogue: Catalogue, price_book: PriceBook,
                 settings: OrderSettings, clock: Callable[[], datetime] = now, *,
                 contacts: ContactVault) -> None:
        self.uow = uow
        self.catalogue = catalogue
        self.price_book = price_book
        self.settings = settings
        self.clock = clock
        self.contacts = contacts
        self.metrics = OrderMetrics(clock)
        self.admissions: GroupCommit[Placement, order_pb2.Order] = GroupCommit(self._admit)

    # -- plumbing -------------------------------------------------------------------------

    def _audit(self, session: Session, order: OrderRow, actor: str, reason: str,
               from_state: OrderState | None, to_state: OrderState) -> None:
        session.add(AuditRow(order_id=order.id, at=self.clock(), actor=actor, reason=reason,
                             from_state=from_state.value if from_state else None,
                             to_state=to_state.value))

    def _touch(self, order: OrderRow) -> None:
        order.updated_at = self.clock()
        order.version += 1

    def _move(self, session: Session, order: OrderRow, target: OrderState, actor: str,
              reason: str) -> None:
        current = OrderState(order.state)
        check_transition(current, target, order.id)
        self.metrics.left(session, order, current)
        order.state = target.value
        if target.terminal:
            order.completed_at = self.clock()
            order.reserved_mbps = 0  # the reservation ends with the order, whatever the outcome
        self._touch(order)
        self._audit(session, order, actor, reason, current, target)

    def _end(self, session: Session, order: OrderRow, target: OrderState, outcome: Outcome,
             actor: str, reason: str) -> CircuitRow:
        self._move(session, order, target, actor, reason)
        circuit = store.get_circuit(session, order.circuit_id, None)
        circuit.state = circuit_state_after(
            OrderType(order.type), outcome, CircuitState(circuit.state)).value
        if circuit.pending_order_id == order.id:
            circuit.pending_order_id = None
        if circuit.state in (CircuitState.DISCONNECTED, CircuitState.FAILED):
            store.release_vlans(session, circuit.id)
        circuit.updated_at = self.clock()
        return circuit

    def _emit(self, session: Session, circuit_id: str, message: Message) -> None:
        outbox.add(session, ORDER_EVENTS, circuit_id, message)

    def reveal(self, principal: Principal, *orders: order_pb2.Order) -> None:
        """Fill in the contacts of those ``orders`` that ``principal`` may read them on."""
        with self.uow.read_one_statement() as session:
            self.contacts.reveal(session, principal, orders)

    def _telco_side(self, principal: Principal) -> Side | None:
        return self.catalogue.side_of_telco(principal.telco or "")

    # -- catalogue and capacity -----------------------------------------------------------

    def capacity(self) -> store.CapacityFigures:
        with self.uow.read() as session:
            return store.capacity(session, self.catalogue, self.settings.channel_capacity_mbps)

    def quote(self, principal: Principal, spec: circuit_pb2.CircuitSpec
              ) -> tuple[QuoteRow, list[str], store.CapacityFigures]:
        tenant = principal.tenant or ""
        request = convert.circuit_request(spec)
        validate_circuit_request(request, self.catalogue, self.price_book, tenant)
        terms = self.price_book.price(request.bandwidth_mbps, request.term_months,
                                      request.currency)
        moment = self.clock()
        row = QuoteRow(
            id=new_id("qte"), tenant_id=tenant, spec=spec.SerializeToString(deterministic=True),
            currency=terms.currency, mrc=str(terms.mrc), nrc=str(terms.nrc),
            burst_price=str(terms.burst_price_per_mbps), term_months=terms.term_months,
            price_book_version=terms.price_book_version,
            termination_share=str(terms.termination_share), created_at=moment,
            expire_at=moment + timedelta(seconds=self.settings.quote_ttl_s),
        )
        with self.uow.write() as session:
            figures = store.capacity(session, self.catalogue, self.settings.channel_capacity_mbps)
            reasons = cap.shortfalls(request.bandwidth_mbps, [
                figures.channel, figures.ports[request.a_end_port_id],
                figures.ports[request.z_end_port_id]])
            reasons += cap.vlan_shortfalls(
                cap.VlanAsk(port_id, wanted,
                            wanted is not None and wanted in store.used_vlans(session, port_id),
                            figures.used_vlans.get(port_id, 0),
                            self.catalogue.ports[port_id].vlan_count)
                for port_id, wanted in ((request.a_end_port_id, request.a_end_vlan_id),
                                        (request.z_end_port_id, request.z_end_vlan_id)))
            session.add(row)
        return row, reasons, figures

    # -- placing orders -------------------------------------------------------------------

    def create_order(self, principal: Principal,
                     request: order_service_pb2.CreateOrderRequest) -> order_pb2.Order:
        tenant = principal.tenant or ""
        problem = request_id_problem(request.request_id)
        if problem:
            raise InvalidArgument.for_field("request_id", problem)
        validate_contacts(convert.contacts(list(request.contacts)))
        source = request.WhichOneof("source")
        if source is None:
            raise InvalidArgument.for_field("source", "give either quote_id or spec")
        if source == "spec":
            validate_circuit_request(convert.circuit_request(request.spec), self.catalogue,
                                     self.price_book, tenant)
        fingerprint_source = order_service_pb2.CreateOrderRequest()
        fingerprint_source.CopyFrom(request)
        fingerprint_source.ClearField("request_id")
        fingerprint = content_hash("create", fingerprint_source)
        # Everything that needs no lock is decided here, outside the admission batch.
        try:
            spec, terms, quote_id = self._resolve_source(tenant, request)
        except (NotFound, FailedPrecondition):
            # A quote gone or expired since does not stop the replay of an order placed
            # with it.
            with self.uow.read() as session:
                existing = self._replay(session, tenant, request.request_id, fingerprint)
                if existing is None:
                    raise
                return convert.order(session, existing)
        moment = self.clock()
        order_id = new_id("ord")
        return self.admissions.submit(Placement(
            tenant=tenant, subject=principal.subject, request_id=request.request_id,
            fingerprint=fingerprint, spec=spec, terms=terms, quote_id=quote_id,
            contacts=self.contacts.seal(order_id, request.contacts),
            moment=moment, order_id=order_id, circuit_id=new_id("cct"),
            trace_headers=capture_trace_headers()))

    def _admit(self, batch: Sequence[Pending[Placement, order_pb2.Order]]) -> None:
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

    def _admit_together(self, batch: Sequence[Pending[Placement, order_pb2.Order]]) -> None:
        for pending in batch:  # an outcome from a failed attempt does not stand
            pending.result, pending.error = None, None
        placed: dict[tuple[str, str], Placement] = {}
        replays: list[tuple[Pending[Placement, order_pb2.Order], str]] = []
        rows: dict[type[Any], list[dict[str, Any]]] = {
            table: [] for table in (CircuitRow, OrderRow, PortVlanRow, ApprovalRow, AuditRow)}
        # Outbox rows go through the session (not plain INSERTs) so that the relay sees
        # them flushed and is woken by the commit.
        events: list[OutboxRow] = []
        views: list[tuple[Pending[Placement, order_pb2.Order], dict[str, Any],
                          list[dict[str, Any]], list[dict[str, Any]]]] = []
        with self.uow.write() as session:
            store.lock_channel(session)
            existing = store.existing_orders(
                session, [(p.item.tenant, p.item.request_id) for p in batch])
            channel, ports = store.bandwidth(session, self.catalogue,
                                             self.settings.channel_capacity_mbps)
            pools = store.vlan_pools(session, self.catalogue, [
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
                spec = order.spec
                a_pool, z_pool = pools[spec.a_end_port_id], pools[spec.z_end_port_id]
                try:
                    cap.admit(spec.bandwidth_mbps, [channel, ports[spec.a_end_port_id],
                                                    ports[spec.z_end_port_id]])
                    a_vlan = a_pool.choose(spec.a_end_vlan_id)
                    z_vlan = z_pool.choose(spec.z_end_vlan_id)
                except DomainError as error:
                    pending.error = error
                    continue
                a_pool.take(a_vlan)
                z_pool.take(z_vlan)
                channel = channel.reserving(spec.bandwidth_mbps)
                for port_id in (spec.a_end_port_id, spec.z_end_port_id):
                    ports[port_id] = ports[port_id].reserving(spec.bandwidth_mbps)
                placed[key] = order
                views.append((pending, *self._new_order_rows(order, a_vlan, z_vlan, rows,
                                                             events)))
            store.insert_rows(session, rows)
            # Plain INSERTs pass no flush: their audit entries are chained at commit.
            AuditChain.touch(session, [row["id"] for row in rows[CircuitRow]])
            session.add_all(events)
            self.metrics.placed(session, OrderType.NEW, len(views))
        for pending, order_values, approvals, audit in views:
            pending.result = convert.order_message(order_values, approvals, audit)
        if replays:
            with self.uow.read() as session:
                for pending, order_id in replays:
                    pending.result = convert.order_by_id(session, order_id, None)

    def _new_order_rows(self, order: Placement, a_vlan: int, z_vlan: int,
                        rows: dict[type[Any], list[dict[str, Any]]], events: list[OutboxRow]
                        ) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
        """The rows of an admitted NEW order, added to ``rows`` and its OrderCreated event to
        ``events``; returns the order's columns, approvals and audit trail as GetOrder would
        read them."""
        spec, terms, moment = order.spec, order.terms, order.moment
        money = {"currency": terms.currency, "mrc": str(terms.mrc), "nrc": str(terms.nrc),
                 "burst_price": str(terms.burst_price_per_mbps),
                 "term_months": terms.term_months,
                 "price_book_version": terms.price_book_version,
                 "termination_share": str(terms.termination_share)}
        shape = {"tenant_id": order.tenant, "a_port_id": spec.a_end_port_id,
                 "z_port_id": spec.z_end_port_id, "a_vlan": a_vlan, "z_vlan": z_vlan,
                 "bandwidth_mbps": spec.bandwidth_mbps, "burst_mbps": spec.burst_mbps,
                 "customer_reference": spec.customer_reference,
                 "purchase_order": spec.purchase_order,
                 "description": spec.description}
        rows[CircuitRow].append({
            "id": order.circuit_id, "state": CircuitState.RESERVED.value,
            "created_by_order_id": order.order_id, "pending_order_id": None,
            "created_at": moment, "updated_at": moment, "activated_at": None,
            "disconnected_at": None, **shape, **money})
        rows[PortVlanRow].extend(
            {"port_id": port_id, "vlan_id": vlan, "circuit_id": order.circuit_id}
            for port_id, vlan in ((spec.a_end_port_id, a_vlan), (spec.z_end_port_id, z_vlan)))
        check_transition(OrderState.ACKNOWLEDGED, OrderState.PENDING_APPROVAL, order.order_id)
        values: dict[str, Any] = {
            "id": order.order_id, "type": OrderType.NEW.value,
            "state": OrderState.PENDING_APPROVAL.value, "circuit_id": order.circuit_id,
            "request_id": order.request_id, "request_hash": order.fingerprint,
            "quote_id": order.quote_id, "requested_by": order.subject,
            "previous_bandwidth_mbps": 0, "reserved_mbps": spec.bandwidth_mbps,
            **order.contacts.columns(), "failure": None, "plan_error": None,
            "approval_expire_at": moment + timedelta(seconds=self.settings.approval_window_s),
            "created_at": moment, "updated_at": moment, "completed_at": None,
            "approved_at": None, "provisioning_step": None, "provisioning_step_at": None,
            # created ACKNOWLEDGED (version 1), moved to PENDING_APPROVAL (version 2)
            "version": 2, **shape, **money}
        rows[OrderRow].append(values)
        approvals = [
            {"order_id": order.order_id, "side": side.value,
             "telco_id": self.catalogue.telco_for_side(side).id,
             "state": ApprovalState.PENDING.value, "approver": "", "payload_sha256": "",
             "comment": "", "decided_at": None}
            for side in sorted(Side, key=lambda side: side.value)]
        rows[ApprovalRow].extend(approvals)
        audit = [
            {"order_id": order.order_id, "at": moment, "actor": order.subject,
             "reason": "new circuit ordered; capacity and VLANs reserved", "from_state": None,
             "to_state": OrderState.ACKNOWLEDGED.value},
            {"order_id": order.order_id, "at": moment, "actor": order.subject,
             "reason": "waiting for approval by both telcos",
             "from_state": OrderState.ACKNOWLEDGED.value,
             "to_state": OrderState.PENDING_APPROVAL.value}]
        rows[AuditRow].extend(audit)
        as_row = OrderRow(**values)  # a transient row for the event converters
        event = order_events.OrderCreated(
            event_id=str(uuid.uuid4()), occurred_at=convert.timestamp(moment),
            order_id=order.order_id, operation=convert.OPERATION[OrderType.NEW],
            circuit=convert.circuit_parameters(
                self.catalogue, as_row, order.circuit_id, spec.bandwidth_mbps,
                spec.burst_mbps),
            previous_bandwidth_mbps=0, price=convert.price_terms(as_row),
            approval_expire_time=convert.timestamp(values["approval_expire_at"]))
        encoded = encode_event(event, order.circuit_id, trace_headers=order.trace_headers)
        events.append(OutboxRow(
            event_id=encoded.event_id, topic=ORDER_EVENTS, key=encoded.key,
            event_type=encoded.event_type, schema_version=encoded.schema_version,
            payload=encoded.payload, headers=order.trace_headers))
        return values, approvals, audit

    def _idempotent(self, tenant: str, request_id: str, fingerprint: str,
                    place: Callable[[Session], OrderRow]) -> order_pb2.Order:
        try:
            with self.uow.write() as session:
                row = place(session)
                return convert.order(session, row)
        except IntegrityError:
            # A concurrent twin committed first (the channel lock normally prevents this).
            with self.uow.read() as session:
                row_or_none = self._replay(session, tenant, request_id, fingerprint)
                if row_or_none is None:
                    raise
                return convert.order(session, row_or_none)

    def _replay(self, session: Session, tenant: str, request_id: str, fingerprint: str
                ) -> OrderRow | None:
        existing = store.order_by_request(session, tenant, request_id)
        if existing is not None:
            replayed_order(request_id, fingerprint, (existing.id, existing.request_hash))
        return existing

    def _resolve_source(self, tenant: str, request: order_service_pb2.CreateOrderRequest
                        ) -> tuple[CircuitRequest, PriceTerms, str | None]:
        if request.WhichOneof("source") == "spec":
            spec = convert.circuit_request(request.spec)
            return spec, self.price_book.price(spec.bandwidth_mbps, spec.term_months,
                                               spec.currency), None
        with self.uow.read() as session:
            quote = session.get(QuoteRow, request.quote_id)
        if quote is None or quote.tenant_id != tenant:
            raise NotFound(f"quote {request.quote_id!r} not found")
        check_quote_unexpired(quote.id, quote.expire_at, self.clock())
        quoted = circuit_pb2.CircuitSpec()
        quoted.ParseFromString(quote.spec)
        spec = convert.circuit_request(quoted)
        # The catalogue may have changed since the quote: check the spec again.
        validate_circuit_request(spec, self.catalogue, self.price_book, tenant, "quote.spec")
        terms = PriceTerms(quote.currency, Decimal(quote.mrc), Decimal(quote.nrc),
                           Decimal(quote.burst_price), quote.term_months,
                           quote.price_book_version, Decimal(quote.termination_share))
        return spec, terms, quote.id

    def _new_order_row(self, session: Session, order_id: str, order_type: OrderType,
                       circuit_id: str, principal: Principal, request_id: str,
                       fingerprint: str, quote_id: str | None, shape: dict[str, object],
                       money: dict[str, object], *, previous_bandwidth_mbps: int,
                       reserved_mbps: int, contacts: Sequence[order_pb2.Contact]) -> OrderRow:
        moment = self.clock()
        order = OrderRow(
            id=order_id, type=order_type.value, state=OrderState.ACKNOWLEDGED.value,
            circuit_id=circuit_id, request_id=request_id, request_hash=fingerprint,
            quote_id=quote_id, requested_by=principal.subject,
            previous_bandwidth_mbps=previous_bandwidth_mbps, reserved_mbps=reserved_mbps,
            **self.contacts.seal(order_id, contacts).columns(), failure=None, plan_error=None,
            approval_expire_at=moment + timedelta(seconds=self.settings.approval_window_s),
            created_at=moment, updated_at=moment, completed_at=None, version=1,
            **shape, **money)
        session.add(order)
        self.metrics.placed(session, order_type)
        for side in Side:
            session.add(ApprovalRow(
                order_id=order_id, side=side.value,
                telco_id=self.catalogue.telco_for_side(side).id,
                state=ApprovalState.PENDING.value, approver="", payload_sha256="", comment="",
                decided_at=None))
        what = {OrderType.NEW: "new circuit", OrderType.CHANGE: "bandwidth change",
                OrderType.DISCONNECT: "disconnect"}[order_type]
        self._audit(session, order, principal.subject,
                    f"{what} ordered; capacity and VLANs reserved", None,
                    OrderState.ACKNOWLEDGED)
        self._move(session, order, OrderState.PENDING_APPROVAL, principal.subject,
                   "waiting for approval by both telcos")
        session.flush()
        return order

    def _emit_created(self, session: Session, order: OrderRow, circuit: CircuitRow) -> None:
        self._emit(session, circuit.id, order_events.OrderCreated(
            event_id=str(uuid.uuid4()),
            occurred_at=convert.timestamp(order.created_at),
            order_id=order.id,
            operation=convert.OPERATION[OrderType(order.type)],
            circuit=convert.circuit_parameters(self.catalogue, order, circuit.id,
                                               order.bandwidth_mbps, order.burst_mbps),
            previous_bandwidth_mbps=order.previous_bandwidth_mbps,
            price=convert.price_terms(order),
            approval_expire_time=convert.timestamp(order.approval_expire_at),
        ))

    def _order_on_circuit(self, principal: Principal, request_id: str, circuit_id: str,
                          fingerprint: str, order_type: OrderType, bandwidth_mbps: int | None,
                          burst_mbps: int | None, reason: str) -> order_pb2.Order:
        tenant = principal.tenant or ""
        problem = request_id_problem(request_id)
        if problem:
            raise InvalidArgument.for_field("request_id", problem)
        require_reason("reason", reason, required=False)

        def place(session: Session) -> OrderRow:
            store.lock_channel(session)
            existing = self._replay(session, tenant, request_id, fingerprint)
            if existing is not None:
                return existing
            circuit = store.get_circuit(session, circuit_id, tenant, for_update=True)
            check_circuit_open_for_order(CircuitState(circuit.state), circuit.pending_order_id,
                                         circuit.id)
            active = ActiveCircuit(circuit.bandwidth_mbps, circuit.burst_mbps,
                                   circuit.term_months, circuit.currency)
            if order_type is OrderType.CHANGE:
                assert bandwidth_mbps is not None
                figures = store.capacity(session, self.catalogue,
                                         self.settings.channel_capacity_mbps)
                change = bandwidth_change(
                    active, bandwidth_mbps, burst_mbps,
                    [self.catalogue.ports[p].speed_mbps
                     for p in (circuit.a_port_id, circuit.z_port_id)],
                    [figures.channel, figures.ports[circuit.a_port_id],
                     figures.ports[circuit.z_port_id]], self.price_book)
            else:
                change = disconnection(active)
            new_bandwidth, new_burst, reserved = (change.bandwidth_mbps, change.burst_mbps,
                                                  change.reserved_mbps)
            terms_currency = {"currency": circuit.currency, "mrc": circuit.mrc,
                              "nrc": circuit.nrc, "burst_price": circuit.burst_price,
                              "term_months": circuit.term_months,
                              "price_book_version": circuit.price_book_version,
                              # The contract's term and its termination terms stay.
                              "termination_share": circuit.termination_share}
            if change.terms is not None:
                terms = change.terms
                terms_currency.update(mrc=str(terms.mrc), nrc=str(terms.nrc),
                                      burst_price=str(terms.burst_price_per_mbps),
                                      price_book_version=terms.price_book_version)
            shape = {"tenant_id": tenant, "a_port_id": circuit.a_port_id,
                     "z_port_id": circuit.z_port_id, "a_vlan": circuit.a_vlan,
                     "z_vlan": circuit.z_vlan, "bandwidth_mbps": new_bandwidth,
                     "burst_mbps": new_burst, "customer_reference": circuit.customer_reference,
                     "purchase_order": circuit.purchase_order,
                     "description": circuit.description}
            order_id = new_id("ord")
            order = self._new_order_row(
                session, order_id, order_type, circuit.id, principal, request_id, fingerprint,
                None, shape, terms_currency, previous_bandwidth_mbps=circuit.bandwidth_mbps,
                reserved_mbps=reserved, contacts=())
            if reason:
                self._audit(session, order, principal.subject, f"customer's reason: {reason}",
                            OrderState.PENDING_APPROVAL, OrderState.PENDING_APPROVAL)
            circuit.pending_order_id = order_id
            circuit.updated_at = self.clock()
            self._emit_created(session, order, circuit)
            return order

        return self._idempotent(tenant, request_id, fingerprint, place)

    def modify_bandwidth(self, principal: Principal,
                         request: order_service_pb2.ModifyBandwidthRequest) -> order_pb2.Order:
        fingerprint_source = order_service_pb2.ModifyBandwidthRequest()
        fingerprint_source.CopyFrom(request)
        fingerprint_source.ClearField("request_id")
        return self._order_on_circuit(
            principal, request.request_id, request.circuit_id,
            content_hash("modify", fingerprint_source), OrderType.CHANGE,
            request.bandwidth_mbps,
            request.burst_mbps if request.HasField("burst_mbps") else None, request.reason)

    def disconnect(self, principal: Principal,
                   request: order_service_pb2.DisconnectCircuitRequest) -> order_pb2.Order:
        fingerprint_source = order_service_pb2.DisconnectCircuitRequest()
        fingerprint_source.CopyFrom(request)
        fingerprint_source.ClearField("request_id")
        return self._order_on_circuit(
            principal, request.request_id, request.circuit_id,
            content_hash("disconnect", fingerprint_source), OrderType.DISCONNECT,
            None, None, request.reason)

    # -- cancelling, approving, rejecting, expiring -----------------------------------------

    def cancel(self, principal: Principal, order_id: str, reason: str) -> order_pb2.Order:
        require_reason("reason", reason, required=False)
        with self.uow.write() as session:
            order = store.get_order(session, order_id, principal.tenant, for_update=True)
            check_cancellable(OrderState(order.state), order.id)
            circuit = self._end(session, order, OrderState.CANCELLED, Outcome.WITHDRAWN,
                                principal.subject, reason or "cancelled by the customer")
            self._withdraw_pending_approvals(session, order.id, ApprovalState.PENDING)
            self._emit(session, circuit.id, order_events.OrderCancelled(
                event_id=str(uuid.uuid4()), occurred_at=convert.timestamp(self.clock()),
                order_id=order.id, circuit_id=circuit.id,
                operation=convert.OPERATION[OrderType(order.type)],
                cancelled_by=principal.ref))
            return convert.order(session, order)

    def _withdraw_pending_approvals(self, session: Session, order_id: str,
                                    to: ApprovalState) -> None:
        for approval in store.approvals(session, order_id):
            if ApprovalState(approval.state).awaiting_decision and approval.state != to.value:
                approval_log.decide(session, approval, to, self.clock(),
                                    approver=SYSTEM_EXPIRY if to is ApprovalState.EXPIRED
                                    else None)

    def _slots(self, session: Session, order_id: str) -> dict[Side, ApprovalSlot]:
        return {
            Side(a.side): ApprovalSlot(Side(a.side), ApprovalState(a.state), a.payload_sha256)
            for a in store.approvals(session, order_id)
        }

    def approve(self, principal: Principal, order_id: str, payload_sha256: str,
                comment: str) -> order_pb2.Order:
        require_reason("comment", comment, required=False)
        approver = Approver(principal.subject, principal.telco or "", self._telco_side(principal))
        with self.uow.write() as session:
            order = store.get_order(session, order_id, None, for_update=True)
            side = check_approver(OrderState(order.state), order.id, order.requested_by,
                                  approver)
            plan = store.plans(session, order.id).get(side.value)
            complete = decide_approval(
                OrderState(order.state), order.id, order.requested_by, approver,
                self._slots(session, order.id), plan.sha256 if plan else None,
                order.plan_error, payload_sha256)
            row = session.get(ApprovalRow, (order.id, side.value))
            assert row is not None
            approval_log.decide(session, row, ApprovalState.APPROVED, self.clock(),
                                approver=principal.ref, payload_sha256=payload_sha256,
                                comment=comment)
            self._touch(order)
            if complete:
                self._approved(session, order)
            return convert.order(session, order)

    def _approved(self, session: Session, order: OrderRow) -> None:
        self._move(session, order, OrderState.APPROVED, SYSTEM_PROVISIONING,
                   "both telcos approved; handed to provisioning")
        order.approved_at = self.clock()
        circuit = store.get_circuit(session, order.circuit_id, None)
        previous = convert.circuit_parameters(self.catalogue, circuit, circuit.id,
                                              circuit.bandwidth_mbps, circuit.burst_mbps)
        circuit.state = circuit_state_after(OrderType(order.type), Outcome.APPROVED,
                                            CircuitState(circuit.state)).value
        circuit.updated_at = self.clock()
        message = order_events.OrderApproved(
            event_id=str(uuid.uuid4()), occurred_at=convert.timestamp(self.clock()),
            order_id=order.id, operation=convert.OPERATION[OrderType(order.type)],
            circuit=convert.circuit_parameters(self.catalogue, order, circuit.id,
                                               order.bandwidth_mbps, order.burst_mbps),
            price=convert.price_terms(order))
        if order.type == OrderType.CHANGE:
            message.previous_circuit.CopyFrom(previous)
        plans = store.plans(session, order.id)
        for approval in store.approvals(session, order.id):
            message.approvals.append(order_events.ApprovedPayload(
                side=convert.side_proto(approval.side), telco_id=approval.telco_id,
                router_name=self.catalogue.site_of(self.catalogue.ports[
                    order.a_port_id if approval.side == Side.SINGAPORE else order.z_port_id
                ]).router,
                payload_sha256=plans[approval.side].sha256, approver=approval.approver,
                approve_time=convert.timestamp(approval.decided_at)))
        self._emit(session, circuit.id, message)

    def reject(self, principal: Principal, order_id: str, reason: str) -> order_pb2.Order:
        require_reason("reason", reason, required=True)
        approver = Approver(principal.subject, principal.telco or "", self._telco_side(principal))
        with self.uow.write() as session:
            order = store.get_order(session, order_id, None, for_update=True)
            side = check_approver(OrderState(order.state), order.id, order.requested_by,
                                  approver)
            row = session.get(ApprovalRow, (order.id, side.value))
            assert row is not None
            approval_log.decide(session, row, ApprovalState.REJECTED, self.clock(),
                                approver=principal.ref, comment=reason)
            circuit = self._end(session, order, OrderState.REJECTED, Outcome.WITHDRAWN,
                                principal.subject, f"rejected by telco {row.telco_id}: {reason}")
            self._emit(session, circuit.id, order_events.OrderRejected(
                event_id=str(uuid.uuid4()), occurred_at=convert.timestamp(self.clock()),
                order_id=order.id, circuit_id=circuit.id,
                operation=convert.OPERATION[OrderType(order.type)],
                side=convert.side_proto(side.value), rejected_by=principal.ref,
                reason=reason, expired=False))
            return convert.order(session, order)

    def expire_due(self, limit: int = 100) -> int:
        """Reject orders whose approval window passed; returns how many."""
        with self.uow.write() as session:
            due = list(session.scalars(
                select(OrderRow)
                .where(OrderRow.state == OrderState.PENDING_APPROVAL.value,
                       OrderRow.approval_expire_at <= self.clock())
                .order_by(OrderRow.approval_expire_at).limit(limit)
                .with_for_update(skip_locked=True)))
            for order in due:
                self._withdraw_pending_approvals(session, order.id, ApprovalState.EXPIRED)
                circuit = self._end(
                    session, order, OrderState.REJECTED, Outcome.WITHDRAWN, SYSTEM_EXPIRY,
                    "the approval window passed without both telcos approving")
                self._emit(session, circuit.id, order_events.OrderRejected(
                    event_id=str(uuid.uuid4()), occurred_at=convert.timestamp(self.clock()),
                    order_id=order.id, circuit_id=circuit.id,
                    operation=convert.OPERATION[OrderType(order.type)],
                    reason="approval window expired", expired=True))
            return len(due)

    # -- circuit events -------------------------------------------------------------------

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
        decision = decide_plan(OrderState(order.state), self._slots(session, order.id),
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
        self._touch(order)
        self.uow.notify_on_commit(session)

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
                                payload=payload.SerializeToString(), received_at=self.clock()))
        for side in superseded:
            approval = session.get(ApprovalRow, (order.id, side.value))
            assert approval is not None
            approval_log.decide(session, approval, ApprovalState.SUPERSEDED, self.clock(),
                                approver=SYSTEM_PROVISIONING,
                                comment="the router payload changed since it was approved")

    def _back_to_approval(self, session: Session, order: OrderRow, reason: str) -> None:
        """Provisioning refused the approved payloads and left both routers unchanged: the
        order waits for approval again, keeping its capacity and VLANs, with a new window."""
        self._move(session, order, OrderState.PENDING_APPROVAL, SYSTEM_PROVISIONING, reason)
        order.approval_expire_at = self.clock() + timedelta(
            seconds=self.settings.approval_window_s)
        # The refused saga's steps are over; the next approval starts a new one.
        order.approved_at = order.provisioning_step = order.provisioning_step_at = None
        circuit = store.get_circuit(session, order.circuit_id, None)
        circuit.state = circuit_state_after(OrderType(order.type), Outcome.REPLANNED,
                                            CircuitState(circuit.state)).value
        circuit.updated_at = self.clock()

    def _rejected_unplannable(self, session: Session, order: OrderRow, error: str) -> None:
        """No router payload can be rendered, so no telco can ever approve: the order ends
        now, with its capacity and VLANs, instead of waiting out its approval window."""
        reason = f"provisioning cannot render the router payloads: {error}"
        circuit = self._end(session, order, OrderState.REJECTED, Outcome.WITHDRAWN,
                            SYSTEM_PROVISIONING, reason)
        self._emit(session, circuit.id, order_events.OrderRejected(
            event_id=str(uuid.uuid4()), occurred_at=convert.timestamp(self.clock()),
            order_id=order.id, circuit_id=circuit.id,
            operation=convert.OPERATION[OrderType(order.type)],
            rejected_by=SYSTEM_PROVISIONING, reason=reason, expired=False))

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
            self._move(session, order, OrderState.IN_PROGRESS, SYSTEM_PROVISIONING,
                       f"provisioning started on the routers (step {step!r})")
        else:
            self._touch(order)
        order.provisioning_step = step
        order.provisioning_step_at = (progress.occurred_at.ToDatetime(tzinfo=UTC)
                                      if progress.occurred_at.seconds else self.clock())
        self.uow.notify_on_commit(session)

    def overdue(self, limit: int = 20) -> list[str]:
        """The overdue-provisioning alarm's texts (see services.order.domain.overdue)."""
        moment = self.clock()
        bound_s = self.settings.provisioning_alarm_s
        with self.uow.read_one_statement() as session:
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
        self.uow.notify_on_commit(session)

    def _succeeded(self, session: Session, order: OrderRow, message: Message) -> None:
        effective = getattr(message, "effective_time")  # noqa: B009
        moment = effective.ToDatetime(tzinfo=UTC) if effective.seconds else self.clock()
        circuit = self._end(session, order, OrderState.COMPLETED, Outcome.SUCCEEDED,
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
        self._end(session, order, OrderState.FAILED, Outcome.FAILED, SYSTEM_PROVISIONING,
                  failure_reason(failure.message, ((f.error.router_name, f.error.message)
                                                   for f in message.failures)))
        self._completed_event(session, order, success=False)

    def _completed_event(self, session: Session, order: OrderRow, *, success: bool) -> None:
        self._emit(session, order.circuit_id, order_events.OrderCompleted(
            event_id=str(uuid.uuid4()), occurred_at=convert.timestamp(self.clock()),
            order_id=order.id, circuit_id=order.circuit_id,
            operation=convert.OPERATION[OrderType(order.type)], success=success))

